"""`--resume`: what a job was launched with, and where its newest checkpoint comes back from.

The sources, in order: the checkpoint bucket, a local copy (`orch fetch-weights --which all`),
the root volume a `--keep-volume` job left (the new instance starts in its zone). Settled before
anything is created, and handed to the job as a `records.Restore` (job/restore.py brings it back).
"""
from __future__ import annotations

from pathlib import Path

from orchestrator import state
from orchestrator.cloud import aws, instances, volumes
from orchestrator.config import ConfigError, Settings
from orchestrator.errors import NoCheckpointSource
from orchestrator.job.restore import RestoreError, local_copy
from orchestrator.lifecycle import machines
from orchestrator.lifecycle.progress import Say
from orchestrator.machines.instance import ROOT_VOLUME_ROOT
from orchestrator.paths import default_resume_dir
from orchestrator.records import LaunchConfig, Restore, whole


def launch_record(cfg: LaunchConfig) -> state.LaunchRecord:
    spec, s = cfg.job_spec, cfg.settings
    data = spec.data
    if data != "demo" and not data.startswith(("s3://", "dataset:", "kaggle:")):
        data = str(Path(data).expanduser().resolve())  # a resume may run from another folder
    return state.LaunchRecord(
        data=data, trainer_args=tuple(spec.trainer_args), image=spec.image, gpus=spec.gpus,
        instance_type=cfg.instance_type, region=s.region, spot=cfg.spot, checkpoint_bucket=s.checkpoint_bucket,
        iam_instance_profile=s.iam_instance_profile, subnet_id=s.subnet_id, volume_gb=s.volume_gb, remote_root=s.remote_root,
        recover=cfg.recover, max_recoveries=cfg.max_recoveries, keep_volume=cfg.keep_volume, nodes=cfg.nodes,
    )


def recorded_launch(job: str, settings: Settings) -> state.LaunchRecord | None:
    """What the job was launched with: the state file, else what its newest instance's tags say."""
    record = state.get(job)
    if record and record.launch:
        return record.launch
    if machines.is_local(job):
        return None
    region = (record.region if record else None) or settings.region
    found = instances.find_instances(region, job, include_terminated=True)
    if not found:
        return None
    newest = found[0]
    return state.LaunchRecord(instance_type=newest.instance_type, region=region, spot=newest.spot,
                              checkpoint_bucket=newest.tags.get(aws.TAG_CHECKPOINT_BUCKET),
                              iam_instance_profile=newest.tags.get(aws.TAG_INSTANCE_PROFILE),
                              subnet_id=newest.tags.get(aws.TAG_SUBNET),
                              recover=newest.tags.get(aws.TAG_RECOVER) == "on",
                              keep_volume=newest.tags.get(aws.TAG_KEEP_VOLUME) == "on",
                              nodes=max(1, whole(newest.tags.get(aws.TAG_NODES, "1"), 1)))


def remote_root_for(job: str, settings: Settings) -> str | None:
    """The job folder's root on the machine: the setting, else what the job was launched with."""
    record = state.get(job)
    return settings.remote_root or (record.launch.remote_root if record and record.launch else None)


def outputs_root_for(job: str) -> str | None:
    """Where the job's outputs are when not under its job folder: on the root volume (--keep-volume)."""
    record = state.get(job)
    return ROOT_VOLUME_ROOT if record and record.launch and record.launch.keep_volume else None


def last_reclaimed(region: str, job: str) -> bool:
    found = instances.find_instances(region, job, include_terminated=True)
    return bool(found) and found[0].state_reason == aws.SPOT_RECLAIMED



def resume_sources(cfg: LaunchConfig, say: Say):
    """The checkpoint sources for --resume; refuses (exit 2, nothing created) when there is none."""
    if cfg.job_spec is None:
        raise ConfigError(f"--resume restarts training, so it needs the job's dataset: job {cfg.job!r} has none "
                          "recorded. Add --data PATH|demo|s3://... (and the trainer arguments after `--`).")
    folder = Path(cfg.resume_from).expanduser() if cfg.resume_from else default_resume_dir(cfg.job)
    try:
        local = local_copy(folder)
    except RestoreError as e:
        raise NoCheckpointSource(str(e)) from None
    if cfg.resume_from and local is None:
        raise NoCheckpointSource(f"--resume-from {cfg.resume_from}: there is no checkpoints/last.pt in it. "
                                 f"`orch fetch-weights {cfg.job} --which all --dest {cfg.resume_from}` writes one "
                                 "while the job's machine is up.")
    bucket = cfg.settings.checkpoint_bucket
    if bucket or local:
        sources = ([f"{bucket} (copied on the new instance)"] if bucket else []) + ([str(folder)] if local else [])
        say(f"--resume: the checkpoint comes from {', else '.join(sources)}")
        return Restore(bucket=bucket, local_dir=str(folder) if local else None)
    s = cfg.settings
    live = []
    for found in instances.find_instances(cfg.region, cfg.job):
        if found.state == "shutting-down":  # a reclaim: its root volume detaches once it is gone
            instances.wait_for_state(cfg.region, found.instance_id, {"terminated"}, s.wait_timeout_s, s.poll_interval_s)
        elif found.node == 0:  # of a --nodes job, node 0 alone holds the outputs (the others get them from it)
            live.append(found)
    # Only volumes launched with --keep-volume hold the job's outputs (not one kept at teardown).
    kept = [v for v in volumes.kept_volumes(cfg.region, cfg.job, wait_s=min(s.wait_timeout_s, 120),
                                        poll_s=s.poll_interval_s) if v.kept]
    if kept and (not live or live[0].zone == kept[0].zone):
        # With a live instance too: an earlier resume may have stopped before the restore (its machine, a good
        # last.pt already there, is then kept as is: restore.restore_checkpoints).
        say(f"--resume: the checkpoint comes from the kept volume {kept[0].volume_id} ({kept[0].zone}), "
            f"attached to the {'instance' if live else 'new instance'} while the job starts")
        return Restore(volume_id=kept[0].volume_id)
    if live:
        return None  # its outputs are still on it
    raise NoCheckpointSource(
        f"--resume: job {cfg.job!r} has no live instance and nothing to resume from: no checkpoint bucket was "
        f"recorded for it, no volume of it was kept and there is no local copy in {folder}/checkpoints. "
        "Nothing was created.\n"
        f"Fix: pass --resume-from DIR (a copy made with `orch fetch-weights {cfg.job} --which all --dest DIR`), "
        "or --checkpoint-bucket s3://... if its instance copied checkpoints there; or start over without --resume "
        "(and with --keep-volume, so that the next reclaim leaves its outputs behind)."
    )
