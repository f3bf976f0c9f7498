"""The daemon's metrics, in Prometheus exposition format (prometheus-client)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import CollectorRegistry, Gauge, Histogram, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

LATENCY_BUCKETS_S = (10e-6, 25e-6, 50e-6, 100e-6, 200e-6, 500e-6, 1e-3, 2e-3, 5e-3, 10e-3,
                     50e-3)
BATCH_BUCKETS = (1, 4, 16, 64, 128, 256, 512, 1024, 4096)


@dataclass
class LoopCounters:
    """The serving loop's counters: plain integers it adds to (no lock, one writer),
    exported at scrape time; a prometheus-client counter costs a lock per increment."""

    states: int = 0
    skipped: int = 0
    verdicts: int = 0
    ring_full: int = 0
    batches: int = 0
    failures: int = 0
    failures_by_reason: dict[str, int] = field(
        default_factory=lambda: dict.fromkeys(FAILURE_REASONS, 0))


FAILURE_REASONS = ("exception", "nan", "invalid", "slow")

_LOOP_COUNTERS = (
    ("states", "aqmllm_states", "state records read"),
    ("skipped", "aqmllm_states_skipped_deadline",
     "states whose deadline had passed before inference"),
    ("verdicts", "aqmllm_verdicts_written", "verdicts written"),
    ("ring_full", "aqmllm_verdicts_ring_full", "verdicts not written: verdict ring full"),
    ("batches", "aqmllm_batches", "batches run"),
)


class LoopCollector:
    def __init__(self, counters: LoopCounters) -> None:
        self._c = counters

    def collect(self) -> Iterator[Any]:
        for attr, name, doc in _LOOP_COUNTERS:
            fam = CounterMetricFamily(name, doc)
            fam.add_metric([], getattr(self._c, attr))
            yield fam
        fam = CounterMetricFamily("aqmllm_model_failures", "batches without verdicts",
                                  labels=["reason"])
        for reason, n in self._c.failures_by_reason.items():
            fam.add_metric([reason], n)
        yield fam


class DataPathCollector:
    """The data path's own counters, read from the channel at scrape time."""

    def __init__(self, read: Callable[[], dict[str, Any] | None]) -> None:
        self._read = read

    def collect(self) -> Iterator[Any]:
        counters = self._read()
        if not counters:
            return
        for name, value in counters.items():
            if name in ("now_ns", "prob_base"):
                continue
            fam = CounterMetricFamily(f"aqmllm_datapath_{name}",
                                      f"data path counter {name}",
                                      labels=["queue"] if isinstance(value, list) else [])
            if isinstance(value, list):
                for q, v in zip(("classic", "l4s"), value, strict=True):
                    fam.add_metric([q], v)
            else:
                fam.add_metric([], value)
            yield fam
        decided = counters["decisions_model"] + counters["decisions_fallback"]
        share = GaugeMetricFamily("aqmllm_datapath_fallback_share",
                                  "share of dequeues decided by DualPI2, not a verdict")
        share.add_metric([], counters["decisions_fallback"] / decided if decided else 1.0)
        yield share
        prob = GaugeMetricFamily("aqmllm_datapath_p_prime", "DualPI2 base probability p'")
        prob.add_metric([], counters["prob_base"] / 0xFFFFFFFF)
        yield prob


class WatchdogCollector:
    """The harm watchdog (aqmllmd.watchdog): trips by reason, its pause, the last window."""

    def __init__(self, metrics: Metrics) -> None:
        self._m = metrics

    def collect(self) -> Iterator[Any]:
        read = self._m.watchdog_status
        if read is None:
            return
        status, paused = read()
        trips = CounterMetricFamily("aqmllm_watchdog_trips",
                                    "models the watchdog took out of service, by reason",
                                    labels=["reason"])
        for reason, n in status["trips"].items():
            trips.add_metric([reason], n)
        yield trips
        fam = GaugeMetricFamily("aqmllm_watchdog_paused",
                                "1 while the watchdog holds the data path paused")
        fam.add_metric([], 1 if paused else 0)
        yield fam
        fam = GaugeMetricFamily("aqmllm_watchdog_quarantined",
                                "models the watchdog will not roll back to")
        fam.add_metric([], len(status["quarantined"]))
        yield fam
        last = status["last_window"]
        for key, name, doc in (
                ("model_signal_share", "aqmllm_watchdog_model_signal_share",
                 "share of the last window's packets the model dropped or marked"),
                ("dualpi2_signal_share", "aqmllm_watchdog_dualpi2_signal_share",
                 "DualPI2's expected signal share on the same packets"),
                ("utilisation", "aqmllm_watchdog_utilisation",
                 "delivered rate over the best recent window's")):
            if last.get(key) is not None:
                fam = GaugeMetricFamily(name, doc)
                fam.add_metric([], last[key])
                yield fam


class Metrics:
    def __init__(self, read_datapath: Callable[[], dict[str, Any] | None]) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.loop = LoopCounters()
        r.register(LoopCollector(self.loop))
        self.batch_size = Histogram("aqmllm_batch_size", "states per batch",
                                    buckets=BATCH_BUCKETS, registry=r)
        self.infer = Histogram("aqmllm_inference_seconds", "model run time per batch",
                               buckets=LATENCY_BUCKETS_S, registry=r)
        self.state_to_verdict = Histogram(
            "aqmllm_state_to_verdict_seconds",
            "from enqueue to verdict written, of each batch's oldest packet",
            buckets=LATENCY_BUCKETS_S, registry=r)
        self.model_info = Gauge("aqmllm_model_info", "the model being served",
                                ["version", "producer", "sha256"], registry=r)
        self.paused = Gauge("aqmllm_paused", "1 while paused (fallback only)", registry=r)
        r.register(DataPathCollector(read_datapath))
        #: Set by the server: () -> (watchdog status, paused by the watchdog).
        self.watchdog_status: Callable[[], tuple[dict[str, Any], bool]] | None = None
        r.register(WatchdogCollector(self))

    def set_model(self, version: str, producer: str, sha256: str) -> None:
        self.model_info.clear()
        self.model_info.labels(version, producer, sha256[:12]).set(1)

    def serve(self, listen: str) -> None:
        host, _, port = listen.rpartition(":")
        start_http_server(int(port), addr=host.strip("[]"), registry=self.registry)

    def snapshot(self) -> dict[str, float]:
        """Every sample as name{labels} -> value, for `aqmllmctl stats`."""
        out: dict[str, float] = {}
        for fam in self.registry.collect():
            for s in fam.samples:
                if s.name.endswith(("_bucket", "_created")):
                    continue
                labels = ",".join(f"{k}={v}" for k, v in sorted(s.labels.items()))
                out[f"{s.name}{{{labels}}}" if labels else s.name] = s.value
        return out
