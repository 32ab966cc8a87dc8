"""This machine without a Docker engine (`--target local`): the trainer installed here, as a supervised process."""
from __future__ import annotations

from orchestrator.errors import JobError
from orchestrator.machines.base import Say
from orchestrator.machines.data import make_demo_data
from orchestrator.machines.local_jobs import LocalMachine
from orchestrator.machines.process_runner import ProcessRunner
from orchestrator.records import JobSpec


class LocalProcessMachine(LocalMachine):
    def runner(self, session) -> ProcessRunner:
        return ProcessRunner(self.job)

    def prepare(self, session, spec: JobSpec, say: Say) -> None:
        if spec.data.startswith("s3://"):
            raise JobError(f"--data {spec.data}: an s3:// dataset is copied by an instance with its role; on this "
                           "machine, download it first (`aws s3 sync URI DIR`) and pass --data DIR.")
        self.check_data(spec)

    def place_data(self, session, runner, spec: JobSpec, data_dir: str, image: str, user: str, say: Say) -> str:
        if spec.data == "demo":
            make_demo_data(session, runner, data_dir, image, user, say)
        return data_dir

    def without_gpus(self, say: Say) -> bool:
        return True  # the trainer picks its device itself
