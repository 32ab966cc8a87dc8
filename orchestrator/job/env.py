"""`--env KEY=VALUE` and `--env-file FILE` for the trainer: parsed here, kept out of everything orch records.

The values (a W&B key, say) reach the machine only in a mode-600 file beside the job's outputs
(`<job root>/env.json`), which the trainer reads at start ($TRAINER_ENV_FILE names it; a container
sees it read-only). They are never container labels or `docker inspect`'s environment, instance tags,
user data, the state file, logs or `orch status`: `TrainerEnv`'s repr and JSON form name the keys only.
Not recorded either: a `--resume` or a new instance needs them given again.

    env = parse_env(["WANDB_API_KEY=..."], [Path(".env")])    # TrainerEnv; ConfigError names file:line
"""
from __future__ import annotations

import re
from pathlib import Path

from orchestrator.config import ConfigError
from orchestrator.records import TrainerEnv

_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def _pair(text: str, where: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    key = key.strip()
    if re.match(r"export\s", key):
        key = key[len("export"):].strip()
    if not sep or not _KEY.fullmatch(key) or "\0" in value:
        # Never echo any of it: a line without "=" may well be a token, or a line of one.
        raise ConfigError(f"{where}: expected KEY=VALUE (a name of letters, digits and _, then =), "
                          "e.g. WANDB_API_KEY=...")
    return key, value


def _unquote(value: str) -> str:
    """A dotenv value: quotes removed, or else a ` # comment` after it."""
    value = value.strip()
    if len(value) >= 2 and value[0] in "'\"" and value[0] in value[1:]:
        end = value.index(value[0], 1)
        if not value[end + 1:].strip() or value[end + 1:].lstrip().startswith("#"):
            return value[1:end]
    return re.split(r"\s+#", value, maxsplit=1)[0].rstrip()


def parse_env(pairs: list[str] | tuple[str, ...] = (), files: list[Path] | tuple[Path, ...] = ()) -> TrainerEnv:
    """The files first (dotenv lines: KEY=VALUE, `export KEY=VALUE`, quotes, # comments), then the flags;
    a key given twice takes the last value."""
    found: dict[str, str] = {}
    for path in files:
        try:
            text = Path(path).expanduser().read_text(encoding="utf-8-sig")
        except (OSError, UnicodeDecodeError) as e:
            raise ConfigError(f"--env-file {path}: can't read it ({getattr(e, 'strerror', None) or e})") from None
        for n, line in enumerate(text.splitlines(), 1):
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            key, value = _pair(line, f"--env-file {path}, line {n}")
            found[key] = _unquote(value)
    for i, text in enumerate(pairs, 1):
        key, value = _pair(text, f"--env (the {i}{'st' if i == 1 else 'nd' if i == 2 else 'rd' if i == 3 else 'th'} one)")
        found[key] = value
    return TrainerEnv(tuple(found.items()))
