"""Where orch keeps its files on this machine, all under `$ORCH_HOME` (config.orch_home).

    keys/<job>.pem      the job's private key (mode 600, folder 700)
    known_hosts         host keys pinned per instance id
    jobs/<job>/         a local job's files (machines/local_jobs.py)
    datasets/<name>/    a dataset kept on this machine: its shards, and the copy jobs read (dataset_store.py)
    state.json          the job registry, a cache of the cloud's tags (state.py)
    locks/<job>.lock    held while a launch looks for and creates a job's instance, and by its teardown
"""
from __future__ import annotations

from pathlib import Path

from orchestrator.config import orch_home


def keys_dir() -> Path:
    return orch_home() / "keys"


def key_path(job: str) -> Path:
    return keys_dir() / f"{job}.pem"


def known_hosts_path() -> Path:
    return orch_home() / "known_hosts"


def job_lock_path(job: str) -> Path:
    return orch_home() / "locks" / f"{job}.lock"


def local_job_dir(job: str) -> Path:
    return orch_home() / "jobs" / job


def default_resume_dir(job: str) -> Path:
    """Where `orch fetch-weights` puts a job's files by default, and where `--resume` looks for them."""
    return Path("weights") / job


def datasets_dir() -> Path:
    return orch_home() / "datasets"
