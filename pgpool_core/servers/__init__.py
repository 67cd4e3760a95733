"""Server hooks: gunicorn, uWSGI and Celery, each a thin wrapper around the core.

Fork safety never depends on them; they warm a worker's pools up, size them
(:mod:`pgpool_core._sizing`) and tidy at exit.
"""
