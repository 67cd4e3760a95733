"""Operator tooling: the capacity arithmetic, the pool report, the health check
and the configuration snippets that the Flask and Django commands print."""
