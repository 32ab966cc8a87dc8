"""One training process per GPU: `trainer train` on a machine with several GPUs uses them all.

Before, such a run trained on cuda:0 and left the others idle unless it was started under torchrun
by hand (and `orch launch` on a 4-GPU instance, which starts `trainer train`, always did). Now
`trainer train` counts the GPUs (`--nproc auto`) and, with more than one, runs itself once per GPU
through torch's own launcher (torch.distributed.run, what `torchrun --standalone` is), each process
a DDP rank. `--nproc 1` keeps one process; `--nproc N` on a CPU runs N gloo processes (the tests).

The exit status stays the single process's: 0 when done, 143/130/129 after SIGTERM/SIGINT/SIGHUP
(torch's launcher passes the signal to every rank, each saves its part and exits), 2 for bad input;
torchrun alone would turn each of those into 1.
"""
from __future__ import annotations

import dataclasses
import os
import uuid

from trainer.errors import TrainerError

AUTO = "auto"


@dataclasses.dataclass(frozen=True)
class Nodes:
    """The machines of one run: `count` of them, this one's `rank`, and node 0's HOST:PORT (`master`),
    where torch's launcher meets them (its static rendezvous: node 0's processes are ranks 0..n-1, so
    the process that writes checkpoints is on the machine orch reads them from)."""
    count: int = 1
    rank: int = 0
    master: str = ""

    @classmethod
    def checked(cls, count: int, rank: int, master: str | None) -> "Nodes":
        if count <= 1:
            if rank or master:
                raise TrainerError("--node-rank and --master go with --nnodes N (N > 1): the machines of one run.")
            return cls()
        if not 0 <= rank < count:
            raise TrainerError(f"--node-rank {rank}: give 0 to {count - 1} for --nnodes {count}.")
        host, _, port = (master or "").rpartition(":")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise TrainerError(f"--master {master!r}: give node 0's HOST:PORT, e.g. --master 10.0.1.23:29500, the same "
                               f"on every node (with --nnodes {count}).")
        return cls(count, rank, master)


def launching(n: int, nodes: Nodes) -> bool:
    """Whether this `trainer train` starts the processes (torch's launcher) rather than being one of them."""
    return int(os.environ.get("WORLD_SIZE", "1")) <= 1 and (n > 1 or nodes.count > 1)


def processes_wanted(nproc: str, device: str) -> int:
    """How many training processes `trainer train --nproc NPROC --device DEVICE` runs on this machine."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        return 1   # already one rank of several (torchrun, or the launch below)
    if nproc != AUTO:
        try:
            n = int(nproc)
        except ValueError:
            n = 0
        if n < 1:
            raise TrainerError(f"--nproc {nproc}: give a number of processes (1 or more) or `auto` (one per GPU).")
        return n
    if device not in (AUTO, "cuda"):
        return 1   # the CPU, or one GPU the user picked (cuda:1)
    import torch

    return max(1, torch.cuda.device_count()) if torch.cuda.is_available() else 1


def run_per_process(n: int, argv: list[str], nodes: Nodes = Nodes()) -> int:
    """Run `python -m trainer ARGV` as `n` DDP ranks on this machine (of `nodes`); the exit status they agree on."""
    from torch.distributed import run as torchrun
    from torch.distributed.elastic.multiprocessing import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import elastic_launch

    # torchrun's own parser would read the trainer's options as its own (--nproc as --nproc-per-node),
    # so it parses only its part; ARGV is added as it came (each rank's --nproc is moot: WORLD_SIZE
    # is set). A rank saving after a signal gets as long as it needs (docker stop's timeout rules).
    # The rendezvous is `torchrun --standalone`'s (which torchrun.run, not its parser, fills in).
    # The spellings every torch since 1.10 takes (the NGC image's 2.6 included).
    if nodes.count > 1:
        # The static rendezvous, not c10d: c10d numbers the machines by their sorted host names, so
        # rank 0 (the one that writes checkpoints) could land on any of them.
        host, _, port = nodes.master.rpartition(":")
        meet = ["--nnodes", str(nodes.count), "--node_rank", str(nodes.rank), "--master_addr", host.strip("[]"),
                "--master_port", port]
    else:
        meet = ["--nnodes", "1", "--rdzv_backend", "c10d", "--rdzv_endpoint", "localhost:0", "--rdzv_id",
                str(uuid.uuid4())]
    args = torchrun.parse_args([*meet, "--nproc_per_node", str(n), "--max_restarts", "0", "-m", "trainer"])
    # torchrun sets 1 thread per rank where this is unset, with a banner; a CPU's share is what a rank can use.
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // n)))
    config, cmd, cmd_args = torchrun.config_from_args(args)
    if hasattr(config, "shutdown_timeout"):   # newer torch; older ones give 30 s, enough for a save
        config = dataclasses.replace(config, shutdown_timeout=600)
    try:
        elastic_launch(config=config, entrypoint=cmd)(*cmd_args, *argv)
    except ChildFailedError as exc:
        return _agreed_status([failure.exitcode for failure in exc.failures.values()])
    except SignalException as exc:   # we were signalled: the ranks were too, and have saved and exited
        return 128 + int(exc.sigval)
    return 0


def _agreed_status(codes: list[int]) -> int:
    """The ranks that failed all exit alike for a stop or bad input; a signal death reads as 128+N."""
    codes = [128 - c if c < 0 else c for c in codes]
    for code in (2, 143, 130, 129):   # bad input first: it is the one to fix
        if code in codes:
            return code
    return max(codes) if codes else 1
