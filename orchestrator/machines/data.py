"""The dataset steps two machines share: generating `--data demo` once, and copying an s3:// dataset there."""
from __future__ import annotations

import posixpath
import shlex

from orchestrator.job.sync import sync_s3
from orchestrator.machines.base import Runner, Say
from orchestrator.records import JobSpec


def make_demo_data(session, runner: Runner, data_dir: str, image: str, user: str, say: Say) -> None:
    """`trainer demo-data` into `data_dir`, unless an earlier start made it there (its dataset.json says so)."""
    if session.run(f"test -f {shlex.quote(posixpath.join(data_dir, 'dataset.json'))}").exit_code != 0:
        say("  generating the demo dataset (trainer demo-data)")
        runner.make_demo_data(image, data_dir, user)


def copy_from_s3(session, spec: JobSpec, data_dir: str, how: str, say: Say) -> None:
    """`aws s3 sync` on the machine (`how`: with whose credentials, for the message)."""
    say(f"  copying {spec.data} on {session.where}{how}")
    report = sync_s3(session, spec.data, data_dir)
    say(f"  {report.files_sent} of {report.files_total} files copied")
