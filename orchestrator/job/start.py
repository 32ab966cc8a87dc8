"""Start a job on its machine: the data there, the trainer image, the trainer running detached. Idempotent.

Written once against `machines.base.Machine`: an instance over SSH, this machine's Docker engine
or a local trainer process all start through `start`; what differs between them (waiting for the
instance's set-up, its hard cap, where the folders go, how the data gets there, a missing GPU) is
the machine's to answer.

A job whose trainer exists (in any state) keeps the folders its labels name: its checkpoints are
there. A start that finds it running changes nothing and says what it did not apply.

The trainer image is ready by content hash: already on the machine, pulled from the account's
registry (`JobSpec.registry`, with the machine's own credentials) when an earlier machine built it,
else built there and pushed in the background for the next one. The pull or build runs while the
data moves (a demo dataset is made by the image, so it waits for it).

Under the instance's hard cap (its watcher stops the container there), the trainer gets `--max-hours`
for what is left of it when the container starts, less a margin (`trainer_args.budget_under_cap`), so
it saves and exits first; a cap too near its end is refused before the sync (`trainer_args.CapSpent`).

    status = start(machine, JobSpec(job="r50", data="~/data/imagenet", trainer_args=("--recipe", "t4-rn50")))
"""
from __future__ import annotations

import json
import posixpath
import shlex
import sys
import threading
from dataclasses import replace
from typing import Callable

from orchestrator.errors import NoGPUs
from orchestrator.job.control import last_metrics, to_status, trainer_on
from orchestrator.job.restore import restore_checkpoints
from orchestrator.job.spec import created_by, data_source, launched_args, not_applied
from orchestrator.labels import LABEL_AUTOSTOP, LABEL_DATA, LABEL_OUTPUTS, LABEL_SOURCE, LABEL_TRAINER_ARGS
from orchestrator.machines.base import Machine, Say
from orchestrator.machines.data import write_private
from orchestrator.records import ENV_FILE_NAME, ContainerStatus, ImageReady, JobSpec, RunSpec, TrainerEnv
from orchestrator.trainer_args import budget_under_cap, max_hours_of, training_left_s, with_max_hours


def _trained_s(metrics: dict) -> float:
    """What a run has trained so far, by its latest metrics line (epoch ends: its checkpoint may be later)."""
    try:
        return max(0.0, float(metrics.get("elapsed_hours") or 0) * 3600)
    except (TypeError, ValueError):
        return 0.0


def _uid_gid(session) -> str:
    ids = session.run("id -u; id -g", check=True).stdout.split()
    return f"{ids[0]}:{ids[1]}"


class _Background:
    """One call on a daemon thread, given a `say` it may use: a failed sync is reported at once, not after a
    build it did not need; once cancelled, the call's words (and its failure) are dropped."""

    def __init__(self, call: Callable[[Say], ImageReady], say: Say):
        self._call, self._value, self._error = call, None, None
        self._cancelled = threading.Event()
        self._say = say
        self._thread = threading.Thread(target=self._run, name="orch-image", daemon=True)
        self._thread.start()

    def _quiet_once_cancelled(self, message: str) -> None:
        if not self._cancelled.is_set():
            self._say(message)

    def cancel(self) -> None:
        self._cancelled.set()

    def _run(self) -> None:
        try:
            self._value = self._call(self._quiet_once_cancelled)
        except BaseException as e:  # handed to the caller
            self._error = e

    def result(self) -> ImageReady:
        self._thread.join()
        if self._error is not None:
            raise self._error
        return self._value


def write_env_file(session, path: str, env: TrainerEnv) -> str:
    """The --env values in a mode-600 file on the machine (made unreadable to others before a byte is written)."""
    write_private(session, path, env.file_bytes(), f"the --env file {path}")
    return path


def _trainer_image(machine: Machine, session, runner, spec: JobSpec, say: Say) -> ImageReady:
    """The trainer image on the machine: pulled from the account's registry when built before, else built
    there and pushed (in the background) for the next machine. Without registry access, built as before."""
    auth = None
    if spec.registry is not None and not spec.image:
        auth, why = machine.registry_auth(session, spec.registry)
        if auth is None:
            say(f"  the trainer image can't be kept in {spec.registry.repository} ({why}): building it on "
                f"{session.where}. `orch init` gives the instance role what ECR needs.")
    ready = runner.ensure_image(spec, say, auth)
    if ready.how == "built" and auth is not None:
        remote = machine.push_image(session, spec.registry, ready)
        if remote:
            say(f"  pushing it to {remote} in the background: later machines pull it instead of building")
    return ready


def start(machine: Machine, spec: JobSpec, say: Say | None = None,
          go: Callable[[], object] = lambda: None) -> ContainerStatus:
    """Put the data on the machine, build or reuse the image, and run the trainer detached. `go` is called once
    all is in place, just before the trainer starts (the nodes of one run start together: lifecycle/nodes.py)."""
    say = say or (lambda m: print(m, file=sys.stderr, flush=True))
    with trainer_on(machine, before=lambda session: machine.prepare(session, spec, say)) as (session, runner):
        return _start(machine, session, runner, spec, say, go)


def _start(machine: Machine, session, runner, spec: JobSpec, say: Say, go: Callable[[], object]) -> ContainerStatus:
    existing = runner.state()
    if existing.state in ("running", "restarting", "created"):
        say(f"  the job's {runner.what} is already {existing.state}; not starting a second one")
        ignored = not_applied(existing.labels.get(LABEL_SOURCE), launched_args(existing), spec, data_source(spec))
        status = to_status(existing, last_metrics(session, existing.labels.get(LABEL_OUTPUTS)), runner.name)
        return replace(status, not_applied=ignored, already_running=True)
    if (cap := machine.hard_cap(session)) is not None:
        training_left_s(cap.seconds, cap.elapsed_s)  # a cap about to stop the machine: refused before the sync
    labels = existing.labels
    if labels.get(LABEL_DATA) and labels.get(LABEL_OUTPUTS):
        data_dir, outputs_dir = labels[LABEL_DATA], labels[LABEL_OUTPUTS]
    else:
        data_dir, outputs_dir = machine.folders(session, spec)
    session.run(f"mkdir -p {shlex.quote(data_dir)} {shlex.quote(outputs_dir)}", check=True)
    user = _uid_gid(session)
    # Beside the job's folders; with --keep-volume beside its data, which the kept volume does not hold.
    env_dir = posixpath.dirname(data_dir if spec.outputs_root else outputs_dir)
    if spec.data == "demo":  # made by the image: one step after the other
        ready = _trainer_image(machine, session, runner, spec, say)
        data_dir = machine.place_data(session, runner, spec, data_dir, ready.image, user, say)
    else:  # the image is pulled (or built) while the data moves
        image_step = _Background(lambda said: _trainer_image(machine, session, runner, spec, said), say)
        try:
            data_dir = machine.place_data(session, runner, spec, data_dir, "", user, say)
        except BaseException:
            image_step.cancel()  # its session is about to close: whatever it says next would mislead
            raise
        ready = image_step.result()
    image, image_hash = ready.image, ready.content_hash
    machine.finish_data(session, runner, spec, data_dir, image, user, say)  # a kept dataset: unpacked in the image

    if spec.restore is not None:
        report = restore_checkpoints(session, spec.restore, spec.job, outputs_dir, say=say)
        if report.source != "machine":
            say(f"  restored {', '.join(report.files)} from {report.where}")

    has_checkpoint = session.run(f"test -f {shlex.quote(posixpath.join(outputs_dir, 'checkpoints', 'last.pt'))}")
    continues_from = outputs_dir if has_checkpoint.exit_code == 0 else None
    args, budget = tuple(spec.trainer_args), None
    go()  # waits until the run's other nodes are ready too (a one-machine job goes at once)
    if (cap := machine.hard_cap(session)) is not None:  # read again: the sync (and the wait) took its time
        trained = _trained_s(last_metrics(session, outputs_dir)) if continues_from else 0.0
        budget = budget_under_cap(cap.seconds, cap.elapsed_s, trained, max_hours_of(args))
        args = with_max_hours(args, budget.hours)
    env_file = write_env_file(session, posixpath.join(env_dir, ENV_FILE_NAME), spec.env) if spec.env else ""
    extra = {LABEL_SOURCE: data_source(spec), LABEL_TRAINER_ARGS: json.dumps(list(spec.trainer_args))}
    if spec.autostop_minutes is not None:
        extra[LABEL_AUTOSTOP] = str(spec.autostop_minutes)
    run = RunSpec(job=spec.job, image=image, trainer_args=args, data_dir=data_dir, outputs_dir=outputs_dir,
                  gpus=spec.gpus, user=user, max_restarts=spec.max_restarts, image_hash=image_hash,
                  created_by=created_by(), labels=extra, env_file=env_file, command=spec.command)
    try:
        st = runner.run(run)
    except NoGPUs:
        if not machine.without_gpus(say):
            raise
        run = replace(run, gpus=False)
        st = runner.run(run)
    machine.remember(run)
    return replace(to_status(st, {}, runner.name), continues_from=continues_from,
                   budget=budget.note if budget else None)
