"""The dataset steps two machines share: generating `--data demo` once, and copying an s3:// dataset there."""
from __future__ import annotations

import posixpath
import shlex

from orchestrator.errors import JobError
from orchestrator.job.sync import sync_s3
from orchestrator.machines.base import Runner, Say
from orchestrator.records import JobSpec

RESTORED = ".orch-restored"  # in the data folder, once a kept dataset is whole there: its s3:// URI


def make_demo_data(session, runner: Runner, data_dir: str, image: str, user: str, say: Say) -> None:
    """`trainer demo-data` into `data_dir`, unless an earlier start made it there (its dataset.json says so)."""
    if session.run(f"test -f {shlex.quote(posixpath.join(data_dir, 'dataset.json'))}").exit_code != 0:
        say("  generating the demo dataset (trainer demo-data)")
        runner.make_demo_data(image, data_dir, user)


def _restored(session, spec: JobSpec, data_dir: str) -> bool:
    marker = posixpath.join(data_dir, RESTORED)
    return session.run(f"cat {shlex.quote(marker)}").stdout.strip() == spec.dataset.uri


def _shards_dir(data_dir: str) -> str:
    return posixpath.join(posixpath.dirname(data_dir), "shards")


def copy_dataset(session, spec: JobSpec, data_dir: str, say: Say) -> None:
    """A kept dataset's shards copied from the bucket on the machine (its own credentials, 4 at a time; no image
    needed, so it runs while the image is pulled). A start that finds it restored copies nothing."""
    ds = spec.dataset
    if _restored(session, spec, data_dir):
        say(f"  dataset {ds.name}: already restored on {session.where}")
        return
    shards = _shards_dir(data_dir)
    say(f"  dataset {ds.name}: copying {len(ds.shards)} shard(s), {ds.bytes / 1e9:,.2f} GB, from {ds.uri} on "
        f"{session.where} (its role)")
    names = "\n".join(ds.shards)  # each shard-NNNNN.tar, checked by lifecycle/datasets.py
    copy = (f"mkdir -p {shlex.quote(shards)} && cd {shlex.quote(shards)} && "
            f"aws s3 cp {shlex.quote(ds.uri + '/shards/manifest.json')} manifest.json --only-show-errors && "
            f"printf '%s\\n' {shlex.quote(names)} | xargs -P 4 -I NAME "
            f"aws s3 cp {shlex.quote(ds.uri + '/shards/')}NAME NAME --only-show-errors")
    got = session.run(copy)
    if got.exit_code != 0:
        raise JobError(f"copying dataset {ds.name} from {ds.uri} on {session.where} failed (exit {got.exit_code}): "
                       f"{(got.stderr or got.stdout).strip()[-1500:]}\nDoes the instance role read the bucket? "
                       "(`orch init` grants orch-datasets/ in any bucket)")


def unpack_dataset(session, runner: Runner, spec: JobSpec, data_dir: str, image: str, user: str, say: Say) -> None:
    """The copied shards checked and restored in place by `trainer unpack` in the image; then marked done."""
    if _restored(session, spec, data_dir):
        return
    say(f"  dataset {spec.dataset.name}: checking and restoring the shards (trainer unpack)")
    runner.unpack_dataset(image, _shards_dir(data_dir), data_dir, user)
    marker = posixpath.join(data_dir, RESTORED)
    session.run(f"printf '%s\\n' {shlex.quote(spec.dataset.uri)} > {shlex.quote(marker)}", check=True)


def copy_from_s3(session, spec: JobSpec, data_dir: str, how: str, say: Say) -> None:
    """`aws s3 sync` on the machine (`how`: with whose credentials, for the message)."""
    say(f"  copying {spec.data} on {session.where}{how}")
    report = sync_s3(session, spec.data, data_dir)
    say(f"  {report.files_sent} of {report.files_total} files copied")
