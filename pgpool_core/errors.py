"""The exceptions raised by pgpool_core (and by the framework packages)."""

from __future__ import annotations

__all__ = ["ConfigurationError", "PgPoolError", "PoolNotAvailable"]


class PgPoolError(Exception):
    """Base class for the errors raised by this package."""


class ConfigurationError(PgPoolError, ValueError):
    """A pool setting is missing or has a bad value; the message names it."""

    def __init__(self, setting: str, message: str) -> None:
        self.setting = setting
        super().__init__(f"{setting}: {message}")


class PoolNotAvailable(PgPoolError):
    """The process has no pool of its own (a forking server's master process)."""
