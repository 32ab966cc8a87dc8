"""The supervisor of a local trainer process: its own detached process, so the job outlives `orch`.

    python -m orchestrator.machines.supervisor supervise JOB_FOLDER

It runs the command in JOB_FOLDER/job.json, timestamps the trainer's output into console.log
(like `docker logs -t`), restarts it after a crash with `--resume auto` (like the container's
restart policy), and writes exit.json when the trainer is done.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from orchestrator.files import read_json, write_json
from orchestrator.job.logtext import now_rfc3339

RESTART_PAUSE_S = 1.0
# trainer.errors.EXIT_BAD_INPUT (not imported: orch runs without the trainer's dependencies). Bad flags, recipe or
# data layout: a restart would fail the same way, so the supervisor stops. (Docker's on-failure restart policy, on
# an instance or with the docker runner, can't tell exit codes apart: it still retries those.)
TRAINER_BAD_INPUT_EXIT = 2


def supervise(root: Path) -> int:
    """Run the record's command, timestamping its output into console.log; restart after a crash."""
    raw = read_json(root / "job.json") or {}
    command = list(raw.get("command") or ())
    max_restarts = int(raw.get("max_restarts", 5))
    stopping = False
    child: subprocess.Popen | None = None

    def on_signal(signum, _frame):
        nonlocal stopping
        stopping = True
        if child is not None and child.poll() is None:
            child.send_signal(signal.SIGTERM)  # the trainer saves last.pt and exits

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    restarts, code = 0, 1
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "MPLBACKEND": "Agg"}
    with open(root / "console.log", "ab", buffering=0) as log:
        while True:
            child = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, env=env)
            for line in child.stdout:
                log.write(now_rfc3339().encode() + b" " + line.rstrip(b"\n") + b"\n")
            code = child.wait()
            code = 128 - code if code < 0 else code  # killed by a signal: the shell's (and Docker's) number
            if code == 0 or stopping or restarts >= max_restarts:
                break
            if code == TRAINER_BAD_INPUT_EXIT:
                log.write(f"{now_rfc3339()} [orch] trainer exited with {code} (bad input: see the error above); "
                          "not restarting, a restart would fail the same way. Fix the trainer arguments or the "
                          f"data, then `orch launch --target local --name {raw.get('job') or root.name} ...` "
                          "again\n".encode())
                break
            restarts += 1
            write_json(root / "supervisor.json", {"restarts": restarts})
            log.write(f"{now_rfc3339()} [orch] trainer exited with {code}; restart {restarts} of "
                      f"{max_restarts} resumes from the last checkpoint\n".encode())
            time.sleep(RESTART_PAUSE_S)
    write_json(root / "exit.json", {"exit_code": code, "restarts": restarts, "finished_at": now_rfc3339()})
    return code


def _alive(pid: int | None) -> bool:
    """Whether `pid` is a live (not zombie) orch supervisor."""


if __name__ == "__main__" and len(sys.argv) == 3 and sys.argv[1] == "supervise":
    sys.exit(supervise(Path(sys.argv[2])))
