"""Run `trainer prepare` / `trainer verify` as the trainer CLI mounts them, and read results back."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import typer
from typer.testing import CliRunner

from trainer.prepare.cli import prepare_app, verify_command


def trainer_app() -> typer.Typer:
    """The trainer CLI if it mounts prepare already, else the same mounting trainer/cli.py does."""
    try:
        from trainer.cli import app

        names = {g.name for g in app.registered_groups} | {c.name for c in app.registered_commands}
        if {"prepare", "verify"} <= names:
            return app
    except ImportError:
        pass
    app = typer.Typer()
    app.add_typer(prepare_app, name="prepare")
    app.command("verify")(verify_command)
    return app


def trainer(*args: str, env: dict | None = None):
    return CliRunner().invoke(trainer_app(), [str(a) for a in args], env=env)


def tree_files(root: Path) -> dict[tuple[str, str, str], bytes]:
    """{(split, class, name): bytes} of a prepared folder, hidden files included."""
    out = {}
    for split in ("train", "val"):
        for path in sorted((root / split).glob("*/*")) + sorted((root / split).glob("*/.*")):
            out[(split, path.parent.name, path.name)] = path.read_bytes()
    return out


def digest(root: Path) -> dict[str, str]:
    """Every file under `root` (relative path -> sha1), to show a source was not changed."""
    return {str(p.relative_to(root)): hashlib.sha1(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def dataset_json(root: Path) -> dict:
    return json.loads((root / "dataset.json").read_text())
