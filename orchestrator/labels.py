"""The names orch puts on what it creates on a machine: container labels (and a local job's record of them).

Labels are the truth about a job on its machine (which image, which folders, what it was launched
with); anything orch keeps on the laptop is a cache of them.
"""
from __future__ import annotations

LABEL_JOB = "orch.job"
LABEL_CREATED_BY = "orch.created-by"
LABEL_CREATED_AT = "orch.created-at"
LABEL_IMAGE_HASH = "orch.image-hash"
LABEL_DATA = "orch.data"
LABEL_OUTPUTS = "orch.outputs"
LABEL_SOURCE = "orch.source"  # the launch's --data as given (a local folder resolved): a second launch compares it
# The launch's trainer arguments as given (JSON): the command may differ (orch adds --max-hours under a hard cap).
LABEL_TRAINER_ARGS = "orch.trainer-args"
LABEL_AUTOSTOP = "orch.autostop-minutes"  # what the instance was told: it stops this long after the job ends
# A TensorBoard orch runs beside a job (`orch tensorboard`): the job's name. Not `orch.job`, on purpose: what
# carries that is the job's trainer (`orch status`, and the instance's autostop waits while one runs).
LABEL_TENSORBOARD = "orch.tensorboard"


def container_name(job: str) -> str:
    return f"orch-{job}"


def tensorboard_container_name(job: str) -> str:
    return f"orch-{job}.tensorboard"  # no job's container: a job name has no "."


def node_key(job: str, node: int) -> str:
    """What node `node` of a `--nodes N` job is known by on its machine (its container, `orch.job` label and
    folders): the job's own name on node 0, `JOB.nodeI` on the others. Never a job's name (a job name has no "."),
    and two nodes on one engine (one big machine, the tests' loopback) stay apart."""
    return job if node == 0 else f"{job}.node{node}"
