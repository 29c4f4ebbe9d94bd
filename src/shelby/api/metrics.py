"""``/metrics``: Prometheus counters, histograms and gauges, in a registry of the app's
own (not the process-global one, so that two apps in one process do not collide)."""

from __future__ import annotations

from collections.abc import Sequence

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from shelby.events.store import Recorded

__all__ = ["CONTENT_TYPE", "Metrics"]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "shelby_http_requests",
            "HTTP requests answered, by route template, method and status code",
            ["route", "method", "code"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "shelby_http_request_duration_seconds",
            "Time to answer an HTTP request, by route template",
            ["route"],
            buckets=_BUCKETS,
            registry=self.registry,
        )
        self.events = Counter(
            "shelby_events_appended",
            "Events appended to the log by this process",
            registry=self.registry,
        )
        self.jobs = Gauge("shelby_jobs", "Live jobs by status", ["status"], registry=self.registry)
        self.active_nodes = Gauge(
            "shelby_active_nodes",
            "Nodes heard from within the lease",
            registry=self.registry,
        )
        self._children: dict[tuple[str, str, int], tuple[Counter, Histogram]] = {}

    def observe(self, route: str, method: str, code: int, seconds: float) -> None:
        key = (route, method, code)
        children = self._children.get(key)
        if children is None:
            # ``labels()`` takes a lock and builds a tuple each call: keep the children.
            children = (
                self.requests.labels(route, method, str(code)),
                self.latency.labels(route),
            )
            self._children[key] = children
        children[0].inc()
        children[1].observe(seconds)

    def on_committed(self, batch: Sequence[Recorded]) -> None:
        self.events.inc(len(batch))

    def render(self, job_counts: dict[str, int], active_nodes: int) -> bytes:
        for status, n in job_counts.items():
            self.jobs.labels(status).set(n)
        self.active_nodes.set(active_nodes)
        return generate_latest(self.registry)
