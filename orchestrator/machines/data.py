"""The dataset steps two machines share: generating `--data demo` once, and copying an s3:// dataset there."""
from __future__ import annotations

import json
import posixpath
import re
import shlex
import time

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


KAGGLE_CLIENT = "kaggle==2.2.5 six"  # six: 2.2.5 imports it without requiring it


def download_kaggle(session, spec: JobSpec, data_dir: str, say: Say, poll_s: float = 5.0) -> None:
    """`kaggle competitions download` on the machine, detached (a cut SSH link or a Ctrl-C does not stop it; the
    next start attaches to it), into `data_dir`, with its progress shown here. The token goes over SSH into a
    mode-600 kaggle.json in a mode-700 folder beside the data, and the download's own script removes it when
    the client exits, whatever its outcome; the command line holds no part of it."""
    competition = spec.data[len("kaggle:"):]  # checked by lifecycle/kaggle.py: [a-z0-9-]
    if spec.kaggle is None:
        raise JobError(f"--data {spec.data} needs your Kaggle token: `orch data prepare` or `orch launch --prepare` "
                       "reads it")
    base = posixpath.dirname(data_dir)
    token_dir, log, done, pid = (posixpath.join(base, n) for n in (".kaggle-token", "kaggle-download.log",
                                                                    "kaggle-download.rc", "kaggle-download.pid"))
    q = shlex.quote
    if session.run(f"cat {q(done)}").stdout.strip() == "0":
        say(f"  kaggle:{competition}: downloaded before on {session.where}")
        return
    running = session.run(f"test ! -f {q(done)} && kill -0 \"$(cat {q(pid)})\"").exit_code == 0
    if running:
        say(f"  kaggle:{competition}: a download started before is still running on {session.where}; following it")
    else:
        script = (f"export PATH=\"$HOME/.local/bin:$PATH\"; "
                  f"command -v kaggle >/dev/null || python3 -m pip install --user -q {KAGGLE_CLIENT}; "
                  f"KAGGLE_CONFIG_DIR={q(token_dir)} kaggle competitions download -c {competition} -p {q(data_dir)} ; "
                  f"code=$?; rm -rf {q(token_dir)}; echo $code > {q(done)}")
        try:
            _write_private(session, token_dir, spec.kaggle)
            session.run(f"rm -f {q(done)}; mkdir -p {q(data_dir)}; "
                        f"nohup sh -c {q(script)} > {q(log)} 2>&1 < /dev/null & echo $! > {q(pid)}", check=True)
        except BaseException:  # the download never started: its script will not remove the token, so this does
            _remove_quietly(session, token_dir)
            raise
        say(f"  kaggle:{competition}: downloading on {session.where} with your token ({spec.kaggle.username}); "
            "a Ctrl-C leaves it downloading")
    last = ""
    while True:
        code = session.run(f"cat {q(done)}").stdout.strip()
        tail = session.run(f"tail -c 400 {q(log)} | tr '\\r' '\\n' | grep -v '^ *$' | tail -1").stdout.strip()
        if tail and tail != last:
            say(f"  {tail[:200]}")
            last = tail
        if code:
            break
        if session.run(f"kill -0 \"$(cat {q(pid)})\"").exit_code != 0 and \
                not session.run(f"cat {q(done)}").stdout.strip():
            _remove_quietly(session, token_dir)  # killed (OOM, a reboot) before its script could
            code = "killed"
            break
        time.sleep(poll_s)
    if code != "0":
        text = session.run(f"tail -c 2000 {q(log)}").stdout
        raise JobError(_kaggle_failure(competition, spec.kaggle.username, text))


def _remove_quietly(session, folder: str) -> None:
    try:
        session.run(f"rm -rf {shlex.quote(folder)}")
    except Exception:  # the link is gone too: the folder goes with the instance
        pass


def _kaggle_failure(competition: str, username: str, text: str) -> str:
    """What the Kaggle client's own error lines mean (not a progress figure that happens to read 403M)."""
    lower = text.lower()
    if "accept" in lower and "rules" in lower or "403 client error" in lower or "forbidden" in lower:
        return (f"Kaggle refused {username} the files of {competition} (403): accept the competition's rules at "
                f"https://www.kaggle.com/competitions/{competition}/rules with that account, then run the same "
                "command again")
    if "authentication required" in lower or "401 client error" in lower or "unauthorized" in lower:
        return (f"Kaggle rejected the token of {username} (401): create a new one at https://www.kaggle.com/settings "
                "(API: Create New Token) into ~/.kaggle/kaggle.json, then run the same command again")
    return (f"downloading kaggle:{competition} failed on the machine:\n{text.strip()[-1500:]}\nThe same command "
            "carries on from what arrived")


def write_private(session, path: str, data: bytes, what: str, setup: str = "") -> None:
    """`data` into a new mode-600 file at `path` on the machine, through stdin (never on a command line), made
    unreadable to others before a byte is written: a new file (noclobber, after removing any left over, so that
    umask applies), never an old one's mode or link. `setup`: shell run first, under the same umask."""
    tmp, final = shlex.quote(path + ".tmp"), shlex.quote(path)
    stream = session.exec_stream(f"umask 077 && {setup + ' && ' if setup else ''}rm -f {tmp} && "
                                 f"(set -C; cat > {tmp}) && mv -f {tmp} {final}")
    try:
        stream.stdin.write(data)
        stream.close_stdin()
        code = stream.wait(timeout=60)
        if code != 0:
            raise JobError(f"could not write {what} on {session.where} (exit {code}): "
                           + stream.stderr.read()[-500:].decode(errors="replace"))
    finally:
        stream.close()


def _write_private(session, folder: str, token) -> None:
    """kaggle.json in a new mode-700 folder."""
    q = shlex.quote
    write_private(session, posixpath.join(folder, "kaggle.json"), token.file_bytes(), "the Kaggle token",
                  setup=f"rm -rf {q(folder)} && mkdir -m 700 {q(folder)}")


def copy_from_s3(session, spec: JobSpec, data_dir: str, how: str, say: Say) -> None:
    """`aws s3 sync` on the machine (`how`: with whose credentials, for the message)."""
    say(f"  copying {spec.data} on {session.where}{how}")
    report = sync_s3(session, spec.data, data_dir)
    say(f"  {report.files_sent} of {report.files_total} files copied")
