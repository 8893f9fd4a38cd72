"""What `GET /metrics` reports, in Prometheus's text format, with prometheus-client.

    tobira_sign_ins_total{method, outcome}      sign-ins finished at a callback: method miauth/legacy/oauth2,
                                                outcome `success` or the error code that ended it
    tobira_proxy_requests_total{status}         proxied API calls by the status class answered (2xx … 5xx)
    tobira_proxy_duration_seconds               a proxied call, from tobira receiving it to its answer
    tobira_instance_duration_seconds            the instance's part of it: the request to it and its answer
    tobira_instance_errors_total{kind}          instances failing us, by error code (INSTANCE_TIMEOUT, …)
    tobira_open_streams                         WebSocket streams open now
    tobira_store_errors_total                   store operations that failed (each answered 503)

Every label value comes from a closed set (methods, error codes, status classes): never a host, an endpoint,
a user or anything secret, so a stranger can neither grow the series nor read anything from them.

Several worker processes: with `PROMETHEUS_MULTIPROC_DIR` set (an empty directory, the same for all workers,
before they start), prometheus-client keeps each process's values in files there and `render` adds them up,
so any worker answers for all; a worker that stops marks its open-streams gauge dead. Without it, the values
are this process's own.
"""

from __future__ import annotations

import hmac
import os
from functools import cached_property
from pathlib import Path

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)

CONTENT_TYPE = CONTENT_TYPE_LATEST
# Proxied calls are mostly a few milliseconds on top of the instance's own time, which can reach 15 s.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 15)


class Metrics:
    """tobira's metrics, each made on first use: prometheus-client opens its file in the multiprocess folder
    as a metric is made, so making them at import would fail before the configuration could say what is wrong.
    `create_app` makes them all (`make_all`) once the configuration is checked, so every series is there from
    the first scrape."""

    @cached_property
    def sign_ins(self) -> Counter:
        return Counter(
            "tobira_sign_ins", "Sign-ins finished at a callback, by method and outcome", ["method", "outcome"]
        )

    @cached_property
    def proxy_requests(self) -> Counter:
        return Counter("tobira_proxy_requests", "Proxied API calls by the status class answered", ["status"])

    @cached_property
    def proxy_duration(self) -> Histogram:
        return Histogram(
            "tobira_proxy_duration_seconds",
            "A proxied API call, received to answered",
            buckets=LATENCY_BUCKETS,
        )

    @cached_property
    def instance_duration(self) -> Histogram:
        return Histogram(
            "tobira_instance_duration_seconds",
            "The instance's part of a proxied call",
            buckets=LATENCY_BUCKETS,
        )

    @cached_property
    def instance_errors(self) -> Counter:
        return Counter("tobira_instance_errors", "Instances failing tobira, by error code", ["kind"])

    @cached_property
    def open_streams(self) -> Gauge:
        return Gauge("tobira_open_streams", "WebSocket streams open now", multiprocess_mode="livesum")

    @cached_property
    def store_errors(self) -> Counter:
        return Counter("tobira_store_errors", "Store operations that failed")

    def make_all(self) -> None:
        for name in dir(type(self)):
            if isinstance(getattr(type(self), name), cached_property):
                getattr(self, name)


METRICS = Metrics()


def status_class(status: int) -> str:
    return f"{status // 100}xx"


def authorized(authorization: str | None, token: str) -> bool:
    """Whether an `Authorization` header carries `Bearer <token>`, compared in constant time."""
    scheme, _, credentials = (authorization or "").partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(credentials.strip().encode(), token.encode())


def render(multiprocess_dir: Path | None) -> bytes:
    """The metrics as Prometheus text: every worker's (from `multiprocess_dir`) or this process's."""
    if multiprocess_dir is None:
        return generate_latest(REGISTRY)
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry, path=str(multiprocess_dir))  # type: ignore[no-untyped-call]
    return generate_latest(registry)


def process_stopped(multiprocess_dir: Path | None) -> None:
    """In multiprocess mode, drop this process's live gauges (its open streams are gone with it)."""
    if multiprocess_dir is not None:
        multiprocess.mark_process_dead(os.getpid(), str(multiprocess_dir))  # type: ignore[no-untyped-call]
