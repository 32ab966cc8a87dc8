"""The options of `trainer train`, as data: what `orch launch` checks a job's trainer arguments
against before it pays for an instance (orch never imports the trainer; they meet through files).

    python -m trainer.cli_flags > trainer/train-flags.json    # after changing `trainer train`'s options

tests/trainer/test_cli_flags.py fails when the file and the command disagree.
"""
from __future__ import annotations

import json
import sys

KINDS = {int: "int", float: "float"}   # the option's Python type; anything else is text


def train_flags() -> dict:
    """{"command": ..., "flags": {"--epochs": {"kind": "int"}, "--compile": {"kind": "flag"}, ...},
    "settings": [the keys `--set KEY=VALUE` takes]}.

    The option names come from the command Typer builds (`opts`, `secondary_opts`, `is_flag`,
    `multiple`), the value types from the function's annotations (typing's public API; Typer's
    own type objects changed between releases)."""
    import typing

    import typer

    from trainer import cli

    hints = typing.get_type_hints(cli.train)
    command = typer.main.get_command(cli.app).commands["train"]
    flags: dict[str, dict] = {}
    for param in command.params:
        if not getattr(param, "opts", None) or not param.opts[0].startswith("-"):
            continue                                   # an argument, not an option
        if param.is_flag:
            for name in (*param.opts, *param.secondary_opts):
                flags[name] = {"kind": "flag"}
            continue
        hint = hints[param.name]
        inner = [a for a in typing.get_args(hint) if a is not type(None)]
        if typing.get_origin(hint) is typing.Union and len(inner) == 1:    # Optional[X]
            hint = inner[0]
        entry: dict = {"kind": KINDS.get(hint, "text")}
        if param.multiple:
            entry["repeatable"] = True
        for name in param.opts:
            flags[name] = entry
    from trainer.config import FIELDS

    settings = sorted(FIELDS)                # the keys `--set KEY=VALUE` takes
    return {"command": "trainer train", "flags": dict(sorted(flags.items())), "settings": settings}


def main() -> None:
    json.dump(train_flags(), sys.stdout, indent=1)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
