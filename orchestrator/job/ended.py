"""What to tell the user once a job's trainer has ended: on an instance, autostop will soon take its disks."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

from orchestrator.job.logtext import parse_timestamp_ns
from orchestrator.labels import LABEL_AUTOSTOP, LABEL_OUTPUTS
from orchestrator.records import JobEnded, TrainerState


def ended_from(st: TrainerState) -> JobEnded:
    try:
        autostop = int(st.labels[LABEL_AUTOSTOP])
    except (KeyError, ValueError):
        autostop = None
    return JobEnded(job=st.job, exit_code=int(st.exit_code or 0), finished_at=st.finished_at,
                    outputs=st.labels.get(LABEL_OUTPUTS), autostop_minutes=autostop)


def after_the_job(ended: JobEnded, checkpoint_bucket: str | None = None, keep_volume: bool = False) -> str:
    """What to do once an instance's job has ended: fetch the weights before autostop takes the disks."""
    try:
        at = datetime.fromtimestamp(parse_timestamp_ns(ended.finished_at or "") / 1e9, timezone.utc)
    except (ValueError, OverflowError, OSError):
        at = None
    if at is not None and at.year < 2000:  # the engine's "never": 0001-01-01
        at = None
    job, minutes = ended.job, ended.autostop_minutes
    text = (f"[orch] Job {job} ended{at.strftime(' at %H:%M UTC') if at else ''} (exit code {ended.exit_code}). "
            f"Its weights are on the instance{f', in {ended.outputs}' if ended.outputs else ''}. ")
    if minutes == 0:
        return text + (f"Autostop is off: the instance bills until `orch teardown {job}`. "
                       f"Run `orch fetch-weights {job}` now.")
    when = (f"{minutes} minutes after the job ended" + (f" (about {(at + timedelta(minutes=minutes)).strftime('%H:%M UTC')})"
                                                        if at else "")
            if minutes is not None else "--autostop-minutes (30 by default) after the job ended")
    kept = []
    if keep_volume:
        kept.append(f"the root volume with the outputs is kept (`orch launch --name {job} --resume` restores from it; "
                    f"it bills until `orch teardown {job}`)")
    if checkpoint_bucket:
        kept.append(f"the checkpoints are also copied to {checkpoint_bucket}")
    disks = "and its disks with it" + (f"; {' and '.join(kept)}" if kept else ", weights included")
    return text + f"Autostop terminates the instance {when}, {disks}. Run `orch fetch-weights {job}` now."
