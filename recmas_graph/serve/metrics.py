"""Prometheus metrics of a server (``GET /metrics``), in a registry of its own (one per app).

- ``recmas_requests_total{endpoint, status}``: requests answered, by route and HTTP status;
- ``recmas_request_latency_seconds{endpoint}``: request latency (to the last byte of a stream);
- ``recmas_time_to_first_token_seconds{model}``: from a request's arrival to its first answer text;
- ``recmas_batch_size{model}``: rows (questions x choices) per batch run; ``recmas_batches_total``;
- ``recmas_queue_depth{model}``: requests waiting for a batch;
- ``recmas_generated_tokens_total{model}``, ``recmas_latent_steps_total{model}``: work done
  (answer tokens; latent steps summed over the requests);
- ``recmas_rejected_total{model, reason}``: requests refused (``queue_full``) or timed out (``timeout``).
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client import CONTENT_TYPE_LATEST

__all__ = ["ServeMetrics", "CONTENT_TYPE"]

#: The content type of ``GET /metrics``.
CONTENT_TYPE = CONTENT_TYPE_LATEST

_LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0)
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


class ServeMetrics:
    """The metrics of one server."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("recmas_requests", "Requests answered, by route and HTTP status.",
                                ["endpoint", "status"], registry=r)
        self.latency = Histogram("recmas_request_latency_seconds", "Request latency (to the end of a stream).",
                                 ["endpoint"], buckets=_LATENCY_BUCKETS, registry=r)
        self.ttft = Histogram("recmas_time_to_first_token_seconds", "From a request's arrival to its first "
                              "answer text.", ["model"], buckets=_LATENCY_BUCKETS, registry=r)
        self.batch_size = Histogram("recmas_batch_size", "Rows (questions x choices) per batch run.", ["model"],
                                    buckets=_BATCH_BUCKETS, registry=r)
        self.batch_seconds = Histogram("recmas_batch_seconds", "Wall time of one batch run.", ["model"],
                                       buckets=_LATENCY_BUCKETS, registry=r)
        self.queue_depth = Gauge("recmas_queue_depth", "Requests waiting for a batch.", ["model"], registry=r)
        self.generated_tokens = Counter("recmas_generated_tokens", "Answer tokens generated.", ["model"], registry=r)
        self.latent_steps = Counter("recmas_latent_steps", "Latent steps run, summed over requests.", ["model"],
                                    registry=r)
        self.rejected = Counter("recmas_rejected", "Requests refused (queue_full) or timed out (timeout).",
                                ["model", "reason"], registry=r)

    def render(self) -> bytes:
        """The metrics in Prometheus' text format."""
        return generate_latest(self.registry)
