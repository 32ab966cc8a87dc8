"""`trainer pack` / `trainer unpack`: a prepared dataset as large tar shards and a manifest, restored
byte for byte; a damaged, truncated or hostile shard is refused by name before any of it is written, and
an interrupted restore carries on with the shards not yet done."""
from __future__ import annotations

import hashlib
import io
import json
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest


def trainer(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "trainer", *args], capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("shards") / "data"
    assert trainer("demo-data", "--dest", str(root), "--classes", "5", "--per-class", "80", "--size", "48").returncode == 0
    return root


def files_of(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*")
            if p.is_file() and not p.name.startswith(".")}


def packed(dataset: Path, out: Path, shard_bytes: int = 64 << 10) -> dict:
    """`trainer pack`, in shards small enough that the little dataset makes several."""
    r = subprocess.run([sys.executable, "-c", "import sys; from pathlib import Path; from trainer.shards import pack; "
                        "pack(Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3]))", str(dataset), str(out),
                        str(shard_bytes)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    return json.loads((out / "manifest.json").read_text())


def test_a_dataset_packs_into_shards_of_the_size_asked_and_restores_byte_for_byte(dataset, tmp_path):
    r = trainer("pack", "--data", str(dataset), "--out", str(tmp_path / "one"))
    assert r.returncode == 0 and "into 1 shards" in r.stdout, r.stdout + r.stderr
    shard_bytes = 64 << 10
    manifest = packed(dataset, tmp_path / "s", shard_bytes)
    assert len(manifest["shards"]) > 3
    assert all(s["bytes"] <= shard_bytes + (64 << 10) for s in manifest["shards"])  # whole files: about the size
    assert manifest["splits"] == {"train": {"classes": 5, "images": 400}, "val": {"classes": 5, "images": 80}}
    (dataset / ".prepare").mkdir(exist_ok=True)  # prepare's journal, a Mac's ._ file: not the dataset's
    (dataset / ".prepare" / "state.json").write_text("{}")
    assert packed(dataset, tmp_path / "again", shard_bytes)["files"] == manifest["files"]
    (dataset / ".prepare" / "state.json").unlink()
    (dataset / ".prepare").rmdir()
    assert sum(s["files"] for s in manifest["shards"]) == manifest["files"] == len(files_of(dataset))

    r = trainer("unpack", "--shards", str(tmp_path / "s"), "--dest", str(tmp_path / "restored"), "--delete-shards")
    assert r.returncode == 0, r.stderr
    assert f"restored {manifest['files']:,} files" in r.stdout
    assert files_of(tmp_path / "restored") == files_of(dataset)
    assert not list((tmp_path / "s").glob("shard-*.tar"))  # --delete-shards: one copy on the disk
    assert trainer("verify", "--data", str(tmp_path / "restored")).returncode == 0


def test_packing_is_deterministic(dataset, tmp_path):
    assert packed(dataset, tmp_path / "a")["shards"] == packed(dataset, tmp_path / "b")["shards"]


def test_a_damaged_or_truncated_shard_is_named_and_nothing_of_it_is_written(dataset, tmp_path):
    manifest = packed(dataset, tmp_path / "s")
    first = tmp_path / "s" / manifest["shards"][0]["name"]
    data = bytearray(first.read_bytes())
    data[5000] ^= 0xFF
    first.write_bytes(bytes(data))
    r = trainer("unpack", "--shards", str(tmp_path / "s"), "--dest", str(tmp_path / "r"), "--workers", "1")
    assert r.returncode == 1 and f"{first.name}: its SHA-256 differs from the manifest's" in r.stderr
    assert "Traceback" not in r.stderr

    first.write_bytes(bytes(data[:-1000]))
    r = trainer("unpack", "--shards", str(tmp_path / "s"), "--dest", str(tmp_path / "r2"), "--workers", "1")
    assert r.returncode == 1 and "(truncated or replaced)" in r.stderr
    assert not (tmp_path / "r2" / "train").exists()


def test_an_interrupted_restore_carries_on_with_the_shards_not_done(dataset, tmp_path):
    manifest = packed(dataset, tmp_path / "s")
    last = tmp_path / "s" / manifest["shards"][-1]["name"]
    good = last.read_bytes()
    last.write_bytes(good[:100])
    r = trainer("unpack", "--shards", str(tmp_path / "s"), "--dest", str(tmp_path / "r"), "--workers", "1")
    assert r.returncode == 1 and "the same command carries on" in r.stderr
    last.write_bytes(good)  # downloaded again
    r = trainer("unpack", "--shards", str(tmp_path / "s"), "--dest", str(tmp_path / "r"), "--workers", "1")
    assert r.returncode == 0, r.stderr
    assert f"{len(manifest['shards']) - 1} were already done" in r.stdout
    assert files_of(tmp_path / "r") == files_of(dataset)


def hostile(out: Path, member: tarfile.TarInfo, data: bytes = b"x", shard: str = "shard-00000.tar") -> None:
    out.mkdir(parents=True)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        tar.addfile(member, io.BytesIO(data) if member.isfile() else None)
    raw = buf.getvalue()
    (out / "shard-00000.tar").write_bytes(raw)
    (out / "manifest.json").write_text(json.dumps({
        "format": "orch-shards/1", "files": 1, "bytes": len(data), "splits": {},
        "shards": [{"name": shard, "bytes": len(raw), "sha256": hashlib.sha256(raw).hexdigest(), "files": 1}]}))


@pytest.mark.parametrize("kind", ["dotdot", "absolute", "symlink", "hardlink", "device"])
def test_a_hostile_shard_member_is_refused_and_nothing_is_written(tmp_path, kind):
    member = tarfile.TarInfo({"dotdot": "train/../../escaped.txt", "absolute": "/tmp/orch-escaped.txt"}.get(kind, "train/a/x"))
    if kind == "symlink":
        member.type, member.linkname = tarfile.SYMTYPE, "/etc/passwd"
    elif kind == "hardlink":
        member.type, member.linkname = tarfile.LNKTYPE, "/etc/passwd"
    elif kind == "device":
        member.type = tarfile.CHRTYPE
    else:
        member.size = 1
    hostile(tmp_path / "s", member)
    r = trainer("unpack", "--shards", str(tmp_path / "s"), "--dest", str(tmp_path / "dest" / "r"))
    assert r.returncode == 1 and "shard-00000.tar: member" in r.stderr and "refused" in r.stderr, r.stderr
    assert not (tmp_path / "dest" / "escaped.txt").exists() and not Path("/tmp/orch-escaped.txt").exists()
    assert not (tmp_path / "dest" / "r" / "train").exists()


def test_a_manifest_naming_a_shard_outside_its_folder_is_refused(tmp_path):
    member = tarfile.TarInfo("train/a/x")
    member.size = 1
    hostile(tmp_path / "s", member, shard="../../etc/passwd")
    r = trainer("unpack", "--shards", str(tmp_path / "s"), "--dest", str(tmp_path / "r"))
    assert r.returncode == 1 and "not shard-NNNNN.tar, refused" in r.stderr
    r = trainer("unpack", "--shards", str(tmp_path / "nothing"), "--dest", str(tmp_path / "r"))
    assert r.returncode == 1 and "manifest.json is missing" in r.stderr
