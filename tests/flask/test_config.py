"""Each bad PGPOOL_* setting is one clear error naming it, with no password."""

from __future__ import annotations

from collections import Counter
from typing import Any

import psycopg
import pytest
from flask import Flask

from flask_pgpool import ConfigurationError, PgPool
from tests.flask.conftest import MakeApp

SECRET = "flask-S3cret-pw"
DSN = f"host=db user=app password={SECRET} dbname=app"


def init(**config: Any) -> Flask:
    app = Flask(__name__)
    app.config.update(config)
    PgPool().init_app(app)
    return app


def error_of(**config: Any) -> ConfigurationError:
    with pytest.raises(ConfigurationError) as info:
        init(**config)
    error = info.value
    assert str(error).startswith(f"{error.setting}: ")
    assert SECRET not in str(error)
    return error


def test_missing_conninfo() -> None:
    error = error_of(PGPOOL_MAX_SIZE=4)
    assert error.setting == "PGPOOL_CONNINFO"
    assert "missing" in str(error) and "postgresql://" in str(error)


@pytest.mark.parametrize(
    ("conninfo", "fragment"),
    [
        (None, "missing"),
        ("", "empty"),
        ("   ", "empty"),
        (42, "expected a connection string"),
        (f"host=db password={SECRET} nosuchoption=1", "cannot parse"),
        (f"host=db password='{SECRET}", "cannot parse"),
        (f"postgresql://app:{SECRET}%zz@db/app", "cannot parse"),
    ],
)
def test_bad_conninfo(conninfo: Any, fragment: str) -> None:
    error = error_of(PGPOOL_CONNINFO=conninfo)
    assert error.setting == "PGPOOL_CONNINFO"
    assert fragment in str(error)


@pytest.mark.parametrize(
    ("conninfo", "says"),
    [
        # Case 02: libpq's message quoted "w-Leak'", the tail of the password.
        (
            f"host=127.0.0.1 dbname=appdb password='{SECRET}'-Leak' sslmode=require",
            'a word without "=" after the value of "password"',
        ),
        (f"postgresql://app:{SECRET} x@db/app", "unencoded space in the URL's"),
        (f"host=db password={SECRET} -Leak=1", "unknown setting name after"),
    ],
)
def test_bad_conninfo_quotes_no_part_of_the_password(conninfo: str, says: str) -> None:
    error = error_of(PGPOOL_CONNINFO=conninfo)
    assert error.setting == "PGPOOL_CONNINFO"
    assert says in str(error)
    assert "Leak" not in str(error)


def test_conninfo_may_be_a_callable() -> None:
    app = init(PGPOOL_CONNINFO=lambda: DSN)
    assert repr(app.extensions["pgpool"]).count("<callable>") == 1


@pytest.mark.parametrize(
    ("key", "suggestion"),
    [
        ("PGPOOL_MAX_SIZ", "did you mean PGPOOL_MAX_SIZE?"),
        ("PGPOOL_CONNINFO_URL", "did you mean PGPOOL_CONNINFO?"),
        ("PGPOOL_BIND", "did you mean PGPOOL_BINDS?"),
        ("PGPOOL_FOO", "the known ones are: PGPOOL_BINDS, PGPOOL_CHECK"),
        ("PGPOOL_max_size", "did you mean PGPOOL_MAX_SIZE?"),
    ],
)
def test_unknown_setting(key: str, suggestion: str) -> None:
    error = error_of(PGPOOL_CONNINFO=DSN, **{key: 3})
    assert error.setting == key
    assert "unknown setting" in str(error) and suggestion in str(error)


@pytest.mark.parametrize("key", ["PGPOOL_OPEN", "PGPOOL_CLOSE_RETURNS"])
def test_unsupported_setting(key: str) -> None:
    error = error_of(PGPOOL_CONNINFO=DSN, **{key: True})
    assert error.setting == key
    assert "not supported" in str(error) and "remove it" in str(error)


@pytest.mark.parametrize(
    ("key", "value", "fragment"),
    [
        ("PGPOOL_MIN_SIZE", -1, "an integer >= 0"),
        ("PGPOOL_MIN_SIZE", "2", "an integer >= 0"),
        ("PGPOOL_MAX_SIZE", 0, "an integer >= 1"),
        ("PGPOOL_TIMEOUT", "5", "a number of seconds > 0"),
        ("PGPOOL_TIMEOUT", 0, "a number of seconds > 0"),
        ("PGPOOL_MAX_WAITING", -1, "an integer >= 0"),
        ("PGPOOL_MAX_LIFETIME", 0, "a number of seconds > 0"),
        ("PGPOOL_MAX_IDLE", -5, "a number of seconds > 0"),
        ("PGPOOL_RECONNECT_TIMEOUT", True, "a number of seconds > 0"),
        ("PGPOOL_NUM_WORKERS", 0, "an integer >= 1"),
        ("PGPOOL_CHECK", "yes", "a callable or None"),
        ("PGPOOL_CONFIGURE", 1, "a callable or None"),
        ("PGPOOL_RESET", "DISCARD ALL", 'expected "always"'),
        ("PGPOOL_RESET", 1, 'a callable, None or "always"'),
        ("PGPOOL_RECONNECT_FAILED", 1, "a callable or None"),
        ("PGPOOL_KEEPALIVES", "true", "True or False"),
        ("PGPOOL_NAME", 1, "a string or None"),
        ("PGPOOL_KWARGS", [("password", SECRET)], "a dict of connection parameters"),
        ("PGPOOL_CONNECTION_CLASS", dict, "a subclass of psycopg.Connection"),
    ],
)
def test_bad_option_value(key: str, value: Any, fragment: str) -> None:
    error = error_of(PGPOOL_CONNINFO=DSN, **{key: value})
    assert error.setting == key
    assert fragment in str(error)


def test_max_size_below_min_size() -> None:
    error = error_of(PGPOOL_CONNINFO=DSN, PGPOOL_MIN_SIZE=4, PGPOOL_MAX_SIZE=2)
    assert error.setting == "PGPOOL_MAX_SIZE"
    assert "must be >= min_size (4)" in str(error)


@pytest.mark.parametrize("value", [0, -1, "5", True, 1.5, None])
def test_bad_retry_after(value: Any) -> None:
    error = error_of(PGPOOL_CONNINFO=DSN, PGPOOL_RETRY_AFTER=value)
    assert error.setting == "PGPOOL_RETRY_AFTER"
    assert "a whole number of seconds >= 1" in str(error)


@pytest.mark.parametrize(
    ("binds", "setting", "fragment"),
    [
        (["reports"], "PGPOOL_BINDS", "expected a dict"),
        ({"": DSN}, "PGPOOL_BINDS", "non-empty strings"),
        ({1: DSN}, "PGPOOL_BINDS", "non-empty strings"),
        ({"default": DSN}, "PGPOOL_BINDS", "give this one another name"),
        ({"reports": 5}, "PGPOOL_BINDS['reports']", "expected a connection string"),
        ({"reports": {}}, "PGPOOL_BINDS['reports']['conninfo']", "missing"),
        (
            {"reports": {"conninfo": DSN, "max_siz": 3}},
            "PGPOOL_BINDS['reports']['max_siz']",
            "did you mean max_size?",
        ),
        (
            {"reports": {"conninfo": DSN, "open": True}},
            "PGPOOL_BINDS['reports']['open']",
            "not supported",
        ),
        (
            {"reports": {"conninfo": DSN, "max_size": 0}},
            "PGPOOL_BINDS['reports']['max_size']",
            "an integer >= 1",
        ),
        (
            {"reports": {"conninfo": DSN, "timeout": "1"}},
            "PGPOOL_BINDS['reports']['timeout']",
            "a number of seconds > 0",
        ),
        (
            {"reports": f"host=db password='{SECRET}"},
            "PGPOOL_BINDS['reports']['conninfo']",
            "cannot parse",
        ),
        ({"reports": ""}, "PGPOOL_BINDS['reports']['conninfo']", "empty"),
    ],
)
def test_bad_binds(binds: Any, setting: str, fragment: str) -> None:
    error = error_of(PGPOOL_CONNINFO=DSN, PGPOOL_BINDS=binds)
    assert error.setting == setting
    assert fragment in str(error)


def test_a_bind_does_not_inherit_the_default_database_options() -> None:
    app = init(
        PGPOOL_CONNINFO=DSN,
        PGPOOL_MAX_SIZE=9,
        PGPOOL_MIN_SIZE=1,
        PGPOOL_BINDS={"reports": DSN},
    )
    pools = app.extensions["pgpool"].pools
    assert pools["default"].max_size == 9
    assert pools["reports"].max_size == 4, "ForkSafePool's default"


def test_a_bind_is_validated_once(make_app: MakeApp, validations: Counter[str]) -> None:
    """init_app reads and validates the settings; the pool made of them, and
    its first connection, do not validate them again."""
    app = make_app(PGPOOL_MIN_SIZE=1, PGPOOL_MAX_SIZE=2)
    with app.extensions["pgpool"].pools["default"].connection() as conn:
        conn.execute("SELECT 1")
    assert validations == {"validate_pool_options": 1, "validate_connection": 1}


def test_every_pool_option_is_a_setting() -> None:
    """A setting per ForkSafePool option, but the two that cannot apply."""
    from flask_pgpool.config import SETTINGS
    from pgpool_core import POOL_OPTIONS

    assert {s.lower() for s in SETTINGS} == (
        POOL_OPTIONS - {"open", "close_returns"}
    ) | {"conninfo", "binds", "retry_after"}


def test_settings_reach_the_pool(make_app: MakeApp) -> None:
    configured: list[int] = []

    class Conn(psycopg.Connection[Any]):
        pass

    app = make_app(
        PGPOOL_MIN_SIZE=1,
        PGPOOL_MAX_SIZE=3,
        PGPOOL_TIMEOUT=4.5,
        PGPOOL_NAME="custom",
        PGPOOL_CONFIGURE=lambda conn: configured.append(conn.info.backend_pid),
        PGPOOL_CONNECTION_CLASS=Conn,
        PGPOOL_KWARGS={"application_name": "from-kwargs"},
        PGPOOL_RETRY_AFTER=9,
    )
    state = app.extensions["pgpool"]
    assert state.retry_after == 9
    pool = state.pools["default"]
    assert (pool.name, pool.min_size, pool.max_size, pool.timeout) == (
        "custom",
        1,
        3,
        4.5,
    )
    with app.app_context():
        from tests.flask.apps.notes import pgpool

        conn = pgpool.connection
        assert isinstance(conn, Conn)
        assert conn.execute("SHOW application_name").fetchone() == ("from-kwargs",)
        assert conn.info.backend_pid in configured
