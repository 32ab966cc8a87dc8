"""`--target local` without Docker: the trainer as a detached local process (what CI runs).

The README's main-job command for people without AWS, through the real `orch` console script:
launch on the demo data, follow the logs to the exit code, fetch verified weights, tear down.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from orchestrator.records import JobSpec
from orchestrator.errors import JobError
from tests.fixtures.on_this_machine import Here
from orchestrator.machines.local_jobs import load_record
from orchestrator.machines.local_process import LocalProcessMachine
from orchestrator.machines.process_runner import alive

TINY = ("--recipe", "demo", "--device", "cpu", "--workers", "0", "--width", "8")
ORCH = [str(Path(sys.executable).with_name("orch"))]  # the installed console script

HERE = Here(LocalProcessMachine)  # what `orch launch --target local` runs on here
start_job, job_status, stop_job, follow_logs, fetch_weights = (
    HERE.start_job, HERE.job_status, HERE.stop_job, HERE.follow_logs, HERE.fetch_weights)



@pytest.fixture
def process_runner(monkeypatch):
    monkeypatch.setenv("ORCH_LOCAL_RUNNER", "process")
    made: list[str] = []
    yield made
    for job in made:
        stop_job(job)


def orch(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([*ORCH, *args], capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL, env=os.environ.copy())


def epochs_in(metrics: Path) -> list[int]:
    if not metrics.exists():
        return []
    return [json.loads(line)["epoch"] for line in metrics.read_text().splitlines() if line.strip()]


def test_local_demo_job_through_the_cli(process_runner, tmp_path):
    job = "local-demo"
    process_runner.append(job)
    launched = orch("launch", "--target", "local", "--data", "demo", "--name", job, "--", *TINY, "--epochs", "2")
    assert launched.returncode == 0, launched.stdout + launched.stderr
    record = load_record(job)
    assert record.runner == "process" and record.pid
    assert (Path(record.data_dir) / "dataset.json").exists()  # `trainer demo-data` ran first

    followed = orch("logs", job, "--follow")
    assert followed.returncode == 0, followed.stdout + followed.stderr
    assert "epoch 1/2" in followed.stdout and "epoch 2/2" in followed.stdout
    assert followed.stdout.count("epoch 2/2 lr") == 1

    # without --follow, the whole log again and the exit code
    again = orch("logs", job)
    assert again.returncode == 0 and again.stdout == followed.stdout

    st = job_status(job)
    assert (st.state, st.exit_code, st.runner) == ("exited", 0, "process")
    assert st.last_metrics["epoch"] == 2
    shown = orch("status", job)
    assert shown.returncode == 0, shown.stdout + shown.stderr
    assert re.search(r"latest +epoch 2/2 \| val top-1 \d+\.\d\d%, top-5 \d+\.\d\d% \| train loss \d\.\d{4} \| "
                     r"[\d,]+ img/s, data wait \d+%\n", shown.stdout), shown.stdout   # nothing left after the last epoch

    dest = tmp_path / "weights"
    fetched = orch("fetch-weights", job, "--which", "all", "--dest", str(dest))
    assert fetched.returncode == 0, fetched.stdout + fetched.stderr
    assert "sha256 ok" in fetched.stdout
    for name in ("checkpoints/best.pt", "checkpoints/last.pt", "metrics.jsonl", "train.log"):
        assert (dest / name).exists(), name
    check = subprocess.run(["sha256sum", "-c", "best.pt.sha256"], cwd=dest / "checkpoints", capture_output=True)
    assert check.returncode == 0

    down = orch("teardown", job, "--yes")
    assert down.returncode == 0, down.stdout + down.stderr
    assert load_record(job) is None
    assert job_status(job).state == "missing"


def test_two_nodes_of_one_run_on_this_machine_meet_on_its_loopback(process_runner):
    """`--target local --nodes 2`: the flow of a run over two instances, as two trainer processes here."""
    job = "local-nodes"
    process_runner.extend([job, f"{job}.node1"])
    launched = orch("launch", "--target", "local", "--nodes", "2", "--data", "demo", "--name", job, "--", *TINY,
                    "--batch-size", "8", "--epochs", "2")
    assert launched.returncode == 0, launched.stdout + launched.stderr
    assert "the nodes meet at 127.0.0.1:" in launched.stdout
    followed = orch("logs", job, "--follow")
    assert followed.returncode == 0, followed.stdout + followed.stderr
    assert "epoch 2/2" in followed.stdout
    other = orch("logs", job, "--node", "1")
    assert other.returncode == 0 and "node 1 of 2" in other.stdout, other.stdout + other.stderr
    outputs = [Path(load_record(key).outputs_dir) for key in (job, f"{job}.node1")]
    assert json.loads((outputs[0] / "config.json").read_text())["world_size"] == 2
    assert epochs_in(outputs[0] / "metrics.jsonl") == [1, 2]
    assert not (outputs[1] / "checkpoints").exists() and not (outputs[1] / "metrics.jsonl").exists()
    assert "--node 0 to 1" in orch("logs", job, "--node", "2").stderr

    down = orch("teardown", job, "--yes")
    assert down.returncode == 0, down.stdout + down.stderr
    assert load_record(job) is None and load_record(f"{job}.node1") is None


def test_local_process_restarts_after_a_crash_and_resumes(process_runner, tmp_path, capsys):
    job = "local-crash"
    process_runner.append(job)
    data = tmp_path / "data"
    subprocess.run([sys.executable, "-m", "trainer", "demo-data", "--dest", str(data), "--classes", "4",
                    "--per-class", "60"], check=True, capture_output=True)
    epochs = 5
    start_job(JobSpec(job=job, data=str(data),
                                            trainer_args=(*TINY, "--epochs", str(epochs), "--batch-size", "16")))
    record = load_record(job)
    metrics = Path(record.outputs_dir) / "metrics.jsonl"
    deadline = time.monotonic() + 300
    while not epochs_in(metrics):
        assert time.monotonic() < deadline
        assert job_status(job).state == "running"
        time.sleep(0.2)
    trainer_pid = int(subprocess.run(["pgrep", "-P", str(record.pid)], capture_output=True, text=True).stdout.split()[0])
    os.kill(trainer_pid, signal.SIGSTOP)  # frozen mid-run (tiny epochs can end within a second on a fast machine)
    assert len(epochs_in(metrics)) < epochs
    os.kill(trainer_pid, signal.SIGKILL)  # a crash: the supervisor restarts it with --resume auto

    assert follow_logs(job, follow_on=True) == 0
    out = capsys.readouterr().out
    assert "resumed from" in out
    assert epochs_in(metrics) == list(range(1, epochs + 1))
    assert job_status(job).restarts == 1


def test_local_stop_ends_a_running_job_cleanly(process_runner):
    job = "local-stop"
    process_runner.append(job)
    launched = orch("launch", "--target", "local", "--data", "demo", "--name", job, "--", *TINY, "--epochs", "50")
    assert launched.returncode == 0, launched.stdout + launched.stderr
    record = load_record(job)
    assert job_status(job).state == "running"

    # Ctrl-C on `orch logs --follow` stops following, never the job
    # As from a terminal: Ctrl-C is not ignored (a suite started in the background, `make test &`, ignores it,
    # and a child inherits that).
    follower = subprocess.Popen([*ORCH, "logs", job, "--follow"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True, stdin=subprocess.DEVNULL, env={**os.environ, "PYTHONFAULTHANDLER": "1"},
                                preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.monotonic() + 120
    console = Path(record.outputs_dir).parent / "console.log"
    while not console.exists() or "training" not in console.read_text():
        assert time.monotonic() < deadline
        time.sleep(0.3)
    time.sleep(1.0)
    follower.send_signal(signal.SIGINT)
    try:
        out, err = follower.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        follower.send_signal(signal.SIGABRT)  # PYTHONFAULTHANDLER: every thread's stack on stderr
        out, err = follower.communicate(timeout=30)
        pytest.fail(f"`orch logs --follow` still running 30 s after Ctrl-C:\n{err}\n--- stdout:\n{out[-2000:]}")
    assert follower.returncode == 130, err
    assert "training" in out and "keeps running" in err
    assert job_status(job).state == "running"

    assert stop_job(job) is True
    assert not alive(record.pid)
    assert job_status(job).state == "missing"
    # the outputs stay for the user
    assert Path(record.outputs_dir).is_dir()


def test_local_s3_data_is_refused_with_a_way_out(process_runner):
    with pytest.raises(JobError, match="aws s3 sync"):
        start_job(JobSpec(job="local-s3", data="s3://bucket/imagenet"))
    with pytest.raises(JobError, match="does not exist"):
        start_job(JobSpec(job="local-missing", data="/nonexistent/data"))


def test_local_process_is_not_restarted_after_a_bad_input_exit(process_runner, tmp_path, capsys):
    job = "local-bad-input"
    process_runner.append(job)
    data = tmp_path / "data"
    data.mkdir()  # no train/ split: the trainer exits 2 (trainer.errors.EXIT_BAD_INPUT), and would every time
    start_job(JobSpec(job=job, data=str(data), trainer_args=(*TINY, "--epochs", "1")))
    assert follow_logs(job, follow_on=True) == 2
    out = capsys.readouterr().out
    assert "no train split" in out
    assert "not restarting" in out and "restart 1 of" not in out
    st = job_status(job)
    assert (st.state, st.exit_code, st.restarts) == ("exited", 2, 0)


def test_a_job_name_in_use_says_what_a_launch_did_not_apply_and_what_teardown_kept(process_runner, tmp_path):
    job = "local-again"
    process_runner.append(job)
    first, other = tmp_path / "first", tmp_path / "other"
    for data, classes in ((first, "4"), (other, "3")):
        subprocess.run([sys.executable, "-m", "trainer", "demo-data", "--dest", str(data), "--classes", classes,
                        "--per-class", "20"], check=True, capture_output=True)

    def launch(data: Path, *args: str) -> subprocess.CompletedProcess:
        return orch("launch", "--target", "local", "--no-gpus", "--name", job, "--data", str(data), "--", *TINY, *args)

    started = launch(first, "--epochs", "50")
    assert started.returncode == 0, started.stdout + started.stderr
    record = load_record(job)
    outputs = Path(record.outputs_dir)

    # While it runs, a launch under its name changes nothing, and says so: what it did not apply, and how to.
    again = launch(other, "--epochs", "1")
    assert again.returncode == 0, again.stdout + again.stderr
    assert f"job {job} was already running, so this launch changed nothing. NOT applied: --data {other} " \
           f"(it trains on {first}); trainer arguments" in again.stdout
    assert "--epochs 1` (it runs with" in again.stdout and f"`orch teardown {job} --yes`" in again.stdout
    assert load_record(job).data_dir == str(first) and load_record(job).pid == record.pid
    listed = orch("list")
    assert re.search(rf"^{job} +local +running ", listed.stdout, re.MULTILINE), listed.stdout + listed.stderr

    deadline = time.monotonic() + 300
    while not epochs_in(outputs / "metrics.jsonl"):  # a checkpoint to keep
        assert time.monotonic() < deadline
        time.sleep(0.2)
    down = orch("teardown", job, "--yes")
    assert down.returncode == 0, down.stdout + down.stderr
    assert "Stopped: the trainer process." in down.stdout and "Removed: nothing" not in down.stdout
    assert f"Outputs kept at {outputs}. A launch named {job} continues from them" in down.stdout
    assert f"rm -rf {outputs}" in down.stdout

    # The kept checkpoint was trained on other data: refused before anything starts, with the ways out.
    refused = launch(other, "--epochs", "1")
    assert refused.returncode == 1, refused.stdout + refused.stderr
    assert f"trained on {first}" in refused.stderr and "Nothing was started" in refused.stderr
    assert f"rm -rf {outputs}" in refused.stderr and f"--data {first} to continue it" in refused.stderr
    assert load_record(job) is None and job not in orch("list").stdout

    # On its own data, the launch continues from the kept checkpoint and says from where.
    resumed = launch(first, "--epochs", "2")
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert f"continues from the checkpoint in {outputs}" in resumed.stdout
    assert orch("logs", job, "--follow").returncode == 0
    assert "resumed from" in (outputs.parent / "console.log").read_text()

    # Deleted, the name starts over on any data.
    assert orch("teardown", job, "--yes").returncode == 0
    shutil.rmtree(outputs)
    fresh = launch(other, "--epochs", "1")
    assert fresh.returncode == 0, fresh.stdout + fresh.stderr
    assert "continues from" not in fresh.stdout and "NOT applied" not in fresh.stdout
    assert orch("logs", job, "--follow").returncode == 0


def at_a_terminal(args: list[str], answer: str, timeout: float = 120) -> tuple[str, int]:
    """Run a command on a pseudo-terminal (orch asks before a teardown only there); answer its question."""
    import pty
    import select

    main, sub = pty.openpty()
    proc = subprocess.Popen(args, stdin=sub, stdout=sub, stderr=sub, env=os.environ.copy(), close_fds=True)
    os.close(sub)
    out, answered, deadline = b"", False, time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            if select.select([main], [], [], 0.2)[0]:
                try:
                    chunk = os.read(main, 4096)
                except OSError:  # the command has ended: its side of the terminal is closed
                    break
                out += chunk
                if not answered and b"[y/N]" in out:
                    os.write(main, answer.encode())
                    answered = True
            elif proc.poll() is not None:
                break
        return out.decode(errors="replace").replace("\r\n", "\n"), proc.wait(timeout=30)
    finally:
        os.close(main)
        if proc.poll() is None:
            proc.kill()


def test_a_local_jobs_status_teardown_question_and_max_hours_say_what_they_are(process_runner):
    job = "local-words"
    process_runner.append(job)
    launched = orch("launch", "--target", "local", "--data", "demo", "--name", job, "--max-hours", "0.5",
                    "--", *TINY, "--epochs", "50", "--max-hours", "2")
    assert launched.returncode == 0, launched.stdout + launched.stderr
    # No watcher on this machine: orch's --max-hours is the trainer's, the smaller of the two, as given.
    assert "trainer: --max-hours 0.5 (orch's --max-hours); your --max-hours 2 is larger, so it is not used" \
        in launched.stdout
    record = load_record(job)
    assert record.command[-4:] == ("--max-hours", "0.5", "--resume", "auto")
    assert record.command.count("--max-hours") == 1

    shown = orch("status", job)
    assert shown.returncode == 0, shown.stdout + shown.stderr
    assert shown.stdout.splitlines()[0] == f"{job}: local (this machine)"
    assert "process   running" in shown.stdout

    question = (f"Stop the trainer process of job {job} on this machine, and forget the job (its outputs stay in "
                f"{record.outputs_dir})? [y/N]")
    out, code = at_a_terminal([*ORCH, "teardown", job], "n\n")
    assert question in out and code == 1, out
    assert job_status(job).state == "running"
    out, code = at_a_terminal([*ORCH, "teardown", job], "y\n")
    assert question in out and code == 0, out
    assert "Stopped: the trainer process." in out and f"Outputs kept at {record.outputs_dir}" in out
    assert job_status(job).state == "missing" and Path(record.outputs_dir).is_dir()
