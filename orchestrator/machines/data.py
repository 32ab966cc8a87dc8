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


def restore_dataset(session, runner: Runner, spec: JobSpec, data_dir: str, image: str, user: str, say: Say) -> None:
    """A kept dataset's shards copied from the bucket on the machine (its own credentials, 4 at a time), then
    checked and restored in place by `trainer unpack` in the image. A start that finds it restored does nothing."""
    ds = spec.dataset
    marker = posixpath.join(data_dir, RESTORED)
    if session.run(f"cat {shlex.quote(marker)}").stdout.strip() == ds.uri:
        say(f"  dataset {ds.name}: already restored on {session.where}")
        return
    shards = posixpath.join(posixpath.dirname(data_dir), "shards")
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
    say(f"  dataset {ds.name}: checking and restoring the shards (trainer unpack)")
    runner.unpack_dataset(image, shards, data_dir, user)
    session.run(f"printf '%s\\n' {shlex.quote(ds.uri)} > {shlex.quote(marker)}", check=True)


def copy_from_s3(session, spec: JobSpec, data_dir: str, how: str, say: Say) -> None:
    """`aws s3 sync` on the machine (`how`: with whose credentials, for the message)."""
    say(f"  copying {spec.data} on {session.where}{how}")
    report = sync_s3(session, spec.data, data_dir)
    say(f"  {report.files_sent} of {report.files_total} files copied")
