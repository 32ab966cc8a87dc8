"""The trainer image and the account's registry, from the machine's side: log in with its role, pull, push.

The machine's own credentials do it (an instance's role, through the AWS CLI the Deep Learning AMI
has): nothing of the user's leaves the laptop. The login token comes back over SSH and goes, in
memory only, into the engine's pull request; the push runs on the machine, detached, with a
throw-away Docker config, so the trainer starts without waiting for it.

    auth, why = login(session, registry)           # ({"username": "AWS", ...}, "") or (None, "why not")
    pulled = pull(client, f"{registry.repository}:{h}", auth, say)
    push_detached(session, registry, "orch-trainer:<h>", h, log="~/orch/image-push.log")
"""
from __future__ import annotations

import shlex
import time
from typing import Callable

from orchestrator.records import ImageRegistry

Say = Callable[[str], None]
LOGIN_TIMEOUT_S = 60
PROGRESS_EVERY_S = 5.0


def login(session, registry: ImageRegistry) -> tuple[dict | None, str]:
    """The engine's auth for `registry`, from the machine's role; (None, why) when the role can't have it."""
    got = session.run(f"aws ecr get-login-password --region {shlex.quote(registry.region)}",
                      timeout=LOGIN_TIMEOUT_S)
    token = got.stdout.strip()
    if got.exit_code != 0 or not token:
        lines = [line.strip() for line in (got.stderr or "").splitlines() if line.strip()]
        why = lines[-1][:300] if lines else f"`aws ecr get-login-password` exited {got.exit_code}"
        if got.exit_code == 127:
            why = "the AWS CLI is not on the machine"
        return None, why
    return {"username": "AWS", "password": token, "serveraddress": registry.host}, ""


def _gb(n: float) -> str:
    return f"{n / 1e9:.2f} GB" if n >= 1e8 else f"{n / 1e6:.0f} MB"


class PullProgress:
    """The engine's per-layer pull events summed into one line every few seconds: bytes, rate, layers."""

    def __init__(self, say: Say, every_s: float = PROGRESS_EVERY_S, clock: Callable[[], float] = time.monotonic):
        self.say, self.every_s, self.clock = say, every_s, clock
        self.layers: dict[str, list[int]] = {}  # id -> [bytes done, bytes total]
        self.start = self.last = clock()

    def update(self, event) -> None:
        """Take one event; a malformed one (the engine's or a registry's doing) is ignored, never raised."""
        try:
            self._update(event)
        except Exception:
            return
        now = self.clock()
        if now - self.last >= self.every_s:
            self.last = now
            self.say("    " + self.line())

    @staticmethod
    def _count(value) -> int | None:
        try:
            n = int(value)
        except (TypeError, ValueError, OverflowError):
            return None
        return n if 0 <= n < 1 << 50 else None

    def _update(self, event) -> None:
        if not isinstance(event, dict):
            return
        layer, status = event.get("id"), str(event.get("status") or "")
        # "<tag>: Pulling from ...", digests and odd ids are not layers
        if not isinstance(layer, str) or not layer or ":" in layer or status.startswith("Pulling from"):
            return
        detail = event.get("progressDetail")
        detail = detail if isinstance(detail, dict) else {}
        if status == "Downloading":
            total, current = self._count(detail.get("total")), self._count(detail.get("current") or 0)
            if total and current is not None:
                self.layers[layer] = [min(current, total), total]
        elif status in ("Download complete", "Pull complete", "Already exists") and layer in self.layers:
            self.layers[layer][0] = self.layers[layer][1]

    @property
    def done(self) -> int:
        return sum(d for d, _ in self.layers.values())

    @property
    def total(self) -> int:
        return sum(t for _, t in self.layers.values())

    def line(self) -> str:
        elapsed = max(self.clock() - self.start, 1e-6)
        rate = self.done / elapsed
        eta = f", about {(self.total - self.done) / rate:.0f} s left" if rate > 0 and self.total > self.done else ""
        return (f"image: {_gb(self.done)} of {_gb(self.total)} pulled ({rate / 1e6:.0f} MB/s, "
                f"{len(self.layers)} layers){eta}")


def pull(client, reference: str, auth: dict, say: Say, every_s: float = PROGRESS_EVERY_S) -> tuple[bool, str]:
    """Pull `reference` ("host/repo:tag") with progress; (True, "") or (False, why: not there, refused, ...)."""
    repository, tag = reference.rsplit(":", 1)
    progress = PullProgress(say, every_s)
    try:
        for event in client.api.pull(repository, tag=tag, stream=True, decode=True, auth_config=auth):
            if event.get("error"):
                return False, str(event["error"]).strip()
            progress.update(event)
    except Exception as e:  # not found, refused, or the engine dropped it
        return False, str(getattr(e, "explanation", None) or e).strip()
    return True, progress.line()


def push_detached(session, registry: ImageRegistry, local: str, tag: str, log: str) -> str:
    """Push `local` as `<repository>:<tag>` from the machine, in the background; the remote reference."""
    remote = f"{registry.repository}:{tag}"
    script = (
        'set -e; d=$(mktemp -d); trap \'rm -rf "$d"\' EXIT; export DOCKER_CONFIG="$d"; '
        f"aws ecr get-login-password --region {shlex.quote(registry.region)} | "
        f"docker login --username AWS --password-stdin {shlex.quote(registry.host)}; "
        f"docker tag {shlex.quote(local)} {shlex.quote(remote)}; docker push {shlex.quote(remote)}; "
        f"echo pushed {shlex.quote(remote)}")
    where = '"$HOME"/' + shlex.quote(log[2:]) if log.startswith("~/") else shlex.quote(log)
    session.run(f'mkdir -p "$(dirname {where})"; nohup sh -c {shlex.quote(script)} > {where} 2>&1 < /dev/null &',
                check=True, timeout=LOGIN_TIMEOUT_S)
    return remote
