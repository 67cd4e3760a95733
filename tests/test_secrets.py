"""No part of a password reaches any output: a property over generated conninfos.

Hypothesis writes conninfos in both syntaxes, well and badly formed, with
passwords of every character class, and sends each through every output path
that needs no server: parse errors, ConfigurationError, reprs,
``mask_conninfo``, log records, the statistics of a pool that has not
connected, Flask's and Django's configuration, Django's command output. No
piece of four characters or more of the password may appear in any of them,
unless the same output for the same conninfo with a harmless password holds
it too (a setting name, a host, a word of a message). One test at the end
needs the server: a wrong password, against the real TLS PostgreSQL, through
every output of a failed connect (ConnectFailed and its cause, the 503 and
its log line, the commands' text and JSON, the system check E006).
"""

from __future__ import annotations

import gc
import importlib
import inspect
import json
import logging
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import quote

import psycopg
import pytest
import werkzeug
from django.conf import settings as django_settings
from django.core.exceptions import ImproperlyConfigured
from flask import Flask
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from opentelemetry import metrics as otel_metrics
from psycopg import pq
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from django_pgpool.base import DatabaseWrapper
from django_pgpool.checks import check_databases
from django_pgpool.management.commands.pgpool import _masked_dsn
from flask_pgpool import PgPool
from flask_pgpool.config import read_config
from pgpool_core import (
    ConfigurationError,
    ConnectFailed,
    ForkSafePool,
    _events,
    _libpq,
    _secrets,
    _sizing,
    mask_conninfo,
    mask_secrets,
)
from pgpool_core._options import parse_conninfo
from pgpool_core._psycopg_pool import ProcessPool
from pgpool_core.ops import health
from tests.django.support import database_settings, load_alias, run_project
from tests.harness.postgres import PgServer, quoted

#: Examples per run (PGPOOL_SECRETS_EXAMPLES for a longer hunt).
EXAMPLES = int(os.environ.get("PGPOOL_SECRETS_EXAMPLES", "150"))

KEYWORDS = frozenset(opt.keyword.decode() for opt in pq.Conninfo.get_defaults())


def harmless(password: str) -> str:
    """A password with the same quoting and escaping as *password*, no piece of it.

    Its special characters (one of each, apart) make an output quote and
    escape it as it does *password*: ``password='\\'...`` is no piece of a
    password that starts with a quote.
    """
    specials = sorted({ch for ch in password if not ch.isalnum()})
    return "SAFE" + "".join(f"S{ch}" for ch in specials)


# Characters and pieces that break one syntax or the other.
SPECIALS = [
    " ", "'", '"', "\\", "@", ":", "/", "?", "#", "%", "=", "&", ",", ";", "\t",
    "%20", "%zz", "%4", "\\'", "''", "[", "]", "é", "ß", "日本", "🔑", "\u00a0",
    "password=", "=x", "://", "@db", "Leak",
]  # fmt: skip

passwords = st.one_of(
    st.lists(
        st.one_of(
            st.sampled_from(SPECIALS),
            st.characters(codec="utf-8", exclude_characters="\0"),
        ),
        min_size=3,
        max_size=14,
    ).map("".join),
    st.text(st.characters(codec="utf-8", exclude_characters="\0"), min_size=60),
).filter(lambda password: len(password) >= 4)


def escaped(value: str) -> str:
    """Unquoted, each space, quote and backslash escaped with a backslash."""
    return "".join("\\" + ch if ch in " \t\n\r\f\v'\\" else ch for ch in value)


def encoded(value: str) -> str:
    return quote(value, safe="")


# Each shape writes a conninfo around a password (and other, public, values).
Shape = Callable[[str, str], str]
SHAPES: dict[str, Shape] = {
    "quoted": lambda p, h: f"host={h} user=app password={quoted(p)} dbname=appdb",
    "escaped": lambda p, h: f"host={h} password={escaped(p)} sslmode=require",
    "unquoted": lambda p, h: f"host={h} dbname=appdb password={p} sslmode=require",
    "quoted-unescaped": lambda p, h: f"host={h} password='{p}' sslmode=require",
    "unterminated": lambda p, h: f"host={h} password='{p}",
    "stray-equals": lambda p, h: f"host={h} password= ={quoted(p)} dbname=appdb",
    "duplicated": lambda p, h: (
        f"password={quoted(p)} host={h} password=other dbname=appdb"
    ),
    "sslpassword": lambda p, h: f"host={h} sslpassword={quoted(p)} sslmode=require",
    "url": lambda p, h: f"postgresql://app:{encoded(p)}@{h}:5432/appdb",
    "url-unencoded": lambda p, h: f"postgresql://app:{p}@{h}/appdb?sslmode=require",
    "url-query": lambda p, h: f"postgres://app@{h}/appdb?password={encoded(p)}",
    "url-query-unencoded": lambda p, h: (
        f"postgresql://{h}/appdb?sslmode=require&password={p}&application_name=x"
    ),
    "url-sslpassword": lambda p, h: f"postgresql://{h}/appdb?sslpassword={encoded(p)}",
    "host-holds-conninfo": lambda p, h: make_conninfo(
        "", host=f"host={h} password={quoted(p)}", dbname="appdb"
    ),
    "dbname-holds-url": lambda p, h: make_conninfo(
        "", host=h, dbname=f"postgresql://app:{encoded(p)}@{h}/appdb"
    ),
    "options-holds-conninfo": lambda p, h: make_conninfo(
        "", host=h, options=f"host={h} password={escaped(p)}"
    ),
}
HOSTS = ["db", "127.0.0.1", "db.example.com"]


def ambiguous(shape: str, password: str) -> bool:
    """A password that a raw shape turns into settings libpq reads as such.

    ``password=ab host=x`` unquoted is a password "ab" and a host "x" to libpq,
    whatever was meant: the host is then shown as a host. (A password shorter
    than 4 characters is masked only where no letter or digit touches it.)
    """
    if shape == "unquoted" and password != password.strip(" \t\n\r\f\v"):
        return True  # libpq skips the spaces: the password is the next word
    if shape not in ("unquoted", "quoted-unescaped", "url-query-unencoded"):
        return False
    separators = "&" if shape.startswith("url") else " \t\n\r\f\v'"
    words = [password]
    for separator in separators:
        words = [piece for word in words for piece in word.split(separator)]
    return any(word.split("=", 1)[0] in KEYWORDS for word in words if "=" in word)


@contextmanager
def isolated() -> Iterator[list[str]]:
    """Forget the secrets other examples remembered; collect the pool log lines."""
    lines: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            lines.append(self.format(record))

    handler = Collect(logging.DEBUG)
    loggers = [logging.getLogger(name) for name in ("psycopg", "psycopg.pool")]
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(_secrets, "_remembered", {})
        for logger in loggers:
            logger.addHandler(handler)
        try:
            yield lines
        finally:
            for logger in loggers:
                logger.removeHandler(handler)


def echoes(params: dict[str, Any]) -> list[str]:
    """What libpq, psycopg and the server say about connection parameters."""
    texts = [repr(params), json.dumps(params, default=str)]
    for key, value in params.items():
        texts.append(f"failed to resolve host {value!r}: Name or service not known")
        if key in ("dbname", "user", "NAME", "USER"):
            # The server cuts a name at 63 bytes before it quotes it.
            cut = str(value).encode()[:63].decode(errors="ignore")
            texts.append(f'FATAL:  database "{cut}" does not exist')
    return texts


def core_outputs(conninfo: str, lines: list[str]) -> list[str]:
    out: list[str] = [mask_conninfo(conninfo)]
    try:
        parse_conninfo(conninfo)
    except ConfigurationError as err:
        out.append(str(err))
    try:
        conninfo_to_dict(conninfo)
    except (psycopg.Error, UnicodeError) as err:
        # libpq's own message, as it would be logged or re-raised.
        out.append(mask_secrets(f"{type(err).__name__}: {err}", conninfo))
    out.append(
        mask_secrets(f"{conninfo} {conninfo!r} {json.dumps(conninfo)}", conninfo)
    )
    try:
        pool = ForkSafePool(conninfo, name="p", min_size=0, max_size=1)
    except ConfigurationError as err:
        out.append(str(err))
        return out
    out.append(repr(pool))
    params = conninfo_to_dict(conninfo)
    out.extend(mask_secrets(text, conninfo) for text in echoes(params))
    out.append(repr(ForkSafePool(kwargs=params, min_size=0, max_size=1)))
    # What psycopg_pool's threads log about a failed connect: masked by the
    # filter with what the pools remembered.
    for text in echoes(params):
        logging.getLogger("psycopg.pool").warning("error connecting in 'p': %s", text)
    out.extend(lines)
    return out


def flask_outputs(conninfo: str, kwargs: dict[str, Any] | None) -> list[str]:
    app = Flask("secrets")
    app.config.update(PGPOOL_CONNINFO=conninfo, PGPOOL_MIN_SIZE=0, PGPOOL_MAX_SIZE=1)
    if kwargs is not None:
        app.config.update(PGPOOL_CONNINFO="dbname=appdb", PGPOOL_KWARGS=kwargs)
    try:
        PgPool(app)
    except ConfigurationError as err:
        return [str(err)]
    state = app.extensions["pgpool"]
    out = [repr(state), state.masked_conninfo("default")]
    out.extend(state.mask("default", text) for text in echoes(kwargs or {}))
    try:
        # The statistics of a pool that has not connected (min_size 0).
        with app.app_context():
            out.append(json.dumps(state.extension.stats(), default=str))
    finally:
        for pool in state.pools.values():
            pool.close()
    return out


def django_outputs(settings_dict: dict[str, Any]) -> list[str]:
    out: list[str] = []
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(django_settings, "DATABASES", {"x": settings_dict})
        for message in check_databases():
            out.append(f"{message.msg} {message.hint}")
    try:
        wrapper = load_alias(settings_dict)
    except ImproperlyConfigured as err:
        return [*out, str(err)]
    try:
        out.append(repr(wrapper.get_connection_params()))
        out.append(_masked_dsn(wrapper))
    except ImproperlyConfigured as err:
        out.append(str(err))
    out.append(wrapper.mask(repr(settings_dict)))
    out.extend(wrapper.mask(text) for text in echoes(settings_dict))
    return out


def django_settings_of(conninfo: str) -> list[dict[str, Any]]:
    """DATABASES entries a user could write from *conninfo*."""
    base = {
        "ENGINE": "django_pgpool",
        "NAME": "appdb",
        "USER": "app",
        "PASSWORD": "",
        "HOST": "db",
        "PORT": "",
        "OPTIONS": {"pool": {"min_size": 0, "max_size": 1}},
    }
    entries = [{**base, "HOST": conninfo}, {**base, "NAME": conninfo}]
    try:
        params = conninfo_to_dict(conninfo)
    except (psycopg.Error, UnicodeError):
        return entries
    split = dict(base, OPTIONS=dict(base["OPTIONS"]))
    for key, setting in (
        ("dbname", "NAME"),
        ("user", "USER"),
        ("password", "PASSWORD"),
        ("host", "HOST"),
        ("port", "PORT"),
    ):
        if key in params:
            split[setting] = params.pop(key)
    split["OPTIONS"].update(params)
    return [*entries, split]


def all_outputs(conninfo: str) -> str:
    with isolated() as lines:
        out = core_outputs(conninfo, lines)
        out.extend(flask_outputs(conninfo, None))
        try:
            kwargs = conninfo_to_dict(conninfo)
        except (psycopg.Error, UnicodeError):
            kwargs = {"host": conninfo}
        out.extend(flask_outputs(conninfo, kwargs))
        for settings_dict in django_settings_of(conninfo):
            out.extend(django_outputs(settings_dict))
    return "\n".join(out)


def leaks(password: str, output: str, public: str) -> list[str]:
    """The pieces of *password* (4+ characters) in *output* but not in *public*.

    A piece of nothing but spaces and quotes, which the syntax itself is made
    of, tells nothing: ``password=''   `` is an empty password to libpq.
    """
    found = {
        password[i:j]
        for i in range(len(password))
        for j in range(i + 4, len(password) + 1)
        if password[i:j] in output
        and password[i:j] not in public
        and password[i:j].strip(" \t\n\r\f\v'\"")
    }
    # The longest first; drop those inside a longer one.
    return sorted(
        (f for f in found if not any(f != g and f in g for g in found)),
        key=len,
        reverse=True,
    )


@settings(
    max_examples=EXAMPLES,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
# What earlier runs found, kept: libpq's port and database name made of an
# unencoded URL password, and cut by the server; a URL query value of spaces;
# a password libpq drops for a later one.
@example(
    password="00000/" + "0" * 50 + "1\x80\U00010000\U00010000\U00010000",
    shape="url-unencoded",
    host="db",
)
@example(password="''0://", shape="url-unencoded", host="db")
@example(password="000," + "0" * 55 + "/", shape="url-unencoded", host="db")
@example(password="    ", shape="url-query-unencoded", host="db")
@example(password="\"password=\\'", shape="duplicated", host="db")
@example(password="Wr0ng P@ss'w-Leak", shape="quoted-unescaped", host="db")
@example(password="'   ", shape="unterminated", host="db")
@example(password="Wr0ng P@ss-Leak", shape="url-unencoded", host="127.0.0.1")
@given(
    password=passwords,
    shape=st.sampled_from(sorted(SHAPES)),
    host=st.sampled_from(HOSTS),
)
def test_no_piece_of_a_password_reaches_any_output(
    password: str, shape: str, host: str
) -> None:
    if ambiguous(shape, password):
        return
    conninfo = SHAPES[shape](password, host)
    output = all_outputs(conninfo)
    public = "\n".join(
        [
            all_outputs(SHAPES[shape](harmless(password), host)),
            *KEYWORDS,
            conninfo.replace(password, ""),
        ]
    )
    assert leaks(password, output, public) == [], (conninfo, output)
    for form in (encoded(password), repr(password)[1:-1]):
        if form != password and len(form) >= 4:
            assert form not in output or form in public, (form, output)


# -- with the server -------------------------------------------------------------


def test_wrong_password_in_the_auth_error_logs_and_cli(
    pg_server: PgServer, caplog: pytest.LogCaptureFixture
) -> None:
    """The server refuses a wrong password: its text, the logs and the CLIs hide it."""
    wrong = "Wr0ng P@ss'w\\-Leak%20 é"
    dsn = pg_server.dsn(password=wrong, connect_timeout=2)
    url = (
        f"postgresql://{pg_server.user}:{encoded(wrong)}@{pg_server.host}:"
        f"{pg_server.port}/{pg_server.dbname}?sslmode=require"
    )
    # The right password, and the wrong one in a conninfo given as the
    # database name: the server quotes the name it cannot find. (A pool
    # refuses such a conninfo when it is made; a callable's value is checked
    # only for its syntax, on each connect.)
    in_dbname_dsn = pg_server.dsn(dbname=f"dbname=x password={quoted(wrong)}")

    def in_dbname() -> str:
        return in_dbname_dsn

    outputs: list[str] = []
    with caplog.at_level(logging.DEBUG):
        conninfos: list[tuple[str | Callable[[], str], str]] = [
            (dsn, "password authentication failed"),
            (url, "password authentication failed"),
            (in_dbname, 'database "dbname=x password='),
        ]
        for conninfo, refusal in conninfos:
            pool = ForkSafePool(conninfo, min_size=1, timeout=2, name="wrong")
            with pytest.raises(psycopg.OperationalError) as info:
                pool.connect()  # the error as the CLIs and a forking master get it
            assert refusal in str(info.value)
            # psycopg 3.3 keeps libpq's view of the failed connect, password
            # included, in the exception's pgconn.
            outputs += [str(info.value), repr(info.value.pgconn)]
            # A borrower gets ConnectFailed at once, psycopg's error its cause.
            with pytest.raises(ConnectFailed) as failed:
                pool.getconn()
            cause = failed.value.__cause__
            assert cause is not None and refusal in str(cause)
            outputs += [str(failed.value), repr(failed.value), str(cause)]
            outputs += [repr(getattr(cause, "pgconn", None))]
            with pytest.raises(psycopg.OperationalError):
                pool.wait(2)  # psycopg_pool's threads log each failed connect
            pool.close()
            time.sleep(0.1)
    outputs.append(caplog.text)
    assert "error connecting in 'wrong'" in caplog.text

    app = Flask("wrong")
    app.config.update(PGPOOL_CONNINFO=url, PGPOOL_TIMEOUT=2)
    PgPool(app)
    app.add_url_rule(
        "/q", "q", lambda: str(app.extensions["pgpool"].extension.connection)
    )
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        response = app.test_client().get("/q")  # the 503 and its log line
    assert response.status_code == 503
    assert "the database refused the login" in response.text + caplog.text
    outputs += [response.text, caplog.text]
    for command in ("check", "stats", "check --json"):
        result = app.test_cli_runner().invoke(args=["pgpool", *command.split()])
        assert result.exit_code == 1, result.output
        outputs.append(result.output)
    for pool in app.extensions["pgpool"].pools.values():
        pool.close()

    for command in ("pgpool check", "pgpool stats", "check --database default"):
        result = run_project(
            "tests/django/manage.py", *command.split(), env={"PGPOOL_APP_DSN": dsn}
        )
        assert result.returncode == 1, result.stderr
        assert "password authentication failed" in result.stdout + result.stderr
        outputs.append(result.stdout + result.stderr)

    everything = "\n".join(outputs)
    assert leaks(wrong, everything, public="") == []
    assert encoded(wrong) not in everything


# -- every type's repr (issue 27, case 40) -----------------------------------------

#: The packages whose every class is swept.
PACKAGES = ("pgpool_core", "flask_pgpool", "django_pgpool")
#: A second secret, in kwargs: libpq sends an sslpassword only to decrypt a key.
SSL_SECRET = "Sweep-Ssl-Secret-4417"


# Run in a fresh interpreter: importing pgpool_core.servers.gunicorn marks the process
# that imports it as a forking master.
_CLASSES = """
import importlib, json, pkgutil, sys

found = {}
for package in sys.argv[1:]:
    root = importlib.import_module(package)
    names = [i.name for i in pkgutil.walk_packages(root.__path__, package + ".")]
    for name in [package, *names]:
        # issubclass(type(obj)...): isinstance() would set up Django's settings.
        stack = list(vars(importlib.import_module(name)).values())
        while stack:
            obj = stack.pop()
            if issubclass(type(obj), type) and obj.__module__ == name:
                if obj.__qualname__ not in found.setdefault(name, []):
                    found[name].append(obj.__qualname__)
                    stack.extend(vars(obj).values())
print(json.dumps(found))
"""
#: Modules whose import changes this process: they must hold no class.
_IMPORT_CHANGES_THE_PROCESS = {"pgpool_core.servers.gunicorn": "marks a forking master"}


def package_types() -> dict[str, type]:
    """Every class defined in the packages' modules (nested ones too), by name."""
    listed = run_project("-c", _CLASSES, *PACKAGES, env={})
    assert listed.returncode == 0, listed.stderr
    found: dict[str, type] = {}
    for module, qualnames in json.loads(listed.stdout).items():
        assert module not in _IMPORT_CHANGES_THE_PROCESS, (module, qualnames)
        for qualname in qualnames:
            obj: Any = importlib.import_module(module)
            for part in qualname.split("."):
                obj = getattr(obj, part)
            found[f"{module}.{qualname}"] = obj
    return found


def secret_forms(*secrets: str) -> list[str]:
    return [form for s in secrets for form in (s, encoded(s), repr(s)[1:-1])]


def test_every_types_repr_hides_the_password(
    pg_server: PgServer, tmp_path: Any, django_db_blocker: Any
) -> None:
    """Case 40: repr() and str() of an instance of each class of the packages.

    A world of live objects made with password-bearing configurations (a
    pool that lends, one refused the login, Flask binds, a Django alias,
    their errors and checks) is swept with the garbage collector; a class
    with no live instance there is made from its arguments' names. Each
    class must be swept: a new one needs its arguments named here.
    """
    password = pg_server.password
    url = (
        f"postgresql://{pg_server.user}:{encoded(password)}@{pg_server.host}:"
        f"{pg_server.port}/{pg_server.dbname}?sslmode=require"
    )
    dsn = pg_server.dsn()
    kwargs = {"sslpassword": SSL_SECRET}
    world: list[Any] = []  # kept alive until swept
    closing: list[Callable[[], Any]] = []
    types = package_types()
    wanted = set(types.values())
    # What earlier tests left (closed pools...) is swept too, but a repr of
    # theirs that raises is theirs: only this test's objects must not.
    earlier = [obj for obj in gc.get_objects() if type(obj) in wanted]
    try:
        with django_db_blocker.unblock():
            build_world(world, closing, pg_server, url, dsn, kwargs, tmp_path)
        seen: dict[type, list[Any]] = {}
        for obj in [*gc.get_objects(), *world]:
            if type(obj) in wanted:
                seen.setdefault(type(obj), []).append(obj)
        arguments = sweep_arguments(world, url, kwargs, pg_server, tmp_path)
        unbuilt: dict[str, str] = {}
        for name, cls in types.items():
            if cls not in seen:
                try:
                    seen[cls] = [build(cls, arguments)]
                except LookupError as err:
                    unbuilt[name] = str(err)
        assert unbuilt == {}, "name these arguments in sweep_arguments()"
        forms = secret_forms(password, SSL_SECRET)
        earlier_ids = {id(obj) for obj in earlier}
        leaked: dict[str, str] = {}
        for cls, objs in seen.items():
            for obj in objs:
                try:
                    text = f"{obj!r} {obj}"
                except Exception:
                    if id(obj) in earlier_ids:
                        continue
                    raise
                if any(form in text for form in forms):
                    leaked[f"{cls.__module__}.{cls.__qualname__}"] = text
        assert leaked == {}
        assert {f"{c.__module__}.{c.__qualname__}" for c in seen} >= set(types)
        assert len(types) >= 40, sorted(types)
    finally:
        with django_db_blocker.unblock():
            for close in reversed(closing):
                close()


def build_world(
    world: list[Any],
    closing: list[Callable[[], Any]],
    pg: PgServer,
    url: str,
    dsn: str,
    kwargs: dict[str, Any],
    tmp_path: Any,
) -> None:
    """Live objects of the packages, made and used with passwords."""
    # A pool that lends (one connection kept out), one refused the login.
    pool = ForkSafePool(url, kwargs=kwargs, name="sweep", min_size=1, max_size=2)
    closing.append(pool.close)
    with pool.connection() as conn:
        conn.execute("SELECT 1")
    world += [pool, pool.getconn(), pool.pool, health.check_pool(pool)]
    world += _events.pool_states()  # what the metrics read of it
    world.append(_sizing.read_server_limit(world[1]))
    wrong = pg.dsn(password="Wr0ng-Sweep-Secret", connect_timeout=2)
    refused = ForkSafePool(wrong, name="refused", min_size=1, timeout=2)
    closing.append(refused.close)
    with pytest.raises(ConnectFailed) as failed:
        refused.getconn()
    world += [refused, refused.pool, failed.value, health.check_pool(refused)]
    with pytest.raises(ConfigurationError) as bad:
        ForkSafePool(f"{dsn} sslmode=bogus", kwargs=kwargs)
    world.append(bad.value)
    world += _libpq.read_keyword_syntax(dsn)[0]

    # Flask: a URL and a bind with kwargs, a request, the configuration read.
    app = Flask("sweep")
    app.config.update(
        PGPOOL_CONNINFO=url,
        PGPOOL_KWARGS=kwargs,
        PGPOOL_MIN_SIZE=1,
        PGPOOL_BINDS={"reports": {"conninfo": dsn, "kwargs": kwargs, "min_size": 1}},
    )
    extension = PgPool(app)
    state = app.extensions["pgpool"]
    closing += [bind.close for bind in state.pools.values()]
    held: list[Any] = []

    @app.get("/q")
    def query() -> str:
        row = extension.connection.execute("SELECT 1").fetchone()
        # What lives during a request only.
        held.extend(
            obj
            for obj in gc.get_objects()
            if str(getattr(type(obj), "__module__", "")).startswith("flask_pgpool")
        )
        return str(row)

    assert app.test_client().get("/q").status_code == 200
    world += [app, extension, state, *held, read_config(app.config, app.name)]

    # Django: an alias connected, its pool, checks, health check, command.
    wrapper = load_alias(
        database_settings(pg, PASSWORD=pg.password, OPTIONS={**kwargs})
    )
    wrapper.ensure_connection()
    closing.append(wrapper.close)
    closing.append(lambda: wrapper.pool.close())
    world += [wrapper, wrapper.creation, wrapper.pool, wrapper.get_connection_params()]
    world += list(DatabaseWrapper._fork_safe_pools.values())


def sweep_arguments(
    world: list[Any], url: str, kwargs: dict[str, Any], pg: PgServer, tmp_path: Any
) -> dict[str, Any]:
    """What a class with no live instance is made with, by argument name."""
    of_type = {type(obj): obj for obj in world}
    environ = {
        "REQUEST_METHOD": "GET",
        "PATH_INFO": "/q",
        "QUERY_STRING": "",
        "SERVER_NAME": "sweep",
        "SERVER_PORT": "80",
        "wsgi.url_scheme": "http",
    }
    return {
        # Configurations: with the passwords.
        "conninfo": url,
        "kwargs": kwargs,
        "settings_dict": database_settings(pg, OPTIONS=kwargs),
        # Errors: the messages the packages make.
        "message": str(of_type[ConnectFailed]),
        "cause": of_type[ConnectFailed].__cause__,
        "kind": "refused",
        "bind": "default",
        "retry_after": 5,
        "reason": str(of_type[ConnectFailed]),
        # The rest.
        "pool": of_type[ProcessPool],
        "meter": otel_metrics.get_meter("sweep"),
        "path": str(tmp_path),
        "request": werkzeug.Request(environ),
        "environ": environ,
        "body": iter(()),
        "give_back": lambda: None,
        "get_response": lambda request: None,
        "max_connections": 100,
        "superuser_reserved": 3,
        "max_size": 4,
        "min_size": 1,
        "why": "sweep",
        "server": "gunicorn",
        "model": "sync",
        "at_once": 1,
        "workers": 4,
        "what": "gunicorn sync worker",
    }


def build(cls: type, arguments: dict[str, Any]) -> object:
    """An instance of *cls*, each of its arguments taken by name from *arguments*."""
    try:
        signature = inspect.signature(cls)
    except ValueError:
        signature = inspect.Signature()
    given: dict[str, Any] = {}
    for name, parameter in signature.parameters.items():
        if parameter.kind in (parameter.VAR_POSITIONAL, parameter.VAR_KEYWORD):
            continue
        if name in arguments:
            given[name] = arguments[name]
        elif parameter.default is parameter.empty:
            raise LookupError(f"no value for its argument {name!r}")
    if issubclass(cls, BaseException) and not given:
        return cls(arguments["message"])
    return cls(**given)
