"""Shell completion (`orch --install-completion`): commands, options, and the jobs this machine knows."""
from __future__ import annotations

from typer.testing import CliRunner

CIDR = "203.0.113.7/32"


def launch(orch, job):
    return orch("launch", "--instance", "g4dn.2xlarge", "--name", job, "--ssh-cidr", CIDR)



def complete(orch_app, words: str) -> list[str]:
    """What bash completion offers for `words` (Typer's protocol: the shell sets these variables)."""
    env = {"_ORCH_COMPLETE": "complete_bash", "COMP_WORDS": words, "COMP_CWORD": str(len(words.split()) - 1)}
    result = CliRunner().invoke(orch_app, [], env=env, prog_name="orch")
    return result.output.split()


def test_the_shell_completes_commands_options_and_the_jobs_this_machine_knows(aws, orch, job_calls):
    from orchestrator.cli import app as orch_app

    for job in ("resnet50", "rn18", "other"):
        assert launch(orch, job).exit_code == 0
    assert complete(orch_app, "orch la") == ["launch"]
    assert "--instance" in complete(orch_app, "orch launch --inst")
    assert complete(orch_app, "orch logs r") == ["resnet50", "rn18"]
    assert complete(orch_app, "orch teardown o") == ["other"]
