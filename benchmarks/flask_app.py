"""The Flask contender of one gunicorn server of ``make bench``.

``BENCH_CONTENDER`` picks how the view gets its connection
(``contenders.FLASK``), ``BENCH_DSN`` is the database.
"""

from __future__ import annotations

import os

from contenders import flask_app

app = flask_app(os.environ["BENCH_CONTENDER"], os.environ["BENCH_DSN"])
