"""Shared test fixtures.

- No test touches the real home directory: ORCH_HOME and HOME point at a temp dir.
- No test reaches a real AWS endpoint: AWS variables are fake unless a fixture sets a moto URL.
- No test dials anything but loopback or a unix socket: pytest-socket (pyproject.toml) refuses the rest, so an
  SSH dial to one of moto's public-looking addresses fails at once.
- `require(condition, why)`: with CI=true a missing service fails the test; elsewhere it skips,
  saying why.
"""
from __future__ import annotations

import os

import pytest


def require(ok: bool, why: str) -> None:
    """Fail under CI (the service must be there), skip on a laptop (say why)."""
    if ok:
        return
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(f"CI=true and a required part is missing: {why}")
    pytest.skip(why)


@pytest.fixture(autouse=True)
def _isolated_home(tmp_path_factory, monkeypatch):
    home = tmp_path_factory.mktemp("home")
    monkeypatch.setenv("ORCH_HOME", str(home / "orch"))
    monkeypatch.setenv("HOME", str(home))
    # Never a real AWS account: fake credentials, and no profile or config file from the host.
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_SESSION_TOKEN", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(home / "aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(home / "aws-credentials"))
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    # Unless a test points boto3 at a moto server, an accidental call goes nowhere.
    if "AWS_ENDPOINT_URL" not in os.environ:
        monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
    yield home
