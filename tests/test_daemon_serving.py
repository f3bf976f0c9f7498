"""The serving loop's batch path: deadlines, failures of the model, the exporter."""

from __future__ import annotations

import os
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import replace

import numpy as np
import pytest
from ports import free_port

from aqm_bridge.abi import STATE_DTYPE
from aqm_bridge.channel import Region
from aqm_bridge.core import Core
from aqmllmd.config import load
from aqmllmd.default_model import DEFAULT_MODEL
from aqmllmd.metrics import Metrics
from aqmllmd.model import load as load_model
from aqmllmd.server import Server, choose_actions


@pytest.fixture
def server(tmp_path) -> Iterator[Server]:  # noqa: ANN001
    region = Region.create(f"aqm-test-serve-{os.getpid()}", 64, 64)
    cfg = load(None, {"channel": str(region.path), "metrics": "",
                      "control": f"ipc://{tmp_path}/c.sock", "seed": 3})
    srv = Server(cfg, load_model(DEFAULT_MODEL), Metrics(lambda: None))
    srv.region = region
    try:
        yield srv
    finally:
        region.close(unlink=True)


def states(n: int, deadline_in_ns: int) -> np.ndarray:
    s = np.zeros(n, STATE_DTYPE)
    now = time.monotonic_ns()
    s["seq"] = np.arange(n)
    s["ts_ns"] = now
    s["deadline_ns"] = now + deadline_in_ns
    s["ecn"] = 1
    s["queue"] = 1
    s["len"] = 1500
    return s


def verdicts_in_ring(srv: Server) -> int:
    prod, cons = srv.region.indices()[2:]  # type: ignore[union-attr]
    return prod - cons


def test_live_states_get_verdicts_and_expired_ones_are_skipped(server: Server) -> None:
    batch = states(10, 10**9)
    batch["deadline_ns"][:4] = 1  # long gone
    server.serve(batch)
    assert verdicts_in_ring(server) == 6
    assert server.stats.skipped == 4 and server.stats.verdicts == 6


class Broken:
    def __init__(self, kind: str, real) -> None:  # noqa: ANN001
        self.kind, self.real = kind, real
        self.version, self.producer, self.sha256 = "broken", "test", "0" * 64
        self.path, self.description = DEFAULT_MODEL, ""

    def run(self, x: np.ndarray) -> np.ndarray:
        if self.kind == "exception":
            raise RuntimeError("boom")
        if self.kind == "slow":
            time.sleep(0.01)
            return self.real.run(x)
        return np.full((len(x), 3), np.nan, np.float32)


@pytest.mark.parametrize("kind", ["exception", "nan", "slow"])
def test_a_failing_model_costs_its_batch_and_nothing_else(server: Server, kind: str) -> None:
    server.cfg = replace(server.cfg, max_infer_us=2000)
    real = server.slot.current
    server.slot.current = Broken(kind, real)  # type: ignore[assignment]
    server.serve(states(8, 10**9))
    assert verdicts_in_ring(server) == 0 and server.stats.failures == 1
    server.slot.current = real
    server.serve(states(8, 10**9))  # the next batch is served as usual
    assert verdicts_in_ring(server) == 8


def test_paused_means_no_inference(server: Server) -> None:
    server.set_paused(True)
    server.serve(states(8, 10**9))
    assert verdicts_in_ring(server) == 0 and server.region.paused  # type: ignore[union-attr]


def test_actions_are_drawn_from_the_distribution() -> None:
    rng = np.random.default_rng(0)
    probs = np.tile(np.array([[0.7, 0.1, 0.2]], np.float32), (20000, 1))
    counts = np.bincount(choose_actions(probs, "sample", rng), minlength=3) / 20000
    assert counts == pytest.approx([0.7, 0.1, 0.2], abs=0.02)
    assert set(choose_actions(probs, "argmax", rng)) == {0}


def test_prometheus_exporter_serves_the_metrics() -> None:
    port = free_port()
    counters = {"decisions_model": 3, "decisions_fallback": 1, "pkts_in": [5, 6],
                "prob_base": 0, "now_ns": 1}
    metrics = Metrics(lambda: counters)
    metrics.serve(f"127.0.0.1:{port}")
    body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    assert "aqmllm_states_total" in body
    assert 'aqmllm_datapath_pkts_in_total{queue="l4s"} 6.0' in body
    assert "aqmllm_datapath_fallback_share 0.25" in body


def test_batch_age_runs_from_the_oldest_packets_enqueue(tmp_path) -> None:  # noqa: ANN001
    """States that waited in the ring (the daemon was busy) go at once; states stamped
    ahead of this clock (ns-3's simulated time runs an hour ahead) still go by age."""
    with Region.create(f"aqm-test-age-{os.getpid()}", 64, 64) as region:
        cfg = load(None, {"channel": str(region.path), "metrics": "", "seed": 3,
                          "control": f"ipc://{tmp_path}/c.sock", "max_wait_us": 400_000})
        srv = Server(cfg, load_model(DEFAULT_MODEL), Metrics(lambda: None))
        core = Core(seed=1)
        core.attach(region)
        loop = threading.Thread(target=srv.run)
        loop.start()
        try:
            deadline = time.monotonic() + 5
            while srv.region is None and time.monotonic() < deadline:
                time.sleep(0.005)

            def served_after(now_ns: int) -> float:
                before, t0 = srv.stats.states, time.monotonic()
                core.enqueue(now_ns, 1500, 1)
                while srv.stats.states == before and time.monotonic() - t0 < 5:
                    time.sleep(0.001)
                assert srv.stats.states == before + 1
                return time.monotonic() - t0

            # Enqueued half a second ago: older than max_wait already.
            assert served_after(time.monotonic_ns() - 500_000_000) < 0.2
            # Stamped an hour ahead: waits max_wait from when it was read, not forever.
            assert 0.35 < served_after(time.monotonic_ns() + 3600 * 10**9) < 2
            # A reloaded configuration changes the batching of the running loop.
            srv.cfg = replace(srv.cfg, max_wait_us=0)
            assert served_after(time.monotonic_ns() + 3600 * 10**9) < 0.2
        finally:
            srv.stop_event.set()
            loop.join()
