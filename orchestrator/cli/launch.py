"""`orch launch`: its flags into a `LaunchRequest`, one call, and what happened, printed."""
from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from orchestrator.cli.app import app, err, errors, out, out_json
from orchestrator.config import ConfigError
from orchestrator.records import LaunchPlan


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
    subnet_id: Optional[str] = typer.Option(
        None, "--subnet-id", help="Launch in this subnet (its VPC, its zone): for accounts without a default VPC."),
    autostop_minutes: Optional[int] = typer.Option(None, "--autostop-minutes", help="Shut the instance down N minutes after the job ends (0: never)."),
    max_hours: Optional[float] = typer.Option(None, "--max-hours", help="Hard cap: stop the job and the instance after this many hours."),
    max_dollars: Optional[float] = typer.Option(None, "--max-dollars", help="Hard cap in USD, from the hourly price."),
    checkpoint_bucket: Optional[str] = typer.Option(None, "--checkpoint-bucket", help="s3://bucket/prefix the instance copies each checkpoint to (with its role), "
                                                                "and --resume copies back from, e.g. s3://my-bucket/orch-ckpt."),
    target: str = typer.Option("aws", "--target", help="aws (an EC2 instance) or local (this machine's Docker)."),
    data: Optional[str] = typer.Option(None, "--data", help="Dataset: a local folder, 'demo', s3://..., or dataset:NAME (kept by `orch data prepare`). Without it, launch only provisions."),
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
    bucket: Optional[str] = typer.Option(
        None, "--bucket", help="s3://NAME where `orch data` keeps datasets, for --data dataset:NAME (default: bucket "
                               "in config.toml, or $ORCH_BUCKET)."),
    env: Optional[List[str]] = typer.Option(
        None, "--env", help="KEY=VALUE for the trainer's environment, e.g. --env WANDB_API_KEY=... (repeatable). The "
                            "value goes to the machine in a mode-600 file only: never in tags, labels, user data, "
                            "the state file, logs or status. Not recorded: give it again with --resume."),
    env_file: Optional[List[Path]] = typer.Option(
        None, "--env-file", help="A file of KEY=VALUE lines (# comments, `export`, quotes allowed), e.g. --env-file "
                                 ".env; --env wins for a key in both. Handled like --env."),
    prepare: Optional[str] = typer.Option(
        None, "--prepare", help="KIND (imagenet, tiny-imagenet, cifar100, folder): --data is a download (folder, "
                                "s3:// prefix, kaggle:COMPETITION); prepare and keep it first (`orch data prepare`), then train on it. A "
                                "dataset kept under its name is not prepared again."),
    resize_short: Optional[int] = typer.Option(None, "--resize-short", min=8,
                                               help="With --prepare: store the short side at this many px, e.g. 256."),
    resize_short_train: Optional[int] = typer.Option(
        None, "--resize-short-train", min=8,
        help="With --prepare: store train/ alone at this short side, e.g. 192 (val keeps --resize-short); the "
             "trade-off: `trainer prepare imagenet --help`."),
    subset_percent: Optional[float] = typer.Option(None, "--subset-percent",
                                                   help="With --prepare: keep a seeded P% of the classes, e.g. 10."),
    dataset_name: Optional[str] = typer.Option(None, "--dataset-name",
                                               help="With --prepare: the kept dataset's name (default: the source's "
                                                    "last part, e.g. imagenet-256)."),
    nodes: Optional[int] = typer.Option(
        None, "--nodes", min=1, show_default=False,
        help="Train one run over N instances of the type (one process per GPU on each), in one cluster placement "
             "group, e.g. --nodes 4 --instance g4dn.12xlarge (16 T4s). Node 0 writes the checkpoints; "
             "`orch logs --node I` follows another. With --target local, N trainers on this machine (to try "
             "the flow). Default 1."),
    managed: bool = typer.Option(
        False, "--managed",
        help="Run the job as an AWS Auto Scaling group of one: a reclaimed or failed instance is replaced and the new "
             "one resumes from --checkpoint-bucket by itself, with this laptop closed. Several types allowed, e.g. "
             "--managed --spot --instance g4dn.2xlarge,g5.2xlarge --checkpoint-bucket s3://b/ckpt. Data from S3 "
             "(dataset:NAME, s3://, demo); `orch teardown` deletes the group."),
    as_json: bool = typer.Option(False, "--json", help="Print the plan (with --dry-run) or the started job as JSON on "
                                                       "stdout; progress goes to stderr."),
) -> None:
    """Start (or resume) a job's machine, and its training when --data is given.

    \b
    Example: orch launch --instance g4dn.2xlarge --name rn18 --volume-gb 400 --data ~/data/imagenet -- --recipe t4-rn18-fast

    \b
    Example (data in S3, copied by the instance's role): orch launch --instance g4dn.2xlarge --name resnet50 --iam-instance-profile orch-trainer --data s3://bucket/imagenet -- --recipe t4-rn50

    \b
    Example: orch launch --target local --data demo -- --recipe demo --epochs 2

    \b
    Example (from the archives as downloaded, prepared once and kept): orch launch --instance g4dn.2xlarge --data kaggle:imagenet-object-localization-challenge --prepare imagenet --resize-short 256 -- --recipe t4-rn18-fast

    \b
    Example (after AWS reclaimed a spot job): orch launch --name resnet50 --resume

    \b
    Example (outputs that outlive the instance): orch launch --instance g4dn.xlarge --spot --keep-volume --data demo

    \b
    Example (a secret for the trainer): orch launch --instance g4dn.2xlarge --data demo --env-file .env

    \b
    Example (spot that recovers with the laptop closed): orch launch --managed --spot --instance g4dn.2xlarge,g5.2xlarge --name rn50 --iam-instance-profile orch-trainer --checkpoint-bucket s3://my-bucket/ckpt --data dataset:imagenet-256 -- --recipe t4-rn50

    \b
    Example (one run over 4 instances, 16 T4s): orch launch --instance g4dn.12xlarge --nodes 4 --name rn50x16 --iam-instance-profile orch-trainer --data dataset:imagenet-256 -- --recipe t4-rn50
    """
    # lifecycle/ is imported when a command runs, never with the CLI: `orch --help` loads no SSH, Docker or AWS code.
    from orchestrator.lifecycle import launch as launcher
    from orchestrator.lifecycle import plan
    from orchestrator.lifecycle import recover as recover_
    from orchestrator.lifecycle.request import LaunchRequest, configure

    with errors() as about:
        about.name, about.generated = name, False
        launch_ = configure(LaunchRequest(
            trainer_args=tuple(trainer_args or ()), instance=instance, name=name, region=region, zone=zone, spot=spot,
            on_demand_fallback=on_demand_fallback, volume_gb=volume_gb, volume_throughput=volume_throughput, ami=ami,
            dry_run=dry_run, ssh_cidr=ssh_cidr, ssh_user=ssh_user, ssh_proxy_command=ssh_proxy_command,
            iam_instance_profile=iam_instance_profile, subnet_id=subnet_id, autostop_minutes=autostop_minutes, max_hours=max_hours,
            max_dollars=max_dollars, checkpoint_bucket=checkpoint_bucket, target=target, data=data, image=image,
            gpus=gpus, remote_root=remote_root, resume=resume, resume_from=str(resume_from) if resume_from else None,
            recover=recover, max_recoveries=max_recoveries, keep_volume=keep_volume, bucket=bucket, env=tuple(env or ()),
            env_files=tuple(str(f) for f in env_file or ()), prepare=prepare, resize_short=resize_short,
            resize_short_train=resize_short_train, subset_percent=subset_percent, dataset_name=dataset_name,
            nodes=nodes, managed=managed))
        cfg = launch_.config
        job_name = about.name = cfg.job
        about.creates = True
        about.generated = launch_.name_was_made_up
        if as_json and cfg.recover:
            raise ConfigError("--json prints the started job and returns; --recover stays attached to follow it. "
                              "Use one or the other.")
        say = err if as_json else out
        for warning in launch_.warnings:
            say(f"warning: {warning}")
        if cfg.dry_run:
            p = plan.dry_run(cfg)
            if as_json:
                out_json({"job": job_name, "target": cfg.target, "created": False, "plan": plan_dict(p)})
            elif p is None:
                out(f"Dry run: job {job_name} would run on this machine; nothing created.")
            else:
                print_plan(p)
                out("Dry run: nothing was created.")
            return
        if launch_.prepare is not None:
            from orchestrator.lifecycle.data_instance import ensure_prepared

            ensure_prepared(launch_.prepare, cfg.settings, say=err, training=cfg)
        say(f"Job {job_name}")
        inst = launcher.launch(cfg, say=say)
        if as_json:
            out_json({"job": job_name, "target": cfg.target, "created": True, "instance": inst})
            return
        if inst.provider == "local":
            out(f"Job {job_name} runs on this machine. Follow it: orch logs {job_name} --follow")
            return
        out(f"Job {job_name}: {inst.instance_id} {inst.state} at {inst.public_ip or inst.private_ip}"
            + (f" (node 0 of {cfg.nodes}; every node: orch status {job_name})." if cfg.nodes > 1 else "."))
        if cfg.job_spec is None:
            out(f"Provisioned only (no --data). Connect: orch ssh {job_name}   Remove: orch teardown {job_name}")
        elif cfg.recover:
            out(f"--recover: following the logs; if AWS reclaims the instance, orch launches a new one and resumes "
                f"(at most {cfg.max_recoveries} times). Keep this terminal open: nothing relaunches the job without "
                "it. Ctrl-C stops following, not the job.")
            code = recover_.follow_and_recover(cfg, say=out, say_after=err)
            out(f"Job {job_name}: the trainer exited with code {code}. Weights: orch fetch-weights {job_name}")
            raise typer.Exit(code)
        else:
            out(f"Follow: orch logs {job_name} --follow   Weights: orch fetch-weights {job_name}")


def plan_dict(p: LaunchPlan | None) -> dict | None:
    """The plan as `--json` prints it: the user data by its size (it is a script, not a value to read)."""
    if p is None:
        return None
    from dataclasses import asdict

    d = asdict(p)
    d["user_data_bytes"] = len(d.pop("user_data") or "")
    d["tags"] = dict(p.tags)
    return d


def print_plan(p: LaunchPlan) -> None:
    price = (f"${p.price_per_hour:.3f}/hour ({p.price_source})" if p.price_per_hour is not None
             else "unknown (no live price and not in the table)")
    if p.nodes > 1 and p.price_per_hour is not None:
        price = f"${p.total_price_per_hour:.3f}/hour for the {p.nodes} instances (each {price})"
    need = p.vcpus * p.nodes
    rows = [
        ("job", p.job), ("region", p.region), ("zones", ", ".join(p.zones)),
        ("instance", p.machine + (f" x {p.nodes} instances" if p.nodes > 1 else "")),
    ]
    if p.nodes > 1:
        procs = max(p.gpus, 1) * p.nodes
        rows += [("nodes", f"{p.nodes}: one training run of {procs} processes ({'one per GPU' if p.gpus else 'CPU'}), "
                           "rendezvous on node 0's private address; node 0 writes the checkpoints"),
                 ("placement group", f"{p.placement_group} (cluster: one zone, close together){p.placement_note}"
                  if p.placement_group else p.placement_note),
                 ("between nodes", "every port, from the security group's own members only")]
    if p.managed:
        rows += [("managed", f"Auto Scaling group {p.key_name} of one over {', '.join(p.managed)}: AWS replaces a "
                             "reclaimed or failed instance, which resumes from the checkpoint bucket by itself")]
    rows += [
        ("quota need", (f"{p.nodes} x {p.vcpus} = " if p.nodes > 1 else "") + f"{need} vCPUs"
                       + (f" of {p.quota}" if p.quota else "") + " (checked at launch)"),
        ("market", ("spot, on-demand fallback" if p.allow_on_demand_fallback else "spot") if p.spot else "on-demand"),
        ("ami", f"{p.ami} [{p.ami_source}]"),
        ("root volume", f"{p.volume_gb} GiB gp3, {p.volume_throughput} MiB/s, {p.root_device}, "
                        + ("kept after the instance (tag orch:keep-volume=on); the job's outputs are written on it"
                           if p.keep_volume else "deleted with the instance")),
        ("network", p.network), ("ssh from", p.ssh_cidr), ("key pair", p.key_name), ("security group", p.security_group_name),
        ("instance profile", p.iam_instance_profile or "-"),
        ("user data", f"{len(p.user_data)} bytes" if p.user_data else "none (bootstrap_script = \"none\": no autostop watcher)"),
        ("price", price),
    ]
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        out(f"  {key:<{width}}  {value}")
