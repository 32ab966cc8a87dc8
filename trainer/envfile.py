"""Environment variables a launcher hands the trainer in a file, not on its command line or in its
container's environment: `orch launch --env KEY=VALUE` writes them (mode 600) and names the file in
$TRAINER_ENV_FILE. Read once at start, before anything that may want them (a W&B key, say).

    names = load()      # the variables set, by name; their values are never printed
"""
from __future__ import annotations

import json
import os
import re
import sys
from pathlib import Path

from trainer.errors import TrainerError

VARIABLE = "TRAINER_ENV_FILE"
_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def load(environ=None) -> tuple[str, ...]:
    """Set the variables the file names (a JSON object of strings) in `environ` (os.environ)."""
    environ = os.environ if environ is None else environ
    path = environ.get(VARIABLE)
    if not path:
        return ()
    try:
        values = json.loads(Path(path).read_text())
    except (OSError, ValueError) as e:
        raise TrainerError(f"${VARIABLE} names {path}, which can't be read as a JSON object "
                           f"({getattr(e, 'strerror', None) or type(e).__name__})") from None
    if not isinstance(values, dict) or not all(isinstance(k, str) and _KEY.fullmatch(k) and isinstance(v, str)
                                               for k, v in values.items()):
        raise TrainerError(f"${VARIABLE} names {path}: expected a JSON object of NAME: \"value\" strings")
    environ.update(values)
    return tuple(values)


def load_or_exit() -> None:
    try:
        names = load()
    except TrainerError as e:
        print(f"error: {e}", file=sys.stderr, flush=True)
        raise SystemExit(e.code) from None
    if names:
        print(f"environment from ${VARIABLE}: {', '.join(names)} (values not shown)", file=sys.stderr, flush=True)
