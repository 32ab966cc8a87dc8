"""One error type for everything a user can fix, with the exit code the CLI returns.

Commands raise `TrainerError` with a message that says what was wrong, what was kept and the
command that fixes it; `trainer.cli` prints the message (no traceback) and exits with `code`.
"""
from __future__ import annotations

EXIT_BAD_INPUT = 2      # bad flags, recipe, data layout, checkpoint
EXIT_DISK = 3           # could not write a checkpoint (disk full, read-only volume)
EXIT_PEER_LOST = 4      # another process of the run (another machine's) stopped answering; last.pt as last saved
EXIT_SIGHUP = 129       # its terminal or SSH session went away; last.pt saved first
EXIT_SIGINT = 130       # stopped by Ctrl-C after saving last.pt
EXIT_SIGTERM = 143      # stopped by SIGTERM / spot notice after saving last.pt


class TrainerError(Exception):
    def __init__(self, message: str, code: int = EXIT_BAD_INPUT):
        super().__init__(message)
        self.message = message
        self.code = code


class UnsafeFileError(TrainerError):
    """A weights or checkpoint file whose pickle asks for more than tensors and plain values: it would
    run code if loaded unrestricted. Unlike a torn file, it is never swapped silently for another
    copy (resuming falls back from a torn last.pt, not from a tampered one): someone should look."""
