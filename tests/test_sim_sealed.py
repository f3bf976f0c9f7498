"""The sealed test set (sim/scenarios/sealed/) stays sealed: new conditions, its own
traces, and nothing that trains or selects names it. No simulation runs here."""

from __future__ import annotations

import shutil
import tomllib
from pathlib import Path
from typing import Any

import pytest

import aqmllm_sim.generate as gen
from aqmllm_sim.generate import GenerateError, draw, training_traces
from aqmllm_sim.scenario import LINUX_STEP, Scenario, load
from aqmllm_sim.tune import write_step

REPO = Path(__file__).resolve().parents[1]
SCENARIOS = REPO / "sim" / "scenarios"
SEALED_DIR = SCENARIOS / "sealed"
SEALED = sorted(SEALED_DIR.glob("*.toml"))
HELD_OUT = sorted((SCENARIOS / "held-out").glob("*.toml"))
RECIPES = sorted((REPO / "models").rglob("*.toml"))
#: The note `aqmllm-sim tune-dualpi2 --write` puts above the step keys (aqmllm_sim/cli.py).
TUNED_NOTE = ("best DualPI2 step for this link: aqmllm-sim tune-dualpi2, seeds 901,902,903 "
              "(sim/README.md)")
#: How many draws of the generator are checked: a few hundred, about half of which
#: replay a trace (training or random walk).
GENERATED_DRAWS = 300


def _strings(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for v in value.values() for s in _strings(v)]
    if isinstance(value, list):
        return [s for v in value for s in _strings(v)]
    return []


def _recipe_scenarios() -> list[Path]:
    """The scenarios training may record or select on: every shipped scenario beside the
    held-out and sealed sets (the recipes' pool), and every scenario file a recipe in
    models/ names (record jobs, DAgger, evaluate)."""
    named = {(REPO / s).resolve() for r in RECIPES
             for s in _strings(tomllib.loads(r.read_text())) if s.endswith(".toml")}
    return sorted({p.resolve() for p in SCENARIOS.glob("*.toml")} | named)


def _sealed_traces() -> list[Path]:
    return sorted(p.resolve() for p in (REPO / "sim" / "traces" / "sealed").glob("*.mahimahi"))


def _capacity(s: Scenario) -> tuple[Any, ...]:
    """What the bottleneck offers: the trace replayed, else the rate and its steps."""
    if s.trace is not None:
        return ("trace", s.trace.resolve())
    return ("rate", s.rate_mbps, s.rate_steps)


def test_every_sealed_scenario_loads_with_a_sealed_name_and_explicit_step_settings(
) -> None:
    assert len(SEALED) == 8
    names = []
    for p in SEALED:
        s = load(p)
        names.append(s.name)
        assert s.name.startswith("sealed-"), p.name
        core = tomllib.loads(p.read_text()).get("dualpi2", {})
        # Written out, so that the tuning command has a table to update.
        assert set(LINUX_STEP) <= set(core), p.name
    assert len(set(names)) == len(names)
    # The README's table lists exactly these.
    readme = (SEALED_DIR / "README.md").read_text()
    listed = [line.split("`")[1] for line in readme.splitlines()
              if line.startswith("| `sealed-")]
    assert sorted(listed) == sorted(names)


def test_sealed_names_and_capacities_are_new_to_the_held_out_and_recipe_scenarios() -> None:
    others = [load(p) for p in [*HELD_OUT, *_recipe_scenarios()]]
    assert len(others) >= 17 + 12
    sealed = [load(p) for p in SEALED]
    assert not {s.name for s in sealed} & {o.name for o in others}
    # New conditions, not new seeds: no sealed scenario replays a trace or runs at a
    # rate (with its steps) that a held-out or recipe scenario has.
    taken = {_capacity(o) for o in others}
    for s in sealed:
        assert _capacity(s) not in taken, s.name


def test_no_held_out_or_recipe_scenario_replays_a_sealed_trace() -> None:
    sealed = _sealed_traces()
    assert len(sealed) >= 3
    sealed_bytes = {p.read_bytes() for p in sealed}
    for p in [*HELD_OUT, *_recipe_scenarios()]:
        trace = load(p).trace
        if trace is not None:
            assert trace.resolve() not in sealed, p
            assert trace.read_bytes() not in sealed_bytes, p
    # And the sealed scenarios replay their own traces only (one each).
    used = [load(p).trace for p in SEALED]
    replayed = sorted(t.resolve() for t in used if t is not None)
    assert replayed == sealed


def test_generated_scenarios_never_replay_a_sealed_trace(tmp_path: Path) -> None:
    sealed = set(_sealed_traces())
    sealed_bytes = {p.read_bytes() for p in sealed}
    # The recipes' own generated scenarios, then a few hundred more draws.
    plans = [(11, GENERATED_DRAWS)]
    for r in RECIPES:
        g = tomllib.loads(r.read_text()).get("record", {}).get("generate")
        if isinstance(g, dict):
            plans.append((int(g["seed"]), int(g["count"])))
    replayed = 0
    for seed, count in plans:
        out = tmp_path / f"seed-{seed}"
        for i in range(count):
            sc = draw(seed, i, out)
            if "trace" in sc:
                trace = (out / sc["trace"]).resolve()
                assert trace not in sealed and trace.read_bytes() not in sealed_bytes
                replayed += 1
    assert replayed > GENERATED_DRAWS // 4
    assert not sealed & {p.resolve() for p in training_traces()}


def test_the_generator_refuses_a_sealed_trace_copied_into_train(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    train = tmp_path / "train"
    train.mkdir()
    shutil.copy(training_traces()[0], train / "ok.mahimahi")
    monkeypatch.setattr(gen, "TRAIN_TRACES", train)
    assert [p.name for p in training_traces()] == ["ok.mahimahi"]
    shutil.copy(_sealed_traces()[0], train / "renamed.mahimahi")
    with pytest.raises(GenerateError, match="is also a sealed trace"):
        training_traces()


def test_no_recipe_names_the_sealed_set() -> None:
    assert RECIPES
    for r in RECIPES:
        text = r.read_text()
        assert "scenarios/sealed" not in text and "traces/sealed" not in text, r.name
    for p in _recipe_scenarios():
        assert not p.is_relative_to(SEALED_DIR.resolve()), p


def test_tuning_leaves_no_not_tuned_note_behind(tmp_path: Path) -> None:
    # What `aqmllm-sim tune-dualpi2 --write` does to each file (README.md), on copies
    # that keep their relative trace paths (traces/ beside scenarios/sealed/).
    (tmp_path / "traces").symlink_to(REPO / "sim" / "traces")
    (tmp_path / "scenarios" / "sealed").mkdir(parents=True)
    step = {"step_threshold_us": 1000, "step_thresh_pkts": 2, "min_qlen_step": 0}
    for p in SEALED:
        copy = tmp_path / "scenarios" / "sealed" / p.name
        shutil.copy(p, copy)
        write_step(copy, step, TUNED_NOTE)
        text = copy.read_text()
        assert "not tuned yet" not in text and TUNED_NOTE in text, p.name
        assert load(copy).step_config() == step
