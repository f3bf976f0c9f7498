"""The main job's choice between real traffic and the synthetic load."""

from __future__ import annotations

from typing import Any

import pytest
from click.testing import CliRunner

from aqmllmd import demo, demo_tcp


def test_without_root_it_says_why(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("os.geteuid", lambda: 1000)
    assert "need root" in (demo_tcp.why_not() or "")


def test_the_synthetic_load_can_be_asked_for(monkeypatch: pytest.MonkeyPatch) -> None:
    assert "--load" in (demo_tcp.why_not(0.5) or "")
    monkeypatch.setenv("AQMLLM_DEMO", "synthetic")
    assert "AQMLLM_DEMO=synthetic" in (demo_tcp.why_not() or "")


@pytest.mark.parametrize("why", [None, "network namespaces need root"])
def test_the_main_job_runs_real_traffic_only_where_it_can(
        monkeypatch: pytest.MonkeyPatch, why: str | None) -> None:
    ran: dict[str, Any] = {}
    monkeypatch.setattr(demo_tcp, "why_not", lambda load=0.0: why)
    monkeypatch.setattr(demo_tcp, "main_real", lambda **kw: ran.setdefault("real", kw))
    monkeypatch.setattr(demo, "compare", lambda *a, **kw: ran.setdefault("synthetic", kw))
    r = CliRunner().invoke(demo.main, ["--duration", "1"])
    assert r.exit_code == 0, r.output
    if why is None:
        assert set(ran) == {"real"} and ran["real"]["duration"] == 1.0
        assert ran["real"]["model"] is None and "load" not in ran["real"]
    else:
        assert set(ran) == {"synthetic"}
        assert f"Real TCP through the forwarder not run: {why}." in r.output
