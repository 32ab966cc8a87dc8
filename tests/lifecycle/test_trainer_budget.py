"""The trainer's --max-hours under an instance's hard cap: what is left of the cap when its container
starts, less the margin it needs to save and exit before the watcher's `docker stop`; the user's own
budget when it is the smaller; the hours a resumed run has already trained, which its budget counts.

(Where the cap and its clock come from, the watcher's state folder, is tested with the real watcher
in tests/reliability/test_autostop.py; a launch that passes the result to the container, in
tests/lifecycle/test_e2e.py.)
"""
from __future__ import annotations

import pytest

from orchestrator.trainer_args import (
    SAVE_MARGIN_S,
    CapSpent,
    budget_from_flag,
    budget_under_cap,
    max_hours_of,
    save_margin_s,
    with_max_hours,
)

H = 3600


def test_a_fresh_instance_gives_the_trainer_the_cap_less_the_margin():
    budget = budget_under_cap(cap_s=3 * H, elapsed_s=0, trained_s=0, user_hours=None)
    assert budget.hours == pytest.approx(3 - SAVE_MARGIN_S / H, abs=0.01)
    assert budget.hours <= 3 - SAVE_MARGIN_S / H  # rounded down: never past the cap
    assert budget.note == "trainer: --max-hours 2.83 (3 h left of the 3 h cap, less 10 min to save)"


def test_what_is_left_counts_from_the_watchers_start():
    budget = budget_under_cap(cap_s=3 * H, elapsed_s=H + 30 * 60, trained_s=0, user_hours=None)
    assert budget.hours == 1.33
    assert "1.5 h left of the 3 h cap, less 10 min to save" in budget.note


def test_a_short_cap_keeps_back_a_quarter_of_itself_instead_of_ten_minutes():
    assert save_margin_s(20 * 60) == 5 * 60
    assert save_margin_s(10 * H) == SAVE_MARGIN_S
    assert budget_under_cap(cap_s=20 * 60, elapsed_s=0, trained_s=0, user_hours=None).hours == 0.25


def test_a_resumed_run_gets_the_hours_it_already_trained_on_top():
    # Its budget counts every resume together: without them, it would stop 2 h too early.
    budget = budget_under_cap(cap_s=3 * H, elapsed_s=0, trained_s=2 * H, user_hours=None)
    assert budget.hours == 4.83
    assert budget.note.startswith("trainer: --max-hours 4.83 (2 h already trained (its budget counts every resume)")


def test_the_users_own_budget_is_kept_when_smaller_and_named_when_not():
    smaller = budget_under_cap(cap_s=3 * H, elapsed_s=0, trained_s=0, user_hours=1.5)
    assert smaller.hours == 1.5
    assert smaller.note == ("trainer: --max-hours 1.5 (yours; the cap allows 2.83: 3 h left of the 3 h cap, "
                            "less 10 min to save)")
    larger = budget_under_cap(cap_s=3 * H, elapsed_s=0, trained_s=0, user_hours=5)
    assert larger.hours == 2.83
    assert larger.note.endswith("; your --max-hours 5 is larger, so it is not used")


@pytest.mark.parametrize("elapsed_s", [3 * H, 3 * H + 500, 3 * H - SAVE_MARGIN_S, 3 * H - SAVE_MARGIN_S - 30])
def test_a_cap_spent_or_within_its_margin_is_refused(elapsed_s):
    with pytest.raises(CapSpent, match=r"hard cap of 3 h .* left, and the trainer needs 10 min of it to save and "
                                       r"stop: nothing was started"):
        budget_under_cap(cap_s=3 * H, elapsed_s=elapsed_s, trained_s=0, user_hours=None)


def test_the_local_target_passes_orchs_max_hours_as_it_is():
    assert budget_from_flag(2, None).hours == 2
    assert budget_from_flag(2, None).note == "trainer: --max-hours 2 (orch's --max-hours)"
    assert budget_from_flag(2, 0.5).hours == 0.5
    assert budget_from_flag(2, 3).hours == 2


@pytest.mark.parametrize("args,hours", [
    ([], None),
    (["--recipe", "demo"], None),
    (["--max-hours", "2"], 2.0),
    (["--max-hours=2", "--epochs", "3"], 2.0),
    (["--max-hours", "2", "--max-hours", "4"], 4.0),           # the last one wins, as in the trainer
    (["--max-hours", "2", "--set", "max_hours=6"], 6.0),       # --set is applied after the flags
    (["--set=max-hours=6", "--max-hours", "2"], 6.0),
    (["--set", "lr=0.1", "--max-hours", "0"], None),           # 0 is off
])
def test_the_users_own_budget_is_read_as_the_trainer_reads_it(args, hours):
    assert max_hours_of(args) == hours


def test_the_budget_given_replaces_every_one_of_the_users():
    args = ["--recipe", "demo", "--max-hours", "5", "--set", "max_hours=6", "--set", "lr=0.1", "--max-hours=7"]
    assert with_max_hours(args, 2.83) == ("--recipe", "demo", "--set", "lr=0.1", "--max-hours", "2.83")
    assert max_hours_of(with_max_hours(args, 2.83)) == 2.83
    assert with_max_hours([], 1) == ("--max-hours", "1")
