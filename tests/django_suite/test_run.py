"""The Django suite runner's reading of Django's output, and its verdict."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from tests.django_suite.run import (
    DIFFERENCES,
    KNOWN_FAILURES,
    OURS,
    Result,
    Suite,
    parse_output,
    read_list,
)

# The end of Django's runner output, as Python 3.11+ prints it.
OUTPUT = """\
..F.E.s
======================================================================
FAIL: test_a (backends.tests.Tests.test_a)
----------------------------------------------------------------------
Traceback (most recent call last):
AssertionError
======================================================================
ERROR: test_b (queries.tests.Q.test_b) (lookup='exact')
----------------------------------------------------------------------
======================================================================
ERROR: test_b (queries.tests.Q.test_b) (lookup='contains')
----------------------------------------------------------------------
======================================================================
ERROR: setUpClass (servers.tests.LiveServer)
----------------------------------------------------------------------

----------------------------------------------------------------------
Ran 1796 tests in 31.502s

FAILED (failures=1, errors=3, skipped=116, expected failures=3)
Destroying test database for alias 'default'...
"""


def test_failing_ids_and_counts_are_read() -> None:
    result = parse_output(OURS, OUTPUT)
    assert result.failed == {
        "backends.tests.Tests.test_a",
        "queries.tests.Q.test_b",
        "servers.tests.LiveServer.setUpClass",
    }
    assert result.ran == 1796
    assert result.counts == {
        "failures": 1,
        "errors": 3,
        "skipped": 116,
        "expected failures": 3,
    }
    assert not result.aborted


def test_python_310_names_the_class_only() -> None:
    result = parse_output(
        OURS,
        "FAIL: test_a (backends.tests.Tests)\n"
        "Ran 1 test in 0.1s\n\nFAILED (failures=1)\n",
    )
    assert result.failed == {"backends.tests.Tests.test_a"}


def test_a_run_without_its_summary_is_aborted() -> None:
    text = "....\nRecursionError('maximum recursion depth exceeded')\n"
    assert parse_output(OURS, text).aborted


def test_the_lists_are_well_formed_and_scoped(tmp_path: Path) -> None:
    for path in (KNOWN_FAILURES, DIFFERENCES):
        for test_id, reason in read_list(path, "5.2.19").items():
            assert test_id.count(".") >= 2 and len(reason) > 20, test_id
    listed = tmp_path / "list.txt"
    listed.write_text(
        "# comment\n"
        "a.b.c every version  # a comment too\n"
        "[django 6.1]\n"
        "d.e.f Django 6.1 only\n"
        "[*]\n"
        "g.h.i every version again\n"
    )
    assert read_list(listed, "5.2.19") == {
        "a.b.c": "every version",
        "g.h.i": "every version again",
    }
    assert set(read_list(listed, "6.1.3")) == {"a.b.c", "d.e.f", "g.h.i"}
    assert set(read_list(listed, "6.10")) == {"a.b.c", "g.h.i"}
    listed.write_text("a.b.c\n")
    with pytest.raises(SystemExit, match="has no reason"):
        read_list(listed, "5.2")


def verdict(failed: set[str], unique: set[str]) -> int:
    suite = Suite(
        Path(),
        ["backends", "queries"],
        Path(),
        argparse.Namespace(),
        known={"queries.tests.Q.test_stock": "fails with Django's backend too"},
        differences={"backends.tests.Tests.test_private": "reads a private name"},
    )
    return suite._judge(Result(OURS, ran=10, failed=failed), unique)


def test_only_a_failure_ours_alone_has_fails_the_run() -> None:
    listed = {"queries.tests.Q.test_stock", "backends.tests.Tests.test_private"}
    assert verdict(listed, {"backends.tests.Tests.test_private"}) == 0
    assert verdict(listed | {"queries.tests.Q.test_new"}, set()) == 0
    new = listed | {"queries.tests.Q.test_new"}
    assert verdict(new, {"queries.tests.Q.test_new"}) == 1


def test_a_listed_test_that_passes_fails_the_run() -> None:
    assert verdict({"backends.tests.Tests.test_private"}, set()) == 1
    assert verdict({"queries.tests.Q.test_stock"}, set()) == 1


def test_a_run_that_did_not_finish_fails() -> None:
    suite = Suite(Path(), [], Path(), argparse.Namespace(), known={}, differences={})
    assert suite._judge(Result(OURS), set()) == 1
    assert suite._judge(Result(OURS, ran=0), set()) == 1
