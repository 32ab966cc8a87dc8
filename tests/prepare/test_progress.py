"""The progress bar's image total while `trainer prepare imagenet` writes."""
from __future__ import annotations

import io

from rich.console import Console

from trainer.prepare.catalog import FULL_COUNTS, typical_per_class
from trainer.prepare.cli import _ProgressReporter


def _total(reporter) -> float:
    return reporter.progress.tasks[0].total


def test_imagenet_total_is_estimated_per_split():
    # The full train tar: 1000 classes of ~1281 images opened one by one, then 1000 val classes of 50.
    truth = 1000 * 1281 + 1000 * 50
    with _ProgressReporter(Console(file=io.StringIO())) as reporter:
        reporter.begin({"train": 1000, "val": 1000}, typical_per_class(FULL_COUNTS["imagenet"]))
        for i in range(1000):
            reporter.expect(1281, "train")
            if i in (0, 499, 999):
                assert abs(_total(reporter) - truth) / truth < 0.01, (i, _total(reporter))
        for _ in range(1000):
            reporter.expect(50, "val")
        assert _total(reporter) == truth


def test_max_per_class_caps_the_estimate():
    assert typical_per_class(FULL_COUNTS["imagenet"], 100) == {"train": 100, "val": 50}
