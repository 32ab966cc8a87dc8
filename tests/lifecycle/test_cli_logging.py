"""`orch`'s entry point keeps paramiko's own error logging (a traceback per failed SSH attempt while
an instance boots) off the terminal, without taking it from a user's logging configuration."""
from __future__ import annotations

import subprocess
import sys

SCRIPT = """
import logging, sys
from orchestrator import cli
sys.argv = ["orch", "--help"]
try:
    cli.main()
except SystemExit:
    pass
print("---", file=sys.stderr)
logging.getLogger("paramiko.transport").error("Exception (client): Error reading SSH protocol banner")
"""


def _stderr(extra: str = "") -> str:
    code = SCRIPT + extra
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stderr.split("---", 1)[1]


def test_paramiko_errors_do_not_reach_the_terminal():
    assert "protocol banner" not in _stderr()


def test_a_users_logging_config_still_gets_them():
    out = _stderr('\nlogging.basicConfig(level=logging.INFO)\n'
                  'logging.getLogger("paramiko.transport").error("second: protocol banner")\n')
    assert "second: protocol banner" in out
