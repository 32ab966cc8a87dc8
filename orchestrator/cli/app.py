"""The Typer app, and the one place that turns errors into messages and exit codes.

Every command module (cli/*.py) registers on `app`; each parses its flags, calls one function in
lifecycle/ and prints the result. Nothing heavy is imported here: `orch --help` stays fast, and
cli/ never imports boto3, paramiko or docker (a test checks).
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
from pathlib import Path
from typing import Any, Iterator

import typer

from orchestrator.assets import AssetsMissing
from orchestrator.config import ConfigError, Settings, load_settings
from orchestrator.errors import NoCheckpointSource, ToolMissing
from orchestrator.lifecycle.explain import friendly
from orchestrator.printable import printable
from orchestrator.state import StateError

app = typer.Typer(
    name="orch",
    help="Train an image classifier on a rented GPU (or this machine) and bring the weights home.\n\n"
         "\b\nExample: orch launch --instance g4dn.2xlarge --name resnet50 --iam-instance-profile orch-trainer "
         "--data s3://my-bucket/imagenet -- --recipe t4-rn50",
    no_args_is_help=True,
    add_completion=True,  # orch --install-completion (bash, zsh, fish, PowerShell)
    pretty_exceptions_enable=False,
    rich_markup_mode=None,  # plain click help, examples unwrapped (\b): rich's table truncates long options
)

EXIT_ERROR = 1
EXIT_USAGE = 2


def known_jobs(incomplete: str) -> list[str]:
    """Shell completion for a job argument: the names in this machine's registry (no cloud call)."""
    from orchestrator import state

    try:
        return sorted(name for name in state.load() if name.startswith(incomplete))
    except (StateError, ConfigError, OSError):
        return []


def job_argument() -> typer.models.ArgumentInfo:
    return typer.Argument(None, help="Job name (default: the only job).", autocompletion=known_jobs)


def out(message: str) -> None:
    # Everything orch prints may carry text from a machine (metrics, errors it relayed): never its escapes.
    typer.echo(printable(message))


def err(message: str) -> None:
    typer.echo(printable(message), err=True)


def jsonable(value: Any) -> Any:
    """Records as JSON values: dataclasses as objects, paths and tuples as strings and lists; a value with
    its own `to_json` (job.env.TrainerEnv: names, never values) as that says."""
    if callable(getattr(value, "to_json", None)):
        return value.to_json()
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value


def out_json(value: Any) -> None:
    """`--json`: one JSON document on stdout (anything else a command says goes to stderr)."""
    out(json.dumps(jsonable(value), indent=2))


def json_option() -> typer.models.OptionInfo:
    return typer.Option(False, "--json", help="Print the result as JSON on stdout (progress goes to stderr).")


class _Job:
    """The job a command is about, once it is known: an interrupted command names it."""

    name: str | None = None
    generated = False  # the name was made up (job-DATE-TIME): the same command again would make another
    creates = False  # the command creates cloud resources (launch): a failure says where they are


@contextlib.contextmanager
def errors() -> Iterator[_Job]:
    """Turn the errors we expect into a clear message and an exit code, never a traceback."""

    about = _Job()
    try:
        yield about
    except typer.Exit:
        raise
    except (ConfigError, NoCheckpointSource, ToolMissing) as e:
        err(f"Error: {e}")
        raise typer.Exit(EXIT_USAGE) from None
    except (StateError, RuntimeError, AssetsMissing) as e:
        err(f"Error: {friendly(e) or e}")
        raise typer.Exit(EXIT_ERROR) from None
    except KeyboardInterrupt:
        if about.name:
            again = f"run the same command again{f' with --name {about.name}' if about.generated else ''}"
            err(f"Interrupted. Everything created so far is tagged orch:job={about.name}: {again} to resume, "
                 f"or `orch teardown {about.name}` to remove it.")
        else:
            err("Interrupted. Everything created so far is tagged with its job's name (`orch list` shows it): run "
                 "the same command again to resume, or `orch teardown NAME` to remove it.")
        raise typer.Exit(130) from None
    except OSError as e:  # this machine's disk or folders (a full disk under ORCH_HOME), or a network socket
        where = f" ({e.filename})" if e.filename else ""
        kept = (f" Whatever was created for job {about.name} is tagged orch:job={about.name} (the tags are the truth, "
                f"state.json only a cache): fix this, then run the same command again, or `orch teardown {about.name}`."
                if about.name and about.creates else "")
        err(f"Error: {friendly(e) or e.strerror or e}{where}.{kept}")
        raise typer.Exit(EXIT_ERROR) from None
    except Exception as e:
        message = friendly(e)
        if message is None:
            raise
        err(f"Error: {message}")
        raise typer.Exit(EXIT_ERROR) from None


def settings(**flags) -> Settings:
    return load_settings(**flags)


def main() -> None:
    import logging

    # paramiko logs every failed SSH attempt (an instance still booting) with a traceback; with no
    # logging set up, Python prints those on stderr between orch's own "waiting for SSH" lines.
    # A handler of its own keeps them off the terminal; a user's logging config still receives them.
    logging.getLogger("paramiko").addHandler(logging.NullHandler())
    app()
