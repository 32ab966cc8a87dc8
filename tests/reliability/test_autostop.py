"""The instance stops itself, independent of the laptop: infra/bootstrap.sh's watcher, run here.

The watcher is the real script in its `watch` mode. Only what an instance has and this machine
must not be touched for are fakes on its PATH: `docker` (answers `ps`/`inspect` from a file the
test flips, records `update`/`stop`), `shutdown` and `aws` (record their calls and the time), and
`ss` (the established SSH connections: the lines of a file the test writes).
"""
from __future__ import annotations

import hashlib
import os
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from orchestrator.lifecycle.userdata import idle_minutes
from tests.reliability.conftest import REPO

BOOTSTRAP = REPO / "infra" / "bootstrap.sh"
INTERVAL_S = 1

FAKE_DOCKER = r"""#!/bin/bash
# A one-container engine: $FAKE/container holds running|restarting|exited (absent: no container).
echo "$*" >> "$FAKE/docker.calls"
state=$(cat "$FAKE/container" 2>/dev/null || echo none)
case "$1" in
    ps)
        [ "$state" = none ] && exit 0
        all=0; want=""
        for a in "$@"; do
            case "$a" in -a|-aq|-qa) all=1 ;; status=*) want="${a#status=}" ;; esac
        done
        if [ $all = 1 ]; then echo c0ffee; exit 0; fi
        if [ -n "$want" ]; then [ "$want" = "$state" ] && echo c0ffee; exit 0; fi
        case "$state" in running|restarting) echo c0ffee ;; esac ;;
    inspect)
        case "$*" in *orch.outputs*) echo "$FAKE/outputs" ;; *orch.job*) echo demo-job ;; esac ;;
    update) shift; for a in "$@"; do case "$a" in -*) ;; *) echo "$a" ;; esac; done ;;
    stop) echo exited > "$FAKE/container"; echo c0ffee ;;
esac
"""

FAKE_SHUTDOWN = """#!/bin/bash
echo "$(date +%s.%N) $*" >> "$FAKE/shutdown.calls"
"""

FAKE_AWS = """#!/bin/bash
echo "$*" >> "$FAKE/aws.calls"
"""

FAKE_SS = """#!/bin/bash
# `ss -Htn state established '( sport = :22 )'`: one line per connection in $FAKE/ssh.
cat "$FAKE/ssh" 2>/dev/null
exit 0
"""


@dataclass
class Instance:
    """The fake instance's knobs and records."""

    root: Path
    proc: subprocess.Popen | None = None

    def container(self, state: str | None) -> None:
        path = self.root / "container"
        if state is None:
            path.unlink(missing_ok=True)
        else:
            path.write_text(state + "\n")

    def calls(self, tool: str) -> list[str]:
        path = self.root / f"{tool}.calls"
        return path.read_text().splitlines() if path.exists() else []

    def shutdown_time(self) -> float | None:
        calls = self.calls("shutdown")
        return float(calls[0].split()[0]) if calls else None

    def watch(self, **settings: str) -> subprocess.Popen:
        env = {
            "PATH": f"{self.root / 'bin'}:/usr/bin:/bin", "FAKE": str(self.root),
            "ORCH_WATCH_INTERVAL_S": str(INTERVAL_S), "ORCH_STATE_DIR": str(self.root / "state"),
            "ORCH_LOG": str(self.root / "watch.log"), **settings,
        }
        self.proc = subprocess.Popen(["bash", str(BOOTSTRAP), "watch"], env=env, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True)
        return self.proc

    def ssh(self, connections: int) -> None:
        """Established SSH connections to the instance (orch syncing, a user's shell)."""
        lines = [f"0 0 10.0.0.5:22 203.0.113.7:{50000 + i}" for i in range(connections)]
        (self.root / "ssh").write_text("".join(line + "\n" for line in lines))

    def log(self) -> str:
        path = self.root / "watch.log"
        return path.read_text() if path.exists() else ""


@pytest.fixture
def instance(tmp_path):
    assert BOOTSTRAP.is_file(), "infra/bootstrap.sh (the instance's user data and watcher) is missing"
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, text in (("docker", FAKE_DOCKER), ("shutdown", FAKE_SHUTDOWN), ("aws", FAKE_AWS), ("ss", FAKE_SS)):
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    (tmp_path / "outputs" / "checkpoints").mkdir(parents=True)
    inst = Instance(tmp_path)
    yield inst
    if inst.proc is not None and inst.proc.poll() is None:
        inst.proc.kill()
        inst.proc.communicate()


def wait_for(predicate, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.2)
    return predicate()


def test_autostop_fires_after_the_container_exits_and_not_before(instance):
    autostop_s = 3
    instance.container("running")
    proc = instance.watch(ORCH_AUTOSTOP_MINUTES=str(autostop_s / 60))
    time.sleep(autostop_s + 3 * INTERVAL_S)  # longer than the autostop delay, but the job still runs
    assert instance.calls("shutdown") == [], instance.log()
    instance.container("restarting")  # a restart after a crash is still the job
    time.sleep(autostop_s + 2 * INTERVAL_S)
    assert instance.calls("shutdown") == [], instance.log()

    exited = time.time()
    instance.container("exited")
    assert wait_for(lambda: instance.shutdown_time() is not None, autostop_s + 10 * INTERVAL_S), instance.log()
    waited = instance.shutdown_time() - exited
    # Whole seconds (`date +%s`) in the script: it may fire up to 1 s before autostop_s, never sooner.
    assert autostop_s - 1.5 <= waited <= autostop_s + 6 * INTERVAL_S
    assert instance.calls("shutdown") == [instance.calls("shutdown")[0]]  # once
    assert instance.calls("shutdown")[0].split()[1:] == ["-h", "now"]
    proc.wait(timeout=10)
    assert proc.returncode == 0
    assert "shutting down" in instance.log()
    assert not [c for c in instance.calls("docker") if c.startswith("stop")], "autostop never stops a job"


def test_a_fresh_instance_waiting_for_its_data_is_not_stopped(instance):
    # No container has run yet (the dataset may take hours to arrive): autostop must wait for a job.
    instance.container(None)
    instance.watch(ORCH_AUTOSTOP_MINUTES=str(1 / 60))
    time.sleep(5 * INTERVAL_S)
    assert instance.calls("shutdown") == [], instance.log()
    assert instance.proc.poll() is None


def test_a_fresh_instance_receiving_its_data_is_kept_and_one_left_alone_shuts_down(instance):
    idle_s = 3
    instance.container(None)
    instance.ssh(1)  # orch is syncing the dataset
    proc = instance.watch(ORCH_AUTOSTOP_MINUTES="30", ORCH_IDLE_MINUTES=str(idle_s / 60))
    time.sleep(idle_s + 3 * INTERVAL_S)
    assert instance.calls("shutdown") == [], instance.log()

    dropped = time.time()
    instance.ssh(0)  # Ctrl-C, a failed sync, a laptop asleep: nobody comes back
    assert wait_for(lambda: instance.shutdown_time() is not None, idle_s + 10 * INTERVAL_S), instance.log()
    assert idle_s - 1.5 <= instance.shutdown_time() - dropped <= idle_s + 6 * INTERVAL_S
    proc.wait(timeout=10)
    assert "no job started and no SSH connection for 3s" in instance.log()
    assert not [c for c in instance.calls("docker") if c.startswith("stop")]


def test_an_instance_setting_its_job_up_is_kept_but_a_start_left_from_before_a_reboot_does_not_keep_it(instance):
    """A managed instance's `start` (orch installed, image pulled, dataset copied) can outlast the idle limit; what it
    leaves behind when cut off (a reboot), a pid that another process may hold now, keeps nothing up."""
    idle_s = 2
    instance.container(None)
    (instance.root / "state").mkdir()
    boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    setting_up = subprocess.Popen(["sleep", "60"])  # stands for the `start` step, alive
    try:
        (instance.root / "state" / "starting").write_text(f"{setting_up.pid} {boot}\n")
        instance.watch(ORCH_AUTOSTOP_MINUTES="30", ORCH_IDLE_MINUTES=str(idle_s / 60))
        time.sleep(idle_s + 4 * INTERVAL_S)
        assert instance.calls("shutdown") == [], instance.log()
        # The same pid, alive, but written before a reboot (another boot id): not a start running now.
        (instance.root / "state" / "starting").write_text(f"{setting_up.pid} {'0' * 8}-0000-0000-0000-{'0' * 12}\n")
        assert wait_for(lambda: instance.shutdown_time() is not None, idle_s + 10 * INTERVAL_S), instance.log()
    finally:
        setting_up.kill()
        setting_up.wait()


@pytest.mark.parametrize("autostop", ["0", "1", "30", "90"])
def test_the_idle_stop_before_any_job_is_twice_autostop_within_bounds_as_orch_says(instance, autostop):
    instance.container(None)
    instance.ssh(1)
    instance.watch(ORCH_AUTOSTOP_MINUTES=autostop)
    idle_s = round(idle_minutes(float(autostop)) * 60)
    assert idle_s == {"0": 0, "1": 600, "30": 3600, "90": 7200}[autostop]  # off with autostop; 10 min to 2 h
    assert wait_for(lambda: "watcher:" in instance.log(), 10), instance.log()
    assert f", {idle_s}s idle before any job (0: off)," in instance.log()


def test_autostop_zero_never_stops(instance):
    instance.container("running")
    instance.watch(ORCH_AUTOSTOP_MINUTES="0")
    time.sleep(2 * INTERVAL_S)
    instance.container("exited")
    time.sleep(5 * INTERVAL_S)
    assert instance.calls("shutdown") == [], instance.log()


CAP_S = 5.4  # 0.0015 hours


@pytest.mark.parametrize("cap", [{"ORCH_MAX_HOURS": "0.0015"},
                                 {"ORCH_MAX_DOLLARS": "0.003", "ORCH_PRICE_PER_HOUR": "2.0"}],
                         ids=["max-hours", "max-dollars"])
def test_hard_cap_stops_the_job_gracefully_then_the_instance(instance, cap):
    instance.container("running")
    started = time.time()
    proc = instance.watch(ORCH_AUTOSTOP_MINUTES="30", **cap)
    assert wait_for(lambda: instance.shutdown_time() is not None, 30), instance.log()
    # The script counts whole seconds (`date +%s`, the cap rounded down): up to 2 s early is its resolution.
    assert CAP_S - 2 <= instance.shutdown_time() - started <= CAP_S + 4 * INTERVAL_S + 5
    docker = instance.calls("docker")
    stops = [c for c in docker if c.startswith("stop")]
    assert stops, docker
    # SIGTERM with time to save last.pt, and no restart policy bringing the job back meanwhile.
    assert "--time 300" in stops[0]
    updates = [i for i, c in enumerate(docker) if c.startswith("update") and "--restart=no" in c]
    assert updates and updates[0] < docker.index(stops[0])
    assert "hard cap" in instance.log()
    proc.wait(timeout=10)


def test_the_hard_cap_counts_from_the_watchers_first_start_across_restarts(instance):
    instance.container("running")
    proc = instance.watch(ORCH_AUTOSTOP_MINUTES="30", ORCH_MAX_HOURS="1")
    started = instance.root / "state" / "started"
    assert wait_for(started.exists, 10), instance.log()
    first = started.read_text()
    proc.kill()
    proc.communicate()
    time.sleep(1.1)
    proc = instance.watch(ORCH_AUTOSTOP_MINUTES="30", ORCH_MAX_HOURS="1")  # Restart=always, or a reboot
    assert wait_for(lambda: instance.log().count("watcher:") == 2, 10), instance.log()
    assert started.read_text() == first
    proc.kill()
    proc.communicate()

    started.write_text(f"{int(time.time()) - 3601}\n")  # first started over an hour ago
    proc = instance.watch(ORCH_AUTOSTOP_MINUTES="30", ORCH_MAX_HOURS="1")
    assert wait_for(lambda: instance.shutdown_time() is not None, 15), instance.log()
    assert "hard cap of 3600s reached" in instance.log()
    proc.wait(timeout=10)


@pytest.mark.parametrize("cap,seconds", [({"ORCH_MAX_HOURS": "3"}, 3 * 3600),
                                         ({"ORCH_MAX_DOLLARS": "1.5", "ORCH_PRICE_PER_HOUR": "0.75"}, 2 * 3600),
                                         ({"ORCH_MAX_HOURS": "3", "ORCH_MAX_DOLLARS": "1.5",
                                           "ORCH_PRICE_PER_HOUR": "0.75"}, 2 * 3600),   # the sooner of the two
                                         ({"ORCH_MAX_DOLLARS": "1.5"}, None),   # no price known: no dollar cap
                                         ({}, None)],
                         ids=["max-hours", "max-dollars", "both", "dollars-without-price", "none"])
def test_the_watcher_tells_orch_its_cap_and_clock_for_the_trainers_max_hours(instance, monkeypatch, cap, seconds):
    from orchestrator.machines import bootstrap
    from orchestrator.remote.local import LocalSession
    from orchestrator.trainer_args import budget_under_cap

    instance.container("running")
    proc = instance.watch(ORCH_AUTOSTOP_MINUTES="30", **cap)
    state = instance.root / "state"
    assert wait_for(lambda: (state / "cap").exists(), 10), instance.log()
    monkeypatch.setattr(bootstrap, "WATCHER_STATE_DIR", str(state))  # /var/lib/orch on an instance
    (state / "started").write_text(f"{int(time.time()) - 1800}\n")  # its first start, half an hour ago
    found = bootstrap.hard_cap(LocalSession())
    if seconds is None:
        assert found is None
    else:
        assert found.seconds == seconds and 1800 <= found.elapsed_s <= 1805
        # what `orch launch` then gives the trainer: the rest of the cap less 10 min to save
        assert budget_under_cap(found.seconds, found.elapsed_s, 0, None).hours == \
            pytest.approx(seconds / 3600 - 0.5 - 1 / 6, abs=0.01)
    proc.kill()
    proc.communicate()


def checkpoint(ckpts: Path, data: bytes) -> None:
    """A checkpoint as the trainer writes it: the file, then its .sha256."""
    (ckpts / "last.pt").write_bytes(data)
    (ckpts / "last.pt.sha256").write_text(f"{hashlib.sha256(data).hexdigest()}  last.pt\n")


def test_new_checkpoints_are_copied_to_the_bucket_once_each(instance):
    ckpts = instance.root / "outputs" / "checkpoints"
    checkpoint(ckpts, b"weights-1")
    instance.container("running")
    instance.watch(ORCH_AUTOSTOP_MINUTES="30", ORCH_CHECKPOINT_BUCKET="s3://example-bucket/ckpt/")
    assert wait_for(lambda: len(instance.calls("aws")) >= 2, 10), instance.log()
    time.sleep(3 * INTERVAL_S)
    calls = instance.calls("aws")
    copying = instance.root / "state" / "copying.sha256"  # the .sha256 as it was when the copy began
    digest = hashlib.sha256(b"weights-1").hexdigest()  # on the object too: it and the checkpoint are one PUT
    assert calls == [f"s3 cp --only-show-errors --metadata sha256={digest} {ckpts}/last.pt "
                     "s3://example-bucket/ckpt/demo-job/last.pt",
                     f"s3 cp --only-show-errors {copying} s3://example-bucket/ckpt/demo-job/last.pt.sha256"]
    # A new epoch's checkpoint: copied again (checksum file newer than the last copy).
    time.sleep(1.1)
    checkpoint(ckpts, b"weights-2")
    os.utime(ckpts / "last.pt.sha256", (time.time() + 2, time.time() + 2))
    assert wait_for(lambda: len(instance.calls("aws")) >= 4, 10), instance.log()


def test_a_checkpoint_that_does_not_match_its_sha256_is_not_copied_until_it_does(instance):
    """Mid-write (the trainer replaced the file, its .sha256 not yet): no pair that a restore would refuse."""
    ckpts = instance.root / "outputs" / "checkpoints"
    checkpoint(ckpts, b"weights-1")
    (ckpts / "last.pt").write_bytes(b"weights-2")
    instance.container("running")
    instance.watch(ORCH_AUTOSTOP_MINUTES="30", ORCH_CHECKPOINT_BUCKET="s3://example-bucket/ckpt")
    time.sleep(3 * INTERVAL_S)
    assert instance.calls("aws") == []
    checkpoint(ckpts, b"weights-2")
    os.utime(ckpts / "last.pt.sha256", (time.time() + 2, time.time() + 2))
    assert wait_for(lambda: len(instance.calls("aws")) >= 2, 10), instance.log()


def test_the_metrics_go_to_the_bucket_between_last_pt_and_its_sha256(instance):
    """A resume from the bucket gets the run's history too (orchestrator/restore.py copies it back). The .sha256 a
    restore checks goes last: an instance lost half-way through the copies leaves no checkpoint without its history."""
    outputs = instance.root / "outputs"
    checkpoint(outputs / "checkpoints", b"weights-1")
    (outputs / "metrics.jsonl").write_text('{"epoch": 1}\n')
    instance.container("running")
    instance.watch(ORCH_AUTOSTOP_MINUTES="30", ORCH_CHECKPOINT_BUCKET="s3://example-bucket/ckpt")
    assert wait_for(lambda: len(instance.calls("aws")) >= 3, 10), instance.log()
    assert instance.calls("aws")[:3] == [
        f"s3 cp --only-show-errors --metadata sha256={hashlib.sha256(b'weights-1').hexdigest()} "
        f"{outputs}/checkpoints/last.pt s3://example-bucket/ckpt/demo-job/last.pt",
        f"s3 cp --only-show-errors {outputs}/metrics.jsonl s3://example-bucket/ckpt/demo-job/metrics.jsonl",
        f"s3 cp --only-show-errors {instance.root}/state/copying.sha256 s3://example-bucket/ckpt/demo-job/last.pt.sha256"]


def test_a_managed_job_that_ends_stops_its_group_replacing_the_instance_before_it_shuts_down(instance):
    instance.container("exited")
    (instance.root / "state").mkdir()
    (instance.root / "state" / "job-seen").touch()  # its job ran and ended
    proc = instance.watch(ORCH_AUTOSTOP_MINUTES=str(1 / 60), ORCH_MANAGED_GROUP="orch-rn50")
    assert wait_for(lambda: instance.shutdown_time() is not None, 15), instance.log()
    proc.wait(timeout=10)
    asked = [c for c in instance.calls("aws") if c.startswith("autoscaling")]
    assert asked == ["autoscaling set-desired-capacity --auto-scaling-group-name orch-rn50 --desired-capacity 0 "
                     "--no-honor-cooldown"]
    assert "group orch-rn50 set to 0 instances: this one is not replaced" in instance.log()


def test_a_managed_jobs_cap_counts_from_its_launch_so_a_replacement_stops_at_once_and_is_not_replaced(instance):
    """A replacement instance (a fresh disk: no clock of its own) of a job launched over an hour ago with
    --max-hours 1: the cap is spent, across instances."""
    instance.container("running")
    launched = int(time.time()) - 3601
    proc = instance.watch(ORCH_AUTOSTOP_MINUTES="30", ORCH_MAX_HOURS="1", ORCH_CAP_FROM=str(launched),
                          ORCH_MANAGED_GROUP="orch-rn50")
    assert wait_for(lambda: instance.shutdown_time() is not None, 15), instance.log()
    proc.wait(timeout=10)
    assert "hard cap of 3600s reached" in instance.log()
    assert (instance.root / "state" / "started").read_text().strip() == str(launched)  # what orch tells the trainer
    assert [c for c in instance.calls("aws") if c.startswith("autoscaling set-desired-capacity")]


def test_a_job_that_is_not_managed_asks_no_group_anything(instance):
    instance.container("exited")
    (instance.root / "state").mkdir()
    (instance.root / "state" / "job-seen").touch()
    proc = instance.watch(ORCH_AUTOSTOP_MINUTES=str(1 / 60))
    assert wait_for(lambda: instance.shutdown_time() is not None, 15), instance.log()
    proc.wait(timeout=10)
    assert not [c for c in instance.calls("aws") if c.startswith("autoscaling")]
