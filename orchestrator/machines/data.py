"""The dataset steps two machines share: generating `--data demo` once, and copying an s3:// dataset there."""
from __future__ import annotations

import json
import posixpath
import re
import shlex

from orchestrator.errors import JobError
from orchestrator.job.sync import sync_s3
from orchestrator.machines.base import Runner, Say
from orchestrator.records import JobSpec

RESTORED = ".orch-restored"  # in the data folder, once a kept dataset is whole there: its s3:// URI
SHARD_NAME = re.compile(r"shard-\d{5}\.tar")
UNPACKED = ".unpacked.json"  # in the data folder: trainer/shards.py's record of the shards it restored


def make_demo_data(session, runner: Runner, data_dir: str, image: str, user: str, say: Say) -> None:
    """`trainer demo-data` into `data_dir`, unless an earlier start made it there (its dataset.json says so)."""
    if session.run(f"test -f {shlex.quote(posixpath.join(data_dir, 'dataset.json'))}").exit_code != 0:
        say("  generating the demo dataset (trainer demo-data)")
        runner.make_demo_data(image, data_dir, user)


def _restored(session, spec: JobSpec, data_dir: str) -> bool:
    marker = posixpath.join(data_dir, RESTORED)
    return session.run(f"cat {shlex.quote(marker)}").stdout.strip() == spec.dataset.uri


def _shards_dir(data_dir: str, spec: JobSpec) -> str:
    """Beside the data, one folder per version of the dataset (a shard of an older one is never mistaken for one
    of this)."""
    return posixpath.join(posixpath.dirname(data_dir), "shards", spec.dataset.manifest_key[:16])


def _done(session, spec: JobSpec, data_dir: str) -> set[str]:
    """The shards an interrupted `trainer unpack` of these shards restored already (and may have deleted)."""
    got = session.run(f"head -c 1048576 {shlex.quote(posixpath.join(data_dir, UNPACKED))}")
    try:
        state = json.loads(got.stdout) if got.exit_code == 0 else {}
        names = set(state["shards"]) if state.get("manifest") == spec.dataset.manifest_key else set()
    except (ValueError, KeyError, TypeError, AttributeError):
        return set()
    return names & {n for n, _ in spec.dataset.shards}


def copy_dataset(session, spec: JobSpec, data_dir: str, say: Say) -> None:
    """A kept dataset's shards copied from the bucket on the machine (its own credentials, 4 at a time; no image
    needed, so it runs while the image is pulled). A shard already there at its size, or restored by an earlier
    start, is not copied again; a start that finds the dataset restored copies nothing."""
    ds = spec.dataset
    if _restored(session, spec, data_dir):
        say(f"  dataset {ds.name}: already restored on {session.where}")
        return
    shards, done = _shards_dir(data_dir, spec), _done(session, spec, data_dir)
    todo = [(n, size) for n, size in ds.shards if n not in done]
    say(f"  dataset {ds.name}: copying {len(todo)} shard(s), {sum(b for _, b in todo) / 1e9:,.2f} GB, from {ds.uri} "
        f"on {session.where} (its role)" + (f"; {len(done)} restored before" if done else ""))
    # Each NAME is shard-NNNNN.tar and each BYTES a number (dataset_store.shard_entries checked them); a shard is
    # copied to NAME.partial and renamed, so a cut copy is never taken for a whole one.
    one = ('[ "$(stat -c %s "$1" 2>/dev/null)" = "$2" ] || '
           '{ aws s3 cp "$0/$1" "$1.partial" --only-show-errors && mv "$1.partial" "$1"; }')
    lines = "\n".join(f"{n} {size}" for n, size in todo)
    copy = (f"mkdir -p {shlex.quote(shards)} && "
            f"find {shlex.quote(posixpath.dirname(shards))} -mindepth 1 -maxdepth 1 "
            f"! -name {shlex.quote(posixpath.basename(shards))} -exec rm -rf {{}} + && cd {shlex.quote(shards)} && "
            f"aws s3 cp {shlex.quote(ds.uri + '/manifest.json')} manifest.json --only-show-errors"
            + (f" && printf '%s\\n' {shlex.quote(lines)} | xargs -P 4 -n 2 sh -c {shlex.quote(one)} "
               f"{shlex.quote(ds.uri)}" if todo else ""))
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
    runner.unpack_dataset(image, _shards_dir(data_dir, spec), data_dir, user)
    marker = posixpath.join(data_dir, RESTORED)
    session.run(f"printf '%s\\n' {shlex.quote(spec.dataset.uri)} > {shlex.quote(marker)}", check=True)


def upload_dataset(session, shards_dir: str, uri: str, say: Say) -> None:
    """The shards `trainer make-dataset` wrote on the machine uploaded to the prefix `uri` with the machine's own
    credentials, 4 at a time, the manifest last (a reader that finds it finds every shard)."""
    where = shlex.quote(shards_dir)
    listing = session.run(f"cd {where} && ls")
    names = sorted(n for n in listing.stdout.split() if n.startswith("shard-") and n.endswith(".tar"))
    if listing.exit_code != 0 or "manifest.json" not in listing.stdout.split() or not names:
        raise JobError(f"no packed dataset in {shards_dir} on {session.where} (manifest.json and shard-NNNNN.tar): "
                       "run the same command again to prepare it anew")
    say(f"  {len(names)} shard(s) from {shards_dir} on {session.where}")
    # Only names `trainer pack` writes go into the command (shard-NNNNN.tar); the copy runs in their folder.
    names = [n for n in names if SHARD_NAME.fullmatch(n)]
    upload = (f"cd {where} && printf '%s\\n' {shlex.quote(chr(10).join(names))} | xargs -P 4 -I NAME "
              f"aws s3 cp NAME {shlex.quote(uri + '/')}NAME --only-show-errors && "
              f"aws s3 cp manifest.json {shlex.quote(uri + '/manifest.json')} --only-show-errors")
    got = session.run(upload)
    if got.exit_code != 0:
        raise JobError(f"uploading the shards from {session.where} to {uri} failed (exit {got.exit_code}): "
                       f"{(got.stderr or got.stdout).strip()[-1500:]}\nDoes the instance role write the bucket's "
                       "orch-datasets/ prefix? (`orch init` grants it); the same command uploads again")


def copy_from_s3(session, spec: JobSpec, data_dir: str, how: str, say: Say) -> None:
    """`aws s3 sync` on the machine (`how`: with whose credentials, for the message)."""
    say(f"  copying {spec.data} on {session.where}{how}")
    report = sync_s3(session, spec.data, data_dir)
    say(f"  {report.files_sent} of {report.files_total} files copied")
