"""Any name an archive can carry becomes a file inside --dest or is refused; never a path outside it.

Hypothesis generates the names, weighted towards what breaks paths ("/", "\\", "..", NUL, control
characters, names past 255 bytes): many examples against the validator every reader calls
(catalog.plain_name), fewer through `trainer prepare tiny-imagenet` with the name as a val image of
the real zip layout.
"""
from __future__ import annotations

import itertools
import os
import zipfile

from hypothesis import HealthCheck, assume, given, settings, strategies as st

from tests.prepare.miniature import WNIDS, jpeg, make_tiny
from tests.reliability.conftest import no_traceback, trainer
from trainer.prepare.catalog import NAME_MAX_BYTES, HostileSource, plain_name
from trainer.prepare.shrink import write_atomic

PIECES = ["/", "\\", ".", "..", "\x00", "\x1b", "\n", "\x7f", "\x85", " ", "a", "é", "~", ":", "C:", "val_0.JPEG"]
NAMES = st.one_of(
    st.text(max_size=30),
    st.lists(st.sampled_from(PIECES), max_size=6).map("".join),
    st.text(alphabet="aé€𝄞", min_size=60, max_size=140),   # 60 to 560 bytes: around the file name limit
)
FIRST_CLASS = WNIDS[0]   # the class make_tiny gives val_0.JPEG


def unsafe(name: str) -> bool:
    """What must never be accepted, said independently of the validator."""
    return (name in ("", ".", "..") or "/" in name or "\\" in name or "\x00" in name
            or any(ord(c) < 32 or 127 <= ord(c) < 160 for c in name))


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(name=NAMES)
def test_the_validator_accepts_only_a_name_that_stays_in_its_folder(tmp_path, name):
    folder = tmp_path / "dest" / "train" / "cls"
    folder.mkdir(parents=True, exist_ok=True)
    try:
        assert plain_name(name, "wnids.txt") == name
    except HostileSource as exc:
        message = str(exc)
        assert message.startswith("wnids.txt holds the name ")
        assert not any(ord(c) < 32 for c in message), "the refusal must be safe to print"
        return
    assert not unsafe(name)
    path = folder / name
    assert os.path.dirname(os.path.normpath(path)) == str(folder)
    write_atomic(path, b"x")   # as the writer does: a name past the file system's limit fails here
    assert os.listdir(folder) == [name] and path.resolve().parent == folder.resolve()
    path.unlink()


_examples = itertools.count()


@settings(max_examples=15, deadline=None, suppress_health_check=list(HealthCheck))
@given(name=NAMES)
def test_prepare_writes_a_val_image_inside_dest_or_refuses_its_name(tmp_path, name):
    assume(not name.startswith("val_"))   # not one of the miniature's own val images
    root = tmp_path / f"example-{next(_examples)}"
    make_tiny(root / "src", zipped=True)
    zip_path = root / "src" / "tiny-imagenet-200.zip"
    image = jpeg(12345, (64, 64))
    with zipfile.ZipFile(zip_path) as zf:
        members = {i.filename: zf.read(i) for i in zf.infolist()}
    annotations = "tiny-imagenet-200/val/val_annotations.txt"
    members[annotations] = members[annotations].replace(b"val_0.JPEG\t", name.encode() + b"\t")
    members[f"tiny-imagenet-200/val/images/{name}"] = image
    with zipfile.ZipFile(zip_path, "w") as zf:
        for member, data in members.items():
            zf.writestr(member, data)
    dest = root / "work" / "out"
    dest.parent.mkdir(parents=True)
    outside = lambda: sorted(p for p in root.rglob("*") if p != dest and dest not in p.parents)
    before = outside()

    result = trainer("prepare", "tiny-imagenet", "--source", root / "src", "--dest", dest, "--workers", "1")

    assert outside() == before, "written outside --dest"
    assert result.exit_code in (0, 1) and no_traceback(result.output), result.output
    # The annotation file is tab-separated lines: a name with a tab or a line break is read as another.
    if "\t" in name or len(f"x{name}x".splitlines()) > 1:
        return
    if unsafe(name) or len(name.encode()) > NAME_MAX_BYTES:
        assert result.exit_code == 1 and "holds the name" in result.output, result.output
        return
    assert result.exit_code == 0, result.output
    if not name.startswith("."):   # hidden names are never images (macOS "._x.JPEG")
        assert (dest / "val" / FIRST_CLASS / name).read_bytes() == image
