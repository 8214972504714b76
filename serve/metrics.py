"""Request counters and latency histograms in the Prometheus text format, hand-written (no extra
dependency). Per process: under gunicorn each worker keeps its own numbers and a scrape sees one worker;
labels include the worker pid so scrapes of different workers do not look like counter resets.
"""

from __future__ import annotations

import os
import threading
from bisect import bisect_left
from collections.abc import Callable
from dataclasses import dataclass, field

BUCKETS: tuple[float, ...] = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


@dataclass
class _Histogram:
    counts: list[int] = field(default_factory=lambda: [0] * len(BUCKETS))
    total: float = 0.0
    n: int = 0


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _labels(**labels: str) -> str:
    return "{" + ",".join(f'{k}="{_escape(v)}"' for k, v in labels.items()) + "}"


@dataclass(frozen=True)
class GraphGauges:
    version: str | None
    products: int
    relations: dict[str, int]
    memory_bytes: int
    stale: bool


class Metrics:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._hist: dict[tuple[str, str, str], _Histogram] = {}
        self.pid = str(os.getpid())

    def observe(self, endpoint: str, method: str, status: int, seconds: float) -> None:
        key = (endpoint, method, str(status))
        with self._lock:
            hist = self._hist.get(key)
            if hist is None:
                hist = self._hist[key] = _Histogram()
            hist.n += 1
            hist.total += seconds
            i = bisect_left(BUCKETS, seconds)
            if i < len(BUCKETS):  # above the last bound: only in +Inf (= n)
                hist.counts[i] += 1

    def render(self, gauges: Callable[[], GraphGauges]) -> str:
        with self._lock:
            snapshot = {k: (list(h.counts), h.total, h.n) for k, h in sorted(self._hist.items())}
        pid = self.pid
        out = [
            "# HELP shelfgraph_http_requests_total HTTP requests answered, by endpoint, method and status.",
            "# TYPE shelfgraph_http_requests_total counter",
        ]
        for (endpoint, method, status), (_, _, n) in snapshot.items():
            labels = _labels(endpoint=endpoint, method=method, status=status, pid=pid)
            out.append(f"shelfgraph_http_requests_total{labels} {n}")
        out += [
            "# HELP shelfgraph_http_request_duration_seconds Time to answer, by endpoint, method and status.",
            "# TYPE shelfgraph_http_request_duration_seconds histogram",
        ]
        for (endpoint, method, status), (counts, total, n) in snapshot.items():
            base = {"endpoint": endpoint, "method": method, "status": status, "pid": pid}
            cumulative = 0
            for bound, count in zip(BUCKETS, counts):
                cumulative += count
                out.append(
                    f"shelfgraph_http_request_duration_seconds_bucket{_labels(**base, le=repr(bound))} {cumulative}"
                )
            out.append(f"shelfgraph_http_request_duration_seconds_bucket{_labels(**base, le='+Inf')} {n}")
            out.append(f"shelfgraph_http_request_duration_seconds_sum{_labels(**base)} {total:.9f}")
            out.append(f"shelfgraph_http_request_duration_seconds_count{_labels(**base)} {n}")
        g = gauges()
        out += [
            "# HELP shelfgraph_graph_info The graph version served (value 1).",
            "# TYPE shelfgraph_graph_info gauge",
            f"shelfgraph_graph_info{_labels(version=g.version or '', pid=pid)} 1",
            "# HELP shelfgraph_graph_stale 1 when the source failed and the last index is still served.",
            "# TYPE shelfgraph_graph_stale gauge",
            f"shelfgraph_graph_stale{_labels(pid=pid)} {int(g.stale)}",
            "# HELP shelfgraph_index_products Products in the served index.",
            "# TYPE shelfgraph_index_products gauge",
            f"shelfgraph_index_products{_labels(pid=pid)} {g.products}",
            "# HELP shelfgraph_index_relations Directed relations in the served index, by kind.",
            "# TYPE shelfgraph_index_relations gauge",
        ]
        out += [f"shelfgraph_index_relations{_labels(kind=k, pid=pid)} {v}" for k, v in sorted(g.relations.items())]
        out += [
            "# HELP shelfgraph_index_memory_bytes Approximate memory held by the served index.",
            "# TYPE shelfgraph_index_memory_bytes gauge",
            f"shelfgraph_index_memory_bytes{_labels(pid=pid)} {g.memory_bytes}",
        ]
        return "\n".join(out) + "\n"
