# gunicorn.conf.py for a {framework} app in preload mode: imported once in the
# master, forked into the workers, which share its memory.
wsgi_app = "{app}"
bind = "127.0.0.1:8000"

# Safe with pgpool: each worker makes its own pool on first use.
preload_app = True
# Workers x the pool's max_size is the most connections one host opens:
# keep the sum over all hosts under PostgreSQL's max_connections.
workers = 4
# A request stuck longer than this is killed; keep it above the pool's timeout.
timeout = 60
# Time for workers to finish their requests on SIGTERM.
graceful_timeout = 30

# Importing these marks the master (no pool threads there before the fork),
# warms each worker up after the fork (after the monkey-patching of a gevent
# worker) and closes its pools when it exits.
from pgpool_core.servers.gunicorn import (  # noqa: E402,F401
    post_fork,
    post_worker_init,
    pre_fork,
    when_ready,
    worker_exit,
)
