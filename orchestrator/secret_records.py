"""Records that hold a secret: what they show anywhere (repr, str, JSON) leaves the secret out.

Not dataclasses on purpose: `dataclasses.asdict` of a record holding one can't copy the values out
into a plain dict. orchestrator/records.py re-exports both.
"""
from __future__ import annotations


class TrainerEnv:
    """Environment variables for the trainer. Shown anywhere (repr, JSON), only the names appear.

    Not a dataclass on purpose: `dataclasses.asdict` of a record holding one can't copy the values out."""

    __slots__ = ("items",)

    def __init__(self, items: tuple[tuple[str, str], ...] = ()):
        self.items = tuple(items)

    def __eq__(self, other) -> bool:
        return isinstance(other, TrainerEnv) and other.items == self.items

    def __hash__(self) -> int:
        return hash(self.items)

    def __bool__(self) -> bool:
        return bool(self.items)

    def __repr__(self) -> str:
        return f"TrainerEnv({', '.join(self.names)})"

    __str__ = __repr__

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(k for k, _ in self.items)

    def to_json(self) -> list[str]:  # what `--json` output and records may show
        return list(self.names)

    def file_bytes(self) -> bytes:
        import json

        return json.dumps(dict(self.items), indent=0).encode()


class KaggleToken:
    """A Kaggle API token (username and key). Shown anywhere (repr, JSON), only the username appears; it goes
    to a machine only as a mode-600 kaggle.json, removed once the download is over (machines/data.py).

    Not a dataclass on purpose, as TrainerEnv."""

    __slots__ = ("username", "_key")

    def __init__(self, username: str, key: str):
        self.username, self._key = username, key

    def __eq__(self, other) -> bool:
        return isinstance(other, KaggleToken) and (other.username, other._key) == (self.username, self._key)

    def __hash__(self) -> int:
        return hash((self.username, self._key))

    def __repr__(self) -> str:
        return f"KaggleToken({self.username}, key hidden)"

    __str__ = __repr__

    def to_json(self) -> str:
        return self.username

    def file_bytes(self) -> bytes:
        import json

        return json.dumps({"username": self.username, "key": self._key}).encode()
