"""`orch tensorboard`: a job's TensorBoard at http://127.0.0.1:PORT/ on this machine, until Ctrl-C."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from orchestrator.cli.app import EXIT_ERROR, app, err, errors, job_argument, out, settings


@app.command()
def tensorboard(
    job: Optional[str] = job_argument(),
    port: int = typer.Option(6006, "--port", help="Port on this machine (127.0.0.1) to serve it on."),
    no_browser: bool = typer.Option(False, "--no-browser", help="Print the address only; open no browser."),
    fetched: Optional[Path] = typer.Option(
        None, "--fetched", help="Outputs already fetched (`orch fetch-weights JOB --dest DIR`): show DIR/tensorboard "
                                "with this machine's tensorboard, instead of asking the job's machine."),
) -> None:
    """Show the job's TensorBoard curves in the browser, until Ctrl-C.

    On an instance, TensorBoard runs there in the trainer's image, on its 127.0.0.1 only, and reaches this
    machine's 127.0.0.1:PORT through the job's SSH connection; Ctrl-C closes it and removes its container. A
    local job, or --fetched, uses this machine's tensorboard (pip install 'orch[tensorboard]').

    \b
    Example: orch tensorboard resnet50 --port 6006
    """
    # lifecycle/ is imported when a command runs, never with the CLI: `orch --help` loads no SSH, Docker or AWS code.
    from orchestrator.lifecycle import machines
    from orchestrator.lifecycle import tensorboard as tb

    with errors():
        name = job if fetched is not None else machines.resolve_job(job)
        request = tb.TensorBoardRequest(job=name, port=port, fetched=fetched)
        tb.check(request)
        try:
            with tb.serve(request, settings(), say=err) as viewer:
                out(f"TensorBoard{f' of {name}' if name else ''}: {viewer.url}  (Ctrl-C to stop)")
                if not no_browser and not tb.open_browser(viewer.url):
                    err("  (no browser opened here: open the address above)")
                try:
                    why = tb.watch(viewer)
                except KeyboardInterrupt:
                    why = None
        except KeyboardInterrupt:  # while it was starting: what was started is removed on the way out
            err("Interrupted; TensorBoard was stopped and nothing it needed is left running.")
            raise typer.Exit(130) from None
        if why:
            err(f"TensorBoard stopped: {why}")
            raise typer.Exit(EXIT_ERROR)
        err("Stopped: TensorBoard and its tunnel are closed.")
