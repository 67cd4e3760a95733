"""Option validation, keepalive defaults and password masking (no server needed).

But two tests, which work against the server: a pool at every bound, and a
pool validated once from its making to its first connection.
"""

from __future__ import annotations

import inspect
import math
import sys
import threading
import time
from collections import Counter
from typing import Any

import pytest
from psycopg.conninfo import conninfo_to_dict

from pgpool_core import ConfigurationError, ForkSafePool, _options, mask_conninfo
from pgpool_core._options import (
    MAX_WAITING_MAX,
    NUM_WORKERS_MAX,
    SECONDS_MAX,
    SIZE_MAX,
    SOCKET_TIMEOUT_MAX,
    merge_defaults,
    parse_conninfo,
)

SECRET = "s3cr3t-pw"


@pytest.mark.parametrize(
    ("options", "setting", "fragment"),
    [
        ({"min_size": -1}, "min_size", "integer >= 0"),
        ({"min_size": "2"}, "min_size", "integer >= 0"),
        ({"min_size": True}, "min_size", "integer >= 0"),
        ({"max_size": 0}, "max_size", "integer >= 1"),
        ({"min_size": 5, "max_size": 2}, "max_size", "must be >= min_size (5)"),
        ({"min_size": 0}, "max_size", "must be set"),
        ({"timeout": 0}, "timeout", "seconds > 0"),
        ({"timeout": "30"}, "timeout", "seconds > 0"),
        ({"max_lifetime": -5}, "max_lifetime", "seconds > 0"),
        ({"max_waiting": -1}, "max_waiting", "integer >= 0"),
        ({"num_workers": 0}, "num_workers", "integer >= 1"),
        ({"configure": "not callable"}, "configure", "callable"),
        ({"check": 42}, "check", "callable"),
        ({"kwargs": ["a"]}, "kwargs", "dict"),
        ({"keepalives": "yes"}, "keepalives", "True or False"),
        ({"connection_class": dict}, "connection_class", "psycopg.Connection"),
        ({"name": 3}, "name", "string"),
    ],
)
def test_bad_option_names_the_option(
    options: dict[str, Any], setting: str, fragment: str
) -> None:
    with pytest.raises(ConfigurationError) as info:
        ForkSafePool("host=localhost", **options)
    assert info.value.setting == setting
    assert str(info.value).startswith(f"{setting}: ")
    assert fragment in str(info.value)


def test_the_signature_takes_the_options_of_the_table() -> None:
    """ForkSafePool's signature, the documented and typed API, is written out:
    it takes conninfo and the options of POOL_OPTIONS's table, in its order,
    so that the two cannot drift apart."""
    names = list(inspect.signature(ForkSafePool).parameters)
    assert names == ["conninfo", *_options._OPTIONS]
    assert set(names[1:]) == _options.POOL_OPTIONS


def test_a_pool_is_validated_once(dsn: str, validations: Counter[str]) -> None:
    """Made, and its first connection: its settings are validated once."""
    pool = ForkSafePool(dsn, min_size=1, max_size=2, name="once")
    try:
        with pool.connection() as conn:
            conn.execute("SELECT 1")
    finally:
        pool.close()
    assert validations == {"validate_pool_options": 1, "validate_connection": 1}


def test_unknown_option_is_a_type_error() -> None:
    with pytest.raises(TypeError, match="max_sise"):
        ForkSafePool("host=localhost", max_sise=3)  # type: ignore[call-arg]


def test_validate_pool_options_rejects_unknown_names_with_the_users_name() -> None:
    from pgpool_core import validate_pool_options

    with pytest.raises(ConfigurationError) as info:
        validate_pool_options({"max_sise": 3}, setting=lambda o: f"PGPOOL_{o.upper()}")
    assert info.value.setting == "PGPOOL_MAX_SISE"
    assert "unknown pool option" in str(info.value)


@pytest.mark.parametrize(
    "conninfo",
    [
        f"host=db password={SECRET} sslmode",
        f"host=db password={SECRET} trailing words",
        f"host=db password='{SECRET}",
        f"postgresql://user:{SECRET}%zz@db/app",
        f"host=db password={SECRET} nosuchoption=1",
    ],
)
def test_unparsable_conninfo_error_names_conninfo_and_hides_the_password(
    conninfo: str,
) -> None:
    with pytest.raises(ConfigurationError) as info:
        ForkSafePool(conninfo)
    assert info.value.setting == "conninfo"
    assert "cannot parse" in str(info.value)
    assert SECRET not in str(info.value)
    assert "trailing" not in str(info.value) and "words" not in str(info.value)
    assert info.value.__cause__ is None and info.value.__suppress_context__


def test_conninfo_of_the_wrong_type() -> None:
    with pytest.raises(
        ConfigurationError, match="conninfo: expected a connection string"
    ):
        ForkSafePool(42)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("conninfo", "says"),
    [
        (f"postgresql+psycopg://u:{SECRET}@db/app", "is SQLAlchemy's, with a driver"),
        (f"postgres+psycopg2://u:{SECRET}@db/app", 'write "postgresql://"'),
        (f"POSTGRESQL://u:{SECRET}@db/app", "is read in lower case only"),
        (f"mysql://u:{SECRET}@db/app", 'scheme "mysql://" is not PostgreSQL\'s'),
    ],
)
def test_a_url_of_another_scheme_says_so(conninfo: str, says: str) -> None:
    """Issue 26: "a word without '=' at the start" before."""
    with pytest.raises(ConfigurationError) as info:
        ForkSafePool(conninfo)
    assert says in str(info.value)
    assert SECRET not in str(info.value)


def test_parse_conninfo_accepts_urls() -> None:
    assert parse_conninfo("postgresql://u@db:5433/app?sslmode=require") == {
        "user": "u",
        "host": "db",
        "port": "5433",
        "dbname": "app",
        "sslmode": "require",
    }


def test_keepalives_merged_unless_set() -> None:
    merged = conninfo_to_dict(merge_defaults("host=db", {}))
    assert merged == {
        "host": "db",
        "connect_timeout": "10",
        "keepalives": "1",
        "keepalives_idle": "60",
        "keepalives_interval": "10",
        "keepalives_count": "6",
        "tcp_user_timeout": "30000",
    }


def test_keepalives_set_by_the_user_win() -> None:
    merged = conninfo_to_dict(
        merge_defaults(
            "postgresql://db/app?keepalives_idle=5&connect_timeout=3",
            {"keepalives_count": 2},
        )
    )
    assert merged["keepalives_idle"] == "5"
    assert merged["connect_timeout"] == "3"
    assert "keepalives_count" not in merged  # kwargs set it; they win at connect
    assert merged["keepalives"] == "1"


def test_keepalives_can_be_left_out() -> None:
    merged = conninfo_to_dict(merge_defaults("host=db", {}, keepalives=False))
    assert merged == {"host": "db", "connect_timeout": "10"}


def test_connect_timeout_from_the_environment_wins(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("PGCONNECT_TIMEOUT", "2")
    assert "connect_timeout" not in conninfo_to_dict(merge_defaults("host=db", {}))


def test_mask_conninfo() -> None:
    masked = mask_conninfo(f"postgresql://app:{SECRET}@db/app")
    assert SECRET not in masked
    assert "password=********" in masked


def test_repr_hides_the_password() -> None:
    pool = ForkSafePool(f"host=db user=app password={SECRET}", name="main")
    text = repr(pool)
    assert SECRET not in text
    assert "'main'" in text and "password=********" in text


def test_bad_kwargs_error_does_not_show_the_value() -> None:
    with pytest.raises(ConfigurationError) as info:
        ForkSafePool("host=db", kwargs=[("password", SECRET)])  # type: ignore[arg-type]
    assert info.value.setting == "kwargs"
    assert "got list" in str(info.value)
    assert SECRET not in str(info.value)


# -- each number's bound (issue 27, case 37) ---------------------------------------

_SECONDS = f"over the bound of {SECONDS_MAX} seconds (365 days"


@pytest.mark.parametrize(
    ("options", "setting", "fragment"),
    [
        # OverflowError in every getconn() that waits, before.
        ({"timeout": math.inf}, "timeout", _SECONDS),
        ({"timeout": 1e308}, "timeout", _SECONDS),
        ({"timeout": 10**18}, "timeout", _SECONDS),
        ({"timeout": SECONDS_MAX + 0.5}, "timeout", _SECONDS),
        ({"timeout": math.nan}, "timeout", "seconds > 0, got float nan"),
        ({"timeout": True}, "timeout", "seconds > 0, got bool True"),
        # The scheduler thread died, before.
        ({"max_idle": math.inf}, "max_idle", _SECONDS),
        ({"max_idle": math.nan}, "max_idle", "seconds > 0"),
        ({"max_lifetime": 1e308}, "max_lifetime", _SECONDS),
        ({"reconnect_timeout": math.inf}, "reconnect_timeout", _SECONDS),
        ({"warn_held_after": math.inf}, "warn_held_after", _SECONDS),
        ({"warn_held_after": math.nan}, "warn_held_after", "seconds > 0"),
        # "can't start new thread" after 13-20 s, before.
        ({"num_workers": 10**9}, "num_workers", "over the bound of 100"),
        (
            {"num_workers": NUM_WORKERS_MAX + 1},
            "num_workers",
            f"over the bound of {NUM_WORKERS_MAX} (each is a thread",
        ),
        ({"num_workers": True}, "num_workers", "integer >= 1"),
        # The server exhausted, every request a 500, before.
        (
            {"min_size": 10**18, "max_size": 10**18},
            "min_size",
            "over the bound of 262143 (PostgreSQL's highest max_connections",
        ),
        ({"min_size": SIZE_MAX + 1}, "min_size", "set at most 262143"),
        ({"min_size": 1, "max_size": SIZE_MAX + 1}, "max_size", "at most 262143"),
        ({"max_waiting": 10**30}, "max_waiting", "or 0 for no limit"),
        ({"max_waiting": MAX_WAITING_MAX + 1}, "max_waiting", "at most 1000000"),
        ({"max_waiting": False}, "max_waiting", "integer >= 0"),
    ],
)
def test_a_number_over_its_bound_is_refused_naming_the_bound(
    options: dict[str, Any], setting: str, fragment: str
) -> None:
    with pytest.raises(ConfigurationError) as info:
        ForkSafePool("host=localhost", **options)
    assert info.value.setting == setting
    assert fragment in str(info.value), str(info.value)


def test_resize_over_the_bound_is_refused() -> None:
    pool = ForkSafePool("host=localhost", min_size=1, open=False)
    with pytest.raises(ConfigurationError, match="min_size: got 262144, over"):
        pool.resize(SIZE_MAX + 1)
    assert pool.min_size == 1


def test_a_pool_at_every_bound_works(dsn: str) -> None:
    """The bounds are below what breaks: a wait, the scheduler, the workers."""
    died: list[str] = []
    previous = threading.excepthook
    threading.excepthook = lambda args: died.append(f"{args.thread}: {args.exc_value}")
    pool = ForkSafePool(
        dsn,
        min_size=1,
        max_size=1,
        timeout=SECONDS_MAX,
        max_idle=SECONDS_MAX,
        max_lifetime=SECONDS_MAX,
        reconnect_timeout=SECONDS_MAX,
        warn_held_after=SECONDS_MAX,
        num_workers=NUM_WORKERS_MAX,
        max_waiting=MAX_WAITING_MAX,
    )
    try:
        held = pool.getconn()
        got: list[Any] = []
        waiter = threading.Thread(target=lambda: got.append(pool.getconn()))
        waiter.start()  # waits, for up to the pool's timeout: a year
        time.sleep(0.3)
        assert waiter.is_alive() and not got
        pool.putconn(held)
        waiter.join(10)
        assert got, "the waiter got the connection given back"
        pool.putconn(got[0])
        time.sleep(0.5)  # the scheduler's first task (max_idle's) runs
    finally:
        pool.close()
        threading.excepthook = previous
    assert died == []
    # And at the bound of SIZE_MAX, a pool that is not used is made.
    ForkSafePool(dsn, min_size=SIZE_MAX, open=False)


# -- libpq's numbers, given or from the environment (cases 37, 38) -----------------


@pytest.mark.parametrize(
    ("kwargs", "setting", "fragment"),
    [
        # libpq reads them into a C int: a larger one fails at connect.
        (
            {"tcp_user_timeout": 2**31},
            "tcp_user_timeout",
            "out of the range of a C int",
        ),
        ({"keepalives": 10**11}, "keepalives", "(-2147483648 to 2147483647)"),
        # Linux refuses the socket options: every TCP connect fails.
        ({"keepalives_idle": 0}, "keepalives_idle", "TCP_KEEPIDLE, 1 to 32767"),
        ({"keepalives_idle": 32768}, "keepalives_idle", "TCP_KEEPIDLE, 1 to 32767"),
        ({"keepalives_interval": 0}, "keepalives_interval", "TCP_KEEPINTVL"),
        ({"keepalives_count": 128}, "keepalives_count", "TCP_KEEPCNT, 1 to 127"),
        ({"connect_timeout": True}, "connect_timeout", "expected an integer"),
    ],
)
def test_a_libpq_number_out_of_its_bounds_is_refused(
    kwargs: dict[str, Any], setting: str, fragment: str
) -> None:
    if "TCP_" in fragment and not sys.platform.startswith("linux"):
        pytest.skip("Linux's bounds")
    with pytest.raises(ConfigurationError) as info:
        ForkSafePool("host=db", kwargs=kwargs)
    assert info.value.setting == f"kwargs[{setting!r}]"
    assert fragment in str(info.value), str(info.value)


def test_the_keepalive_bounds_apply_only_where_libpq_sets_them() -> None:
    ForkSafePool("host=db keepalives=0", kwargs={"keepalives_idle": 0})
    ForkSafePool("host=/run/postgresql", kwargs={"keepalives_count": 0})
    ForkSafePool("host=db", kwargs={"keepalives_idle": 32767, "connect_timeout": -1})


@pytest.mark.parametrize(
    ("variable", "value", "fragment"),
    [
        # Case 38: accepted, then ProgrammingError at the first connect.
        ("PGCONNECT_TIMEOUT", "abc", "connect_timeout: expected an integer, got 'abc'"),
        ("PGCONNECT_TIMEOUT", "", "expected an integer, got ''"),
        ("PGCONNECT_TIMEOUT", "99999999999", "out of the range of a C int"),
        ("PGSSLSNI", "yes", "sslsni: expected an integer >= 0"),
        # Refused before, naming the conninfo.
        ("PGPORT", "abc", "libpq refuses port, which this environment variable sets"),
        ("PGPORT", "99999", 'invalid port number: "99999"'),
        ("PGSSLMODE", "bogus", "(sslmode is one of disable, allow"),
    ],
)
def test_a_bad_libpq_environment_variable_is_named(
    variable: str, value: str, fragment: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(ConfigurationError) as info:
        ForkSafePool(f"host=db password={SECRET}")
    assert info.value.setting == variable
    assert fragment in str(info.value), str(info.value)
    assert str(info.value).endswith("or unset it")
    assert SECRET not in str(info.value)


def test_a_setting_given_wins_over_its_environment_variable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("PGCONNECT_TIMEOUT", "abc")
    monkeypatch.setenv("PGPORT", "abc")
    ForkSafePool("host=db port=5432", kwargs={"connect_timeout": 5})
    monkeypatch.setenv("PGCONNECT_TIMEOUT", " 7 ")
    ForkSafePool("host=db port=5432")


@pytest.mark.parametrize(
    "value", [0, -1, "30", True, math.inf, -math.inf, math.nan, 1e9, 86400.5]
)
def test_socket_timeout_is_bounded(value: Any) -> None:
    """Seconds in (0, a day], or None: a bad one fails when the pool is made."""
    with pytest.raises(ConfigurationError) as info:
        ForkSafePool("host=localhost", socket_timeout=value)
    assert info.value.setting == "socket_timeout"
    assert "seconds > 0 and <= 86400 (a day), or None (no bound)" in str(info.value)


@pytest.mark.parametrize("value", [None, 0.01, 1, 45.0, SOCKET_TIMEOUT_MAX])
def test_socket_timeout_accepted(value: Any) -> None:
    pool = ForkSafePool("host=localhost", socket_timeout=value, open=False)
    assert pool.socket_timeout == value
