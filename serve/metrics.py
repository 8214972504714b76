"""Request counters and latency histograms with prometheus_client, in its multiprocess mode when the
server runs several workers: every worker writes its samples to files in PROMETHEUS_MULTIPROC_DIR (set
by `serve.server` before the workers start), so one scrape of any worker sums the requests of all.
The graph gauges describe the worker that answered the scrape (label `worker`, its pid).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from prometheus_client import CollectorRegistry, Histogram, disable_created_metrics, generate_latest, values
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector

BUCKETS: tuple[float, ...] = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
disable_created_metrics()  # type: ignore[no-untyped-call]  # the *_created series double the scrape and no dashboard reads them


def multiprocess_enabled() -> bool:
    """prometheus_client picks its value class from PROMETHEUS_MULTIPROC_DIR when first imported."""
    return values.ValueClass is not values.MutexValue


@dataclass(frozen=True)
class GraphGauges:
    version: str | None
    products: int
    relations: dict[str, int]
    memory_bytes: int
    stale: bool


class _GraphCollector:
    def __init__(self, gauges: Callable[[], GraphGauges], pid: str) -> None:
        self._gauges, self._pid = gauges, pid

    def collect(self) -> Iterable[Metric]:
        g, pid = self._gauges(), self._pid
        info = GaugeMetricFamily("shelfgraph_graph_info", "The graph version served (value 1).",
                                 labels=["version", "worker"])
        info.add_metric([g.version or "", pid], 1)
        stale = GaugeMetricFamily("shelfgraph_graph_stale",
                                  "1 when the source failed and the last index is still served.", labels=["worker"])
        stale.add_metric([pid], int(g.stale))
        products = GaugeMetricFamily("shelfgraph_index_products", "Products in the served index.", labels=["worker"])
        products.add_metric([pid], g.products)
        relations = GaugeMetricFamily("shelfgraph_index_relations",
                                      "Directed relations in the served index, by kind.", labels=["kind", "worker"])
        for kind, count in sorted(g.relations.items()):
            relations.add_metric([kind, pid], count)
        memory = GaugeMetricFamily("shelfgraph_index_memory_bytes",
                                   "Memory held by the served index (shared maps counted once).", labels=["worker"])
        memory.add_metric([pid], g.memory_bytes)
        return [info, stale, products, relations, memory]


class _RequestCounts:
    """`shelfgraph_http_requests_total`, derived at scrape time from the latency histogram's `_count`
    samples: the same number, without a second shared-memory write on every request."""

    def __init__(self, source: Any) -> None:
        self._source = source

    def collect(self) -> Iterable[Metric]:
        counts = CounterMetricFamily("shelfgraph_http_requests", "HTTP requests answered, by endpoint, method and status.",
                                     labels=["endpoint", "method", "status"])
        for family in self._source.collect():
            if family.name != "shelfgraph_http_request_duration_seconds":
                continue
            for sample in family.samples:
                if sample.name.endswith("_count"):
                    labels = sample.labels
                    counts.add_metric([labels["endpoint"], labels["method"], labels["status"]], sample.value)
        return [counts]


class Metrics:
    """One per app. Label children are cached: `.labels()` costs more than the observation itself."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.latency = Histogram("shelfgraph_http_request_duration_seconds",
                                 "Time to answer, by endpoint, method and status.",
                                 ["endpoint", "method", "status"], buckets=BUCKETS, registry=self.registry)
        self._children: dict[tuple[str, str, int], Any] = {}

    def observe(self, endpoint: str, method: str, status: int, seconds: float) -> None:
        key = (endpoint, method, status)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = self.latency.labels(endpoint, method, str(status))
        child.observe(seconds)

    def render(self, gauges: Callable[[], GraphGauges]) -> str:
        if multiprocess_enabled():
            requests = CollectorRegistry()
            MultiProcessCollector(requests)  # type: ignore[no-untyped-call]
        else:
            requests = self.registry
        derived = CollectorRegistry()
        derived.register(_RequestCounts(requests))
        derived.register(_GraphCollector(gauges, str(os.getpid())))
        return (generate_latest(derived) + generate_latest(requests)).decode()
