"""Each source of a secret libpq reads is masked, in each form an output gives it."""

from __future__ import annotations

import html
import json
import logging
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import psycopg
import pytest
from psycopg import pq

from pgpool_core import ConfigurationError, ForkSafePool
from pgpool_core._secrets import (
    MASK,
    ConnectionParams,
    mask_conninfo,
    mask_exception,
    mask_secrets,
    remember_secrets,
)
from tests.harness.postgres import quoted

SECRET = "Wr0ng P@ss'w\\-Leak"


def fragments(text: str, secret: str = SECRET) -> list[str]:
    """The 5-character pieces of *secret* that *text* holds."""
    return [
        secret[i : i + 5] for i in range(len(secret) - 4) if secret[i : i + 5] in text
    ]


@pytest.fixture(autouse=True)
def _forget_remembered(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Each test starts with no secret remembered from other pools."""
    from pgpool_core import _secrets

    monkeypatch.setattr(_secrets, "_remembered", {})
    yield


# -- the cases: parse errors quoted a piece of the password ---------------------


def test_url_password_with_an_unencoded_space() -> None:
    """Case 01: libpq's message quoted "Wr0ng P", the password up to the "@"."""
    secret = "Wr0ng P@ss-Leak"
    with pytest.raises(ConfigurationError) as info:
        ForkSafePool(f"postgresql://app:{secret}@127.0.0.1:26801/appdb?sslmode=require")
    message = str(info.value)
    assert message.startswith("conninfo: cannot parse the connection string: ")
    assert "unencoded space in the URL's password" in message
    assert "urllib.parse.quote(password" in message
    assert fragments(message, secret) == []


def test_keyword_password_with_an_unescaped_quote() -> None:
    """Case 02 in the core (Flask's is in tests/flask/test_config.py)."""
    secret = "Wr0ng P@ss'w-Leak"
    with pytest.raises(ConfigurationError) as info:
        ForkSafePool(f"host=db password='{secret}' sslmode=require")
    message = str(info.value)
    assert 'a word without "=" after the value of "password"' in message
    assert "\\'" in message  # how to write a quote inside the value
    assert fragments(message, secret) == []


@pytest.mark.parametrize(
    ("conninfo", "says"),
    [
        ("hostaddr 127.0.0.1 password=x", 'missing "=" after "hostaddr"'),
        ("host=db sslmod=require password=x", 'unknown setting "sslmod" (did you mean'),
        ("host=db password='Wr0ng", 'unterminated quoted value of "password"'),
        ("host=db password=Wr0ng P@ss=x", "an unknown setting name after the value"),
        ("postgresql://u:Wr0ng%zz@db/x", '"%" not followed by two hex digits in the'),
        ("postgresql://u@db/x?password=Wr0ng&P@ss=1", "an unknown query parameter"),
        ("postgresql://u@db/x?password=Wr0ng=P@ss", 'a second "=" in the query'),
        ("postgresql://u@db/x?sslmod=require", 'unknown query parameter "sslmod"'),
        ("postgresql://u:Wr0ng@[::1/x", 'IPv6 host address with no closing "]"'),
        ("host=db password=Wr0ng\0P@ss", "NUL character"),
        ("host=db password=Wr0ng\ud800P@ss", "cannot be encoded in UTF-8"),
    ],
)
def test_parse_errors_say_what_and_where_without_the_value(
    conninfo: str, says: str
) -> None:
    with pytest.raises(ConfigurationError) as info:
        ForkSafePool(conninfo)
    assert says in str(info.value)
    assert "Wr0ng" not in str(info.value) and "P@ss" not in str(info.value)


def test_libpq_parse_errors_are_masked_in_any_text() -> None:
    """libpq's message, as psycopg raises it, through mask_secrets()."""
    conninfo = "host=db password='Wr0ng P@ss'w-Leak' sslmode=require"
    with pytest.raises(psycopg.ProgrammingError) as info:
        psycopg.conninfo.conninfo_to_dict(conninfo)
    assert "w-Leak'" in str(info.value)  # what libpq quotes
    masked = mask_secrets(f"ProgrammingError: {info.value}")
    assert masked.startswith('ProgrammingError: missing "=" after "********"')
    assert mask_secrets('missing "=" after "hostaddr" in connection info string') == (
        'missing "=" after "hostaddr" in connection info string'
    )


# -- sources ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "conninfo",
    [
        f"host=db password={quoted(SECRET)}",
        f"host=db sslpassword={quoted(SECRET)}",
        f"postgresql://app:{quote(SECRET, safe='')}@db/app",
        f"postgresql://app@db/app?sslmode=require&password={quote(SECRET, safe='')}",
        f"postgresql://app@db/app?sslpassword={quote(SECRET, safe='')}",
        # An unencoded "@": libpq reads the password "Wr0ng P" and the host
        # "ss'w\-Leak@db"; every reading of it is masked.
        "postgresql://app:Wr0ng%20P@ss'w\\-Leak@db/app",
        # A conninfo given as the host, or as the database name.
        psycopg.conninfo.make_conninfo(
            "", host=f"host=db password={quoted(SECRET)}", dbname="app"
        ),
        psycopg.conninfo.make_conninfo(
            "", dbname=f"postgresql://app:{quote(SECRET, safe='')}@db/app"
        ),
        psycopg.conninfo.make_conninfo("", options=f"host=db password={SECRET}"),
    ],
)
def test_secrets_of_the_conninfo_in_every_form(conninfo: str) -> None:
    forms = [
        SECRET,
        quote(SECRET, safe=""),
        repr(SECRET),
        json.dumps(SECRET),
        html.escape(repr(SECRET)),
        json.dumps(repr({"host": SECRET})),
        conninfo,
        repr(conninfo),
        json.dumps({"conninfo": conninfo}),
        html.escape(conninfo),
    ]
    text = " | ".join(forms)
    masked = mask_secrets(text, conninfo)
    assert fragments(masked) == [], masked
    assert MASK in masked
    assert fragments(mask_conninfo(conninfo)) == []


def test_a_url_password_with_an_unencoded_slash() -> None:
    """libpq reads the host "app", the port "Wr0ng", the database "P@ss-Leak@db/x"."""
    conninfo = "postgresql://app:Wr0ng/P@ss-Leak@db/x"
    masked = mask_conninfo(conninfo)
    assert "Wr0ng" not in masked and "ss-Leak" not in masked
    error = 'invalid integer value "Wr0ng" for connection option "port"'
    assert mask_secrets(error, conninfo) == error.replace("Wr0ng", MASK)


def test_an_at_sign_in_a_url_query_masks_no_other_part() -> None:
    """Only a reading that went wrong (an "@" in the host, a port not a number)
    makes libpq's parts of the URL suspect."""
    conninfo = "postgresql://app:Wr0ngPass@db/appdb?application_name=me@home"
    text = 'database "appdb" does not exist (application_name me@home): Wr0ngPass'
    assert mask_secrets(text, conninfo) == text.replace("Wr0ngPass", MASK)


def test_secrets_of_kwargs() -> None:
    kwargs = {"password": SECRET, "host": f"host=db sslpassword={quoted(SECRET)}x"}
    assert fragments(mask_secrets(f"{kwargs!r} {SECRET}x", kwargs=kwargs)) == []
    assert fragments(mask_conninfo("dbname=app", kwargs)) == []


def test_libpq_18_secret_settings() -> None:
    keywords = {opt.keyword.decode() for opt in pq.Conninfo.get_defaults()}
    if "oauth_client_secret" not in keywords:
        pytest.skip("libpq < 18 has no oauth_client_secret")
    conninfo = f"host=db oauth_client_secret='{SECRET.replace(chr(39), '')}'"
    assert "oauth_client_secret=********" in mask_conninfo(conninfo)


def test_password_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PGPASSWORD", "env-Secret-1")
    monkeypatch.setenv("PGSSLPASSWORD", "env-Secret-2")
    masked = mask_secrets("env-Secret-1 and env-Secret-2")
    assert masked == f"{MASK} and {MASK}"
    # An explicit environment replaces os.environ.
    assert mask_secrets("env-Secret-1", environ={}) == "env-Secret-1"


@pytest.mark.parametrize("via", ["PGPASSFILE", "passfile", "HOME"])
def test_passwords_of_the_password_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, via: str
) -> None:
    passfile = tmp_path / ".pgpass"
    passfile.write_text(
        "# a comment\ndb:5432:app:app:file-Secret\\:colon\n*:*:*:other:plain-Secret-2\n"
    )
    passfile.chmod(0o600)
    environ = {"HOME": str(tmp_path)} if via == "HOME" else {}
    conninfo = "host=db"
    if via == "PGPASSFILE":
        environ["PGPASSFILE"] = str(passfile)
    elif via == "passfile":
        conninfo = f"host=db passfile={passfile}"
    text = "file-Secret:colon, file-Secret\\:colon, plain-Secret-2"
    assert mask_secrets(text, conninfo, environ=environ) == f"{MASK}, {MASK}, {MASK}"


def test_passwords_of_the_service_file(tmp_path: Path) -> None:
    service_file = tmp_path / "services.conf"
    service_file.write_text("[app]\nhost=db\npassword=service-Secret\n")
    environ = {"PGSERVICEFILE": str(service_file)}
    assert mask_secrets("service-Secret", "service=app", environ=environ) == MASK
    environ["PGSERVICE"] = "app"
    assert mask_secrets("service-Secret", environ=environ) == MASK


def test_a_short_password_is_masked_only_as_a_word() -> None:
    conninfo = "host=db user=app password=ab"
    text = "password authentication failed for user app: 'ab', ab, tab"
    assert mask_secrets(text, conninfo) == (
        f"password authentication failed for user app: '{MASK}', {MASK}, tab"
    )


def test_remembered_secrets_are_masked_everywhere() -> None:
    assert mask_secrets("remembered-Secret") == "remembered-Secret"
    ForkSafePool(kwargs={"password": "remembered-Secret"})
    assert mask_secrets("remembered-Secret") == MASK
    remember_secrets("postgresql://app:other-Secret@db/app")
    assert mask_secrets("other-Secret") == MASK


# -- outputs -------------------------------------------------------------------


def test_a_conninfo_as_host_is_refused_and_masked_when_shown() -> None:
    """A pool refuses it (it never connects); mask_conninfo (the repr) masks it."""
    host = f"host=127.0.0.1 password='{SECRET.replace(chr(39), '')}'"
    conninfo = psycopg.conninfo.make_conninfo("", host=host, dbname="x")
    with pytest.raises(ConfigurationError) as info:
        ForkSafePool(conninfo)
    assert "a connection string written as the host name" in str(info.value)
    text = mask_conninfo(conninfo)
    assert "password=********" in text and "host=127.0.0.1" in text
    for shown in (text, str(info.value)):
        assert fragments(shown, SECRET.replace("'", "")) == []


def test_connection_params_repr() -> None:
    params = ConnectionParams(password=SECRET, host=f"host=db password={SECRET}x")
    assert fragments(repr(params)) == [] and fragments(str(params)) == []
    assert "'password': '********'" in repr(params)
    assert params["password"] == SECRET  # a plain dict otherwise


def test_mask_exception_masks_the_chain_in_place() -> None:
    kwargs = {"host": f"host=db password={SECRET.replace(' ', '')}"}
    cause = psycopg.OperationalError(f"failed to resolve host {kwargs['host']!r}")
    try:
        try:
            raise cause
        except psycopg.Error as err:
            raise RuntimeError(f"outer: {err}") from err
    except RuntimeError as outer:
        # BaseException.add_note() is new in Python 3.11; the attribute it sets
        # is what tracebacks print on every version.
        outer.__notes__ = [f"note: {kwargs['host']}"]
        assert mask_exception(outer, kwargs=kwargs) is outer
        everything = f"{outer} {outer.__notes__} {outer.__cause__}"
        assert fragments(everything, SECRET.replace(" ", "")) == []
        assert outer.__cause__ is cause and "password=********" in str(cause)


def test_unpooled_connect_errors_are_masked() -> None:
    """A forking master's connection (and the CLIs' check) masks psycopg's error."""
    host = f"host=127.0.0.1 password={SECRET.replace(' ', '')}"
    # Refused when given as a string; a callable's value is checked on use.
    conninfo = psycopg.conninfo.make_conninfo("", host=host, connect_timeout=1)
    pool = ForkSafePool(lambda: conninfo, min_size=1)
    with pytest.raises(psycopg.OperationalError) as info:
        pool.connect()
    assert "failed to resolve host" in str(info.value)
    assert fragments(str(info.value), SECRET.replace(" ", "")) == []


def test_psycopg_pool_log_records_are_masked(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """What psycopg_pool's threads log about a failed connect (case 04's logs)."""
    host = f"host=127.0.0.1 password={SECRET.replace(' ', '')}"
    remember_secrets(kwargs={"host": host})  # as each pool does with its own
    with caplog.at_level(logging.DEBUG):
        logging.getLogger("psycopg.pool").warning(
            "error connecting in %r: %s", "p", f"failed to resolve host {host!r}"
        )
        try:
            raise psycopg.OperationalError(f"failed to resolve host {host!r}")
        except psycopg.Error:
            logging.getLogger("psycopg").exception("connection failed")
    assert "failed to resolve host" in caplog.text
    assert fragments(caplog.text, SECRET.replace(" ", "")) == []
