"""Every code sample of the documentation runs, or is checked against its source.

Each sample found by tests/docs/samples.py is one test. Python samples run
against the test cluster (connection strings and Django's DATABASES pointed
at it); shell samples' commands are parsed by the real CLIs and the Makefile;
settings files are the shipped snippets; printed output is compared with what
the code prints. A sample with no check here fails: add one.
"""

from __future__ import annotations

import configparser
import re
import shlex
import subprocess
import sys
import types
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from flask import Flask
from psycopg.conninfo import conninfo_to_dict

from pgpool_core.ops.snippets import SNIPPETS, read_snippet
from tests.conftest import REPO
from tests.docs.samples import Sample, all_samples, page_samples
from tests.harness.interpreter import run_python
from tests.harness.postgres import PgServer
from tests.metrics.test_instruments import CONVENTIONS

SAMPLES = all_samples()
Check = Callable[[Sample, pytest.FixtureRequest], None]
CHECKS: dict[tuple[str, str], Check] = {}


def check(language: str, first_line: str) -> Callable[[Check], Check]:
    """Register a check for the samples of *language* that start with *first_line*."""

    def register(function: Check) -> Check:
        CHECKS[(language, first_line)] = function
        return function

    return register


def sample(source: str, first_line: str) -> Sample:
    """Return the sample of *source* that starts with *first_line*."""
    for found in SAMPLES:
        if found.source == source and found.first_line == first_line:
            return found
    raise AssertionError(f"no sample in {source} starting with {first_line!r}")


def with_dsn(code: str, dsn: str) -> str:
    """Point every connection string of *code* at *dsn*."""
    replaced = re.sub(r'"postgresql://[^"]*"', lambda _: repr(dsn), code)
    assert replaced != code, "the sample has no connection string"
    return replaced


def run(code: str, namespace: dict[str, Any], name: str) -> dict[str, Any]:
    exec(compile(code, name, "exec"), namespace)
    return namespace


def run_in_subprocess(code: str) -> str:
    """Run *code* in a fresh interpreter (hooks mark the process they load in)."""
    return run_python(code, warnings_as_errors=True)


@pytest.fixture
def items(pg_server: PgServer) -> Iterator[None]:
    pg_server.execute("DROP TABLE IF EXISTS items")
    pg_server.execute("CREATE TABLE items (id serial PRIMARY KEY, name text)")
    pg_server.execute("INSERT INTO items (name) VALUES ('kettle')")
    yield
    pg_server.execute("DROP TABLE items")


def close_app(app: Flask) -> None:
    for pool in app.extensions["pgpool"].pools.values():
        pool.close()


# -- Python: Flask -------------------------------------------------------------


@check("python", "from flask import Flask")
def check_flask_quick_start(found: Sample, request: pytest.FixtureRequest) -> None:
    pg: PgServer = request.getfixturevalue("pg_server")
    request.getfixturevalue("items")
    module = run(with_dsn(found.code, pg.dsn()), {"__name__": "quick"}, found.id)
    app = module["create_app"]()
    try:
        response = app.test_client().get("/items")
        assert response.status_code == 200
        assert response.json == [[1, "kettle"]]
    finally:
        close_app(app)


@pytest.fixture
def myapp(pg_server: PgServer) -> Iterator[types.ModuleType]:
    """docs/flask.rst's myapp.py, pointed at the test database."""
    code = sample("docs/flask.rst", "# myapp.py").code
    module = types.ModuleType("myapp")
    sys.modules["myapp"] = module
    try:
        run(with_dsn(code, pg_server.dsn()), module.__dict__, "myapp")
        yield module
    finally:
        del sys.modules["myapp"]


@check("python", "# myapp.py")
def check_myapp(found: Sample, request: pytest.FixtureRequest) -> None:
    myapp: types.ModuleType = request.getfixturevalue("myapp")
    request.getfixturevalue("items")
    app: Flask = myapp.create_app()
    try:
        client = app.test_client()
        added = client.post("/items", json={"name": "mug"})
        assert added.status_code == 201
        listed = client.get("/items").json
        assert {"id": added.json["id"], "name": "mug"} in listed  # type: ignore[index]
        assert app.extensions["pgpool"].extension is myapp.pgpool
    finally:
        close_app(app)


@check("python", '@bp.post("/transfer")')
def check_transfer(found: Sample, request: pytest.FixtureRequest) -> None:
    myapp: types.ModuleType = request.getfixturevalue("myapp")
    pg: PgServer = request.getfixturevalue("pg_server")
    run(found.code, myapp.__dict__, found.id)  # before the blueprint is registered
    pg.execute("DROP TABLE IF EXISTS accounts")
    pg.execute("CREATE TABLE accounts (id int PRIMARY KEY, balance int)")
    pg.execute("INSERT INTO accounts VALUES (1, 100), (2, 0)")
    app: Flask = myapp.create_app()
    try:
        assert app.test_client().post("/transfer").json == {"ok": True}
        assert pg.execute("SELECT balance FROM accounts ORDER BY id") == [(90,), (10,)]
    finally:
        close_app(app)
        pg.execute("DROP TABLE accounts")


def binds_app(dsn: str) -> tuple[Flask, Any]:
    """An app with docs/flask.rst's PGPOOL_BINDS, pointed at *dsn*."""
    from flask_pgpool import PgPool

    code = sample("docs/flask.rst", 'app.config["PGPOOL_BINDS"] = {').code
    app = Flask("binds")
    app.config["PGPOOL_CONNINFO"] = dsn
    run(with_dsn(code, dsn), {"app": app}, "binds")
    pgpool = PgPool(app)
    return app, pgpool


@check("python", 'app.config["PGPOOL_BINDS"] = {')
def check_binds(found: Sample, request: pytest.FixtureRequest) -> None:
    pg: PgServer = request.getfixturevalue("pg_server")
    app, _ = binds_app(pg.dsn())
    try:
        pools = app.extensions["pgpool"].pools
        assert set(pools) == {"default", "reports", "audit"}
        assert pools["reports"].max_size == 2
    finally:
        close_app(app)


@check("python", 'rows = pgpool.get_connection("reports").execute(')
def check_binds_usage(found: Sample, request: pytest.FixtureRequest) -> None:
    pg: PgServer = request.getfixturevalue("pg_server")
    request.getfixturevalue("items")
    app, pgpool = binds_app(pg.dsn())
    try:
        with app.app_context():
            namespace = run(found.code, {"pgpool": pgpool}, found.id)
        assert namespace["rows"] == [(1, "kettle")]
    finally:
        close_app(app)


@check("literal", "from flask_pgpool import PgPool")
@check("literal", "pgpool = PgPool()")
def check_flask_docstrings(found: Sample, request: pytest.FixtureRequest) -> None:
    pg: PgServer = request.getfixturevalue("pg_server")
    from flask_pgpool import PgPool

    context = {"Flask": Flask, "PgPool": PgPool, "__name__": "docstring"}
    namespace = run(with_dsn(found.code, pg.dsn()), context, found.id)
    app = namespace["create_app"]()
    try:
        with app.app_context():
            assert namespace["pgpool"].connection.execute("select 1").fetchone() == (1,)
    finally:
        close_app(app)


# -- Python: Django ------------------------------------------------------------


def django_entry(settings: dict[str, Any], pg: PgServer) -> dict[str, Any]:
    """Point a DATABASES entry of the docs at the test cluster."""
    from tests.django.support import database_settings

    entry = dict(settings)
    server = database_settings(pg)
    for key in ("NAME", "USER", "PASSWORD", "HOST", "PORT"):
        entry[key] = server[key]
    return entry


def query_through(entry: dict[str, Any], request: pytest.FixtureRequest) -> None:
    """Load *entry* as Django does and run a query through its pool."""
    from tests.django.support import load_alias

    wrapper = load_alias(entry)
    with request.getfixturevalue("django_db_blocker").unblock():
        try:
            with wrapper.cursor() as cursor:
                cursor.execute("select 1")
                assert cursor.fetchone() == (1,)
            assert wrapper.pool is not None
        finally:
            wrapper.close()
            wrapper.close_pool()


@check("python", "DATABASES = {")
@check("literal", "DATABASES = {")
def check_databases(found: Sample, request: pytest.FixtureRequest) -> None:
    pg: PgServer = request.getfixturevalue("pg_server")
    namespace = run(found.code, {"INSTALLED_APPS": []}, found.id)
    entry = namespace["DATABASES"]["default"]
    assert entry["ENGINE"] == "django_pgpool"
    query_through(django_entry(entry, pg), request)
    if "INSTALLED_APPS" in found.code:
        assert namespace["INSTALLED_APPS"] == ["django_pgpool"]


@check("python", "MIDDLEWARE = [")
def check_middleware(found: Sample, request: pytest.FixtureRequest) -> None:
    from django.utils.module_loading import import_string

    from django_pgpool.conf import RETRY_AFTER_DEFAULT

    namespace = run(found.code, {}, found.id)
    for path in namespace["MIDDLEWARE"]:
        import_string(path)
    assert namespace["PGPOOL_RETRY_AFTER"] == RETRY_AFTER_DEFAULT  # "the default"


@check("python", 'INSTALLED_APPS = [..., "django_pgpool"]')
def check_installed_apps(found: Sample, request: pytest.FixtureRequest) -> None:
    from django.apps import apps
    from django.test import override_settings

    from django_pgpool.checks import check_settings

    namespace = run(found.code, {}, found.id)
    assert namespace["INSTALLED_APPS"][-1] == "django_pgpool"
    assert apps.get_app_config("django_pgpool").name == "django_pgpool"
    with override_settings(PGPOOL_WORKERS=namespace["PGPOOL_WORKERS"]):
        assert check_settings(None) == []


@check("python", "# Flask")
def check_pgbouncer_settings(found: Sample, request: pytest.FixtureRequest) -> None:
    from django.conf import settings

    from django_pgpool.checks import check_databases as django_checks
    from flask_pgpool import PgPool
    from pgpool_core import ForkSafePool
    from tests.django.support import database_settings, load_alias

    pg: PgServer = request.getfixturevalue("pg_server")
    app = Flask("pgbouncer")
    databases = {"default": database_settings(pg)}
    namespace = run(
        found.code,
        {
            "app": app,
            "DATABASES": databases,
            "ForkSafePool": ForkSafePool,
            "conninfo": pg.dsn(),
        },
        found.id,
    )
    PgPool(app)
    try:
        assert app.extensions["pgpool"].pools["default"].pgbouncer
    finally:
        close_app(app)
    assert namespace["pool"].pgbouncer
    namespace["pool"].close()
    wrapper = load_alias(databases["default"])
    assert wrapper.settings_dict["DISABLE_SERVER_SIDE_CURSORS"]
    # Not override_settings(): DATABASES must not reach the live connections.
    monkeypatch = request.getfixturevalue("monkeypatch")
    monkeypatch.setattr(settings, "DATABASES", {"x": databases["default"]})
    assert [message.id for message in django_checks(None)] == []


@check("python", "# The primary first, then its standby: Flask, then Django")
def check_failover_settings(found: Sample, request: pytest.FixtureRequest) -> None:
    from tests.django.support import database_settings, load_alias

    pg: PgServer = request.getfixturevalue("pg_server")
    app = Flask("failover")
    databases = {"default": database_settings(pg)}
    run(found.code, {"app": app, "DATABASES": databases}, found.id)
    params = conninfo_to_dict(app.config["PGPOOL_CONNINFO"])
    wrapper = load_alias(databases["default"])
    for found_params in (params, wrapper.get_connection_params()):
        assert found_params["host"] == "db1,db2"
        assert str(found_params["port"]) == "5432,5432"
        assert found_params["target_session_attrs"] == "read-write"


# -- Python: the core and the hooks -------------------------------------------


@check("python", "# from psycopg_pool import ConnectionPool")
def check_forksafepool(found: Sample, request: pytest.FixtureRequest) -> None:
    pg: PgServer = request.getfixturevalue("pg_server")
    request.getfixturevalue("items")
    namespace = run(with_dsn(found.code, pg.dsn()), {}, found.id)
    try:
        assert namespace["handler"]() == (1,)
    finally:
        namespace["pool"].close()


@check("python", "preload_app = True")
def check_gunicorn_hooks(found: Sample, request: pytest.FixtureRequest) -> None:
    # The same settings as the shipped gunicorn.conf.py, and they load.
    shipped = read_snippet("gunicorn", "flask")
    assert "preload_app = True" in shipped
    assert found.code.splitlines()[1] in shipped.replace("  # noqa: E402,F401", "")
    assert run_in_subprocess(found.code + "print(callable(post_fork))") == "True\n"


@check("python", "import pgpool_core.servers.celery  # noqa: F401")
@check("literal", "import pgpool_core.servers.celery  # noqa: F401")
@check(
    "literal", "from pgpool_core.servers.gunicorn import post_fork, post_worker_init"
)
def check_imports(found: Sample, request: pytest.FixtureRequest) -> None:
    lines = found.code.splitlines()
    assert all(line.startswith(("import ", "from ")) for line in lines)
    run_in_subprocess(found.code)


# -- Python: metrics and health (docs/metrics.rst) -------------------------------

# The samples import the page's telemetry.py: the tests' copies, which the
# metrics servers test runs (tests/apps/telemetry_*.py, shown by the page).
AS_TELEMETRY = """
import importlib, sys
sys.modules["telemetry"] = importlib.import_module("tests.apps.{module}")
"""


@check("python", "# wsgi.py: OpenTelemetry in each worker")
def check_metrics_wsgi(found: Sample, request: pytest.FixtureRequest) -> None:
    # Outside a server the setup runs at import: the SDK is this process's.
    code = AS_TELEMETRY.format(module="telemetry_otlp") + found.code
    code += (
        "from opentelemetry import metrics\n"
        "print(type(metrics.get_meter_provider()).__module__)\n"
    )
    printed = run_in_subprocess(code)
    assert printed == "opentelemetry.sdk.metrics._internal\n"


def check_metrics_endpoint(found: Sample, request: pytest.FixtureRequest) -> None:
    """The app answers /metrics with prometheus_client's text (a real request)."""
    pg: PgServer = request.getfixturevalue("pg_server")
    tmp_path = request.getfixturevalue("tmp_path")
    code = AS_TELEMETRY.format(module="telemetry_prometheus")
    code += (
        "import os, types\n"
        "from tests.flask.apps.notes import create_app\n"
        "sys.modules['myapp'] = types.SimpleNamespace(create_app=create_app)\n"
        + found.code
        + "from wsgiref.util import setup_testing_defaults\n"
        "environ = {'PATH_INFO': '/metrics'}\n"
        "setup_testing_defaults(environ)\n"
        "answer = []\n"
        "wsgi = app.wsgi_app if 'app' in dir() else application\n"
        "b''.join(wsgi(environ, lambda status, headers: answer.append(status)))\n"
        "print(answer[0])\n"
    )
    env_code = (
        f"import os\nos.environ['PROMETHEUS_MULTIPROC_DIR'] = {str(tmp_path)!r}\n"
        f"os.environ['PGPOOL_APP_DSN'] = {pg.dsn()!r}\n"
        "os.environ['DJANGO_SETTINGS_MODULE'] = 'tests.django.settings'\n"
    )
    assert run_in_subprocess(env_code + code) == "200 OK\n"


check("python", "# wsgi.py, Flask: /metrics for Prometheus")(check_metrics_endpoint)
check("python", "# wsgi.py, Django: /metrics for Prometheus")(check_metrics_endpoint)


@check("text", "# HELP db_client_connection_count")
def check_scrape_output(found: Sample, request: pytest.FixtureRequest) -> None:
    """The names and types are those the exporter gives the conventions' instruments."""
    from prometheus_client.parser import text_string_to_metric_families

    from pgpool_core.metrics.prometheus import prometheus_name

    kinds = {"updowncounter": "gauge", "counter": "counter", "histogram": "histogram"}
    expected = {
        prometheus_name(name, unit): kinds[kind]
        for name, (kind, unit, _) in CONVENTIONS.items()
    }
    families = text_string_to_metric_families(found.code)
    shown = {family.name: family.type for family in families}
    assert shown == {name: expected[name] for name in shown}
    assert len(shown) >= 5


@check("python", 'app.add_url_rule("/health/db", view_func=pgpool.health_view())')
@check("literal", 'app.add_url_rule("/health/db", view_func=pgpool.health_view())')
def check_flask_health_view(found: Sample, request: pytest.FixtureRequest) -> None:
    from tests.flask.apps.notes import create_app, pgpool

    pg: PgServer = request.getfixturevalue("pg_server")
    app = create_app(PGPOOL_CONNINFO=pg.dsn())
    try:
        run(found.code, {"app": app, "pgpool": pgpool}, found.id)
        response = app.test_client().get("/health/db")
        assert response.status_code == 200
        assert response.json is not None and response.json["status"] == "ok"
    finally:
        close_app(app)


@check("python", "from django.urls import path")
@check("literal", "from django.urls import path")
def check_django_health_urls(found: Sample, request: pytest.FixtureRequest) -> None:
    """The view lists checks that import (tests/django/test_health.py runs it)."""
    from django.utils.module_loading import import_string

    namespace = run(found.code, {}, found.id)
    (pattern,) = namespace["urlpatterns"]
    checks = pattern.callback.view_initkwargs["checks"]
    classes = [import_string(c[0] if isinstance(c, tuple) else c) for c in checks]
    assert "PoolHealthCheck" in {cls.__name__ for cls in classes}


# -- Settings files ------------------------------------------------------------


def check_snippet(found: Sample, request: pytest.FixtureRequest) -> None:
    """The server settings shown are the shipped ones, which tests/examples serve."""
    assert found.code in {read_snippet(*key) for key in SNIPPETS}


for _snippet in {read_snippet(*key) for key in SNIPPETS}:
    _language = "python" if _snippet.startswith("# gunicorn") else "ini"
    check(_language, _snippet.splitlines()[0])(check_snippet)


@check("ini", "[databases]")
def check_pgbouncer_ini(found: Sample, request: pytest.FixtureRequest) -> None:
    """The PgBouncer settings are those the PgBouncer tests run with."""
    parser = configparser.ConfigParser()
    parser.read_string(found.code)
    harness = (REPO / "tests" / "harness" / "pgbouncer.py").read_text()
    tested = set(re.findall(r'^\s+"(\w+)": ', harness, re.MULTILINE))
    # The tests' certificate is self-signed: they require TLS without a CA file.
    assert set(parser["pgbouncer"]) - tested == {"server_tls_ca_file"}
    assert parser["pgbouncer"]["pool_mode"] == "transaction"


# -- Shell -----------------------------------------------------------------------


def check_make(args: list[str]) -> None:
    """Each target is the Makefile's; ``BENCH_ARGS`` are benchmarks/run.py's."""
    makefile = (REPO / "Makefile").read_text()
    for word in args:
        name, is_variable, value = word.partition("=")
        if is_variable:
            assert re.search(rf"^{name} \?=", makefile, re.MULTILINE), word
            if name == "BENCH_ARGS":
                runner = bench_module("run")
                runner.selected(runner.make_parser().parse_args(value.split()).only)
            continue
        assert re.search(rf"^{word}:", makefile, re.MULTILINE), word


def bench_module(name: str) -> types.ModuleType:
    """Import benchmarks/NAME.py (benchmarks/ on sys.path, as run.py has it)."""
    import importlib

    path = str(REPO / "benchmarks")
    if path not in sys.path:
        sys.path.append(path)
    return importlib.import_module(name)


def check_pip(args: list[str]) -> None:
    """``pip install`` of this package with its extras, and pyproject's groups.

    Another package named is one the tests install (a dependency group's).
    """
    from importlib.metadata import metadata

    meta = metadata("psycopg-forksafe")
    extras = set(meta.get_all("Provides-Extra") or [])
    pyproject = (REPO / "pyproject.toml").read_text()  # no tomllib on Python 3.10
    section = pyproject[pyproject.index("[dependency-groups]") :]
    groups = set(re.findall(r"^([\w-]+) = \[", section, re.MULTILINE))
    assert args[0] == "install"
    words = iter(args[1:])
    for word in words:
        if word == "-e":
            continue
        if word == "--group":
            assert next(words) in groups
            continue
        if re.fullmatch(r"[\w.-]+", word) and word != "psycopg-forksafe":
            assert re.search(rf'^\s+"{re.escape(word)}[<>=]', section, re.M), word
            continue
        match = re.fullmatch(r"(psycopg-forksafe|\.)\[([\w,-]+)\]", word)
        assert match, word
        assert set(match[2].split(",")) <= extras, word


def check_flask_cli(args: list[str]) -> None:
    from flask_pgpool.cli import pgpool_cli

    if args[0] == "--app":
        args = args[2:]
    assert args[0] == "pgpool"
    command = pgpool_cli.get_command(None, args[1])  # type: ignore[arg-type]
    assert command is not None, args
    command.make_context(args[1], args[2:])


def check_manage_py(args: list[str]) -> None:
    from django_pgpool.management.commands.pgpool import Command

    assert args[:2] == ["manage.py", "pgpool"]
    Command().create_parser("manage.py", "pgpool").parse_args(args[2:])


def check_nox(args: list[str]) -> None:
    """``nox -l``, or ``nox -s SESSION [-- ARGS]`` of a session noxfile.py has."""
    listed = subprocess.run(
        [sys.executable, "-m", "nox", "--list"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout
    found = re.findall(r"^[*-] (([^(\s]+)(?:\(.*?\))?) -> ", listed, re.MULTILINE)
    sessions = {name for names in found for name in names}
    if args == ["-l"]:
        return
    assert args[0] == "-s" and args[1] in sessions, (args, listed)
    assert args[2:3] in ([], ["--"]), args


COMMANDS: dict[str, Callable[[list[str]], None]] = {
    "make": check_make,
    ".venv/bin/nox": check_nox,
    "pip": check_pip,
    "flask": check_flask_cli,
    "python": check_manage_py,
    "apt-get": lambda args: None,  # Debian's packages: not run here
}


def check_shell(found: Sample, request: pytest.FixtureRequest) -> None:
    """Each command exists and takes these arguments; nothing is installed."""
    lines = found.code.splitlines()
    prompted = any(line.startswith("$ ") for line in lines)
    for line in lines:
        if prompted and not line.startswith("$ "):
            continue  # the output of the command above
        words = shlex.split(line.removeprefix("$ "), comments=True)
        if ">" in words:  # the output redirected into a file
            words = words[: words.index(">")]
        if words:
            assert words[0] in COMMANDS, f"no check for the command {line!r}"
            COMMANDS[words[0]](words[1:])


# -- Output --------------------------------------------------------------------


@check("text", "$ flask pgpool capacity --hosts 20")
def check_capacity_output(found: Sample, request: pytest.FixtureRequest) -> None:
    from pgpool_core import _sizing
    from pgpool_core._sizing import Plan, ServerLimit
    from pgpool_core.ops.capacity import report, workers_from_config

    lines = found.code.splitlines()
    check_flask_cli(shlex.split(lines[0])[2:])
    example = REPO / "example_projects" / "flask_notes"
    assert lines[1] == (
        f"workers per host: {workers_from_config(example / 'uwsgi.ini')}"
        " (from ./uwsgi.ini)"
    )
    model = _sizing.from_config(example / "uwsgi.ini")
    assert model is not None
    assert lines[2] == f"each worker serves: {model.why()} (from ./uwsgi.ini)"
    limit = ServerLimit(max_connections=300, superuser_reserved=3)
    # The example sets min_size 2 and max_size 4 (notes/__init__.py).
    sizes = _sizing.resolve(2, 4, model)
    printed, fits = report(
        "default", Plan(max_size=4, workers=4, hosts=20), limit, sizes=sizes
    )
    assert lines[3:] == printed
    assert not fits


@check("text", "pgpool_core/")
def check_layout(found: Sample, request: pytest.FixtureRequest) -> None:
    """The contributors' tree names each module of pgpool_core, and only those."""
    shown = {
        line.split()[0]
        for line in found.code.splitlines()[1:]
        # "  name  what it does"; not a continued description, nor the
        # framework packages after the tree
        if re.match(r"  \S", line)
    }
    modules = {
        str(path.relative_to(REPO / "pgpool_core"))
        for path in (REPO / "pgpool_core").glob("*.py")
        if path.name != "__init__.py"
    }
    folders = {
        f"{path.name}/"
        for path in (REPO / "pgpool_core").iterdir()
        if (path / "__init__.py").exists()
    }
    assert shown == modules | folders


@check("text", "                                      plain psycopg_pool  flask_pgpool")
def check_demo_output(found: Sample, request: pytest.FixtureRequest) -> None:
    """The columns and rows are the demo's (tests/examples/test_demo.py runs it)."""
    import importlib.util

    path = REPO / "example_projects" / "demo.py"
    spec = importlib.util.spec_from_file_location("demo", path)
    assert spec is not None and spec.loader is not None
    demo = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(demo)
    lines = found.code.splitlines()
    assert [label for label, _ in demo.VARIANTS] == re.split(
        r"\s{2,}", lines[0].strip()
    )
    labels = [re.split(r"\s{2,}", line.strip())[0] for line in lines[1:]]
    # The demo leaves out "failed: other errors" when it is 0 in both columns.
    assert labels == [row for row in demo.ROWS if row != "failed: other errors"]


@check("text", "contender                           req/s       ratio (IQR)")
def check_benchmark_output(found: Sample, request: pytest.FixtureRequest) -> None:
    """A measurement: its tables and groups are those benchmarks/run.py prints."""
    runner, report = bench_module("run"), bench_module("report")
    lines = found.code.splitlines()
    assert lines[0] == report.HTTP_HEADER
    headers = (report.HTTP_HEADER, report.MICRO_HEADER, report.MEMORY_HEADER)
    labels = set(runner.LABELS.values()) | set(runner.MEMORY_MODES)
    for line in lines:
        if line.startswith("-- in one process"):
            assert report.MICRO_HEADER in lines, "the in-process table's header"
        elif line.startswith("-- uWSGI"):
            assert report.MEMORY_HEADER in lines, "the memory table's header"
        elif line.startswith("-- fork safety alone"):
            assert line == report.BORROW_HEADER, line
        elif line.startswith("-- under ASGI"):
            assert line == report.ASGI_HEADER, line
        elif line.startswith("-- making one connection wrapper"):
            assert line == report.WRAPPER_HEADER, line
        elif line.startswith("-- "):
            assert line[3:].split(" (")[0] in runner.HTTP_GROUPS, line
        elif line not in headers:
            label = re.split(r"\s{2,}", line)[0]
            assert label in labels, line


def checker(found: Sample) -> Check:
    if found.language == "sh":
        return check_shell
    for (language, first_line), function in CHECKS.items():
        if found.language == language and found.first_line.startswith(first_line):
            return function
    raise AssertionError(
        f"{found.id}: no check for this {found.language} sample"
        f" ({found.first_line!r}); add one to tests/docs/test_samples.py"
    )


@pytest.mark.parametrize("found", SAMPLES, ids=[s.id for s in SAMPLES])
def test_sample(found: Sample, request: pytest.FixtureRequest) -> None:
    checker(found)(found, request)


def test_samples_are_found() -> None:
    """The parser sees the blocks (a broken parser would test nothing)."""
    pages = {s.source for s in page_samples()}
    assert {"README.rst", "docs/flask.rst", "docs/django.rst"} <= pages
    languages = {s.language for s in SAMPLES}
    assert {"python", "sh", "ini", "text", "literal"} <= languages
