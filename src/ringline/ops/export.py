"""Prometheus export of the supervisor's aggregated worker counters.

Needs ``prometheus_client`` (``pip install ringline[metrics]``).  The
endpoint is served from the supervisor's own select loop (wsgiref, one
request at a time, bounded by a socket timeout): no thread in a process
that starts workers.

Every worker counter becomes ``ringline_<name>`` with a ``worker`` label
(the slot); counters restart from zero when a worker restarts, which
Prometheus' ``rate()`` treats as a counter reset.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

if TYPE_CHECKING:
    from ringline.ops.supervisor import Supervisor

__all__ = ["HISTOGRAMS", "METRICS", "MetricsEndpoint", "SupervisorCollector"]

#: worker counter -> (exported name, kind, help).  Kind "counter" only grows.
METRICS: dict[str, tuple[str, str, str]] = {
    "conn_accepted": ("connections_accepted", "counter", "Connections accepted"),
    "conn_refused": ("connections_refused", "counter",
                     "Connections closed at once (over max_connections)"),
    "conn_closed": ("connections_closed", "counter",
                    "Accepted connections closed (refused ones included)"),
    "conn_active": ("connections_active", "gauge", "Connections open now"),
    "streams": ("streams", "gauge", "Streams open on the ring"),
    "iterations": ("loop_iterations", "counter", "Event loop iterations"),
    "waits": ("loop_waits", "counter", "Iterations that blocked in io_uring_enter"),
    "enters": ("enters", "counter", "io_uring_enter calls"),
    "sqes": ("sqes", "counter", "Submission queue entries prepared"),
    "cqes": ("cqes", "counter", "Completion queue entries reaped"),
    "stale_cqes": ("stale_cqes", "counter", "CQEs of operations already forgotten"),
    "slots_live": ("ops_in_flight", "gauge", "Operations in flight"),
    "overflow_flushes": ("cq_overflow_flushes", "counter",
                         "Completions pulled back from the CQ overflow list"),
    "sq_full_submits": ("sq_full_submits", "counter",
                        "Times a full submission queue was submitted early"),
    "submit_failures": ("submit_failures", "counter",
                        "io_uring_enter calls that failed (EINTR, EBUSY, EAGAIN, raised)"),
    "enobufs": ("buffer_ring_empty", "counter",
                "Multishot receives that found the provided-buffer ring empty"),
    "recv_buffers_handed_out": ("recv_buffers_handed_out", "counter",
                                "Receives handed over as their whole buffer"),
    "recv_buffers_reused": ("recv_buffers_reused", "counter",
                            "Handed-over receive buffers reused"),
    "recv_large_switches": ("recv_large_switches", "counter",
                            "Streams moved onto the large-receive ring or back"),
    "send_pool_free": ("send_pool_free", "gauge", "Free send-pool slots"),
    "send_pool_exhausted": ("send_pool_exhausted", "counter",
                            "Sends refused because the send pool had too few free slots"),
    "bytes_in": ("received_bytes", "counter", "Bytes received on streams"),
    "bytes_out": ("sent_bytes", "counter", "Bytes sent on streams"),
    "table_full": ("fixed_table_full", "counter",
                   "Accepts or connects that found the fixed-file table full"),
    "udp_datagrams_in": ("udp_datagrams_received", "counter", "UDP datagrams received"),
    "udp_datagrams_out": ("udp_datagrams_sent", "counter", "UDP datagrams sent"),
    "udp_dropped": ("udp_datagrams_dropped", "counter",
                    "UDP datagrams dropped (receive queue full)"),
    "tls_handshakes": ("tls_handshakes", "counter", "TLS handshakes completed"),
    "tls_handshake_failures": ("tls_handshake_failures", "counter",
                               "TLS handshakes failed or timed out"),
    "addresses_unknown": ("connections_without_address", "counter",
                          "Accepted connections started without peer/local address (EMFILE)"),
    "file_ops": ("file_operations", "counter", "File operations completed"),
    "file_errors": ("file_operation_errors", "counter", "File operations that failed"),
}


#: loop histogram -> (exported name, help); see EventLoop.histograms().
HISTOGRAMS: dict[str, tuple[str, str]] = {
    "loop_busy": ("loop_iteration_seconds",
                  "Loop iteration time, not counting the wait for the kernel"),
    "task_step": ("handler_step_seconds", "Time one step of a native handler takes"),
}


class SupervisorCollector:
    """A prometheus_client collector reading the supervisor's latest reports."""

    def __init__(self, supervisor: Supervisor) -> None:
        self.supervisor = supervisor

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        sup = self.supervisor
        reports = sup.worker_metrics()
        for key, (name, kind, doc) in METRICS.items():
            family = (CounterMetricFamily if kind == "counter" else GaugeMetricFamily)(
                f"ringline_{name}", doc, labels=["worker"])
            for slot, values in reports:
                if key in values:
                    family.add_metric([str(slot)], float(values[key]))
            yield family
        yield from self._histograms(reports_of=sup.worker_reports())
        workers = GaugeMetricFamily("ringline_workers", "Worker processes running")
        workers.add_metric([], float(len(sup._procs)))
        yield workers
        restarts = CounterMetricFamily("ringline_worker_restarts",
                                       "Workers restarted after dying")
        restarts.add_metric([], float(sup.restarts_total))
        yield restarts
        reloads = CounterMetricFamily("ringline_reloads", "Zero-downtime restarts (SIGHUP)")
        reloads.add_metric([], float(sup.reloads_total))
        yield reloads


    @staticmethod
    def _histograms(reports_of: list[Any]) -> Iterator[Any]:
        from prometheus_client.core import HistogramMetricFamily

        for key, (name, doc) in HISTOGRAMS.items():
            family = HistogramMetricFamily(f"ringline_{name}", doc, labels=["worker"])
            for w in reports_of:
                h = w.histograms.get(key)
                if not h:
                    continue
                bounds, counts, total = h
                cumulative, buckets = 0, []
                for le, n in zip(bounds, counts, strict=True):
                    cumulative += n
                    buckets.append(("+Inf" if le == float("inf") else repr(le), cumulative))
                family.add_metric([str(w.slot)], buckets, total)
            yield family


class _QuietHandler(WSGIRequestHandler):
    timeout = 2.0           # a stalled scraper cannot hold the supervisor long

    def log_message(self, format: str, *args: Any) -> None:
        pass


class MetricsEndpoint:
    """``GET /metrics`` in the Prometheus text format, one request per
    :meth:`handle` call (called when the listening socket is readable)."""

    def __init__(self, supervisor: Supervisor, host: str, port: int) -> None:
        try:
            from prometheus_client import CollectorRegistry, make_wsgi_app
        except ImportError:
            raise RuntimeError("--metrics needs prometheus_client: "
                               "pip install 'ringline[metrics]'") from None
        registry = CollectorRegistry(auto_describe=False)
        registry.register(SupervisorCollector(supervisor))  # type: ignore[arg-type]
        app = make_wsgi_app(registry)
        family = socket.AF_INET6 if ":" in host else socket.AF_INET

        class _Server(WSGIServer):
            address_family = family

        self._server = make_server(host, port, app, server_class=_Server,
                                   handler_class=_QuietHandler)
        self.port: int = self._server.server_address[1]

    def fileno(self) -> int:
        return self._server.fileno()

    def handle(self) -> None:
        self._server.socket.settimeout(0)
        try:
            # socketserver's one-request step, without its select() wait:
            # the supervisor's own select loop said the socket is readable.
            self._server._handle_request_noblock()  # type: ignore[attr-defined]
        finally:
            self._server.socket.settimeout(None)

    def close(self) -> None:
        self._server.server_close()
