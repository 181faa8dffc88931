"""Prometheus metrics. Each app or worker has its own registry, so tests can build many."""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "nurture_http_requests",
            "HTTP requests handled",
            ["method", "endpoint", "status"],
            registry=self.registry,
        )
        self.request_seconds = Histogram(
            "nurture_http_request_duration_seconds",
            "Time to handle an HTTP request",
            ["endpoint"],
            registry=self.registry,
        )
        self.job_runs = Counter(
            "nurture_job_runs",
            "Scheduler job runs by outcome",
            ["job", "outcome"],
            registry=self.registry,
        )
        self.job_seconds = Histogram(
            "nurture_job_duration_seconds",
            "Scheduler job duration",
            ["job"],
            registry=self.registry,
        )

    def add_collector(self, collector: Collector) -> None:
        self.registry.register(collector)

    def render(self) -> bytes:
        return generate_latest(self.registry)


class DatabaseGauges(Collector):
    """Figures read from the database at scrape time: true across all processes.

    Job counters above live in the process that ran the job; these gauges see every worker.
    """

    def __init__(self, read: Callable[[], dict[str, float | dict[str, float]]]) -> None:
        self._read = read

    def collect(self) -> Iterator[GaugeMetricFamily]:
        try:
            values = self._read()
        except Exception:  # a scrape must not fail because the database is down
            values = {}
        for name, value in values.items():
            if isinstance(value, dict):
                # {"state": {"queued": 3, ...}} becomes nurture_<name>{state="queued"} 3
                [(label, series)] = value.items()  # type: ignore[misc]
                family = GaugeMetricFamily(
                    f"nurture_{name}", name.replace("_", " "), labels=[label]
                )
                for key, number in series.items():
                    family.add_metric([key], number)
                yield family
            else:
                yield GaugeMetricFamily(f"nurture_{name}", name.replace("_", " "), value=value)
