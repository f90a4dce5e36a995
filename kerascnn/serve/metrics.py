"""The service's counters, in the Prometheus text exposition format (``GET /metrics``)."""

from __future__ import annotations

import threading
import time
from collections import Counter

BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)  # seconds


class Metrics:
    """Requests by route and status, their latencies (a histogram per route), errors by type."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.requests: Counter = Counter()  # (method, route, status) -> count
        self.errors: Counter = Counter()  # error type -> count
        self._buckets: dict[str, list[int]] = {}
        self._sums: Counter = Counter()
        self._counts: Counter = Counter()

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        """Count one answered request."""
        with self._lock:
            self.requests[(method, route, int(status))] += 1
            buckets = self._buckets.setdefault(route, [0] * len(BUCKETS))
            for i, bound in enumerate(BUCKETS):
                if seconds <= bound:
                    buckets[i] += 1
            self._sums[route] += seconds
            self._counts[route] += 1

    def error(self, kind: str) -> None:
        """Count one error answer of type ``kind``."""
        with self._lock:
            self.errors[kind] += 1

    def render(self, gauges: dict[str, tuple[str, float]]) -> str:
        """The text format: the counters, then ``gauges`` (name -> (help, value))."""
        lines = ["# HELP kerascnn_requests_total HTTP requests answered.", "# TYPE kerascnn_requests_total counter"]
        with self._lock:
            for (method, route, status), n in sorted(self.requests.items()):
                labels = f'method="{method}",route="{_label(route)}",status="{status}"'
                lines.append(f"kerascnn_requests_total{{{labels}}} {n}")
            lines += ["# HELP kerascnn_request_seconds Request latency.", "# TYPE kerascnn_request_seconds histogram"]
            for route, buckets in sorted(self._buckets.items()):
                label = _label(route)
                for bound, n in zip(BUCKETS, buckets):
                    lines.append(f'kerascnn_request_seconds_bucket{{route="{label}",le="{bound:g}"}} {n}')
                lines.append(f'kerascnn_request_seconds_bucket{{route="{label}",le="+Inf"}} {self._counts[route]}')
                lines.append(f'kerascnn_request_seconds_sum{{route="{label}"}} {self._sums[route]:.6f}')
                lines.append(f'kerascnn_request_seconds_count{{route="{label}"}} {self._counts[route]}')
            lines += ["# HELP kerascnn_errors_total Error answers by type.", "# TYPE kerascnn_errors_total counter"]
            for kind, n in sorted(self.errors.items()):
                lines.append(f'kerascnn_errors_total{{type="{_label(kind)}"}} {n}')
        for name, (text, value) in gauges.items():
            lines += [f"# HELP {name} {text}", f"# TYPE {name} gauge", f"{name} {value:g}"]
        return "\n".join(lines) + "\n"


class Counting:
    """ASGI middleware: every HTTP answer counted in ``metrics`` under its route's template
    (``/v1/people/{name}``: names never become labels)."""

    def __init__(self, app, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500

        async def send_status(message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            route = getattr(scope.get("route"), "path", "unmatched")
            self.metrics.observe(scope["method"], route, status, time.perf_counter() - start)


def _label(value: str) -> str:
    """A label value escaped as the text format requires."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
