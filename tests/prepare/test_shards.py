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


@pytest.mark.parametrize("kind", ["dotdot", "absolute", "hidden", "symlink", "hardlink", "device", "sparse"])
def test_a_hostile_shard_member_is_refused_and_nothing_is_written(tmp_path, kind):
    member = tarfile.TarInfo({"dotdot": "train/../../escaped.txt", "absolute": "/tmp/orch-escaped.txt",
                              "hidden": ".unpacked.json"}.get(kind, "train/a/x"))
    if kind == "sparse":  # a GNU sparse member: a few header bytes that would expand to any size on disk
        member.type, member.size = tarfile.GNUTYPE_SPARSE, 1
    elif kind == "symlink":
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
    assert r.returncode == 1 and "not shard-NNNNN.tar" in r.stderr and "refused" in r.stderr
    r = trainer("unpack", "--shards", str(tmp_path / "nothing"), "--dest", str(tmp_path / "r"))
    assert r.returncode == 1 and "manifest.json is missing" in r.stderr


def shard_of(out: Path, members: list[tuple[str, bytes]], **manifest) -> None:
    """One shard holding `members`, and a manifest that says what `manifest` overrides."""
    out.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    raw = buf.getvalue()
    (out / "shard-00000.tar").write_bytes(raw)
    shard = {"name": "shard-00000.tar", "bytes": len(raw), "sha256": hashlib.sha256(raw).hexdigest(),
             "files": len(members), **manifest.pop("shard", {})}
    (out / "manifest.json").write_text(json.dumps({"format": "orch-shards/1", "files": len(members),
                                                   "bytes": sum(len(d) for _, d in members), "splits": {},
                                                   "shards": [shard], **manifest}))


@pytest.mark.parametrize("bad, says", [
    ({"shard": {"bytes": "12"}}, "not a whole number"),
    ({"shard": {"sha256": "../x"}}, "not 64 hex digits"),
    ({"files": -1}, "not a whole number"),
    ({"shards": "x"}, "not a shard manifest"),
])
def test_a_manifest_with_fields_pack_never_writes_is_refused_by_name(tmp_path, bad, says):
    shard_of(tmp_path / "s", [("train/a/x.jpg", b"x")], **bad)
    r = trainer("unpack", "--shards", str(tmp_path / "s"), "--dest", str(tmp_path / "r"))
    assert r.returncode == 1 and says in r.stderr and "Traceback" not in r.stderr, r.stderr
    assert not (tmp_path / "r" / "train").exists()


def test_a_manifest_naming_one_shard_twice_is_refused(tmp_path):
    shard_of(tmp_path / "s", [("train/a/x.jpg", b"x")])
    manifest = json.loads((tmp_path / "s" / "manifest.json").read_text())
    manifest["shards"] *= 2
    (tmp_path / "s" / "manifest.json").write_text(json.dumps(manifest))
    r = trainer("unpack", "--shards", str(tmp_path / "s"), "--dest", str(tmp_path / "r"))
    assert r.returncode == 1 and "named twice" in r.stderr


def test_a_shard_with_a_file_where_a_folder_must_be_is_refused_before_writing(tmp_path):
    shard_of(tmp_path / "s", [("train/a", b"file"), ("train/a/x.jpg", b"x")])
    r = trainer("unpack", "--shards", str(tmp_path / "s"), "--dest", str(tmp_path / "r"))
    assert r.returncode == 1 and "inside a member that is a file" in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "r" / "train").exists()


def test_a_shard_with_more_members_than_its_manifest_says_is_refused(tmp_path):
    shard_of(tmp_path / "s", [("train/a/x.jpg", b"x"), ("train/a/y.jpg", b"y")], shard={"files": 1})
    r = trainer("unpack", "--shards", str(tmp_path / "s"), "--dest", str(tmp_path / "r"))
    assert r.returncode == 1 and "more files than the 1 the manifest says" in r.stderr
    assert not (tmp_path / "r" / "train").exists()


def test_a_new_version_of_a_dataset_restored_over_an_old_one_leaves_no_stale_files(tmp_path):
    shard_of(tmp_path / "v1", [("train/a/old.jpg", b"1"), ("train/b/gone.jpg", b"2")])
    assert trainer("unpack", "--shards", str(tmp_path / "v1"), "--dest", str(tmp_path / "r")).returncode == 0
    shard_of(tmp_path / "v2", [("train/a/new.jpg", b"3")])
    r = trainer("unpack", "--shards", str(tmp_path / "v2"), "--dest", str(tmp_path / "r"))
    assert r.returncode == 0, r.stderr
    assert files_of(tmp_path / "r") == {"train/a/new.jpg": b"3"}


def test_a_folder_holding_other_files_is_not_restored_into(tmp_path):
    shard_of(tmp_path / "s", [("train/a/x.jpg", b"x")])
    (tmp_path / "r").mkdir()
    (tmp_path / "r" / "thesis.tex").write_text("mine")
    r = trainer("unpack", "--shards", str(tmp_path / "s"), "--dest", str(tmp_path / "r"))
    assert r.returncode == 1 and "not empty" in r.stderr
    assert files_of(tmp_path / "r") == {"thesis.tex": b"mine"}


def test_a_link_planted_inside_a_restore_is_not_followed(tmp_path):
    from trainer.shards import manifest_key, read_manifest

    shard_of(tmp_path / "s", [("train/a/x.jpg", b"x")])
    dest, outside = tmp_path / "r", tmp_path / "outside"
    dest.mkdir()
    outside.mkdir()
    key = manifest_key(read_manifest(tmp_path / "s"))
    (dest / ".unpacked.json").write_text(json.dumps({"manifest": key, "shards": []}))  # a restore in progress
    (dest / "train").symlink_to(outside)
    r = trainer("unpack", "--shards", str(tmp_path / "s"), "--dest", str(dest))
    assert r.returncode == 1 and "through a link" in r.stderr
    assert list(outside.iterdir()) == []
