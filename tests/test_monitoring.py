"""daemon/monitoring: the Grafana dashboard and the Prometheus alert rules name only metrics
the real aqmllmd exports, their PromQL parses, and the alerts fire when they should.

The metric names are checked against the /metrics text of a real aqmllmd process serving
a real aqm-host's region (as tests/test_daemon_e2e.py runs them). The PromQL is checked
with promtool, from Debian's prometheus package (scripts/setup.sh puts it in .venv/bin);
those checks skip, saying so, where promtool is absent.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from ports import free_port
from prometheus_client.parser import text_string_to_metric_families

from aqm_bridge._ffi import REPO_ROOT
from aqm_bridge.channel import ChannelError, Region

HOST = REPO_ROOT / "build" / "aqm-host"
MONITORING = REPO_ROOT / "daemon" / "monitoring"
DASHBOARD = MONITORING / "grafana-aqmllmd.json"
RULES = MONITORING / "aqmllmd-alerts.yml"
METRIC = re.compile(r"\baqmllm_\w+")
WINDOW_GAUGES = {"aqmllm_watchdog_model_signal_share", "aqmllm_watchdog_dualpi2_signal_share",
                 "aqmllm_watchdog_utilisation"}

yaml = pytest.importorskip("yaml")


def _panel_exprs() -> list[str]:
    """The panels' PromQL."""
    dash = json.loads(DASHBOARD.read_text())
    return [t["expr"] for p in dash["panels"] for t in p.get("targets", [])]


def _dashboard_exprs() -> list[str]:
    """The panels' PromQL and the template variables' Grafana queries (label_values)."""
    dash = json.loads(DASHBOARD.read_text())
    return _panel_exprs() + [v["definition"] for v in dash["templating"]["list"]
                             if v["type"] == "query"]


def _rules() -> list[dict]:
    return [r for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"]]


def _promtool(*args: str) -> None:
    """promtool ARGS succeeds; skips where promtool is absent."""
    tool = shutil.which("promtool", path=f"{Path(sys.executable).parent}:{os.environ['PATH']}")
    if tool is None:
        pytest.skip("promtool is not installed (Debian's prometheus package; "
                    "scripts/setup.sh puts it in .venv/bin)")
    r = subprocess.run([tool, *args], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> Iterator[set[str]]:
    """Every metric and sample name in a real aqmllmd's /metrics, once its watchdog has
    closed two windows (the window gauges exist from the first on, utilisation, a rate
    between two windows, from the second)."""
    if not HOST.exists():
        pytest.skip("build/aqm-host is not built (make build/aqm-host)")
    name = f"aqm-test-mon-{os.getpid()}"
    shm = Path("/dev/shm", name)
    port = free_port()
    host = subprocess.Popen([str(HOST), "--shm", name, "--duration", "60", "--rate-mbps", "50",
                             "--rtt-ms", "20", "--json"], stdout=subprocess.DEVNULL)
    daemon: subprocess.Popen[bytes] | None = None
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                Region.open(shm).close()
                break
            except ChannelError:
                assert time.monotonic() < deadline, "host never laid out its region"
                time.sleep(0.01)
        control = f"ipc://{tmp_path_factory.mktemp('ctl')}/ctl.sock"
        daemon = subprocess.Popen(
            [sys.executable, "-m", "aqmllmd.main", "--channel", str(shm), "--control", control,
             "--metrics", f"127.0.0.1:{port}", "--seed", "1"], stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 40
        names: set[str] = set()
        while not WINDOW_GAUGES <= names:
            assert daemon.poll() is None, f"aqmllmd exited with {daemon.returncode}"
            assert time.monotonic() < deadline, f"no watchdog windows in 40 s: {sorted(names)}"
            time.sleep(0.5)
            try:
                body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics",
                                              timeout=5).read().decode()
            except OSError:
                continue
            names = set()
            for fam in text_string_to_metric_families(body):
                names.add(fam.name)
                names.update(s.name for s in fam.samples)
        yield names
    finally:
        for p in (daemon, host):
            if p is not None and p.poll() is None:
                p.kill()
                p.wait()
        shm.unlink(missing_ok=True)


def test_every_metric_the_dashboard_names_is_exported(exported: set[str]) -> None:
    named = {m for e in _dashboard_exprs() for m in METRIC.findall(e)}
    assert len(named) > 30 and named <= exported, sorted(named - exported)


def test_every_metric_the_alert_rules_name_is_exported(exported: set[str]) -> None:
    named = {m for r in _rules() for m in METRIC.findall(r["expr"])}
    assert named and named <= exported, sorted(named - exported)


def test_the_dashboard_shows_what_an_operator_asks_for() -> None:
    dash = json.loads(DASHBOARD.read_text())
    text = " ".join(_dashboard_exprs())
    for metric in ("aqmllm_datapath_decisions_model_total",    # verdict share
                   "aqmllm_datapath_verdicts_late_total",       # late
                   "aqmllm_states_skipped_deadline_total",      # skipped
                   "aqmllm_inference_seconds_bucket",           # batch latency
                   "aqmllm_state_to_verdict_seconds_bucket",
                   "aqmllm_model_failures_total",               # model failures
                   "aqmllm_watchdog_trips_total",               # watchdog actions
                   "aqmllm_datapath_marks_model_total", "aqmllm_datapath_marks_fallback_total",
                   "aqmllm_datapath_drops_model_total", "aqmllm_datapath_drops_fallback_total",
                   "aqmllm_datapath_drops_limit_total"):        # marks and drops by source
        assert metric in text, metric
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids))
    for p in dash["panels"]:
        assert {"h", "w", "x", "y"} <= p["gridPos"].keys() and p["gridPos"]["x"] + \
            p["gridPos"]["w"] <= 24, p["title"]
        for t in p.get("targets", []):
            assert t["datasource"]["uid"] == "${datasource}", p["title"]
            assert t["expr"].count("(") == t["expr"].count(")"), t["expr"]


def test_the_alert_rules_cover_down_collapse_pause_and_rollback() -> None:
    alerts = {r["alert"]: r for r in _rules()}
    assert alerts["AqmllmdDown"]["expr"].startswith("up{")
    assert "decisions_model_total" in alerts["AqmllmdVerdictShareCollapsed"]["expr"]
    assert "aqmllm_paused" in alerts["AqmllmdPaused"]["expr"]
    assert "aqmllm_watchdog_paused" in alerts["AqmllmdPausedByWatchdog"]["expr"]
    assert "aqmllm_watchdog_trips_total" in alerts["AqmllmdModelHarmful"]["expr"]


def test_promtool_accepts_the_rules_and_the_dashboards_queries(tmp_path: Path) -> None:
    _promtool("check", "rules", str(RULES))
    # The dashboard's queries as recording rules: promtool parses each one.
    recorded = [{"record": f"aqmllm_dashboard:q{i}",
                 "expr": e.replace("$instance", ".*")} for i, e in enumerate(_panel_exprs())]
    f = tmp_path / "dashboard-rules.yml"
    f.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": recorded}]}))
    _promtool("check", "rules", str(f))


# promtool's rule unit tests: synthetic series, and which alerts fire when.
UNIT_TESTS = """
rule_files: [{rules}]
evaluation_interval: 1m
tests:
  - interval: 1m
    input_series:
      - series: 'up{{job="aqmllmd", instance="r1:9464"}}'
        values: '1 1 0 0 0 0 0'
    alert_rule_test:
      - {{eval_time: 3m, alertname: AqmllmdDown, exp_alerts: []}}
      - eval_time: 5m
        alertname: AqmllmdDown
        exp_alerts:
          - exp_labels: {{severity: warning, job: aqmllmd, instance: "r1:9464"}}
            exp_annotations: {{summary: "aqmllmd's metrics exporter does not answer"}}
  - interval: 1m
    input_series:
      # 60 % of 1000 dequeues a minute got a verdict for 90 minutes, then 10 %.
      - series: 'aqmllm_datapath_decisions_model_total{{instance="r1:9464"}}'
        values: '0+600x90 54600+100x60'
      - series: 'aqmllm_datapath_decisions_fallback_total{{instance="r1:9464"}}'
        values: '0+400x90 36400+900x60'
    alert_rule_test:
      - {{eval_time: 89m, alertname: AqmllmdVerdictShareCollapsed, exp_alerts: []}}
      - eval_time: 120m
        alertname: AqmllmdVerdictShareCollapsed
        exp_alerts:
          - exp_labels: {{severity: warning, instance: "r1:9464"}}
            exp_annotations:
              summary: "the share of packets decided by aqmllmd's verdicts fell below half"
              description: >-
                On r1:9464 10% of dequeues got a verdict over 10 minutes, under half the
                share of an hour before. See `aqmllmctl status` (late and skipped states,
                failures, watchdog).
  - interval: 1m
    input_series:
      - series: 'aqmllm_paused{{instance="r1:9464"}}'
        values: '0 1x40'
      - series: 'aqmllm_watchdog_paused{{instance="r1:9464"}}'
        values: '0 1x40'
      - series: 'aqmllm_watchdog_trips_total{{instance="r1:9464", reason="signals"}}'
        values: '0 0 1x40'
    alert_rule_test:
      - eval_time: 10m
        alertname: AqmllmdModelHarmful
        exp_alerts:
          - exp_labels: {{severity: warning, instance: "r1:9464", reason: signals}}
            exp_annotations:
              summary: "aqmllmd took a harmful model out of service (signals)"
              description: >-
                The watchdog on r1:9464 tripped for reason signals. See `aqmllmctl status`
                (watchdog.last_trip) for the model and the figures.
      - eval_time: 10m
        alertname: AqmllmdPausedByWatchdog
        exp_alerts:
          - exp_labels: {{severity: warning, instance: "r1:9464"}}
            exp_annotations:
              summary: "aqmllmd is paused by its watchdog: no model serves"
              description: >-
                r1:9464 has served no verdicts for 5 minutes because every model it had
                harmed. `aqmllmctl set-model PATH` or `aqmllmctl resume`.
      - {{eval_time: 20m, alertname: AqmllmdPaused, exp_alerts: []}}
      - eval_time: 35m
        alertname: AqmllmdPaused
        exp_alerts:
          - exp_labels: {{severity: info, instance: "r1:9464"}}
            exp_annotations:
              summary: "aqmllmd has been paused for 30 minutes: no verdicts served"
"""


def test_the_alerts_fire_when_they_should(tmp_path: Path) -> None:
    f = tmp_path / "alerts-test.yml"
    f.write_text(UNIT_TESTS.format(rules=json.dumps(str(RULES))))
    _promtool("test", "rules", str(f))
