"""The instance orch itself runs on: a managed job's replacement instance setting itself up (orchestrator/self_start.py).

An `InstanceMachine` in every step (its folders, the data from the bucket with the instance's role,
the image pulled from ECR or built, the trainer container and its labels) but reached through a
local session instead of SSH, and with no first-boot set-up to wait for: this runs as part of it.
"""
from __future__ import annotations

from orchestrator.machines.base import SSH_DEADLINE_S, Say
from orchestrator.machines.instance import InstanceMachine
from orchestrator.records import JobSpec, SSHEndpoint
from orchestrator.remote.local import LocalSession


class ThisInstanceMachine(InstanceMachine):
    def __init__(self, job: str):
        super().__init__(job, SSHEndpoint(host="127.0.0.1"))
        self.where, self.progress = "this instance", False

    def open(self, deadline_s: float = SSH_DEADLINE_S) -> LocalSession:
        return LocalSession()

    def prepare(self, session, spec: JobSpec, say: Say) -> None:
        pass  # this runs in the instance's own set-up (infra/bootstrap.sh): nothing to wait for
