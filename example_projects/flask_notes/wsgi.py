"""The WSGI entry point: ``wsgi:app`` for uWSGI and gunicorn.

The table is created here, at import: in preload mode that is a query in the
server's master before it forks the workers, which is what breaks a plain
psycopg_pool and what flask_pgpool makes safe.
"""

from notes import create_app
from notes.schema import create_schema

app = create_app()

with app.app_context():
    create_schema()
