"""`orch launch --spot --recover`: follow the job's logs and, when AWS reclaims its spot instance, launch again.

This runs in the user's terminal: if it closes, nothing relaunches the job (`orch launch --name JOB
--resume` does it by hand). It relaunches only after a spot reclaim, never after the user's own or
the autostop's termination.
"""
from __future__ import annotations

from dataclasses import replace
from typing import Callable

from orchestrator import state
from orchestrator.cloud import aws, instances
from orchestrator.errors import FlowError, MachineLost
from orchestrator.job.ended import after_the_job
from orchestrator.job.logs import follow
from orchestrator.lifecycle import machines
from orchestrator.lifecycle.launch import launch
from orchestrator.lifecycle.progress import Say, quiet
from orchestrator.paths import default_resume_dir
from orchestrator.records import JobEnded, LaunchConfig


def machine_lost(region: str, instance_id: str) -> Callable[[], bool]:
    def lost() -> bool:
        instance = instances.describe_instance(region, instance_id)
        return instance is None or instance.state not in ("pending", "running")
    return lost


def follow_and_recover(cfg: LaunchConfig, say: Say = quiet, say_after: Say | None = None) -> int:
    """Follow the job's logs; when AWS reclaims its spot instance, launch again with resume.

    Returns the trainer's exit code. Runs in this process only: if this terminal closes, nothing
    relaunches the job (`orch launch --name JOB --resume` does it by hand). Once the trainer has
    ended for good, `say_after` is told when autostop takes the instance's disks, as in `orch logs --follow`.
    """
    ended: list[JobEnded] = []
    code = _follow_and_recover(cfg, say, ended.append)
    if ended and say_after is not None:
        say_after(after_the_job(ended[0], cfg.settings.checkpoint_bucket, cfg.keep_volume))
    return code


def _follow_and_recover(cfg: LaunchConfig, say: Say, ended: Callable[[JobEnded], None]) -> int:
    s = cfg.settings
    check_s = min(30.0, max(0.5, 10 * s.poll_interval_s))
    recoveries = 0
    if not s.checkpoint_bucket and not cfg.keep_volume:
        say(f"  warning: no --checkpoint-bucket or --keep-volume: after a reclaim, only a local copy in "
            f"{default_resume_dir(cfg.job)} "
            f"(orch fetch-weights {cfg.job} --which all) can be resumed from")
    while True:
        record = state.get(cfg.job)
        region = (record.region if record else None) or s.region
        instance_id = record.instance_id if record else None
        try:
            code = follow(machines.machine_for(cfg.job, s), follow=True,
                          machine_lost=machine_lost(region, instance_id) if instance_id else None,
                          check_s=check_s, ended=ended)
        except MachineLost:
            code = None
        instance = instances.describe_instance(region, instance_id) if instance_id else None
        if instance is not None and instance.state == "shutting-down":
            instance = instances.wait_for_state(region, instance.instance_id, {"terminated"}, s.wait_timeout_s,
                                          s.poll_interval_s)
        reclaimed = instance is not None and instance.state_reason == aws.SPOT_RECLAIMED
        if code == 0 or (code is not None and not reclaimed):
            return code
        if not reclaimed:
            state_now = instance.state if instance else "gone"
            raise FlowError(f"the job's instance {instance_id} is {state_now}, and not because AWS reclaimed it, so "
                            f"--recover does not relaunch it. See `orch status {cfg.job}`; to carry on from the last "
                            f"checkpoint: orch launch --name {cfg.job} --resume")
        if recoveries >= cfg.max_recoveries:
            raise FlowError(f"AWS reclaimed the spot instance {instance_id} again, after {recoveries} recoveries "
                            f"(--max-recoveries {cfg.max_recoveries}); giving up. The checkpoints are where the "
                            f"job put them: `orch launch --name {cfg.job} --resume` carries on (try --on-demand).")
        recoveries += 1
        say(f"[orch] AWS reclaimed the spot instance {instance_id}: launching a new one and resuming from the "
            f"last checkpoint (recovery {recoveries} of {cfg.max_recoveries})")
        state.update(cfg.job, status="interrupted")
        launch(replace(cfg, resume=True), say)
        say(f"[orch] job {cfg.job} resumed; following its logs again")
