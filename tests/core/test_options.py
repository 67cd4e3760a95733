"""Option validation, keepalive defaults and password masking (no server needed)."""

from __future__ import annotations

import math
from typing import Any

import pytest
from psycopg.conninfo import conninfo_to_dict

from pgpool_core import ConfigurationError, ForkSafePool
from pgpool_core.options import (
    SOCKET_TIMEOUT_MAX,
    mask_conninfo,
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
