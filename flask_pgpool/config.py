"""Read a Flask app's ``PGPOOL_*`` settings into ForkSafePool options."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from pgpool_core import (
    POOL_OPTIONS,
    ConfigurationError,
    ConnectionParams,
    mask_conninfo,
    mask_exception,
    mask_secrets,
    validate_connection,
    validate_pool_options,
)
from pgpool_core._options import (
    RETRY_AFTER_WHY,
    did_you_mean,
    parse_conninfo,
    seconds_over_bound,
)
from pgpool_core.errors import RETRY_AFTER_DEFAULT

__all__ = [
    "DEFAULT_BIND",
    "RETRY_AFTER_DEFAULT",
    "SETTINGS",
    "BindConfig",
    "Config",
    "read_config",
]

PREFIX = "PGPOOL_"

#: The name of the database PGPOOL_CONNINFO describes.
DEFAULT_BIND = "default"

#: ForkSafePool options that make no sense for an app context's connection.
_NOT_SUPPORTED = {
    "open": "the pool opens on first use in each process",
    "close_returns": "connections go back to the pool when the app context ends",
}

#: The options one database takes, by ForkSafePool's names.
BIND_OPTIONS = frozenset(POOL_OPTIONS - _NOT_SUPPORTED.keys())

#: Every PGPOOL_* setting, without the prefix.
SETTINGS = frozenset(
    {"CONNINFO", "BINDS", "RETRY_AFTER", *(opt.upper() for opt in BIND_OPTIONS)}
)


@dataclass(frozen=True, repr=False)
class BindConfig:
    """One database: its conninfo and the ForkSafePool options set for it.

    Its repr masks the secrets of both, as every output does
    (:func:`pgpool_core.mask_secrets`).
    """

    conninfo: str | Callable[[], str]
    options: dict[str, Any]

    def __repr__(self) -> str:
        options = dict(self.options)
        kwargs = options.get("kwargs")
        if isinstance(kwargs, Mapping):
            options["kwargs"] = ConnectionParams(kwargs)  # password: "********"
        return self.mask(
            f"{type(self).__name__}(conninfo={self.masked_conninfo()!r},"
            f" options={options!r})"
        )

    def masked_conninfo(self) -> str:
        """Return the conninfo with the password masked."""
        if callable(self.conninfo):
            return "<callable>"
        return self.mask(mask_conninfo(self.conninfo))

    def mask(self, text: str) -> str:
        """Return *text* (an error message, say) with the secrets masked.

        Those of the conninfo and ``kwargs``, and those every pool and
        libpq's environment know of (:func:`pgpool_core.mask_secrets`).
        """
        return mask_secrets(text, self.conninfo, self.options.get("kwargs"))

    def mask_exception(self, exc: BaseException) -> BaseException:
        """Mask the secrets in the message of *exc* and its causes, in place."""
        return mask_exception(exc, self.conninfo, self.options.get("kwargs"))


@dataclass(frozen=True)
class Config:
    """The PGPOOL_* settings of one app, checked."""

    binds: dict[str, BindConfig]
    retry_after: int


def read_config(config: Mapping[str, Any], app_name: str) -> Config:
    """Check the PGPOOL_* settings in *config*; raise ConfigurationError naming one."""
    for key in config:
        if isinstance(key, str) and key.startswith(PREFIX):
            _check_setting_name(key)

    if config.get("PGPOOL_CONNINFO") is None:
        raise ConfigurationError(
            "PGPOOL_CONNINFO",
            "missing: set it to the database's connection string or URL,"
            ' e.g. "postgresql://app@db/app?sslmode=require"',
        )
    options = {
        opt: config[PREFIX + opt.upper()]
        for opt in BIND_OPTIONS
        if PREFIX + opt.upper() in config
    }
    binds = {
        DEFAULT_BIND: _bind_config(
            config["PGPOOL_CONNINFO"],
            options,
            default_name=f"{app_name}:{DEFAULT_BIND}",
            conninfo_setting="PGPOOL_CONNINFO",
            setting=lambda opt: PREFIX + opt.upper(),
        )
    }
    for name, value in _binds(config.get("PGPOOL_BINDS")).items():
        binds[name] = _bind_of(name, value, app_name)

    retry_after = config.get("PGPOOL_RETRY_AFTER", RETRY_AFTER_DEFAULT)
    if not (
        isinstance(retry_after, int)
        and not isinstance(retry_after, bool)
        and retry_after >= 1
    ):
        raise ConfigurationError(
            "PGPOOL_RETRY_AFTER",
            "expected a whole number of seconds >= 1,"
            f" got {type(retry_after).__name__} {retry_after!r}",
        )
    too_large = seconds_over_bound(retry_after, RETRY_AFTER_WHY)
    if too_large is not None:
        raise ConfigurationError("PGPOOL_RETRY_AFTER", too_large)
    return Config(binds=binds, retry_after=retry_after)


def _check_setting_name(key: str) -> None:
    setting = key[len(PREFIX) :]
    if setting not in SETTINGS:
        raise ConfigurationError(key, _unknown(setting, SETTINGS, PREFIX))


def _unknown(
    name: str, known: frozenset[str], prefix: str = "", what: str = "setting"
) -> str:
    """Say why *name* is not a setting and which ones are."""
    why = _NOT_SUPPORTED.get(name.lower())
    if why is not None:
        return f"not supported: {why}; remove it"
    message = f"unknown {what}{did_you_mean(name, known, prefix=prefix)}"
    names = ", ".join(prefix + k for k in sorted(known))
    return f"{message} (the known ones are: {names})"


def _binds(value: Any) -> Mapping[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ConfigurationError(
            "PGPOOL_BINDS",
            "expected a dict of database name -> connection string or dict of"
            f" options, got {type(value).__name__}",
        )
    for name in value:
        if not isinstance(name, str) or not name:
            raise ConfigurationError(
                "PGPOOL_BINDS", f"database names must be non-empty strings: {name!r}"
            )
        if name == DEFAULT_BIND:
            raise ConfigurationError(
                "PGPOOL_BINDS",
                f"{DEFAULT_BIND!r} is the database of PGPOOL_CONNINFO;"
                " give this one another name",
            )
    return value


def _bind_of(name: str, value: Any, app_name: str) -> BindConfig:
    setting = f"PGPOOL_BINDS[{name!r}]"
    if isinstance(value, str) or callable(value):
        value = {"conninfo": value}
    if not isinstance(value, Mapping):
        raise ConfigurationError(
            setting,
            "expected a connection string or a dict of options,"
            f" got {type(value).__name__}",
        )
    if value.get("conninfo") is None:
        raise ConfigurationError(
            f"{setting}['conninfo']",
            "missing: set it to the database's connection string or URL",
        )
    options = {key: opt for key, opt in value.items() if key != "conninfo"}
    for key in options:
        if key not in BIND_OPTIONS:
            raise ConfigurationError(
                f"{setting}[{key!r}]",
                _unknown(key, BIND_OPTIONS | {"conninfo"}, what="option"),
            )
    return _bind_config(
        value["conninfo"],
        options,
        default_name=f"{app_name}:{name}",
        conninfo_setting=f"{setting}['conninfo']",
        setting=lambda opt: f"{setting}[{opt!r}]",
    )


def _bind_config(
    conninfo: Any,
    options: dict[str, Any],
    *,
    default_name: str,
    conninfo_setting: str,
    setting: Callable[[str], str],
) -> BindConfig:
    if callable(conninfo):
        value = _called(conninfo, conninfo_setting)
        if not isinstance(value, str):
            raise ConfigurationError(
                conninfo_setting,
                f"its callable returned {type(value).__name__}, not a connection"
                " string (init_app calls it once, to check what it returns)",
            )
    else:
        value = conninfo
    parse_conninfo(value, setting=conninfo_setting)
    if not value.strip():
        raise ConfigurationError(
            conninfo_setting,
            "empty: set it to the database's connection string or URL"
            " (libpq's defaults alone are almost never what an app means)",
        )
    validate_pool_options(options, setting=setting)
    kwargs = options.get("kwargs")
    if callable(kwargs):
        kwargs = _called(kwargs, setting("kwargs"))
        if not isinstance(kwargs, Mapping):
            raise ConfigurationError(
                setting("kwargs"),
                f"its callable returned {type(kwargs).__name__}, not a dict of"
                " connection parameters (init_app calls it once, to check it)",
            )
    kwargs_setting = setting("kwargs")
    validate_connection(
        value,
        kwargs,
        setting=conninfo_setting,
        kwarg_setting=lambda key: f"{kwargs_setting}[{key!r}]",
    )
    options.setdefault("name", default_name)
    return BindConfig(conninfo=conninfo, options=options)


def _called(produce: Callable[[], Any], setting: str) -> Any:
    """Call a conninfo or kwargs callable once, to check what it returns.

    The pool calls it again for each connection it makes; what it returns
    then is checked for its type and syntax only.
    """
    try:
        return produce()
    except Exception as err:
        message = mask_secrets(f"{type(err).__name__}: {err}")
        raise ConfigurationError(
            setting, f"its callable raised {message} (init_app calls it once)"
        ) from err
