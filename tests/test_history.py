"""The chaos suite's history checker (tests/history.py) finds each kind of violation."""

from __future__ import annotations

from tests.history import check

W = "work-1"


def _report(lines, state="SUCCEEDED", kept="n2", successes=1, expected="SUCCEEDED"):
    return check(lines, {W: expected}, {W: (state, kept)}, {W: successes})


def test_a_clean_history_with_a_killed_first_run_passes():
    report = _report([
        f"S {W} n1 0 1.0", f"H {W} n1 7 1.01", f"B {W} n1 1.02",   # killed here, helper too
        f"S {W} n2 1 2.0", f"H {W} n2 8 2.01", f"B {W} n2 2.02", f"E {W} n2 ok 2.1",
        f"H {W} n2 8 2.11",   # the kept run's helper, killed right after it returned
    ])
    assert report.ok and report.summary()["runs"] == 2 and report.helper_beats == 3


def test_a_helper_that_outlives_its_attempt_into_the_rerun_is_an_overlap():
    report = _report([f"S {W} n1 0 1.0", f"H {W} n1 7 1.01", f"H {W} n1 7 2.5",
                      f"S {W} n2 1 2.0", f"E {W} n2 ok 2.1"])
    assert report.overlapping and "its helper alive until 2.500" in report.overlapping[0]
    assert not (report.lost or report.doubled or report.after_success)


def test_a_run_that_goes_on_beside_its_rerun_is_an_overlap():
    report = _report([f"S {W} n1 0 1.0", f"S {W} n2 1 2.0", f"B {W} n1 2.05",
                      f"E {W} n2 ok 2.1"])
    assert len(report.overlapping) == 1


def test_a_run_after_the_kept_success_is_reported():
    report = _report([f"S {W} n1 0 1.0", f"E {W} n1 ok 1.1", f"S {W} n2 1 2.0",
                      f"E {W} n2 ok 2.1"], kept="n1")
    assert report.after_success and not report.overlapping


def test_two_successes_in_the_journal_or_a_kept_output_no_run_returned_are_doubled():
    lines = [f"S {W} n1 0 1.0", f"E {W} n1 ok 1.1"]
    assert _report(lines, kept="n1", successes=2).doubled
    assert _report(lines, kept="n9").doubled
    assert _report(lines, state="FAILED", kept=None, successes=1, expected="FAILED").doubled


def test_a_missing_or_wrongly_finished_acknowledged_work_is_lost():
    assert check([], {W: "SUCCEEDED"}, {}, {}).lost == [f"{W}: acknowledged, not in the store"]
    report = _report([f"S {W} n1 0 1.0", f"E {W} n1 fail 1.1"], state="FAILED", kept=None,
                     successes=0)
    assert report.lost == [f"{W}: FAILED, expected SUCCEEDED"]
