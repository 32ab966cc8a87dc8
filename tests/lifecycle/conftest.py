"""The lifecycle tests' fixtures: AWS as moto, fake machines at the SSH edge, `orch` in-process (tests/fixtures/aws.py)."""
from tests.fixtures.aws import REGION, Killed, aws, job_calls, moto_url, orch, read_state, tagged  # noqa: F401 (fixtures)
