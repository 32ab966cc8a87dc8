"""`orch status` and `orch list`: a job as the cloud and its machine report it, as text or JSON."""
from __future__ import annotations

import json
from dataclasses import asdict
from typing import Optional

import typer

from orchestrator.cli.app import app, err, errors, job_argument, out, settings
from orchestrator.records import JobView


def _view_dict(view: JobView) -> dict:
    d = {"job": view.job, "target": view.target, "state": view.state, "region": view.region, "note": view.note}
    if view.instance is not None:
        d["instance"] = asdict(view.instance)
    if view.container is not None:
        d["container"] = asdict(view.container)
    elif view.unreachable is not None:
        d["container"] = f"unreachable: {view.unreachable}"
    if view.nodes:
        d["nodes"] = [{"node": i.node, "instance": asdict(i),
                       **({"trainer": view.node_containers[n - 1]} if n and view.node_containers else {})}
                      for n, i in enumerate(view.nodes)]
    return d


@app.command()
def status(
    job: Optional[str] = job_argument(),
    container: bool = typer.Option(True, "--container/--no-container", help="Also ask the machine for the training container's state."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
    region: Optional[str] = typer.Option(None, "--region", help="Region to look in when the job isn't in the registry."),
) -> None:
    """Show one job: its instance as AWS reports it, and its training container.

    \b
    Example: orch status resnet50
    """
    # lifecycle/ is imported when a command runs, never with the CLI: `orch --help` loads no SSH, Docker or AWS code.
    from orchestrator.lifecycle import machines, views

    with errors():
        s = settings(region=region)
        view = views.status(machines.resolve_job(job), s, container=False)
        if as_json:
            view = views.with_container(view, s) if container else view
            out(json.dumps(_view_dict(view), indent=2))
            return
        # What AWS says first: the container part asks the machine over SSH, which may take a while.
        # A local job has no cloud state: its trainer's line below says how it is.
        out(f"{view.job}: local (this machine)" if view.target == "local"
             else f"{view.job}: {view.state} ({view.target})")
        if view.instance is not None:
            i = view.instance
            out(f"  instance  {i.instance_id} {i.instance_type}{' spot' if i.spot else ''} in {i.zone}")
            out(f"  address   {i.public_ip or i.private_ip or '-'}")
            out(f"  launched  {i.launched_at or '-'}")
        if container:
            view = views.with_container(view, s)
        c = view.container
        if c is not None:
            label = "process  " if c.runner == "process" else "container"
            out(f"  {label} {c.state}" + (f" exit {c.exit_code}" if c.exit_code is not None else ""))
            if c.last_metrics:
                out("  latest    " + progress_text(c.last_metrics))
        elif view.unreachable is not None:
            out(f"  container unreachable: {view.unreachable}")
        for n, i in enumerate(view.nodes):
            trainer = "node 0 (above)" if n == 0 else (f"trainer {view.node_containers[n - 1]}"
                                                       if view.node_containers else "")
            out(f"  node {i.node}    {i.instance_id} {i.state} {i.public_ip or i.private_ip or '-'} "
                f"(private {i.private_ip or '-'}) {trainer}".rstrip())
        if view.note:
            out(f"  note      {view.note}")


def progress_text(m: dict) -> str:
    """The latest epoch's line of metrics.jsonl, as a person reads it (`--json` keeps every field)."""
    try:
        parts = [f"epoch {m['epoch']}" + (f"/{m['epochs']}" if m.get("epochs") else "")]
        if m.get("val_top1") is not None:
            parts.append(f"val top-1 {m['val_top1']:.2f}%" + (f", top-5 {m['val_top5']:.2f}%" if m.get("val_top5") is not None else "")
                         + (f" (flip TTA top-1 {m['val_top1_flip']:.2f}%)" if m.get("val_top1_flip") is not None else ""))
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
    # lifecycle/ is imported when a command runs, never with the CLI: `orch --help` loads no SSH, Docker or AWS code.
    from orchestrator.lifecycle import views

    with errors():
        found = views.list_jobs(settings(region=region), warn=err)
        if as_json:
            out(json.dumps([_view_dict(v) for v in found], indent=2))
            return
        if not found:
            out("No jobs. Start one: orch launch --instance g4dn.2xlarge --name myjob")
            return
        out(f"{'JOB':<24} {'TARGET':<6} {'STATE':<12} {'INSTANCE':<20} {'TYPE':<14} ADDRESS")
        for v in found:
            i = v.instance
            out(f"{v.job:<24} {v.target:<6} {v.state:<12} {(i.instance_id if i else '-'):<20} "
                 f"{(i.instance_type if i else '-'):<14} {(i.public_ip or i.private_ip or '-') if i else '-'}")
