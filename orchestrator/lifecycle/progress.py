"""How lifecycle steps report to the person watching: one line per phase, with its time."""
from __future__ import annotations

import contextlib
import time
from typing import Callable, Iterator

Say = Callable[[str], None]


def quiet(_: str) -> None:
    pass


@contextlib.contextmanager
def phase(name: str, say: Say) -> Iterator[None]:
    start = time.monotonic()
    say(f"… {name}")
    yield
    say(f"✓ {name} ({time.monotonic() - start:.1f}s)")
