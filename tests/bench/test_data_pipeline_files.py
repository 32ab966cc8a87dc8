"""bench/data_pipeline.py's GPU decoding path finds its files the way training does (CPU-testable part)."""
from __future__ import annotations

import io
import sys
from pathlib import Path

import pytest
from PIL import Image

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def data_pipeline(monkeypatch):
    monkeypatch.syspath_prepend(str(REPO / "bench"))
    sys.modules.pop("data_pipeline", None)
    import data_pipeline

    return data_pipeline


def _image(path: Path, fmt: str = "JPEG") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    out = io.BytesIO()
    Image.new("RGB", (40, 30), (200, 100, 50)).save(out, format=fmt)
    path.write_bytes(out.getvalue())


def test_gpu_decode_finds_a_prepared_imagenets_upper_case_jpegs(tmp_path, data_pipeline):
    _image(tmp_path / "train" / "n01440764" / "n01440764_1.JPEG")
    _image(tmp_path / "train" / "n01443537" / "n01443537_2.jpeg")
    _image(tmp_path / "train" / "n01443537" / "n01443537_3.jpg")
    _image(tmp_path / "train" / "n01443537" / "n01443537_4.png", "PNG")   # nvjpeg cannot decode PNG
    names = [p.name for p in data_pipeline.train_jpegs(tmp_path)]
    assert names == ["n01440764_1.JPEG", "n01443537_2.jpeg", "n01443537_3.jpg"]


def test_gpu_decode_without_jpegs_exits_with_a_message(tmp_path, data_pipeline):
    _image(tmp_path / "train" / "apple" / "apple_s_1.png", "PNG")
    with pytest.raises(SystemExit) as exc:
        data_pipeline.train_jpegs(tmp_path)
    assert "no JPEG files" in str(exc.value) and str(tmp_path / "train") in str(exc.value)
