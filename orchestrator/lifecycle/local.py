"""`orch launch --target local`: the job on this machine (its Docker engine, else a trainer process)."""
from __future__ import annotations

from dataclasses import replace

from orchestrator import state
from orchestrator.errors import FlowError
from orchestrator.job.start import start
from orchestrator.labels import node_key
from orchestrator.lifecycle import datasets, machines, nodes
from orchestrator.lifecycle.plan import check_dataset
from orchestrator.lifecycle.progress import Say, phase
from orchestrator.records import ContainerStatus, Instance, JobSpec, LaunchConfig
from orchestrator.trainer_args import budget_from_flag, max_hours_of, with_max_hours


def launch_local(cfg: LaunchConfig, say: Say) -> Instance:
    record = state.get(cfg.job)
    if record and not machines.is_local(cfg.job):
        raise FlowError(f"Job {cfg.job!r} already exists on AWS. Choose another --name.")
    if cfg.job_spec is not None and (name := datasets.name_of(cfg.job_spec.data)) is not None:
        with phase(f"dataset {name}", say):  # a kept dataset: the copy restored from its shards
            folder = datasets.restore_here(name, say, bucket=cfg.settings.bucket, region=cfg.settings.region)
            cfg = replace(cfg, job_spec=replace(cfg.job_spec, data=folder))
    check_dataset(cfg)
    state.update(cfg.job, target=machines.LOCAL, status="running", nodes=cfg.nodes)
    if cfg.job_spec is not None:
        spec, budget = cfg.job_spec, None
        if cfg.settings.max_hours:  # no watcher here: the trainer's own budget is the cap
            budget = budget_from_flag(cfg.settings.max_hours, max_hours_of(spec.trainer_args))
            spec = replace(spec, trainer_args=with_max_hours(spec.trainer_args, budget.hours))
        with phase("start the job on this machine" + (f" ({cfg.nodes} nodes)" if cfg.nodes > 1 else ""), say):
            try:
                status = (_start_nodes_here(cfg.job, cfg.nodes, spec, say) if cfg.nodes > 1 else
                          start(machines.local_machine_to_start(cfg.job), spec))
            except Exception:
                if record is None:  # nothing was started: don't list a job that never ran
                    state.remove(cfg.job)
                raise
            if budget is not None and not status.already_running:
                status = replace(status, budget=budget.note)
            say_started(status, cfg.job, say, stop_first=(
                f"`orch teardown {cfg.job} --yes` (its outputs{f' at {status.outputs}' if status.outputs else ''} "
                "are kept, and a launch under this name continues from them, on the same data)"),
                start_over="delete that folder, or choose another --name")
    return Instance(job=cfg.job, provider="local", instance_id="local", state="running",
                    instance_type="local")


def _start_nodes_here(job: str, count: int, spec: JobSpec, say: Say) -> ContainerStatus:
    """`--target local --nodes N`: the N node trainers of one run on this machine, as on N instances (meeting on
    127.0.0.1), each known by `labels.node_key`; node 0's status. Each sees every GPU here: a way to try the flow,
    not a speed-up."""
    master = f"127.0.0.1:{nodes.rendezvous_port(job)}"
    return nodes.start_together(job, count, master, spec, say,
                                lambda n: machines.local_machine_to_start(node_key(job, n)))[0]


def say_started(status: ContainerStatus, job: str, say: Say, stop_first: str, start_over: str) -> None:
    """The job's state after a start; what a launch did not apply (the job was running) or continues from."""
    say(f"  {'trainer process' if status.runner == 'process' else 'container'} {status.state}")
    if status.budget:
        say(f"  {status.budget}")
    if status.not_applied:
        say(f"  warning: job {job} was already running, so this launch changed nothing. NOT applied: "
            f"{'; '.join(status.not_applied)}. To run with them: {stop_first} first, then launch again; "
            "or choose another --name.")
    if status.continues_from:
        say(f"  continues from the checkpoint in {status.continues_from} (a launch under an existing name resumes "
            f"it); to start over, {start_over}")
