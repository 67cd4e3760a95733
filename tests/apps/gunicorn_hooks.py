"""gunicorn.conf.py for the fork tests: the package's worker hooks."""

from pgpool_core.servers.gunicorn import post_fork, pre_fork, when_ready, worker_exit

__all__ = ["post_fork", "pre_fork", "when_ready", "worker_exit"]
