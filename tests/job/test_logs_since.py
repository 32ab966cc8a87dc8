"""`orch logs --since`: the help's own example (a time without seconds) works, times without a zone are
UTC, and a bad value is a usage error found before anything is reached."""
from __future__ import annotations

import pytest
from typer.testing import CliRunner

from orchestrator.cli import app
from orchestrator.job.logs import parse_since


def orch(*args: str):
    return CliRunner().invoke(app, list(args))


NOON_UTC_NS = 1_714_564_800 * 10**9  # 2024-05-01T12:00:00Z


@pytest.mark.parametrize("text, ns", [
    ("2024-05-01T12:00", NOON_UTC_NS),
    ("2024-05-01 12:00", NOON_UTC_NS),
    ("2024-05-01T12:00:30", NOON_UTC_NS + 30 * 10**9),
    ("2024-05-01T12:00:30.25", NOON_UTC_NS + 30_250_000_000),
    ("2024-05-01", NOON_UTC_NS - 12 * 3600 * 10**9),
    ("2024-05-01T14:00+02:00", NOON_UTC_NS),
    ("2024-05-01T07:00-05:00", NOON_UTC_NS),
    ("2024-05-01T12:00:00Z", NOON_UTC_NS),
    ("2024-05-01T12:00z", NOON_UTC_NS),
])
def test_times_without_seconds_or_zone_are_accepted_as_utc(text, ns):
    assert parse_since(text) == ns


def test_the_help_example_is_accepted_and_says_utc():
    r = orch("logs", "--help")
    assert r.exit_code == 0 and "2024-05-01T12:00" in r.output and "UTC" in r.output
    # The example gets past --since (this job is then looked for in AWS, which is unreachable here).
    r = orch("logs", "somejob", "--since", "2024-05-01T12:00")
    assert "--since" not in r.output, r.output


@pytest.mark.parametrize("bad", ["yesterday", "2024-05-01T12", "12:00", "2024-13-01T00:00"])
def test_a_bad_since_is_a_usage_error(bad):
    r = orch("logs", "somejob", "--since", bad)
    assert r.exit_code == 2, r.output
    assert f"--since {bad!r}" in r.output and "UTC" in r.output and "Traceback" not in r.output
