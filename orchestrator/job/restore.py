"""Bring a job's newest checkpoint back onto a new machine before the trainer starts (`orch launch --resume`).

The trainer always runs with `--resume auto`: once `<outputs>/checkpoints/last.pt` (+ `.sha256`) is
on the machine, it carries on from there with the same epochs and LR schedule. Sources, in order:

- the checkpoint bucket (`--checkpoint-bucket`), where infra/bootstrap.sh copies each new checkpoint
  as `<bucket>/<job>/last.pt` (+ `.sha256`): copied ON the machine by `aws s3 cp` with the
  instance's role, never local credentials, then checked there with `sha256sum -c`;
- a local copy, as `orch fetch-weights JOB --which all --dest DIR` writes it (`DIR/checkpoints/last.pt`
  and its `.sha256`): uploaded over SFTP and checked on the machine against that digest;
- the root EBS volume a `--keep-volume` job left behind, attached to the new machine by the caller
  (lifecycle/launch.py; this module never calls a cloud API): its root partition is mounted read-only and
  `<home>/orch/<job>/outputs/checkpoints/` copied from it, then checked with `sha256sum -c`.

    report = restore_checkpoints(session, Restore(bucket="s3://b/ckpt", local_dir="weights/r50"), "r50", outputs)

Files go to `checkpoints/.restore/` first and are renamed into place only once verified, so a cut
copy never leaves a torn `last.pt`. A machine that still has a good `last.pt` keeps it.
"""
from __future__ import annotations

import posixpath
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from orchestrator.job.fetch import sha256_file
from orchestrator.job.sync import shell_path
from orchestrator.records import Restore
from orchestrator.remote.base import TRANSPORT_ERRORS, ConnectionLost, RemoteError, Session
from orchestrator.remote.linkwatch import LinkWatch

CHECKPOINTS = ("last.pt", "best.pt")  # last.pt is required; best.pt comes along when there is one
_HEX = set("0123456789abcdef")


@dataclass(frozen=True)
class RestoreReport:
    source: str  # machine (nothing to restore) | bucket | local | volume
    where: str  # the URI or folder it came from, or the machine's checkpoints folder
    files: tuple[str, ...] = ()


class RestoreError(RemoteError):
    """No checkpoint could be brought back; the message says what was tried and what to do."""


def bucket_uri(bucket: str, job: str, name: str) -> str:
    """Where infra/bootstrap.sh puts a job's checkpoint: `${ORCH_CHECKPOINT_BUCKET%/}/$job/$name`."""
    return f"{bucket.rstrip('/')}/{job}/{name}"


def _digest_of(sha_file: Path) -> str | None:
    text = sha_file.read_text(encoding="utf-8", errors="replace").split()
    value = text[0].lower() if text else ""
    return value if len(value) == 64 and set(value) <= _HEX else None


def local_copy(folder: str | Path) -> Path | None:
    """`folder/checkpoints/last.pt` when it is there and matches its .sha256; None when it is not there.

    A copy that does not match its .sha256 raises: resuming from it would fail on the machine anyway.
    """
    last = Path(folder).expanduser() / "checkpoints" / "last.pt"
    if not last.is_file():
        return None
    sha = last.with_name("last.pt.sha256")
    if sha.is_file():
        expected = _digest_of(sha)
        if expected is None or sha256_file(last) != expected:
            raise RestoreError(f"{last} does not match {sha.name}, so it can't be resumed from. Fetch it again "
                               f"(orch fetch-weights JOB --which all --dest {folder}) or point --resume-from elsewhere.")
    return last


def restore_checkpoints(session: Session, restore: Restore, job: str, outputs_dir: str,
                        say: Callable[[str], None] = lambda _: None) -> RestoreReport:
    """Put the newest checkpoint in `outputs_dir/checkpoints` on the session's machine (see the module doc).

    Runs under `remote.LinkWatch`, as the sync and the fetch do: a link that goes silent during a
    long copy fails with ConnectionLost (run the same launch again) instead of hanging for good.
    """
    with LinkWatch(session):
        return _restore(session, restore, job, outputs_dir, say)


def _restore(session: Session, restore: Restore, job: str, outputs_dir: str,
             say: Callable[[str], None]) -> RestoreReport:
    ckpt_dir = posixpath.join(outputs_dir, "checkpoints")
    if session.run(f"cd {shell_path(ckpt_dir)} 2>/dev/null && sha256sum -c --status last.pt.sha256").ok:
        say(f"  {ckpt_dir}/last.pt is on the machine and verifies: kept, nothing restored")
        return RestoreReport("machine", ckpt_dir)
    problems: list[str] = []
    if restore.bucket:
        try:
            return restore_from_bucket(session, restore.bucket, job, ckpt_dir, say)
        except RestoreError as e:
            if not restore.local_dir:
                raise
            problems.append(str(e))
            say(f"  the bucket had no usable checkpoint ({e}); trying the local copy")
    if restore.local_dir:
        return restore_from_local(session, Path(restore.local_dir), outputs_dir, say)
    if restore.volume_id:
        return restore_from_volume(session, restore.volume_id, job, outputs_dir, restore.volume_device, say)
    raise RestoreError("no checkpoint source was given (a checkpoint bucket, a local copy or a kept volume)"
                       + (f": {'; '.join(problems)}" if problems else ""))


def _staging(session: Session, ckpt_dir: str) -> str:
    staging = posixpath.join(ckpt_dir, ".restore")
    session.run(f"rm -rf -- {shell_path(staging)} && mkdir -p -- {shell_path(staging)}", check=True)
    return staging


def _move_into_place(session: Session, staging: str, outputs_dir: str, names: list[str],
                     with_metrics: bool) -> tuple[str, ...]:
    """Rename the verified checkpoints (and a staged metrics.jsonl) into place; returns what was placed."""
    if with_metrics:  # the epochs before the checkpoint; the trainer trims any after it
        session.run(f"mv -f -- {shell_path(posixpath.join(staging, 'metrics.jsonl'))} "
                    f"{shell_path(posixpath.join(outputs_dir, 'metrics.jsonl'))}", check=True)
    # Each .pt before its .sha256 (as the trainer writes them): a cut leaves no digest for a file that isn't there.
    order = [n for name in names for n in (name, name + ".sha256")]
    moves = " && ".join(f"mv -f -- {shlex.quote(n)} .." for n in order)
    session.run(f"cd {shell_path(staging)} && {moves} && cd .. && rm -rf .restore", check=True)
    return tuple(f"checkpoints/{n}" for n in names) + (("metrics.jsonl",) if with_metrics else ())


def restore_from_bucket(session: Session, bucket: str, job: str, ckpt_dir: str,
                        say: Callable[[str], None] = lambda _: None) -> RestoreReport:
    """`aws s3 cp` on the machine with its instance role; `sha256sum -c` there before anything is moved in.

    The commands are built from `bucket`, `job` and the folder only: no local credential or AWS_*
    variable is sent (the SSH session forwards no environment).
    """
    say(f"  copying {bucket_uri(bucket, job, 'last.pt')} on {session.where} with its instance role")
    staging = _staging(session, ckpt_dir)
    got: list[str] = []
    for name in CHECKPOINTS:
        for file in (name + ".sha256", name):
            uri = bucket_uri(bucket, job, file)
            cmd = (f"aws s3 cp {shlex.quote(uri)} {shell_path(posixpath.join(staging, file))} "
                   "--only-show-errors --no-progress")
            result = session.run(cmd)
            if result.exit_code == 127:
                raise RestoreError(f"the AWS CLI is not installed on {session.where}, so the checkpoint bucket "
                                   "can't be read there (the Deep Learning AMI ships it). Resume from a local copy "
                                   "instead: orch fetch-weights JOB --which all, then --resume-from DIR.")
            if result.exit_code != 0:
                if name != "last.pt":
                    break  # best.pt is optional
                text = (result.stderr or result.stdout).strip()[-600:]
                session.run(f"rm -rf -- {shell_path(staging)}")
                raise RestoreError(f"could not copy {uri} on {session.where} (exit {result.exit_code}): {text}. "
                                   "It runs with the instance's role, never your local credentials: check the "
                                   "checkpoint was written there and the role may s3:GetObject it (see infra/).")
        else:
            got.append(name)
    for name in got:  # a reclaim between the watcher's copy of a checkpoint and of its .sha256: the digest on the object
        _digest_from_object(session, staging, name, bucket_uri(bucket, job, name))
    _verify_staged(session, staging, got, f"the checkpoint copied from {bucket_uri(bucket, job, '')}",
                   "The watcher may have been cut mid-copy: resume from a local copy (--resume-from).")
    # The epochs' history, copied by the watcher after last.pt (optional: the trainer trims any line
    # past the checkpoint, and an older watcher did not copy it).
    has_metrics = session.run(f"aws s3 cp {shlex.quote(bucket_uri(bucket, job, 'metrics.jsonl'))} "
                              f"{shell_path(posixpath.join(staging, 'metrics.jsonl'))} "
                              "--only-show-errors --no-progress").ok
    placed = _move_into_place(session, staging, posixpath.dirname(ckpt_dir), got, has_metrics)
    return RestoreReport("bucket", bucket_uri(bucket, job, ""), placed)


def _digest_from_object(session: Session, staging: str, name: str, uri: str) -> None:
    """When the staged `name` does not match the .sha256 copied with it, the SHA-256 infra/bootstrap.sh puts on the
    object itself (its metadata, written in the same PUT) takes the .sha256's place if it is one; else nothing
    changes and the check that follows fails."""
    bucket, _, key = uri.removeprefix("s3://").partition("/")
    session.run(f"cd {shell_path(staging)} && {{ sha256sum -c --status {shlex.quote(name + '.sha256')} || {{ "
                f"d=$(aws s3api head-object --bucket {shlex.quote(bucket)} --key {shlex.quote(key)} "
                "--query Metadata.sha256 --output text) && printf '%s' \"$d\" | grep -qxE '[0-9a-f]{64}' && "
                f"printf '%s  %s\\n' \"$d\" {shlex.quote(name)} > {shlex.quote(name + '.sha256')}; }}; }}")


def _sftp_path(path: str) -> str:
    return path[2:] if path.startswith("~/") else path  # SFTP starts in the home folder and knows no `~`


def restore_from_local(session: Session, folder: Path, outputs_dir: str,
                       say: Callable[[str], None] = lambda _: None) -> RestoreReport:
    """Upload `folder/checkpoints/{last,best}.pt` (and metrics.jsonl) over SFTP, each checked by sha256 there."""
    folder = Path(folder).expanduser()
    if local_copy(folder) is None:
        raise RestoreError(f"{folder / 'checkpoints' / 'last.pt'} does not exist. `orch fetch-weights JOB --which all "
                           f"--dest {folder}` writes it while the job's machine is up.")
    ckpt_dir = posixpath.join(outputs_dir, "checkpoints")
    say(f"  uploading the checkpoint from {folder} to {session.where}")
    staging = _staging(session, ckpt_dir)
    names: list[str] = []
    files = session.sftp()
    try:
        for name in [n for n in CHECKPOINTS if (folder / "checkpoints" / n).is_file()]:
            local = folder / "checkpoints" / name
            sha = local.with_name(name + ".sha256")
            actual = sha256_file(local)
            expected = _digest_of(sha) if sha.is_file() else actual  # no .sha256: what is here now
            if expected != actual:  # only best.pt can get here (local_copy checked last.pt)
                say(f"  skipping {local}: it does not match {sha.name}")
                continue
            remote = posixpath.join(staging, name)
            files.put(str(local), _sftp_path(remote))
            with files.open(_sftp_path(remote + ".sha256"), "w") as f:
                f.write(f"{expected}  {name}\n".encode())
            names.append(name)
        metrics = folder / "metrics.jsonl"
        has_metrics = metrics.is_file()
        if has_metrics:
            files.put(str(metrics), _sftp_path(posixpath.join(staging, "metrics.jsonl")))
    except TRANSPORT_ERRORS as e:
        raise ConnectionLost(f"the upload of the checkpoint to {session.where} was cut ({type(e).__name__}: {e}); "
                             "nothing was put in place. Run the same command again.") from e
    finally:
        try:
            files.close()
        except (OSError, EOFError):
            pass
    _verify_staged(session, staging, names, "the checkpoint uploaded", "Run the same command again.")
    return RestoreReport("local", str(folder), _move_into_place(session, staging, outputs_dir, names, has_metrics))


def _verify_staged(session: Session, staging: str, names: list[str], what: str, fix: str) -> None:
    """`sha256sum -c` of the staged files on the machine; on a mismatch nothing is kept."""
    check = session.run(f"cd {shell_path(staging)} && sha256sum -c --strict "
                        + " ".join(shlex.quote(n + ".sha256") for n in names))
    if not check.ok:
        session.run(f"rm -rf -- {shell_path(staging)}")
        raise RestoreError(f"{what} does not match its .sha256 on {session.where} "
                           f"({(check.stdout + check.stderr).strip()[-300:]}); nothing was put in place. {fix}")


def volume_device_path(volume_id: str) -> str:
    """Where a Nitro instance shows an attached EBS volume: its id, without the dash, is the NVMe serial."""
    return f"/dev/disk/by-id/nvme-Amazon_Elastic_Block_Store_{volume_id.replace('-', '')}"


_DEVICE_WAIT_S = 60  # an attached volume's device node can take a few seconds to appear
ATTACH_DEVICE = "/dev/sdf"  # the device name the volume is attached as (lifecycle/launch.py)
XEN_DEVICE = "/dev/xvdf"  # how a Xen instance shows ATTACH_DEVICE

# Root (or sudo -n) for blkid/mount; the copies themselves are written by the session's user.
_AS_ROOT = 'as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo -n "$@"; fi; }; '


def restore_from_volume(session: Session, volume_id: str, job: str, outputs_dir: str, device: str | None = None,
                        say: Callable[[str], None] = lambda _: None) -> RestoreReport:
    """Copy the checkpoints (and metrics.jsonl) off a kept root volume attached to the session's machine.

    The volume's root partition (its largest ext4/xfs one) is mounted read-only in a temporary folder;
    `<$HOME>/orch/<job>/outputs` there is where a `--keep-volume` job wrote them (`machines.instance.ROOT_VOLUME_ROOT`).
    """
    # Nitro instances name the NVMe device after the volume; older (Xen) ones show flow's /dev/sdf as /dev/xvdf.
    candidates = [device] if device else [volume_device_path(volume_id), XEN_DEVICE]
    where = f"{volume_id} ({' or '.join(candidates)})"
    say(f"  copying the checkpoint from the kept volume {where} on {session.where}")
    found = session.run(_AS_ROOT + f"""dev=
for i in $(seq {_DEVICE_WAIT_S}); do
    for d in {' '.join(shlex.quote(c) for c in candidates)}; do [ -b "$d" ] && dev=$d && break 2; done; sleep 1
done
[ -n "$dev" ] || {{ echo "no block device {' or '.join(candidates)}" >&2; exit 3; }}
best=; best_size=0
for part in $(lsblk -lnpo NAME "$dev"); do
    type=$(as_root blkid -p -o value -s TYPE "$part" 2>/dev/null) || continue
    case "$type" in ext2|ext3|ext4|xfs) ;; *) continue ;; esac
    size=$(lsblk -bdno SIZE "$part")
    if [ "$size" -gt "$best_size" ]; then best=$part; best_size=$size; best_type=$type; fi
done
[ -n "$best" ] || {{ echo "no ext4 or xfs filesystem on $dev" >&2; exit 4; }}
echo "$best $best_type"
""", timeout=_DEVICE_WAIT_S + 60)
    if not found.ok:
        raise RestoreError(f"the kept volume {where} is not usable on {session.where} "
                           f"({(found.stderr or found.stdout).strip()[-300:]}). It is left as it was: `orch launch "
                           f"--name {job} --resume` tries again; or resume from a local copy (--resume-from).")
    partition, fs_type = found.stdout.split()[-2:]
    options = "ro,nouuid" if fs_type == "xfs" else "ro"  # xfs: the new root came from the same image (same UUID)
    mounted = session.run(_AS_ROOT + f"mnt=$(mktemp -d /tmp/orch-volume.XXXXXX) && "
                          f"as_root mount -o {options} {shlex.quote(partition)} \"$mnt\" && echo \"$mnt\"", timeout=120)
    if not mounted.ok:
        raise RestoreError(f"could not mount {partition} of the kept volume {where} read-only on {session.where}: "
                           f"{(mounted.stderr or mounted.stdout).strip()[-300:]}. The volume is left as it was.")
    mount_point = mounted.stdout.strip().splitlines()[-1]
    try:
        home = session.run('echo "$HOME"', check=True).stdout.strip()
        source = posixpath.join(mount_point, home.lstrip("/"), "orch", job, "outputs")
        ckpt_dir = posixpath.join(outputs_dir, "checkpoints")
        staging = _staging(session, ckpt_dir)
        names: list[str] = []
        for name in CHECKPOINTS:
            src = posixpath.join(source, "checkpoints", name)
            both = f"as_root test -f {shlex.quote(src)} && as_root test -f {shlex.quote(src + '.sha256')}"
            if not session.run(_AS_ROOT + both).ok:
                if name == "last.pt":
                    session.run(f"rm -rf -- {shell_path(staging)}")
                    raise RestoreError(f"the kept volume {volume_id} has no {home}/orch/{job}/outputs/checkpoints/"
                                       "last.pt (with its .sha256): the job wrote no checkpoint there. Nothing was "
                                       "put in place; start over without --resume, or resume from another source.")
                continue
            for file in (name, name + ".sha256"):  # `as_root cat` reads; the user's shell writes (their file)
                session.run(_AS_ROOT + f"as_root cat {shlex.quote(posixpath.join(source, 'checkpoints', file))} "
                            f"> {shell_path(posixpath.join(staging, file))}", check=True)
            names.append(name)
        metrics = posixpath.join(source, "metrics.jsonl")
        has_metrics = session.run(_AS_ROOT + f"as_root test -f {shlex.quote(metrics)}").ok
        if has_metrics:
            session.run(_AS_ROOT + f"as_root cat {shlex.quote(metrics)} > "
                        f"{shell_path(posixpath.join(staging, 'metrics.jsonl'))}", check=True)
        _verify_staged(session, staging, names, f"the checkpoint copied from the kept volume {volume_id}",
                       "The volume is left as it was; resume from another source (--resume-from).")
        placed = _move_into_place(session, staging, outputs_dir, names, has_metrics)
    finally:
        session.run(_AS_ROOT + f"as_root umount {shlex.quote(mount_point)} && rmdir {shlex.quote(mount_point)}",
                    timeout=120)
    return RestoreReport("volume", volume_id, placed)
