"""`orch launch --nodes N`: one training run over N instances of one type.

    orch launch --instance g4dn.12xlarge --nodes 4 --name rn50x16 --data dataset:imagenet-256 -- --recipe t4-rn50

The instances are the job's, each tagged `orch:job` and `orch:node` (0 to N-1), in one cluster
placement group where the type can join one (else in one zone), behind the job's security group,
whose members reach each other on every port. Each node gets the data and the trainer image as a
one-instance job does (job/start.py, on all nodes at once), then runs `trainer train --nnodes N
--node-rank I --master NODE0:PORT`: the trainer's launcher meets on node 0 (torch's static
rendezvous, so node 0 holds global rank 0, which alone writes checkpoints and metrics). On node I>0
the trainer is known by `labels.node_key` (its container, folders and `orch.job` label).

A node that is lost (a reclaim, a crash) ends the run on the others (the trainer's exit 4,
"peer-lost"); `orch launch --name JOB --resume` starts the missing nodes and every node continues
from node 0's last.pt. What a launch finds by its tags it keeps: only missing nodes are started.
"""
from __future__ import annotations

import contextlib
import hashlib
import threading
from dataclasses import replace
from typing import Callable

from orchestrator import state
from orchestrator.cloud import aws, instances, network, placement
from orchestrator.errors import FlowError, JobError
from orchestrator.job.start import start
from orchestrator.labels import node_key
from orchestrator.lifecycle import machines
from orchestrator.lifecycle.keys import ensure_key
from orchestrator.lifecycle.plan import on_demand_plan, preflight
from orchestrator.lifecycle.progress import Say, phase
from orchestrator.lifecycle.resume import launch_record
from orchestrator.machines.base import Machine
from orchestrator.paths import key_path
from orchestrator.records import ContainerStatus, Instance, JobSpec, LaunchConfig, LaunchPlan, whole

PORT_BASE, PORT_SPAN = 29500, 500  # torch's default master port, and above it: one per job (two jobs on one box)


def rendezvous_port(job: str) -> int:
    """Node 0's port for the run's rendezvous: the same for every launch of the job, apart from other jobs'."""
    return PORT_BASE + int(hashlib.sha256(job.encode()).hexdigest()[:8], 16) % PORT_SPAN


def node_args(trainer_args: tuple[str, ...], nodes: int, node: int, master: str) -> tuple[str, ...]:
    """`trainer train`'s arguments on node `node`: the user's, then where the run meets (refused from the user:
    trainer_args.SET_BY_ORCH)."""
    return (*trainer_args, "--nnodes", str(nodes), "--node-rank", str(node), "--master", master)


def find_or_create(cfg: LaunchConfig, p: LaunchPlan, say: Say) -> tuple[list[Instance], LaunchPlan]:
    """The job's N instances, node 0 first: those tagged for it kept, the missing ones started (in one zone, in the
    placement group), after the quota check for them alone. Recorded in the state file (node 0's as the job's).
    Returned with the plan they were started on (an on-demand fallback changes it)."""
    s = cfg.settings
    with phase(f"look for the job's {cfg.nodes} instances (tags orch:job, orch:node)", say):
        by_node: dict[int, Instance] = {}
        for found in instances.usable_instances(p.region, cfg.job, s.wait_timeout_s, s.poll_interval_s):
            by_node.setdefault(found.node, found)  # newest first: the newest of a node is kept
        counts = {whole(i.tags.get(aws.TAG_NODES, "1"), 1) for i in by_node.values()}
        if counts - {cfg.nodes}:
            raise FlowError(f"Job {cfg.job} has instances of a launch on {max(counts - {cfg.nodes})} instance(s), not "
                            f"{cfg.nodes}: a run can't mix them. `orch teardown {cfg.job}` first to change the count "
                            f"(fetch its weights first), or launch with --nodes {max(counts - {cfg.nodes})}.")
        for n in sorted(n for n in by_node if 0 <= n < cfg.nodes):
            say(f"  node {n}: {by_node[n].instance_id} ({by_node[n].state}); kept")
        missing = [n for n in range(cfg.nodes) if n not in by_node]
        say(f"  to start: {', '.join(f'node {n}' for n in missing) if missing else 'none'}")
    fallback = on_demand_plan(cfg, p) if p.spot and p.allow_on_demand_fallback else None
    if missing:
        with phase(f"pre-flight (quota, {len(missing)} x {p.vcpus} vCPUs)", say):
            check = preflight(p, count=len(missing))
            say("  " + check.summary)
            if check.spot_quota_too_low and fallback is not None:
                p, fallback = fallback, None
    record = state.get(cfg.job)
    state.update(cfg.job, target="aws", region=p.region, instance_type=p.instance_type, spot=p.spot,
                 ssh_user=s.ssh_user, ssh_proxy_command=s.ssh_proxy_command,
                 status=record.status if record else "launching",
                 launch=launch_record(cfg) if not by_node else (record.launch if record else None))
    with phase("key pair, security group (its members reach each other) and placement group", say):
        key = ensure_key(p.region, cfg.job, in_use=bool(by_node))
        group_id = network.ensure_security_group(p.region, cfg.job, p.ssh_cidr, p.vpc_id)
        placement.allow_members(p.region, group_id)
        if p.placement_group:
            say(f"  {placement.ensure_placement_group(p.region, cfg.job)} (cluster)")
        state.update(cfg.job, key_name=key.name, key_path=str(key_path(cfg.job)), security_group_id=group_id)
    zone = by_node[0].zone if 0 in by_node else next((i.zone for i in by_node.values() if i.zone), None)
    for n in missing:
        tags = p.tags + ((aws.TAG_NODE, str(n)), (aws.TAG_NODES, str(cfg.nodes)))
        with phase(f"run instance: node {n}", say):
            node_plan = replace(p, zones=(zone,) if zone else p.zones, tags=tags)
            started = instances.run_instance(node_plan, group_id, log=lambda m: say("  " + m),
                                             on_demand_user_data=fallback.user_data if fallback else None)
            say(f"  {started.instance_id} in {started.zone}{' (spot)' if started.spot else ''}")
            by_node[n], zone = started, started.zone
    for n in range(cfg.nodes):
        instances.start_if_stopped(p.region, by_node[n], s.wait_timeout_s, s.poll_interval_s)
    state.update(cfg.job, instance_id=by_node[0].instance_id, spot=by_node[0].spot, status=by_node[0].state)
    return [by_node[n] for n in range(cfg.nodes)], p


def wait_running(cfg: LaunchConfig, nodes: list[Instance], say: Say) -> list[Instance]:
    s = cfg.settings
    with phase("wait until every node runs", say):
        up = [instances.wait_for_state(cfg.region, i.instance_id, {"running"}, s.wait_timeout_s, s.poll_interval_s)
              for i in nodes]
        for n, i in enumerate(up):
            say(f"  node {n}: {i.instance_id} {i.public_ip or i.private_ip} (private {i.private_ip})")
    state.update(cfg.job, status="running", public_ip=up[0].public_ip, private_ip=up[0].private_ip)
    return up


def master_of(cfg: LaunchConfig, node0: Instance) -> str:
    """HOST:PORT where the nodes meet: node 0's private address (or the rendezvous_host setting)."""
    host = cfg.settings.rendezvous_host or node0.private_ip
    if not host:
        raise FlowError(f"Node 0 of {cfg.job} ({node0.instance_id}) has no private address yet: run the same "
                        "`orch launch` again in a minute.")
    return f"{host}:{rendezvous_port(cfg.job)}"


def start_nodes(cfg: LaunchConfig, nodes: list[Instance], spec: JobSpec, say: Say) -> list[ContainerStatus]:
    """The trainer on every instance of the job (`start_together`), meeting on node 0's private address."""
    return start_together(cfg.job, len(nodes), master_of(cfg, nodes[0]), spec, say,
                          lambda n: machines.machine_for(cfg.job, cfg.settings, node=n))


class _Together:
    """The nodes' trainers start at once, or none does: each node's start waits here (`go`) once its data and image
    are ready. A node whose start fails, a node found still running its trainer (the others would meet without
    it), or a Ctrl-C here stops the others before their trainers start."""

    def __init__(self, count: int):
        self.barrier = threading.Barrier(count)
        self.running: list[int] = []  # nodes whose trainer was already running

    def go(self) -> None:
        self.barrier.wait()
        if self.running:
            raise JobError(f"not started: node(s) {', '.join(map(str, self.running))} still run the trainer of an "
                           "earlier start, which the others can't join. A run that lost a node stops by itself "
                           "(within dist_timeout_minutes): launch again then, or `orch teardown` first")

    def already_running(self, node: int) -> None:
        self.running.append(node)
        with contextlib.suppress(threading.BrokenBarrierError):
            self.barrier.wait()


def start_together(job: str, count: int, master: str, spec: JobSpec, say: Say,
                   machine_of: Callable[[int], Machine]) -> list[ContainerStatus]:
    """The trainer on each of `count` nodes (node I's machine: `machine_of(I)`). Each node gets its data and image
    as a one-machine job does, all nodes at once; the trainers start together once every node is ready (a node's
    data may take an hour, the run's rendezvous waits minutes), and none starts if a node's start fails. Node 0
    alone restores a checkpoint (its trainer sends it to the others). No trainer restarts by itself: one node's
    restart can't rejoin a run whose other nodes have stopped; `orch launch --resume` starts them all again."""
    say(f"  the nodes meet at {master} (node 0)")
    together = _Together(count)
    results: dict[int, ContainerStatus | BaseException] = {}

    def one(n: int) -> None:
        node_spec = replace(spec, job=node_key(job, n), restore=spec.restore if n == 0 else None,
                            trainer_args=node_args(spec.trainer_args, count, n, master), max_restarts=0)
        try:
            status = start(machine_of(n), node_spec, say=lambda m: say(f"  node {n}: {m.strip()}"), go=together.go)
        except BaseException as e:
            together.barrier.abort()  # the other nodes' trainers are not started
            results[n] = e
            return
        if status.already_running:
            together.already_running(n)
        results[n] = status

    # Daemon threads: a Ctrl-C here aborts the barrier (no trainer starts) and does not wait for their syncs.
    threads = [threading.Thread(target=one, args=(n,), name=f"orch-node-{n}", daemon=True) for n in range(count)]
    for t in threads:
        t.start()
    try:
        for t in threads:
            while t.is_alive():
                t.join(0.5)
    except BaseException:
        together.barrier.abort()
        raise
    failures = [(n, r) for n, r in sorted(results.items()) if isinstance(r, BaseException)]
    causes = [(n, e) for n, e in failures if not isinstance(e, threading.BrokenBarrierError)] or failures
    for n, error in failures:
        say(f"  node {n}: " + ("not started: another node's start failed" if isinstance(
            error, threading.BrokenBarrierError) else f"not started ({type(error).__name__})"))
    if causes:
        raise causes[0][1]
    return [results[n] for n in range(count)]
