"""run_reset_sql(): the session reset ForkSafePool runs after each return."""

from __future__ import annotations

import psycopg
import pytest
from psycopg.pq import TransactionStatus

from pgpool_core.session import run_reset_sql
from tests.harness.postgres import PgServer


def test_reset_leaves_psycopg_state_alone(dsn: str) -> None:
    with psycopg.connect(dsn) as conn:
        conn.execute("SET work_mem = '7MB'")
        with pytest.raises(psycopg.errors.DivisionByZero):
            conn.execute("SELECT 1/0")
        assert conn.info.transaction_status == TransactionStatus.INERROR
        run_reset_sql(conn)  # rolls back the failed transaction first
        assert conn.info.transaction_status == TransactionStatus.IDLE
        assert not conn.autocommit
        conn.execute("SET work_mem = '7MB'")
        conn.commit()
        run_reset_sql(conn)
        assert conn.info.transaction_status == TransactionStatus.IDLE
        assert conn.execute("SHOW work_mem").fetchone() != ("7MB",)


def test_reset_of_a_lost_connection_raises(dsn: str, pg_server: PgServer) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        pg_server.execute("SELECT pg_terminate_backend(%s)", (conn.info.backend_pid,))
        with pytest.raises(psycopg.OperationalError):
            run_reset_sql(conn)
