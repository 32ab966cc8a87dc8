"""Every command of both CLIs has help with an example a user can copy, at an 80-column terminal."""
from __future__ import annotations

import pytest
import typer
from typer.testing import CliRunner

from orchestrator.cli import app as orch_app
from trainer.cli import app as trainer_app


def commands(app: typer.Typer, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    group = typer.main.get_command(app)
    found = []

    def walk(cmd, path: tuple[str, ...]) -> None:
        found.append(path)
        if getattr(cmd, "commands", None):   # a group (typer's own, not necessarily click's class)
            for name, sub in cmd.commands.items():
                walk(sub, path + (name,))

    walk(group, prefix)
    return found


@pytest.mark.parametrize("app,path", [(orch_app, p) for p in commands(orch_app)]
                         + [(trainer_app, p) for p in commands(trainer_app)],
                         ids=lambda v: " ".join(v) if isinstance(v, tuple) else "")
def test_help_has_an_unwrapped_example_and_whole_option_names(app, path):
    result = CliRunner().invoke(app, [*path, "--help"], env={"COLUMNS": "80", "TERMINAL_WIDTH": "80"}, terminal_width=80)
    assert result.exit_code == 0, result.output
    examples = [line.strip() for line in result.output.splitlines() if line.strip().startswith("Example")]
    assert examples, result.output
    # The example is one line (ready to paste): it ends the way a command does, not mid-option.
    program = "orch" if app is orch_app else "trainer"
    assert all(f"{program} " in e.split(":", 1)[1] for e in examples), examples
    assert "…" not in result.output, result.output     # rich's table cut long option names at 80 columns
