"""The user's Kaggle API token and a `kaggle:COMPETITION` source, checked on this machine before anything
is created. The token is read as the Kaggle client reads it ($KAGGLE_USERNAME and $KAGGLE_KEY, else
$KAGGLE_CONFIG_DIR/kaggle.json, else ~/.kaggle/kaggle.json); only the username is ever shown
(records.KaggleToken). The download itself runs on the instance (machines/data.py: download_kaggle).

    token = read_token()                       # KaggleToken(alice, key hidden)
    competition_of("kaggle:imagenet-object-localization-challenge")
"""
from __future__ import annotations

import json
import os
import re
import stat
from pathlib import Path

from orchestrator.config import ConfigError
from orchestrator.records import KaggleToken

PREFIX = "kaggle:"
COMPETITION = re.compile(r"[a-z0-9][a-z0-9-]{0,99}")
_FIELD = re.compile(r"[\x21-\x7e]{1,200}")  # printable, no spaces or line breaks: nothing a shell or a log reads
GET_ONE = ("create one at https://www.kaggle.com/settings (API: Create New Token) and save it as "
           "~/.kaggle/kaggle.json (chmod 600), or set KAGGLE_USERNAME and KAGGLE_KEY")


def competition_of(source: str) -> str:
    """COMPETITION of `kaggle:COMPETITION`, as Kaggle spells competition names (lowercase, digits, '-')."""
    name = source[len(PREFIX):] if source.startswith(PREFIX) else ""
    if not COMPETITION.fullmatch(name):
        raise ConfigError(f"--source {source}: use kaggle:COMPETITION with the name in the competition's address, "
                          "e.g. kaggle:imagenet-object-localization-challenge")
    return name


def token_path() -> Path:
    folder = os.environ.get("KAGGLE_CONFIG_DIR")
    return (Path(folder) if folder else Path.home() / ".kaggle") / "kaggle.json"


def read_token() -> tuple[KaggleToken, str | None]:
    """The token, and a warning when its file is readable by others (the Kaggle client warns too)."""
    user, key = os.environ.get("KAGGLE_USERNAME"), os.environ.get("KAGGLE_KEY")
    where, warning = "$KAGGLE_USERNAME / $KAGGLE_KEY", None
    if not (user and key):
        path = token_path()
        try:
            raw = json.loads(path.read_text())
        except FileNotFoundError:
            raise ConfigError(f"kaggle: sources need your Kaggle API token, and {path} does not exist: "
                              f"{GET_ONE}") from None
        except (OSError, ValueError) as e:
            raise ConfigError(f"{path} can't be read as a Kaggle token ({type(e).__name__}): {GET_ONE}") from None
        if not isinstance(raw, dict):
            raise ConfigError(f"{path} is not a Kaggle token (expected {{\"username\": ..., \"key\": ...}})")
        user, key, where = raw.get("username"), raw.get("key"), str(path)
        if path.stat().st_mode & (stat.S_IRWXG | stat.S_IRWXO):
            warning = f"{path} can be read by other users of this machine: chmod 600 {path}"
    if not (isinstance(user, str) and _FIELD.fullmatch(user) and isinstance(key, str) and _FIELD.fullmatch(key)):
        raise ConfigError(f"the Kaggle token in {where} is not a username and key as Kaggle writes them: {GET_ONE}")
    return KaggleToken(user, key), warning
