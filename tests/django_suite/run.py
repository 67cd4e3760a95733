"""Run Django's own test suite against django_pgpool, and against Django's backend.

As third-party backends do (django-cockroachdb, mssql-django): the ``tests/``
folder of the sdist of the installed Django (downloaded once, kept in the
virtualenv), ``tests/runtests.py --settings tests.django_suite.settings
--parallel N``, on a throwaway TLS PostgreSQL of the harness (or the server
PGPOOL_TEST_DSN names). Both backends get the same ``OPTIONS``, pool included.

Run from the repository root::

    python -m tests.django_suite.run                  # CI: ours, the CI modules
    python -m tests.django_suite.run --backend both --modules wide

With ``--backend ours`` (CI) a failure listed in ``known_failures.txt``
(Django's backend fails it too) or ``differences.txt`` (ours differs on
purpose) is expected, each with its reason; any other failure is run again on
Django's backend, and the run fails if Django's backend passes it. With
``--backend both`` the whole selection runs on each backend and the run fails
if ours fails a test that Django's backend passes, unless it is a listed
difference. A run that Django's runner aborts (no summary) fails too.

Django's backend runs with ``--parallel 1`` (``--stock-parallel``): its pools
are not fork-safe, and the runner's forked workers inherit them (PostgreSQL
then logs "bad record mac" and tests fail at random); run serially, it is the
reference. Ours runs with ``--parallel``, the case it exists for.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import django

from tests.harness.postgres import PgServer, existing_server, start_cluster
from tests.harness.postgres import stop_cluster as stop_server
from tests.harness.servers import start_process_group, stop_process_group

REPO = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
SETTINGS = "tests.django_suite.settings"
KNOWN_FAILURES = HERE / "known_failures.txt"
DIFFERENCES = HERE / "differences.txt"

OURS = "django_pgpool"
STOCK = "django.db.backends.postgresql"

# What a backend can break: connections and transactions, the test
# machinery (test databases, their clones under --parallel), time zones,
# threads (live servers, async), several aliases, PostgreSQL's own features,
# and the ORM's SQL. CI runs these on one Django (about two minutes); the
# wide set adds the rest of the ORM; "all" is Django's whole suite.
CI_MODULES = [
    "backends",
    "transactions",
    "transaction_hooks",
    "test_utils",
    "test_runner",
    "timezones",
    "servers",
    "async",
    "handlers",
    "multiple_database",
    "postgres_tests",
    "select_for_update",
    "basic",
    "queries",
    "expressions",
    "aggregation",
    "model_fields",
    "lookup",
    "db_functions",
    "bulk_create",
    "update",
    "delete",
    "dates",
    "datetimes",
    "distinct_on_fields",
    "schema",
    "migrations",
]
WIDE_MODULES = [
    *CI_MODULES,
    "expressions_window",
    "expressions_case",
    "aggregation_regress",
    "annotations",
    "get_or_create",
    "ordering",
    "prefetch_related",
    "raw_query",
    "many_to_many",
    "many_to_one",
    "one_to_one",
    "model_inheritance",
    "custom_lookups",
    "constraints",
    "indexes",
    "introspection",
    "inspectdb",
    "fixtures",
    "cache",
    "sessions_tests",
    "datatypes",
    "db_typecasts",
    "db_utils",
    "custom_pk",
    "composite_pk",
    "defer",
    "defer_regress",
    "select_related",
    "select_related_onetoone",
    "filtered_relation",
    "generic_relations",
    "m2m_through",
    "m2m_regress",
    "model_regress",
    "null_queries",
    "queryset_pickle",
    "save_delete_hooks",
    "serializers",
    "signals",
    "string_lookup",
    "update_only_fields",
    "from_db_value",
    "field_defaults",
    "contenttypes_tests",
    "auth_tests",
    "model_forms",
    "dbshell",
]
MODULE_SETS = {"ci": CI_MODULES, "wide": WIDE_MODULES, "all": []}

# "FAIL: test_x (module.Class.test_x)" (Python 3.11+) or
# "FAIL: test_x (module.Class)" (3.10), maybe followed by a subtest's name.
_FAILED = re.compile(
    r"^(?:FAIL|ERROR|UNEXPECTED SUCCESS): (?P<name>\S+) \((?P<where>[^)\s]+)\)"
)
_RAN = re.compile(r"^Ran (\d+) tests? in ([\d.]+)s$", re.MULTILINE)
_OUTCOME = re.compile(r"^(OK|FAILED)(?: \((.*)\))?$", re.MULTILINE)


@dataclass
class Result:
    """What one run of Django's runner reported."""

    backend: str
    ran: int | None = None
    counts: dict[str, int] = field(default_factory=dict)
    failed: set[str] = field(default_factory=set)
    seconds: float = 0.0
    log: Path | None = None

    @property
    def aborted(self) -> bool:
        """Django's runner ended without its summary (a crash, a timeout)."""
        return self.ran is None

    def summary(self) -> str:
        if self.aborted:
            return f"{self.backend}: ABORTED after {self.seconds:.0f} s, see {self.log}"
        counts = ", ".join(f"{k}={v}" for k, v in sorted(self.counts.items()))
        return (
            f"{self.backend}: ran {self.ran}, {len(self.failed)} failing ids"
            f" ({counts or 'none failed'}) in {self.seconds:.0f} s"
        )


def parse_output(backend: str, text: str) -> Result:
    """Read the ids that failed and the counts from Django's runner output."""
    result = Result(backend)
    for line in text.splitlines():
        match = _FAILED.match(line)
        if match:
            name, where = match["name"], match["where"]
            test_id = where if where.endswith("." + name) else f"{where}.{name}"
            result.failed.add(test_id)
    ran = _RAN.search(text)
    outcome = _OUTCOME.search(text, ran.end()) if ran else None
    if ran and outcome:
        result.ran = int(ran.group(1))
        for part in (outcome.group(2) or "").split(", "):
            if "=" in part:
                key, value = part.split("=")
                result.counts[key.strip()] = int(value)
    return result


def read_list(path: Path, version: str) -> dict[str, str]:
    """Return {test id: reason} from *path* for Django *version*.

    One test a line: its id, then its reason; ``#`` starts a comment. A
    ``[django X.Y]`` line starts the entries of the Django versions X.Y.*
    only, ``[*]`` those of every version (the default).
    """
    listed: dict[str, str] = {}
    applies = True
    for number, raw in enumerate(path.read_text().splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        if line.startswith("[") and line.endswith("]"):
            scope = line[1:-1].split()
            applies = scope == ["*"] or (
                len(scope) == 2
                and scope[0] == "django"
                and (version + ".").startswith(scope[1] + ".")
            )
            continue
        test_id, _, reason = line.partition(" ")
        if not reason.strip():
            raise SystemExit(f"{path.name}:{number}: {test_id} has no reason")
        if applies:
            listed[test_id] = reason.strip()
    return listed


def django_tests(cache: Path) -> Path:
    """Return the ``tests/`` folder of the installed Django's sdist.

    Downloaded with pip into *cache* once per version; only ``tests/`` is
    unpacked.
    """
    version = django.__version__
    tests = cache / f"django-{version}" / "tests"
    if (tests / "runtests.py").exists():
        return tests
    cache.mkdir(parents=True, exist_ok=True)
    # Named django-X.tar.gz on the index today, Django-X.tar.gz before.
    found = [p for p in cache.iterdir() if p.name.lower() == f"django-{version}.tar.gz"]
    if not found:
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps"]
            + ["--no-binary", ":all:", f"django=={version}", "-d", str(cache)],
            check=True,
        )
        found = [
            p for p in cache.iterdir() if p.name.lower() == f"django-{version}.tar.gz"
        ]
    with tarfile.open(found[0]) as archive:
        for member in archive.getmembers():
            top, _, inside = member.name.partition("/")
            if inside == "tests" or inside.startswith("tests/"):
                member.name = f"django-{version}/{inside}"
                archive.extract(member, cache, **_SAFE)
    return tests


# Python 3.12+ warns unless extraction is filtered (3.10.12+, 3.11.4+ have it).
_SAFE = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}


def run_suite(
    backend: str,
    tests: Path,
    server: PgServer,
    labels: Sequence[str],
    *,
    parallel: int,
    log: Path,
    timeout: float,
) -> Result:
    """Run Django's runner on *labels* with *backend*; return what it reported."""
    env = {
        "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
        "PGPOOL_SUITE_DSN": server.dsn(dbname="postgres"),
        "PGPOOL_SUITE_ENGINE": backend,
    }
    cmd = [sys.executable, "runtests.py", "--settings", SETTINGS, "--noinput"]
    cmd += [f"--parallel={parallel}", *labels]
    started = time.monotonic()
    proc = start_process_group(cmd, cwd=tests, env=env, logfile=log)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        print(f"{backend}: still running after {timeout:.0f} s: stopped", flush=True)
    finally:
        stop_process_group(proc, 10)
    result = parse_output(backend, log.read_text(errors="replace"))
    result.seconds = time.monotonic() - started
    result.log = log
    return result


def _print_ids(
    title: str,
    ids: Iterable[str],
    reasons: dict[str, str] | None = None,
    *,
    always: bool = False,
) -> None:
    ids = sorted(ids)
    if not ids and not always:
        return
    print(f"{title}: {len(ids)}")
    for test_id in ids:
        reason = (reasons or {}).get(test_id)
        print(f"  {test_id}" + (f"  # {reason}" if reason else ""))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument(
        "--backend",
        choices=["ours", "both"],
        default="ours",
        help="ours: compared with the lists (CI); both: Django's backend vs ours",
    )
    parser.add_argument(
        "--modules",
        nargs="+",
        default=["ci"],
        help="'ci', 'wide', 'all' or Django test labels (default: ci)",
    )
    parser.add_argument("--parallel", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--stock-parallel", type=int, default=1)
    parser.add_argument("--timeout", type=float, default=1800, help="per run, s")
    parser.add_argument(
        "--cache",
        type=Path,
        default=Path(sys.prefix) / "django-tests",
        help="where the sdist is kept (default: in the virtualenv)",
    )
    args = parser.parse_args(argv)
    if sys.version_info[:3] == (3, 12, 1) and args.parallel > 1:
        # Its unittest leaves skipped tests out of testsRun, by which Django's
        # parallel runner finds the test each result is for: failures would
        # be reported under the wrong names (fixed in 3.12.2).
        print("Python 3.12.1: Django's runner runs with --parallel 1")
        args.parallel = 1
    labels = [label for name in args.modules for label in MODULE_SETS.get(name, [name])]
    tests = django_tests(args.cache)
    version = django.__version__
    logdir = Path(tempfile.mkdtemp(prefix="pgpool-django-suite-"))
    selection = " ".join(labels) or "all of it"
    print(f"Django {version}'s suite: {selection}; logs in {logdir}", flush=True)
    suite = Suite(
        tests,
        labels,
        logdir,
        args,
        known=read_list(KNOWN_FAILURES, version),
        differences=read_list(DIFFERENCES, version),
    )
    dsn = os.environ.get("PGPOOL_TEST_DSN")
    suite.server = existing_server(dsn) if dsn else start_cluster()
    try:
        return suite.compare_both() if args.backend == "both" else suite.check_ours()
    finally:
        if not dsn:
            stop_server(suite.server)


@dataclass
class Suite:
    """One selection of Django's tests, run and judged."""

    tests: Path
    labels: list[str]
    logdir: Path
    args: argparse.Namespace
    known: dict[str, str]
    differences: dict[str, str]
    server: PgServer | None = None

    def run(self, backend: str, labels: Sequence[str], name: str) -> Result:
        assert self.server is not None
        result = run_suite(
            backend,
            self.tests,
            self.server,
            labels,
            parallel=self.args.parallel
            if backend == OURS
            else self.args.stock_parallel,
            log=self.logdir / f"{name}.log",
            timeout=self.args.timeout,
        )
        print(result.summary(), flush=True)
        return result

    def compare_both(self) -> int:
        """Run the selection on both backends; fail on a failure only ours has."""
        ours = self.run(OURS, self.labels, "ours")
        stock = self.run(STOCK, self.labels, "stock")
        if stock.aborted:
            print("Django's backend did not finish: nothing to compare with")
            return 1
        _print_ids("failing on both", ours.failed & stock.failed, self.known)
        _print_ids("failing with Django's backend only", stock.failed - ours.failed)
        return self._judge(ours, ours.failed - stock.failed)

    def check_ours(self) -> int:
        """Run the selection on ours; fail on a failure Django's backend lacks."""
        ours = self.run(OURS, self.labels, "ours")
        listed = self.known.keys() | self.differences.keys()
        _print_ids(
            "failing with Django's backend too (known_failures.txt)",
            ours.failed & self.known.keys(),
            self.known,
        )
        unlisted = ours.failed - listed
        unique = set()
        if unlisted:
            # Run those again on Django's backend: failures it has too are not
            # ours (a new Django release, a missing optional library).
            stock = self.run(STOCK, sorted(_runnable(unlisted)), "stock-rerun")
            if stock.aborted:
                print("Django's backend did not finish: nothing to compare with")
                return 1
            _print_ids(
                "failing with Django's backend too, not listed (add them to"
                " known_failures.txt)",
                unlisted & stock.failed,
            )
            unique = unlisted - stock.failed
        return self._judge(ours, unique | (ours.failed & self.differences.keys()))

    def _judge(self, ours: Result, unique: set[str]) -> int:
        if ours.aborted or not ours.ran:
            print("FAILED: Django's runner did not finish, or ran no test")
            return 1
        _print_ids(
            "failing with django_pgpool only, on purpose (differences.txt)",
            unique & self.differences.keys(),
            self.differences,
        )
        # Each list stays true: an entry that passes (or no longer runs) goes.
        listed = self.known.keys() | self.differences.keys()
        stale = {t for t in listed - ours.failed if _selected(t, self.labels)}
        _print_ids("listed, but passing with django_pgpool (remove them)", stale)
        unexpected = unique - self.differences.keys()
        _print_ids("FAILING WITH django_pgpool ONLY", unexpected, always=True)
        return 1 if unexpected or stale else 0


def _runnable(ids: Iterable[str]) -> set[str]:
    """Test labels for Django's runner: a setUpClass failure names its class."""
    return {
        test_id.rpartition(".")[0]
        if test_id.endswith((".setUpClass", ".tearDownClass"))
        else test_id
        for test_id in ids
    }


def _selected(test_id: str, labels: Sequence[str]) -> bool:
    if not labels:  # Django's whole suite
        return True
    return any(test_id == label or test_id.startswith(label + ".") for label in labels)


if __name__ == "__main__":
    sys.exit(main())
