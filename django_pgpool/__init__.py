"""Django database backend with a fork-safe psycopg pool (work in progress)."""

from __future__ import annotations

__all__: list[str] = []
