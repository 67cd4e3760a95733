"""The conformance runner's verdict: the list of allowed failures stays true."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conformance.plugin.pgpool_allowed import read_allowed
from tests.conformance.psycopg_pool import (
    TEST_FILES,
    Outcomes,
    compare,
    main,
    read_junit,
)

ALLOWED = {
    "tests/pool/test_pool.py::test_private": "private: reads p._pool",
    "tests/pool/test_pool.py::test_racy": "deliberate, racy: may pass",
}


def test_the_project_list_is_well_formed() -> None:
    allowed = read_allowed()
    assert allowed
    for test_id, reason in allowed.items():
        assert test_id.split("::")[0] in TEST_FILES, test_id
        assert reason.split(":")[0] in {"private", "deliberate", "deliberate, racy"}


def test_a_failure_outside_the_list_fails_the_run() -> None:
    outcomes = Outcomes(
        failed={
            "tests/pool/test_pool.py::test_private": "AttributeError",
            "tests/pool/test_pool.py::test_new": "AssertionError",
            "tests/pool/test_pool.py::test_racy": "AssertionError",
        }
    )
    verdict = compare(outcomes, ALLOWED)
    assert verdict.unexpected_failures == {
        "tests/pool/test_pool.py::test_new": "AssertionError"
    }
    assert not verdict.ok


def test_a_listed_test_that_passes_or_vanished_fails_the_run() -> None:
    outcomes = Outcomes(passed={"tests/pool/test_pool.py::test_private"})
    verdict = compare(outcomes, ALLOWED)
    assert verdict.unexpected_passes == ["tests/pool/test_pool.py::test_private"]
    assert verdict.missing == ["tests/pool/test_pool.py::test_racy"]
    assert not verdict.ok


def test_a_racy_listed_test_may_pass() -> None:
    outcomes = Outcomes(
        passed={"tests/pool/test_pool.py::test_racy"},
        failed={"tests/pool/test_pool.py::test_private": "AttributeError"},
    )
    assert compare(outcomes, ALLOWED).ok


def test_reasons_are_required(tmp_path: Path) -> None:
    listing = tmp_path / "allowed.txt"
    listing.write_text("# comment\ntests/pool/test_pool.py::test_x\n")
    with pytest.raises(ValueError, match="test_x has no reason"):
        read_allowed(listing)


def test_junit_report_is_read_by_test_id(tmp_path: Path) -> None:
    report = tmp_path / "report.xml"
    report.write_text(
        '<testsuites><testsuite name="pytest">'
        '<testcase classname="tests.pool.test_pool" name="test_ok" />'
        '<testcase classname="tests.pool.test_pool_common"'
        ' name="test_bad[ConnectionPool]">'
        '<failure message="AssertionError: no&#10;more">trace</failure></testcase>'
        '<testcase classname="tests.pool.test_pool" name="test_skip">'
        '<skipped message="async only" /></testcase>'
        '<testcase classname="tests.pool.test_pool" name="test_listed">'
        '<skipped type="pytest.xfail" message="allowed: private" /></testcase>'
        "</testsuite></testsuites>"
    )
    outcomes = read_junit(report)
    assert outcomes.passed == {"tests/pool/test_pool.py::test_ok"}
    bad = "tests/pool/test_pool_common.py::test_bad[ConnectionPool]"
    assert outcomes.failed == {
        bad: "AssertionError: no",
        # A listed failure, reported as xfailed by plugin/pgpool_allowed.py.
        "tests/pool/test_pool.py::test_listed": "allowed: private",
    }
    assert outcomes.skipped == {"tests/pool/test_pool.py::test_skip"}


def test_without_the_kit_the_run_fails_saying_so(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Issue 26: `make conformance` printed "skipped" and passed, running nothing."""
    monkeypatch.setenv("PGPOOL_CONFORMANCE_KIT", str(tmp_path))  # no kit there
    monkeypatch.delenv("CI", raising=False)
    assert main([]) == 1
    assert (
        "error: psycopg_pool's own pool tests were not run" in capsys.readouterr().err
    )
    # make test's run (a fresh clone has no kit): says so, passes...
    assert main(["--if-present"]) == 0
    assert "note: psycopg_pool's own pool tests were not run" in capsys.readouterr().err
    # ...but not on CI.
    monkeypatch.setenv("CI", "true")
    assert main(["--if-present"]) == 1
