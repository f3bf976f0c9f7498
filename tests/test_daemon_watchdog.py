"""The harm watchdog takes a wrong model out of service; failures are logged in counts.

The serving loop is driven batch by batch (`Server.serve`, then the watchdog's window
closed by hand) on a real channel region, with the hostile models of aqmllmd.hostile.
"""

from __future__ import annotations

import logging
import os
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from ports import free_port

from aqm_bridge.abi import STATE_DTYPE
from aqm_bridge.channel import Region
from aqmllmd import hostile
from aqmllmd.config import load
from aqmllmd.default_model import INTERIM_MODEL
from aqmllmd.metrics import Metrics
from aqmllmd.model import Model, open_session
from aqmllmd.model import load as load_model
from aqmllmd.server import Server
from aqmllmd.watchdog import Watchdog, WatchdogConfig, dualpi2_expected

PROB_ONE = 0xFFFFFFFF


def dualpi2_like_states(n: int, p_c: float = 0.01, p_cl: float = 0.05,
                        length: int = 1500) -> np.ndarray:
    rng = np.random.default_rng(0)
    s = np.zeros(n, STATE_DTYPE)
    now = time.monotonic_ns()
    s["seq"] = np.arange(n)
    s["deadline_ns"] = now + 10**9  # still live when served
    s["ts_ns"] = s["deadline_ns"] - 500_000  # an expected sojourn under the step
    s["queue"] = rng.integers(0, 2, n)
    s["ecn"] = np.where(s["queue"] == 1, 1, 2)
    s["len"] = length
    s["prob_c"] = int(p_c * PROB_ONE)
    s["prob_cl"] = int(p_cl * PROB_ONE)
    s["backlog_pkts"] = 20
    s["backlog_bytes"] = 30_000
    return s


def unchecked(path: Path) -> Model:
    """A model as validation would never pass it (to test what serving does)."""
    data = path.read_bytes()
    return Model(path=path, version=path.stem, producer="test", description="",
                 sha256=os.urandom(32).hex(), session=open_session(data, 1))


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[tuple[Server, Region, Path]]:
    region = Region.create(f"aqm-test-wd-{os.getpid()}", 4096, 4096)
    cfg = load(None, {"channel": str(region.path), "metrics": "", "seed": 1,
                      "control": f"ipc://{tmp_path}/c.sock"})
    srv = Server(cfg, load_model(INTERIM_MODEL), Metrics(lambda: srv.datapath))
    srv.region = region
    try:
        yield srv, region, tmp_path
    finally:
        region.close(unlink=True)


def drive(srv: Server, region: Region, windows: int, batches: int = 4,
          n: int = 256, length: int = 1500) -> None:
    """`windows` watchdog windows of `batches` batches each, taking swaps in between."""
    for _ in range(windows):
        for _ in range(batches):
            srv.serve(dualpi2_like_states(n, length=length))
            prod, _, vprod, _ = region.indices()
            region.set_index(3, vprod)  # consume the verdicts as a data path would
        srv._watchdog_tick()
        model = srv.slot.take_pending()
        if model is not None:
            srv.watchdog.reset()


def serve_model(srv: Server, model: Model) -> None:
    srv.slot.offer(model)
    srv.slot.take_pending()
    srv.watchdog.reset()


def test_expected_dualpi2_signals() -> None:
    s = dualpi2_like_states(10_000, p_c=0.02, p_cl=0.1)
    share = dualpi2_expected(s, step_ns=10**6) / len(s)
    assert share == pytest.approx(0.5 * 0.02 + 0.5 * 0.1, abs=0.01)
    s["deadline_ns"] = s["ts_ns"] + 2 * 10**6  # every L packet over the step
    assert dualpi2_expected(s, step_ns=10**6) / len(s) == pytest.approx(0.5 + 0.5 * 0.02,
                                                                       abs=0.01)


@pytest.mark.parametrize("kind", ["always-drop", "always-mark", "uniform", "adversarial"])
def test_a_harmful_model_is_rolled_back(rig, kind: str,  # noqa: ANN001
                                        caplog: pytest.LogCaptureFixture) -> None:
    srv, region, tmp = rig
    good = srv.slot.current
    bad = load_model(hostile.write(kind, tmp / f"{kind}.onnx"))
    serve_model(srv, bad)
    with caplog.at_level(logging.WARNING, logger="aqmllmd"):
        drive(srv, region, windows=1)  # decisive: one window
    assert srv.slot.current is good, "rolled back to the previous model"
    st = srv.status()["watchdog"]
    assert st["trips"]["signals"] == 1 and st["quarantined"] == [f"hostile-{kind}"]
    assert st["last_trip"]["model"] == f"hostile-{kind}" and "rolled back" in \
        st["last_trip"]["action"]
    lines = [r.getMessage() for r in caplog.records if "watchdog" in r.getMessage()]
    assert len(lines) == 1 and "harms" in lines[0]


def test_a_model_that_signals_like_dualpi2_is_left_alone(rig) -> None:  # noqa: ANN001
    """The adversarial model on small packets (it enqueues them all) serves on
    undisturbed (the shipped model on real load: tests/test_daemon_wrong_models.py)."""
    srv, region, tmp = rig
    adv = load_model(hostile.write("adversarial", tmp / "a.onnx"))
    serve_model(srv, adv)
    for _ in range(3):
        for _ in range(4):
            srv.serve(dualpi2_like_states(256, length=200))
        srv._watchdog_tick()
    assert srv.slot.current is adv and not srv.paused
    assert srv.status()["watchdog"]["trips"] == {"signals": 0, "utilisation": 0,
                                                 "failing": 0}


def test_without_a_model_to_return_to_the_data_path_is_paused(rig) -> None:  # noqa: ANN001
    srv, region, tmp = rig
    srv.slot.previous = None
    srv.safe_model = None
    serve_model(srv, load_model(hostile.write("always-drop", tmp / "d.onnx")))
    srv.slot.previous = None
    drive(srv, region, windows=3)
    st = srv.status()
    assert st["paused"] and region.paused and "watchdog" in st["pause_reason"]
    # Paused by the watchdog: placeholder verdicts keep answering a waiting host, and
    # the data path (paused) ignores them.
    before = region.indices()[2]
    srv.serve(dualpi2_like_states(64))
    assert region.indices()[2] == before + 64
    # Another model ends the watchdog's pause.
    srv.slot.offer(load_model(INTERIM_MODEL))
    srv.stop_event.set()
    srv.region = None
    srv.cfg = load(None, {"channel": "/nonexistent", "metrics": "",
                          "control": f"ipc://{tmp}/c.sock"})


def test_the_safe_model_is_the_fallback_when_previous_harms_too(rig) -> None:  # noqa: ANN001
    srv, region, tmp = rig
    # Safe here: on small packets the adversarial model enqueues everything.
    safe = srv.safe_model = load_model(hostile.write("adversarial", tmp / "a.onnx"))
    mark = load_model(hostile.write("always-mark", tmp / "m.onnx"))
    drop = load_model(hostile.write("always-drop", tmp / "d.onnx"))
    serve_model(srv, mark)
    serve_model(srv, drop)  # previous = always-mark
    drive(srv, region, windows=1, length=200)  # drop trips: back to always-mark
    assert srv.slot.current.version == "hostile-always-mark"
    drive(srv, region, windows=3, length=200)  # mark trips: drop is quarantined -> safe
    assert srv.slot.current is safe
    assert srv.status()["watchdog"]["quarantined"] == ["hostile-always-drop",
                                                       "hostile-always-mark"]


def test_failures_are_logged_in_counts_and_a_failing_model_is_paused(
        rig, caplog: pytest.LogCaptureFixture) -> None:  # noqa: ANN001
    srv, region, tmp = rig
    srv.slot.previous = srv.safe_model = None
    nan = unchecked(hostile.write("nan-sometimes", tmp / "n.onnx"))
    serve_model(srv, nan)
    srv.slot.previous = None
    with caplog.at_level(logging.WARNING, logger="aqmllmd"):
        for _ in range(500):
            batch = dualpi2_like_states(32)
            batch["queue"] = 1
            srv.serve(batch)
    lines = [r.getMessage() for r in caplog.records if "no verdicts" in r.getMessage()]
    assert len(lines) == 1 and "nan 1" in lines[0]  # the first at once, the rest counted
    assert srv.stats.failures_by_reason["nan"] == 500
    srv._fail_logged_at -= 60  # the interval has passed: one line with the counts
    with caplog.at_level(logging.WARNING, logger="aqmllmd"):
        srv._watchdog_tick()  # the first window closes: one strike
        for _ in range(4):
            srv.serve(batch)
        srv._watchdog_tick()  # the second: paused
    lines = [r.getMessage() for r in caplog.records if "no verdicts" in r.getMessage()]
    assert len(lines) == 2 and "499 batches" in lines[1] and "nan 499" in lines[1]
    assert srv.paused and srv.status()["watchdog"]["trips"]["failing"] == 1


def test_invalid_rows_cost_the_batch(rig) -> None:  # noqa: ANN001
    srv, region, tmp = rig
    serve_model(srv, unchecked(hostile.write("adversarial-negative", tmp / "a.onnx")))
    srv.serve(dualpi2_like_states(64))
    assert srv.stats.failures_by_reason["invalid"] == 1
    assert region.indices()[2] == 0  # no verdicts written


def test_watchdog_metrics_are_exported(rig) -> None:  # noqa: ANN001
    srv, region, tmp = rig
    serve_model(srv, load_model(hostile.write("always-mark", tmp / "m.onnx")))
    srv.slot.previous = srv.safe_model = None
    drive(srv, region, windows=3)
    text = "\n".join(f"{k} {v}" for k, v in srv.metrics.snapshot().items())
    assert 'aqmllm_watchdog_trips_total{reason=signals} 1' in text
    assert "aqmllm_watchdog_paused 1" in text
    assert "aqmllm_watchdog_model_signal_share" in text
    assert 'aqmllm_model_failures_total{reason=invalid} 0' in text


def test_window_judgement() -> None:
    wd = Watchdog(WatchdogConfig(windows=2, min_states=10))
    s = dualpi2_like_states(100)
    # 30 points above DualPI2 over 50 states: two windows in a row.
    acts = np.where(np.arange(50) % 3 == 0, 2, 0)
    wd.observe(s[:50], acts)
    assert wd.close_window(time.monotonic(), None) is None and wd.strikes == 1
    wd.observe(s[:50], acts)
    assert wd.close_window(time.monotonic(), None) == "signals"
    # Everything marked over 100 states: one window is enough.
    wd.observe(s, np.full(100, 2))
    assert wd.close_window(time.monotonic(), None) == "signals"
    wd.observe(s[:5], np.full(5, 2))  # too few states to judge
    assert wd.close_window(time.monotonic(), None) is None and wd.strikes == 0


def test_exporter_text_has_the_watchdog(rig) -> None:  # noqa: ANN001
    srv, _, _ = rig
    port = free_port()
    srv.metrics.serve(f"127.0.0.1:{port}")
    body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read()
    assert b"aqmllm_watchdog_trips_total" in body


def test_the_example_alert_rules_name_exported_metrics(rig) -> None:  # noqa: ANN001
    """daemon/monitoring/aqmllmd-alerts.yml: valid YAML, every aqmllm_* metric in its
    expressions is one the exporter serves (with a data path attached)."""
    import re

    yaml = pytest.importorskip("yaml")
    srv, region, tmp = rig
    serve_model(srv, load_model(hostile.write("always-mark", tmp / "m.onnx")))
    drive(srv, region, windows=3)
    exported = {s.name for fam in srv.metrics.registry.collect() for s in fam.samples}
    rules = yaml.safe_load((Path(__file__).resolve().parents[1] / "daemon" / "monitoring"
                            / "aqmllmd-alerts.yml").read_text())
    named = {m for g in rules["groups"] for r in g["rules"]
             for m in re.findall(r"aqmllm_\w+", r["expr"])}
    assert named and named <= exported, named - exported


def test_aqmllmctl_shows_the_watchdog(rig) -> None:  # noqa: ANN001
    from click.testing import CliRunner

    from aqmllmd.control import ControlPlane
    from aqmllmd.ctl import cli

    srv, region, tmp = rig
    srv.safe_model = None
    serve_model(srv, load_model(hostile.write("always-drop", tmp / "d.onnx")))
    srv.slot.previous = None
    drive(srv, region, windows=3)
    cp = ControlPlane(srv, srv.cfg.control)
    cp.start()
    try:
        r = CliRunner().invoke(cli, ["-e", cp.endpoint, "status"])
        assert r.exit_code == 0, r.output
        assert "watchdog.trips.signals: 1" in r.output
        assert "watchdog.last_trip.model: hostile-always-drop" in r.output
        assert "pause_reason: watchdog: model hostile-always-drop signals" in r.output
        r = CliRunner().invoke(cli, ["-e", cp.endpoint, "watch", "--count", "1",
                                     "--interval", "0"])
        assert "PAUSED: watchdog" in r.output and "trips 1" in r.output
    finally:
        srv.stop_event.set()
        cp.stop()


def test_a_disabled_watchdog_only_watches(rig) -> None:  # noqa: ANN001
    from dataclasses import replace

    srv, region, tmp = rig
    srv.watchdog.cfg = replace(srv.watchdog.cfg, enabled=False)
    bad = load_model(hostile.write("always-drop", tmp / "d.onnx"))
    serve_model(srv, bad)
    drive(srv, region, windows=4)
    st = srv.status()["watchdog"]
    assert srv.slot.current is bad and not srv.paused
    assert sum(st["trips"].values()) == 0 and st["last_window"]["model_signal_share"] == 1.0


def test_the_hostile_models_command_writes_every_kind(tmp_path: Path) -> None:
    from click.testing import CliRunner

    r = CliRunner().invoke(hostile.main, ["--out", str(tmp_path / "m")])
    assert r.exit_code == 0, r.output
    assert sorted(p.stem for p in (tmp_path / "m").iterdir()) == sorted(hostile.KINDS)


def test_utilisation_judgement() -> None:
    """A model that signals moderately more than DualPI2 (5 % against 1 %: under the
    `signals` test's 10 points) while the delivered rate falls to half its best."""
    wd = Watchdog(WatchdogConfig(windows=2, min_states=10))
    s = dualpi2_like_states(200, p_c=0.01, p_cl=0.01)
    acts = np.where(np.arange(200) % 20 == 0, 2, 0)  # 5 %
    t = 1000.0

    def window(sent_bytes: int) -> str | None:
        nonlocal t
        t += 0.25
        wd.observe(s, acts)
        counters["bytes_out"] = [counters["bytes_out"][0] + sent_bytes, 0]
        return wd.close_window(t, dict(counters))

    counters = {"bytes_out": [0, 0]}
    wd._window_start = t
    assert window(3_000_000) is None  # first counters: no rate yet
    assert window(3_000_000) is None and wd.last["utilisation"] == 1.0  # the best
    assert window(1_500_000) is None and wd.strikes == 1  # half of it: one strike
    assert window(1_500_000) == "utilisation"
    # The same rate fall with a model that signals like DualPI2 is left alone.
    wd2 = Watchdog(WatchdogConfig(windows=1, min_states=10))
    wd2.observe(s, np.zeros(200, np.uint32))
    wd2._peak_bps, wd2._prev_counters = 1e9, {"bytes_out": [0, 0]}
    assert wd2.close_window(time.monotonic(), {"bytes_out": [1000, 0]}) is None


def test_a_window_too_small_to_judge_is_looked_at_again_a_window_later() -> None:
    """The serving loop asks due() at every pass: a window that carries over (too few
    states) is closed again one window_ms later, not at every pass until it fills."""
    wd = Watchdog(WatchdogConfig(window_ms=250, min_states=20))
    assert not wd.due(100.0)
    assert wd.due(100.25)
    assert wd.close_window(100.25, None) is None  # no states: carried over
    assert not wd.due(100.26) and not wd.due(100.49)
    assert wd.due(100.5)
    wd.observe(dualpi2_like_states(30, p_c=0.01, p_cl=0.01), np.zeros(30, np.uint32))
    assert wd.close_window(100.5, None) is None and wd.last["states"] == 30
    assert not wd.due(100.6) and wd.due(100.75)
