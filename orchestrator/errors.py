"""The errors orch raises on purpose; each message says what was wrong, what was kept, what to run.

The CLI maps them to exit codes in one place (`cli/app.py`): a `ConfigError` (config.py), a
`NoCheckpointSource` or a `ToolMissing` is a usage error (2); every other one is a failure (1).
"""
from __future__ import annotations


class FlowError(RuntimeError):
    """A failure with a message the user can act on (what was wrong, what was kept, what to run)."""


class NoCheckpointSource(FlowError):
    """`--resume` with nowhere to resume from; raised before anything is created (a usage error)."""


class NoRunningInstance(FlowError):
    """The job has no instance up now (a managed job between two, or ended): what it left in the cloud still is."""


class ToolMissing(FlowError):
    """A program this command runs on this machine is not installed; nothing was started (a usage error)."""


class JobError(RuntimeError):
    """The job could not be started or reached; the message says what was kept and what to do."""


class EngineUnreachable(JobError):
    """No Docker engine answered on the job's machine."""


class MachineLost(JobError):
    """The job's machine went away (the caller's `machine_lost` check said so) while following its logs."""


class ContainerError(RuntimeError):
    """The engine refused or failed something; the message says what and what to do."""


class NoGPUs(ContainerError):
    """The engine cannot give a container the GPUs (no NVIDIA container runtime or toolkit, or no GPU)."""
