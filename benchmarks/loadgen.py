"""The Python load generator of ``make bench``, for machines without ``wrk``.

Run as its own process (``python loadgen.py PORT PATH CONCURRENCY SECONDS``):
CONCURRENCY threads send GET PATH, one connection per request as gunicorn's
sync workers want, until SECONDS have passed; prints one JSON line with the
requests, errors, requests/s and the p50 and p99 latency in milliseconds.
"""

from __future__ import annotations

import http.client
import json
import sys
import threading
import time


def percentile(sorted_values: list[float], fraction: float) -> float:
    if not sorted_values:
        return 0.0
    index = min(len(sorted_values) - 1, int(fraction * len(sorted_values)))
    return sorted_values[index]


def run(port: int, path: str, concurrency: int, seconds: float) -> dict[str, float]:
    latencies: list[float] = []
    errors = 0
    lock = threading.Lock()
    deadline = time.monotonic() + seconds

    def client() -> None:
        nonlocal errors
        mine: list[float] = []
        failed = 0
        while time.monotonic() < deadline:
            t0 = time.perf_counter()
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            try:
                conn.request("GET", path)
                resp = conn.getresponse()
                resp.read()
                ok = 200 <= resp.status < 300
            except Exception:
                ok = False
            finally:
                conn.close()
            mine.append(time.perf_counter() - t0)
            failed += not ok
        with lock:
            latencies.extend(mine)
            errors += failed

    start = time.monotonic()
    threads = [threading.Thread(target=client) for _ in range(concurrency)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.monotonic() - start
    latencies.sort()
    return {
        "requests": len(latencies),
        "errors": errors,
        "rps": len(latencies) / elapsed,
        "p50_ms": percentile(latencies, 0.50) * 1000,
        "p99_ms": percentile(latencies, 0.99) * 1000,
    }


if __name__ == "__main__":
    port, path, concurrency, seconds = sys.argv[1:5]
    result = run(int(port), path, int(concurrency), float(seconds))
    print(json.dumps(result))
