"""`orch`: from a dataset and an AWS account to trained weights.

Each command parses its flags, calls one function in `orchestrator.flow` (or `orchestrator.job`)
and prints the result. Nothing heavy is imported at module level: `orch --help` stays fast.
"""
from __future__ import annotations

import contextlib
import json
import os
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Iterator, List, Optional

import typer

app = typer.Typer(
    name="orch",
    help="Train an image classifier on a rented GPU (or this machine) and bring the weights home.\n\n"
         "\b\nExample: orch launch --instance g4dn.2xlarge --name resnet50 --iam-instance-profile orch-trainer "
         "--data s3://my-bucket/imagenet -- --recipe t4-rn50",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,  # plain click help, examples unwrapped (\b): rich's table truncates long options
)

EXIT_ERROR = 1
EXIT_USAGE = 2


def _out(message: str) -> None:
    typer.echo(message)


def _err(message: str) -> None:
    typer.echo(message, err=True)


class _Job:
    """The job a command is about, once it is known: an interrupted command names it."""

    name: str | None = None
    generated = False  # the name was made up (job-DATE-TIME): the same command again would make another


@contextlib.contextmanager
def _errors() -> Iterator[_Job]:
    """Turn the errors we expect into a clear message and an exit code, never a traceback."""
    from orchestrator.config import ConfigError
    from orchestrator.flow import NoCheckpointSource
    from orchestrator.state import StateError

    about = _Job()
    try:
        yield about
    except typer.Exit:
        raise
    except (ConfigError, NoCheckpointSource) as e:
        _err(f"Error: {e}")
        raise typer.Exit(EXIT_USAGE) from None
    except (StateError, RuntimeError) as e:
        if isinstance(e, NotImplementedError):
            _err("Error: this part of orch (the job on the machine) is not available in this build yet.")
            raise typer.Exit(EXIT_ERROR) from None
        _err(f"Error: {_friendly(e) or e}")
        raise typer.Exit(EXIT_ERROR) from None
    except KeyboardInterrupt:
        if about.name:
            again = f"run the same command again{f' with --name {about.name}' if about.generated else ''}"
            _err(f"Interrupted. Everything created so far is tagged orch:job={about.name}: {again} to resume, "
                 f"or `orch teardown {about.name}` to remove it.")
        else:
            _err("Interrupted. Everything created so far is tagged with its job's name (`orch list` shows it): run "
                 "the same command again to resume, or `orch teardown NAME` to remove it.")
        raise typer.Exit(130) from None
    except Exception as e:
        message = _friendly(e)
        if message is None:
            raise
        _err(f"Error: {message}")
        raise typer.Exit(EXIT_ERROR) from None


def _friendly(e: BaseException) -> str | None:
    if type(e).__module__.startswith("botocore"):
        from orchestrator.providers.ec2 import friendly_error

        return friendly_error(e)
    return None


def _settings(**flags):
    from orchestrator.config import load_settings

    return load_settings(**flags)


# --- launch -----------------------------------------------------------------------------------


@app.command(context_settings={"allow_extra_args": True})
def launch(
    trainer_args: Optional[List[str]] = typer.Argument(
        None, help="After `--`: arguments passed to `trainer train` on the machine.", show_default=False),
    instance: Optional[str] = typer.Option(None, "--instance", "-i", help="EC2 instance type, e.g. g4dn.2xlarge."),
    name: Optional[str] = typer.Option(None, "--name", "-n", help="Job name, e.g. resnet50 (default: job-DATE-TIME). The name of a job whose "
                                                                      "instance is up attaches to it; after a reclaim, add --resume."),
    region: Optional[str] = typer.Option(None, "--region", help="AWS region (default: config, then AWS_DEFAULT_REGION)."),
    zone: Optional[str] = typer.Option(None, "--zone", help="Availability zone (default: each zone of the region in turn)."),
    spot: Optional[bool] = typer.Option(None, "--spot/--on-demand", show_default=False,
                                        help="Spot (cheaper, can be reclaimed) or on-demand (the default)."),
    on_demand_fallback: Optional[bool] = typer.Option(None, "--on-demand-fallback/--no-on-demand-fallback",
                                                      help="With --spot: use on-demand when no zone has spot capacity."),
    volume_gb: Optional[int] = typer.Option(None, "--volume-gb", help="Root gp3 volume size in GiB (default 200; ImageNet: 400)."),
    volume_throughput: Optional[int] = typer.Option(None, "--volume-throughput", help="gp3 throughput, MiB/s (125-1000)."),
    ami: Optional[str] = typer.Option(None, "--ami", help="AMI id (default: the NVIDIA Deep Learning AMI)."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Print the plan and $/hour; create nothing."),
    ssh_cidr: Optional[str] = typer.Option(None, "--ssh-cidr", help="Who may SSH in (default: your public IP as /32)."),
    ssh_user: Optional[str] = typer.Option(None, "--ssh-user", help="SSH user on the instance (default: ubuntu)."),
    ssh_proxy_command: Optional[str] = typer.Option(None, "--ssh-proxy-command", help="OpenSSH ProxyCommand to reach the instance (bastion, SSM)."),
    iam_instance_profile: Optional[str] = typer.Option(None, "--iam-instance-profile", help="Instance profile name (to read s3:// data)."),
    autostop_minutes: Optional[int] = typer.Option(None, "--autostop-minutes", help="Shut the instance down N minutes after the job ends (0: never)."),
    max_hours: Optional[float] = typer.Option(None, "--max-hours", help="Hard cap: stop the job and the instance after this many hours."),
    max_dollars: Optional[float] = typer.Option(None, "--max-dollars", help="Hard cap in USD, from the hourly price."),
    checkpoint_bucket: Optional[str] = typer.Option(None, "--checkpoint-bucket", help="s3://bucket/prefix the instance copies each checkpoint to (with its role), "
                                                                "and --resume copies back from, e.g. s3://my-bucket/orch-ckpt."),
    target: str = typer.Option("aws", "--target", help="aws (an EC2 instance) or local (this machine's Docker)."),
    data: Optional[str] = typer.Option(None, "--data", help="Dataset: a local folder, 'demo', or s3://... Without it, launch only provisions."),
    image: Optional[str] = typer.Option(None, "--image", help="Trainer container image (default: build from the project's Dockerfile)."),
    gpus: Optional[bool] = typer.Option(None, "--gpus/--no-gpus", show_default=False,
                                        help="Give the container the GPUs (the default), or not."),
    remote_root: Optional[str] = typer.Option(
        None, "--remote-root", help="Folder on the machine for job folders, e.g. /data/orch "
                                    "(default: /mnt/orch when the instance has a fast disk there, else ~/orch)."),
    resume: bool = typer.Option(
        False, "--resume", help="Continue a reclaimed or terminated job from its newest checkpoint on a new instance, "
                                "e.g. orch launch --name resnet50 --resume. Options not given default to the job's "
                                "first launch. The checkpoint comes from --checkpoint-bucket (copied on the instance), "
                                "else from --resume-from, else from the volume a --keep-volume job left (the new "
                                "instance starts in its zone). A job whose instance still runs is re-attached, "
                                "not duplicated."),
    resume_from: Optional[Path] = typer.Option(
        None, "--resume-from", help="With --resume: a local copy of the checkpoints, as written by "
                                    "`orch fetch-weights JOB --which all --dest DIR`, e.g. --resume-from ./weights/resnet50 "
                                    "(default: ./weights/JOB when it holds checkpoints/last.pt)."),
    recover: Optional[bool] = typer.Option(
        None, "--recover/--no-recover", show_default=False,
        help="With --spot: stay attached following the logs and, when AWS reclaims the instance, launch a new one "
             "and resume (like --resume), e.g. orch launch --spot --recover --checkpoint-bucket s3://b/ckpt ... "
             "This runs in this terminal: if it closes, nothing relaunches the job (orch has no watcher in the cloud)."),
    max_recoveries: Optional[int] = typer.Option(
        None, "--max-recoveries", help="With --recover: give up after this many relaunches, e.g. --max-recoveries 5 "
                                       "(default 3).", show_default=False),
    keep_volume: Optional[bool] = typer.Option(
        None, "--keep-volume/--no-keep-volume", show_default=False,
        help="Keep the root EBS volume when the instance goes (spot reclaim, autostop), and write the job's outputs "
             "(checkpoints, metrics) on it, in ~/orch/JOB/outputs, e.g. orch launch --spot --keep-volume ... "
             "`orch teardown JOB` still deletes it unless given --keep-volume too. It bills until deleted."),
) -> None:
    """Start (or resume) a job's machine, and its training when --data is given.

    \b
    Example: orch launch --instance g4dn.2xlarge --name rn18 --volume-gb 400 --data ~/data/imagenet -- --recipe t4-rn18-fast

    \b
    Example (data in S3, copied by the instance's role): orch launch --instance g4dn.2xlarge --name resnet50 --iam-instance-profile orch-trainer --data s3://bucket/imagenet -- --recipe t4-rn50

    \b
    Example: orch launch --target local --data demo -- --recipe demo --epochs 2

    \b
    Example (after AWS reclaimed a spot job): orch launch --name resnet50 --resume

    \b
    Example (outputs that outlive the instance): orch launch --instance g4dn.xlarge --spot --keep-volume --data demo
    """
    from orchestrator.config import ConfigError, LaunchConfig

    with _errors() as about:
        about.name, about.generated = name, False
        if resume_from is not None and not resume:
            raise ConfigError("--resume-from is for --resume, e.g. orch launch --name JOB --resume --resume-from DIR")
        if resume and target == "aws":
            from orchestrator import flow

            name = flow.resolve_job(name)
            recorded = flow.recorded_launch(name, _settings(region=region))
            if recorded is None and not (instance and data):
                raise ConfigError(f"--resume: job {name!r} is not in the registry and has no tagged instance, so "
                                  "there is nothing to take its settings from. Pass them: --instance TYPE --data "
                                  "PATH|demo|s3://... -- TRAINER ARGS (and --resume-from DIR).")
            if recorded is not None:
                instance = instance or recorded.instance_type
                region = region or recorded.region
                spot = spot if spot is not None else recorded.spot
                data = data or recorded.data
                trainer_args = trainer_args or list(recorded.trainer_args)
                image = image or recorded.image
                gpus = gpus if gpus is not None else recorded.gpus
                checkpoint_bucket = checkpoint_bucket or recorded.checkpoint_bucket
                iam_instance_profile = iam_instance_profile or recorded.iam_instance_profile
                volume_gb = volume_gb or recorded.volume_gb
                remote_root = remote_root or recorded.remote_root
                recover = recover if recover is not None else recorded.recover
                max_recoveries = max_recoveries if max_recoveries is not None else recorded.max_recoveries
                keep_volume = keep_volume if keep_volume is not None else recorded.keep_volume
        spot, gpus, recover, keep_volume = bool(spot), gpus is not False, bool(recover), bool(keep_volume)
        max_recoveries = 3 if max_recoveries is None else max_recoveries
        if max_recoveries < 0:
            raise ConfigError("--max-recoveries must be 0 or more, e.g. --max-recoveries 3")
        if recover and not spot:
            raise ConfigError("--recover is for --spot jobs: AWS does not reclaim on-demand instances")
        if recover and not data:
            raise ConfigError("--recover follows a training job: add --data PATH|demo|s3://...")
        if target not in ("aws", "local"):
            raise ConfigError(f"--target {target!r}: use aws or local")
        if keep_volume and target != "aws":
            raise ConfigError("--keep-volume is for --target aws: a local job's outputs already stay on this machine")
        if target == "aws" and not instance:
            raise ConfigError("--instance is required for --target aws, e.g. --instance g4dn.2xlarge")
        if trainer_args and not data:
            raise ConfigError("trainer arguments after `--` need a dataset: add --data PATH|demo|s3://...")
        settings = _settings(
            region=region, volume_gb=volume_gb, volume_throughput=volume_throughput, ssh_cidr=ssh_cidr,
            ssh_user=ssh_user, ssh_proxy_command=ssh_proxy_command, iam_instance_profile=iam_instance_profile,
            allow_on_demand_fallback=on_demand_fallback, autostop_minutes=autostop_minutes,
            max_hours=max_hours, max_dollars=max_dollars, checkpoint_bucket=checkpoint_bucket,
            remote_root=remote_root,
        )
        job_name = name or time.strftime("job-%Y%m%d-%H%M%S")
        about.name, about.generated = job_name, not name
        spec = None
        if data:
            from orchestrator.job import JobSpec

            from orchestrator.trainer_args import check_trainer_args

            check_trainer_args(trainer_args or [], check_options=image is None,
                               data=data if target == "aws" else None)
            spec = JobSpec(job=job_name, data=data, image=image, trainer_args=tuple(trainer_args or ()), gpus=gpus,
                           autostop_minutes=settings.autostop_minutes if target == "aws" else None)
        cfg = LaunchConfig(job=job_name, instance_type=instance or "local", settings=settings, spot=spot,
                           zone=zone, ami=ami, dry_run=dry_run, target=target, job_spec=spec, resume=resume,
                           resume_from=str(resume_from) if resume_from else None, recover=recover,
                           max_recoveries=max_recoveries, keep_volume=keep_volume)
        from orchestrator import flow

        # The flag only: a max_dollars in config.toml or ORCH_MAX_DOLLARS is a standing cap for AWS launches.
        if target == "local" and max_dollars is not None:
            cap = (f"--max-hours {max_hours:g} caps the run's time" if max_hours
                   else "use --max-hours to cap the run's time")
            _out(f"warning: --max-dollars has no effect on the local target (no hourly price); {cap}")
        if dry_run:
            if target == "local":
                flow.check_dataset(cfg)
                _out(f"Dry run: job {job_name} would run on this machine; nothing created.")
                return
            p = flow.plan(cfg, settings.ssh_cidr or "<your public IP>/32 (detected at launch)")
            _print_plan(p)
            _out("Dry run: nothing was created.")
            return
        _out(f"Job {job_name}")
        inst = flow.launch(cfg, say=_out)
        if target == "local":
            _out(f"Job {job_name} runs on this machine. Follow it: orch logs {job_name} --follow")
            return
        _out(f"Job {job_name}: {inst.instance_id} {inst.state} at {inst.public_ip or inst.private_ip}.")
        if spec is None:
            _out(f"Provisioned only (no --data). Connect: orch ssh {job_name}   Remove: orch teardown {job_name}")
        elif recover:
            _out(f"--recover: following the logs; if AWS reclaims the instance, orch launches a new one and resumes "
                 f"(at most {max_recoveries} times). Keep this terminal open: nothing relaunches the job without it. "
                 f"Ctrl-C stops following, not the job.")
            ended: list = []
            code = flow.follow_and_recover(cfg, say=_out, ended=ended.append)
            _out(f"Job {job_name}: the trainer exited with code {code}. Weights: orch fetch-weights {job_name}")
            if ended:  # autostop will take the instance's disks: say when
                from orchestrator import job as job_api

                _err(job_api.after_the_job(ended[0], cfg.settings.checkpoint_bucket, cfg.keep_volume))
            raise typer.Exit(code)
        else:
            _out(f"Follow: orch logs {job_name} --follow   Weights: orch fetch-weights {job_name}")


def _print_plan(p) -> None:
    price = (f"${p.price_per_hour:.3f}/hour ({p.price_source})" if p.price_per_hour is not None
             else "unknown (no live price and not in the table)")
    rows = [
        ("job", p.job), ("region", p.region), ("zones", ", ".join(p.zones)),
        ("instance", p.machine),
        ("market", ("spot, on-demand fallback" if p.allow_on_demand_fallback else "spot") if p.spot else "on-demand"),
        ("ami", f"{p.ami} [{p.ami_source}]"),
        ("root volume", f"{p.volume_gb} GiB gp3, {p.volume_throughput} MiB/s, {p.root_device}, "
                        + ("kept after the instance (tag orch:keep-volume=on); the job's outputs are written on it"
                           if p.keep_volume else "deleted with the instance")),
        ("ssh from", p.ssh_cidr), ("key pair", p.key_name), ("security group", p.security_group_name),
        ("instance profile", p.iam_instance_profile or "-"),
        ("user data", f"{len(p.user_data)} bytes" if p.user_data else "none (infra/bootstrap.sh not found)"),
        ("price", price),
    ]
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        _out(f"  {key:<{width}}  {value}")


# --- status / list ----------------------------------------------------------------------------


def _view_dict(view) -> dict:
    d = {"job": view.job, "target": view.target, "state": view.state, "region": view.region, "note": view.note}
    if view.instance is not None:
        d["instance"] = asdict(view.instance)
    c = view.container
    if c is not None:
        d["container"] = asdict(c) if hasattr(c, "__dataclass_fields__") else str(c)
    return d


@app.command()
def status(
    job: Optional[str] = typer.Argument(None, help="Job name (default: the only job)."),
    container: bool = typer.Option(True, "--container/--no-container", help="Also ask the machine for the training container's state."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
    region: Optional[str] = typer.Option(None, "--region", help="Region to look in when the job isn't in the registry."),
) -> None:
    """Show one job: its instance as AWS reports it, and its training container.

    \b
    Example: orch status resnet50
    """
    from orchestrator import flow

    with _errors():
        settings = _settings(region=region)
        view = flow.status(flow.resolve_job(job), settings, container=False)
        if as_json:
            view = flow.with_container(view, settings) if container else view
            _out(json.dumps(_view_dict(view), indent=2))
            return
        # What AWS says first: the container part asks the machine over SSH, which may take a while.
        # A local job has no cloud state: its trainer's line below says how it is.
        _out(f"{view.job}: local (this machine)" if view.target == "local"
             else f"{view.job}: {view.state} ({view.target})")
        if view.instance is not None:
            i = view.instance
            _out(f"  instance  {i.instance_id} {i.instance_type}{' spot' if i.spot else ''} in {i.zone}")
            _out(f"  address   {i.public_ip or i.private_ip or '-'}")
            _out(f"  launched  {i.launched_at or '-'}")
        if container:
            view = flow.with_container(view, settings)
        c = view.container
        if c is not None:
            if hasattr(c, "state"):
                label = "process  " if getattr(c, "runner", "docker") == "process" else "container"
                _out(f"  {label} {c.state}" + (f" exit {c.exit_code}" if c.exit_code is not None else ""))
                if c.last_metrics:
                    _out("  latest    " + _progress_text(c.last_metrics))
            else:
                _out(f"  container {c}")
        if view.note:
            _out(f"  note      {view.note}")


def _progress_text(m: dict) -> str:
    """The latest epoch's line of metrics.jsonl, as a person reads it (`--json` keeps every field)."""
    try:
        parts = [f"epoch {m['epoch']}" + (f"/{m['epochs']}" if m.get("epochs") else "")]
        if m.get("val_top1") is not None:
            parts.append(f"val top-1 {m['val_top1']:.2f}%" + (f", top-5 {m['val_top5']:.2f}%" if m.get("val_top5") is not None else ""))
        if m.get("train_loss") is not None:
            parts.append(f"train loss {m['train_loss']:.4f}")
        if m.get("images_per_sec"):
            parts.append(f"{m['images_per_sec']:,.0f} img/s, data wait {100 * m.get('data_wait_fraction', 0):.0f}%")
        if m.get("seconds_left"):
            parts.append(f"about {_duration(m['seconds_left'])} left (projected)")
        return " | ".join(parts)
    except (KeyError, TypeError, ValueError):  # another trainer image's metrics: show them as they are
        return " ".join(f"{k}={v}" for k, v in m.items())


def _duration(seconds: float) -> str:
    minutes = round(seconds / 60)
    return f"{round(seconds)} s" if seconds < 90 else f"{minutes} min" if minutes < 90 else f"{minutes // 60} h {minutes % 60:02d} min"


@app.command("list")
def list_(
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
    region: Optional[str] = typer.Option(None, "--region", help="Also look in this region."),
) -> None:
    """List every job: the registry reconciled with what AWS reports by tag.

    \b
    Example: orch list
    """
    from orchestrator import flow

    with _errors():
        views = flow.list_jobs(_settings(region=region), warn=_err)
        if as_json:
            _out(json.dumps([_view_dict(v) for v in views], indent=2))
            return
        if not views:
            _out("No jobs. Start one: orch launch --instance g4dn.2xlarge --name myjob")
            return
        _out(f"{'JOB':<24} {'TARGET':<6} {'STATE':<12} {'INSTANCE':<20} {'TYPE':<14} ADDRESS")
        for v in views:
            i = v.instance
            _out(f"{v.job:<24} {v.target:<6} {v.state:<12} {(i.instance_id if i else '-'):<20} "
                 f"{(i.instance_type if i else '-'):<14} {(i.public_ip or i.private_ip or '-') if i else '-'}")


# --- teardown ---------------------------------------------------------------------------------


@app.command()
def teardown(
    job: Optional[str] = typer.Argument(None, help="Job name (default: the only job)."),
    yes: bool = typer.Option(False, "--yes", "-y", help="Don't ask for confirmation (required off a terminal)."),
    keep_volume: bool = typer.Option(
        False, "--keep-volume", help="Keep the root EBS volume (and its data) after terminating, and any volume "
                                     "a `launch --keep-volume` left behind."),
    region: Optional[str] = typer.Option(None, "--region", help="Region to look in when the job isn't in the registry."),
) -> None:
    """Stop the job, terminate its instance, delete its security group and key pair, and verify.

    A local job: stop its container (or trainer process) and forget it; its outputs stay.

    \b
    Example: orch teardown resnet50 --yes
    """
    from orchestrator import flow

    with _errors() as about:
        settings = _settings(region=region)
        name = about.name = flow.resolve_job(job)
        if not yes:
            if not sys.stdin.isatty():
                _err(f"Refusing to tear down {name} without confirmation: add --yes.")
                raise typer.Exit(EXIT_USAGE)
            here = flow.local_job(name)
            typer.confirm(f"Stop {here.trainer} of job {name} on this machine, and forget the job (its outputs stay "
                          f"in {here.outputs})?" if here is not None else
                          f"Terminate job {name} and delete its resources?", abort=True)
        report = flow.teardown(name, settings, keep_volume=keep_volume, say=_out)
        for w in report.warnings:
            _err(f"warning: {w}")
        if report.local:
            _out(f"Stopped: {report.stopped or 'nothing (the job was not running)'}. Job {name} is forgotten here.")
            if report.kept_outputs:
                _out(f"Outputs kept at {report.kept_outputs}. A launch named {name} continues from them (on the same "
                     f"data); to start fresh, delete that folder (rm -rf {report.kept_outputs}) or choose another --name.")
            return
        removed = ([f"instance {i}" for i in report.terminated] + [f"security group {g}" for g in report.security_groups]
                   + [f"key pair {k}" for k in report.key_pairs] + [f"volume {v}" for v in report.volumes])
        _out(f"Removed: {', '.join(removed) if removed else 'nothing (no resources were left)'}")
        if report.kept_volumes:
            _out(f"Kept volume(s): {', '.join(report.kept_volumes)} (they bill until deleted: "
                 f"aws ec2 delete-volume --volume-id {report.kept_volumes[0]})")
        if report.remaining:
            _err(f"Still tagged for {name}: {', '.join(report.remaining)}. Run `orch teardown {name} --yes` again.")
            raise typer.Exit(EXIT_ERROR)
        if report.kept_volumes:
            _out(f"Nothing else tagged orch:job={name} remains.")
        else:
            _out(f"Nothing tagged orch:job={name} remains.")


# --- ssh / logs / fetch-weights ---------------------------------------------------------------


def ssh_command(endpoint, extra: list[str]) -> list[str]:
    from orchestrator.remote import openssh_command

    return openssh_command(endpoint, extra)


@app.command(context_settings={"allow_extra_args": True})
def ssh(
    job: Optional[str] = typer.Argument(None, help="Job name (default: the only job)."),
    command: Optional[List[str]] = typer.Argument(None, help="After `--`: a command to run instead of a shell."),
    print_only: bool = typer.Option(False, "--print", help="Print the ssh command instead of running it."),
    ssh_user: Optional[str] = typer.Option(None, "--ssh-user", help="SSH user (default: the one used at launch)."),
    ssh_proxy_command: Optional[str] = typer.Option(None, "--ssh-proxy-command", help="OpenSSH ProxyCommand."),
) -> None:
    """Open a shell on the job's instance (with its key and pinned host key).

    \b
    Example: orch ssh resnet50 -- nvidia-smi
    """
    import shlex

    from orchestrator import flow

    with _errors() as about:
        settings = _settings(ssh_user=ssh_user, ssh_proxy_command=ssh_proxy_command)
        name = about.name = flow.resolve_job(job)
        endpoint = flow.endpoint_for(name, settings)
        if endpoint is None:
            _err(f"Job {name} runs on this machine; use `docker exec` or `orch logs {name}`.")
            raise typer.Exit(EXIT_USAGE)
        args = ssh_command(endpoint, list(command or []))
        if print_only:
            _out(shlex.join(args))
            return
        os.execvp(args[0], args)


@app.command()
def logs(
    job: Optional[str] = typer.Argument(None, help="Job name (default: the only job)."),
    follow: bool = typer.Option(False, "--follow", "-f", help="Keep streaming until the trainer exits."),
    since: Optional[str] = typer.Option(
        None, "--since", help="Only output from then on: a duration (10m, 2h) or a time, e.g. 2024-05-01T12:00 "
                              "(UTC, unless it ends in Z or +HH:MM)."),
) -> None:
    """Print the trainer's output; with --follow, stream it and exit with the trainer's code.

    \b
    Example: orch logs resnet50 --follow
    """
    from orchestrator import flow
    from orchestrator.config import ConfigError

    with _errors() as about:
        name = about.name = flow.resolve_job(job)
        from orchestrator import job as job_api

        try:
            job_api.parse_since(since)
        except job_api.JobError as e:
            raise ConfigError(str(e)) from None
        settings = _settings()
        endpoint = flow.endpoint_for(name, settings)
        ended: list = []
        code = job_api.follow_logs(endpoint, name, follow=follow, since=since, ended=ended.append)
        if follow and ended and endpoint is not None:  # an instance: autostop will take its disks
            try:
                launched = flow.recorded_launch(name, settings)
            except Exception:  # the cloud can't be asked: say what is known
                launched = None
            _err(job_api.after_the_job(ended[0], launched.checkpoint_bucket if launched else None,
                                       bool(launched and launched.keep_volume)))
    raise typer.Exit(code)


@app.command("fetch-weights")
def fetch_weights(
    job: Optional[str] = typer.Argument(None, help="Job name (default: the only job)."),
    which: str = typer.Option("best", "--which", help="best, last or all."),
    dest: Optional[Path] = typer.Option(None, "--dest", help="Folder to put them in (default: ./weights/JOB)."),
) -> None:
    """Download the job's weights (verified by checksum).

    \b
    Example: orch fetch-weights resnet50 --which best --dest ./weights
    """
    from orchestrator import flow
    from orchestrator.config import ConfigError

    with _errors():
        if which not in ("best", "last", "all"):
            raise ConfigError(f"--which {which!r}: use best, last or all")
        name = flow.resolve_job(job)
        from orchestrator import job as job_api

        target = dest or flow.default_resume_dir(name)
        settings = _settings()
        report = job_api.fetch_weights(flow.endpoint_for(name, settings), name, which, target,
                                       remote_root=flow.remote_root_for(name, settings),
                                       outputs_root=flow.outputs_root_for(name))
        for f in report.files:
            _out(f"{f}{'  (sha256 ok)' if f in report.verified else ''}")
        _out(f"{len(report.files)} file(s), {report.bytes_downloaded} bytes downloaded into {report.dest}")


# --- doctor -----------------------------------------------------------------------------------


@app.command()
def doctor(
    instance: str = typer.Option("g4dn.2xlarge", "--instance", "-i", help="Instance type whose quota to check."),
    spot: bool = typer.Option(False, "--spot/--on-demand", help="Check the spot quota instead."),
    region: Optional[str] = typer.Option(None, "--region", help="AWS region."),
) -> None:
    """Check credentials, region, vCPU quota, key-file permissions, and local SSH and Docker.

    \b
    Example: orch doctor --instance g4dn.2xlarge --region us-east-1
    """
    from orchestrator import flow

    with _errors():
        checks = flow.doctor(_settings(region=region), instance, spot)
        for c in checks:
            mark = {True: "ok  ", False: "FAIL", None: "warn"}[c.ok]
            _out(f"[{mark}] {c.name}: {c.detail}")
        if any(c.ok is False for c in checks):
            raise typer.Exit(EXIT_ERROR)


def main() -> None:
    import logging

    # paramiko logs every failed SSH attempt (an instance still booting) with a traceback; with no
    # logging set up, Python prints those on stderr between orch's own "waiting for SSH" lines.
    # A handler of its own keeps them off the terminal; a user's logging config still receives them.
    logging.getLogger("paramiko").addHandler(logging.NullHandler())
    app()


if __name__ == "__main__":
    main()
