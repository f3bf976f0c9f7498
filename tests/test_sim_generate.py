"""The randomised training-scenario generator: reproducible, varied, never held-out traces."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest
from click.testing import CliRunner

from aqmllm_sim.cli import cli
from aqmllm_sim.generate import HELD_OUT_TRACES, GenerateError, generate, training_traces
from aqmllm_sim.scenario import load

REPO = Path(__file__).resolve().parents[1]
HELD_OUT_SCENARIOS = sorted((REPO / "sim" / "scenarios" / "held-out").glob("*.toml"))


def _held_out_traces() -> set[Path]:
    """Every trace a held-out scenario replays, and every file in traces/held-out."""
    used = {load(p).trace for p in HELD_OUT_SCENARIOS}
    return {p.resolve() for p in used if p is not None} | {
        p.resolve() for p in HELD_OUT_TRACES.glob("*.mahimahi")}


def _tree(d: Path) -> dict[str, bytes]:
    return {str(p.relative_to(d)): p.read_bytes() for p in sorted(d.rglob("*")) if p.is_file()}


def _draws(d: Path) -> list[dict]:
    """What each scenario drew, without its name and the file name of its trace (both
    carry the seed whatever was drawn)."""
    return [{k: v for k, v in tomllib.loads(p.read_text()).items() if k not in ("name", "trace")}
            for p in sorted(d.glob("*.toml"))]


def test_the_same_seed_gives_the_same_scenarios_and_a_larger_count_extends_them(
        tmp_path: Path) -> None:
    generate(7, 6, tmp_path / "a")
    generate(7, 6, tmp_path / "b")
    generate(7, 3, tmp_path / "c")
    a, b, c = _tree(tmp_path / "a"), _tree(tmp_path / "b"), _tree(tmp_path / "c")
    assert a == b
    assert c and all(a[k] == v for k, v in c.items())
    generate(8, 6, tmp_path / "d")
    assert _draws(tmp_path / "a") == _draws(tmp_path / "b")
    assert _draws(tmp_path / "d") != _draws(tmp_path / "a")


def test_generated_scenarios_never_replay_a_held_out_trace(tmp_path: Path) -> None:
    paths = generate(3, 30, tmp_path)
    held = _held_out_traces()
    held_bytes = {p.read_bytes() for p in held}
    scenarios = [load(p) for p in paths]
    traces = [s.trace.resolve() for s in scenarios if s.trace is not None]
    assert traces, "no generated scenario replays a trace"
    for t in traces:
        assert t not in held and t.read_bytes() not in held_bytes
    # And they vary: every capacity process, 1 to many flows, rates and RTTs apart.
    rates = [s.rate_mbps for s in scenarios]
    rtts = [f.rtt_ms for s in scenarios for f in s.flows]
    assert max(rates) / min(rates) > 10 and max(rtts) / min(rtts) > 10
    assert any(s.rate_steps for s in scenarios) and any(s.trace is None for s in scenarios)
    assert min(len(s.flows) for s in scenarios) == 1 < max(len(s.flows) for s in scenarios)
    assert any(s.loss for s in scenarios) and any(s.udp for s in scenarios)


def test_held_out_scenarios_never_replay_a_training_trace() -> None:
    train = {p.resolve() for p in training_traces()}
    assert len(HELD_OUT_SCENARIOS) >= 12
    assert not {load(p).trace.resolve() for p in HELD_OUT_SCENARIOS
                if load(p).trace is not None} & train


def test_the_command_writes_the_scenarios_and_refuses_a_bad_count(tmp_path: Path) -> None:
    r = CliRunner().invoke(cli, ["generate", "--seed", "1", "--count", "2", "--out",
                                 str(tmp_path)])
    assert r.exit_code == 0, r.output
    assert sorted(p.name for p in tmp_path.glob("*.toml")) == ["gen-1-000.toml",
                                                               "gen-1-001.toml"]
    with pytest.raises(GenerateError, match="count >= 1"):
        generate(1, 0, tmp_path)
