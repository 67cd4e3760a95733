"""Fixtures of the Celery tests: the broker's directory and a client app."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from celery import Celery

from tests.celery.config import celery_config


@pytest.fixture
def base(tmp_path: Path) -> Path:
    """The directory that holds the broker's queue and the results."""
    return tmp_path / "celery"


@pytest.fixture
def client(base: Path) -> Iterator[Celery]:
    """A Celery app that only sends tasks to the worker and reads their results."""
    app = Celery("pgpool_test_client", set_as_current=False)
    app.conf.update(celery_config(base))
    try:
        yield app
    finally:
        app.close()
