"""Issue 7, scenario 9: bad configurations give one clear error, and no password.

Each bad configuration of the Flask and the Django app is run as users meet
it, through the command line (``flask pgpool check``, ``manage.py pgpool
check``, then ``stats`` for those that load): one error, naming the setting.
The database's real password is in every configuration (in the conninfo,
PASSWORD, or the bad value itself), and must appear nowhere: not in the
output, the exception (message and repr), the pool's repr, its statistics,
nor the log lines of a server that cannot connect.

tests/flask/test_config.py and tests/django/test_backend.py check each
option's message in detail; here every error is seen end to end.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from django.core.exceptions import ImproperlyConfigured

from pgpool_core import ConfigurationError, ForkSafePool
from tests.conftest import REPO
from tests.django.support import database_settings, load_alias, run_project
from tests.flask.support import run_flask
from tests.harness.postgres import PgServer, free_port
from tests.harness.servers import RunningServer, run_load
from tests.reliability.support import FRAMEWORKS, app_env, serve_app

PASSWORD = "<the database's password>"  # replaced by pg_server.password


@dataclass
class Case:
    """A bad configuration: what the apps get, and what the error must name."""

    setting: str
    fragment: str
    pool: dict[str, Any] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)
    database: dict[str, Any] = field(default_factory=dict)
    dsn: dict[str, Any] = field(default_factory=dict)
    #: The configuration loads; connecting fails (``check`` says why).
    runtime: bool = False

    def with_password(self, password: str) -> Case:
        def put(value: Any) -> Any:
            text = json.dumps(value).replace(json.dumps(PASSWORD)[1:-1], password)
            return json.loads(text)

        return Case(
            self.setting,
            self.fragment,
            put(self.pool),
            put(self.settings),
            put(self.database),
            put(self.dsn),
            self.runtime,
        )


FLASK_CASES = {
    "missing conninfo": Case(
        "PGPOOL_CONNINFO", "missing", settings={"PGPOOL_CONNINFO": None}
    ),
    "unparsable conninfo": Case(
        "PGPOOL_CONNINFO",
        "cannot parse the connection string",
        settings={"PGPOOL_CONNINFO": f"postgresql://pgpool:{PASSWORD}%zz@db/app"},
    ),
    "wrong host": Case(
        "default", "Connection refused", dsn={"port": "free"}, runtime=True
    ),
    "wrong password": Case(
        "default",
        "password authentication failed",
        dsn={"password": f"{PASSWORD}-wrong"},
        runtime=True,
    ),
    "min > max": Case(
        "PGPOOL_MAX_SIZE", "must be >= min_size", pool={"min_size": 4, "max_size": 2}
    ),
    "negative size": Case("PGPOOL_MIN_SIZE", "an integer >= 0", pool={"min_size": -1}),
    "zero max_size": Case("PGPOOL_MAX_SIZE", "an integer >= 1", pool={"max_size": 0}),
    "unknown option": Case(
        "PGPOOL_MAX_SIZ",
        "did you mean PGPOOL_MAX_SIZE?",
        settings={"PGPOOL_MAX_SIZ": 3},
    ),
    "wrong type": Case("PGPOOL_TIMEOUT", "a number of seconds", pool={"timeout": "5"}),
    "kwargs with the password, not a dict": Case(
        "PGPOOL_KWARGS",
        "a dict of connection parameters",
        settings={"PGPOOL_KWARGS": [["password", PASSWORD]]},
    ),
    "warn_held_after": Case(
        "PGPOOL_WARN_HELD_AFTER", "seconds > 0", pool={"warn_held_after": "1"}
    ),
    "retry_after": Case(
        "PGPOOL_RETRY_AFTER", "whole number", settings={"PGPOOL_RETRY_AFTER": 0}
    ),
    "bind option": Case(
        "PGPOOL_BINDS['reports']['max_siz']",
        "did you mean max_size?",
        settings={"PGPOOL_BINDS": {"reports": {"conninfo": "x", "max_siz": 3}}},
    ),
}

_POOL = 'DATABASES["default"]["OPTIONS"]["pool"]'
DJANGO_CASES = {
    "CONN_MAX_AGE > 0": Case(
        'DATABASES["default"]["CONN_MAX_AGE"]',
        "Set it to 0",
        database={"CONN_MAX_AGE": 60},
    ),
    "missing NAME": Case(
        'DATABASES["default"]["NAME"]',
        "Please supply the NAME",
        database={"NAME": ""},
    ),
    "wrong host": Case(
        "default", "Connection refused", dsn={"port": "free"}, runtime=True
    ),
    "wrong password": Case(
        "default",
        "password authentication failed",
        dsn={"password": f"{PASSWORD}-wrong"},
        runtime=True,
    ),
    "pool not a dict": Case(
        _POOL, "expected True or a dict", database={"OPTIONS": {"pool": "yes"}}
    ),
    "min > max": Case(
        f'{_POOL}["max_size"]', ">= min_size", pool={"min_size": 4, "max_size": 2}
    ),
    "negative size": Case(
        f'{_POOL}["min_size"]', "an integer >= 0", pool={"min_size": -1}
    ),
    "unknown option": Case(
        f'{_POOL}["max_sise"]', "unknown pool option", pool={"max_sise": 8}
    ),
    "wrong type": Case(
        f'{_POOL}["timeout"]', "a number of seconds", pool={"timeout": "10"}
    ),
    "kwargs with the password": Case(
        f'{_POOL}["kwargs"]', "set by Django", pool={"kwargs": {"password": PASSWORD}}
    ),
    "warn_held_after": Case(
        f'{_POOL}["warn_held_after"]', "seconds > 0", pool={"warn_held_after": 0}
    ),
    "retry_after": Case(
        "PGPOOL_RETRY_AFTER", "an integer >= 1", settings={"PGPOOL_RETRY_AFTER": 0}
    ),
}

CASES = [
    pytest.param(app, case, id=f"{app}-{name}")
    for app, cases in (("flask", FLASK_CASES), ("django", DJANGO_CASES))
    for name, case in cases.items()
]


def run_cli(app: str, action: str, env: dict[str, str]) -> tuple[int, str]:
    if app == "flask":
        factory = "tests.reliability.apps.flask_app:create_app"
        result = run_flask(factory, "pgpool", action, env=env)
    else:
        manage = str(REPO / "tests" / "reliability" / "apps" / "django_manage.py")
        # Warnings as the user's shell has them, not as errors.
        quiet = {**env, "PYTHONWARNINGS": os.environ.get("PYTHONWARNINGS", "")}
        result = run_project(manage, "pgpool", action, env=quiet, timeout=120)
    return result.returncode, result.stdout + result.stderr


def case_env(pg: PgServer, case: Case) -> dict[str, str]:
    dsn = dict(case.dsn)
    if dsn.get("port") == "free":
        dsn["port"] = free_port()
    return app_env(
        pg,
        pool={**case.pool, "timeout": case.pool.get("timeout", 1)},
        settings=case.settings,
        database=case.database,
        import_query=False,
        **dsn,
    )


@pytest.mark.parametrize(("app", "case"), CASES)
def test_bad_configuration_is_one_clear_error(
    pg_server: PgServer, app: str, case: Case
) -> None:
    case = case.with_password(pg_server.password)
    env = case_env(pg_server, case)

    code, output = run_cli(app, "check", env)

    print(f"RELIABILITY {app} bad input {case.setting}: {output.strip()[-300:]}")
    assert code != 0, output
    assert pg_server.password not in output
    assert case.fragment in output, output
    if case.runtime and case.setting == "default":
        # The database's name and its masked conninfo or its alias, once.
        failed = [line for line in output.splitlines() if line.startswith("default:")]
        assert len(failed) == 1, output
        assert case.fragment in failed[0], failed[0]
    elif app == "flask":
        errors = [line for line in output.splitlines() if "ConfigurationError:" in line]
        assert errors == [
            f"pgpool_core.errors.ConfigurationError: {case.setting}: "
            + errors[0].split(f"{case.setting}: ", 1)[-1]
        ], output
    elif case.runtime:
        assert (
            output.strip()
            .splitlines()[-1]
            .startswith("django.core.exceptions.ImproperlyConfigured:")
        ), output
        assert case.setting in output.strip().splitlines()[-1]
    else:
        # Django's system checks: one error, naming the setting.
        errors = [line for line in output.splitlines() if "(django_pgpool.E" in line]
        assert len(errors) == 1, output
        assert case.setting in errors[0], errors[0]
    if case.runtime:
        code, stats = run_cli(app, "stats", env)
        assert pg_server.password not in stats
        assert "********" in stats or case.setting == "NAME", stats


def test_errors_reprs_and_stats_hide_the_password(
    pg_server: PgServer,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """In one process: exceptions, reprs, statistics and log lines."""
    password = pg_server.password
    seen: list[str] = []

    with pytest.raises(ConfigurationError) as info:
        ForkSafePool(f"postgresql://pgpool:{password}%zz@db/app")
    assert info.value.setting == "conninfo"
    seen += [str(info.value), repr(info.value)]
    for overrides in (
        {"OPTIONS": {"pool": {"max_sise": 1}}},
        {"OPTIONS": {"pool": {"kwargs": {"password": password}}}},
        {"CONN_MAX_AGE": 60},
    ):
        with pytest.raises(ImproperlyConfigured) as django_info:
            load_alias(database_settings(pg_server, **overrides), "bad")
        seen += [str(django_info.value), repr(django_info.value)]

    wrapper = load_alias(database_settings(pg_server))
    try:
        assert wrapper.pool is not None
        seen += [repr(wrapper.pool), repr(wrapper.pool.stats())]
    finally:
        wrapper.close_pool()

    from tests.reliability.apps.flask_app import create_app, pgpool

    monkeypatch.setenv("PGPOOL_APP_DSN", pg_server.dsn(password=f"{password}-wrong"))
    monkeypatch.setenv("PGPOOL_APP_POOL", json.dumps({"min_size": 1, "timeout": 1}))
    app = create_app()
    try:
        response = app.test_client().get("/query")
        assert response.status_code == 503
        seen += [response.text, repr(app.extensions["pgpool"])]
        with app.app_context():
            seen.append(repr(pgpool.stats()))
    finally:
        for pool in app.extensions["pgpool"].pools.values():
            pool.close()

    assert "password authentication failed" in caplog.text
    assert "********" in " ".join(seen)
    assert [text for text in [*seen, caplog.text] if password in text] == []


@pytest.mark.servers
@pytest.mark.parametrize("app", FRAMEWORKS)
def test_wrong_password_under_a_server(
    serve: Callable[..., RunningServer], pg_log: PgServer, app: str
) -> None:
    """Workers that cannot log in: 503s, and log lines that say why, maskedly."""
    position = pg_log.log_position()
    server = serve_app(
        serve,
        app,
        pg_log,
        workers=2,
        import_query=False,
        pool={"timeout": 1},
        password=pg_log.password + "-wrong",
    )

    result = run_load(server.port, ["/query"] * 4 + ["/stats"] * 2, concurrency=2)

    output = server.output()
    print(f"RELIABILITY {app} wrong password under gunicorn: {result.summary()}")
    assert [r.status for r in result.responses[:4]] == [503] * 4, result.summary()
    assert [r.status for r in result.responses[4:]] == [200] * 2
    assert "password authentication failed" in output
    assert "password authentication failed" in pg_log.log_since(position)
    bodies = b"".join(r.body for r in result.responses).decode()
    assert pg_log.password not in output + bodies
