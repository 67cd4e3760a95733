"""psycopg's waits chosen again after gevent's patch, on each psycopg the
setup allows (the version matrix runs this file with the lowest, 3.3.0)."""

from __future__ import annotations

import json

from tests.harness.interpreter import run_python

AFTER_PATCH = """
import json, os, sys
os.environ.pop("PSYCOPG_WAIT_FUNC", None)
import psycopg, psycopg.waiting as waiting
from pgpool_core import _green
before = waiting.wait.__name__
from gevent import monkey
monkey.patch_all()
_green.after_patch()
print(json.dumps({
    "before": before,
    "after": waiting.wait.__name__,
    "ready": getattr(getattr(waiting, "_ready", None), "__name__", None),
    "has_ready": hasattr(waiting, "_ready_poll"),
}))
"""


def test_a_patched_process_waits_with_poll_on_every_psycopg() -> None:
    """psycopg imported before the patch waits with its C function; after it,
    with ``wait_poll`` (and, from psycopg 3.3.9, ``_ready_poll`` for
    ``wait_async()``), as psycopg picks when patched first. psycopg 3.3.0 to
    3.3.8 have no ``_ready``: the switch must not need it."""
    seen = json.loads(run_python(AFTER_PATCH))
    assert seen["before"] != "wait_poll", seen
    assert seen["after"] == "wait_poll", seen
    assert seen["ready"] == ("_ready_poll" if seen["has_ready"] else None), seen
