"""`orch`: from a dataset and an AWS account to trained weights.

Each command module parses its flags into a typed request, calls one function in lifecycle/ and
prints the result; cli/app.py maps errors to messages and exit codes in one place.
"""
from __future__ import annotations

from orchestrator.cli import access, data, doctor, init, launch, tensorboard, teardown, views  # noqa: F401  (each registers its commands)
from orchestrator.cli.app import app, main

__all__ = ["app", "main"]
