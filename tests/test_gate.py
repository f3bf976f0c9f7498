"""The promotion gate (models/aqmllm_models/closed_loop.py): non-inferiority bounds on
every harm, Holm over the gains, no zero standard errors, and luck cannot pass it."""

from __future__ import annotations

import random

import pytest

from aqmllm_models.closed_loop import ALPHA, MIN_SEEDS, gate, gate_details, holm, t_quantile, t_sf

FIG = ("utilisation", "jain", "l_p99_ms", "c_p99_ms")
BASE = {"utilisation": 0.95, "jain": 0.90, "l_p99_ms": 2.0, "c_p99_ms": 50.0}
NOISE = {"utilisation": 0.005, "jain": 0.01, "l_p99_ms": 0.1, "c_p99_ms": 2.0}


def _rows(scenario: str, policy: str, values: dict[str, list[float]]) -> list[dict]:
    n = len(values["utilisation"])
    return [{"scenario": scenario, "policy": policy, "seed": s + 1, "loss": 0.0,
             **{k: values[k][s] for k in FIG}} for s in range(n)]


def _noisy(rng: random.Random, shift: dict[str, float] | None = None,
           n: int = 10) -> dict[str, list[float]]:
    shift = shift or {}
    return {k: [BASE[k] + shift.get(k, 0.0) + rng.gauss(0, NOISE[k]) for _ in range(n)]
            for k in FIG}


def test_the_t_distribution_and_holm() -> None:
    assert t_sf(2.262, 9) == pytest.approx(0.025, abs=2e-4)
    assert t_quantile(0.95, 19) == pytest.approx(1.729, abs=1e-3)
    assert t_sf(-1.0, 5) == pytest.approx(1 - t_sf(1.0, 5))
    assert holm([0.01, 0.04, 0.03, 0.2]) == [True, False, False, False]
    assert holm([0.001, 0.012, 0.03]) == [True, True, True]
    assert holm([0.001, 0.03, 0.04]) == [True, False, False]


def test_a_clear_gain_without_harm_passes() -> None:
    rng = random.Random(1)
    rows = _rows("a", "dualpi2", _noisy(rng)) + _rows(
        "a", "llm", _noisy(rng, {"c_p99_ms": -15.0}))
    assert gate(rows) == []
    c = next(r for r in gate_details(rows) if r["figure"] == "c_p99_ms")
    assert c["better"] and c["non_inferior"]


def test_each_harm_is_named_and_a_tie_adds_nothing() -> None:
    rng = random.Random(2)
    base = _noisy(rng)
    harm = {"utilisation": -0.05, "jain": -0.05, "l_p99_ms": 0.5, "c_p99_ms": 10.0}
    rows = _rows("a", "dualpi2", base) + _rows("a", "llm", _noisy(rng, harm))
    failures = gate(rows)
    assert [f.split(" ")[1] for f in failures] == ["utilisation", "Jain", "L", "classic"]
    assert all(f.startswith("a: ") and "past the margin" in f for f in failures)
    tie = _rows("a", "dualpi2", base) + _rows("a", "llm", base)
    assert gate(tie) == ["nothing is measurably better than dualpi2 anywhere (Holm over 4 "
                         "one-sided tests at 0.05): the model adds nothing"]
    assert gate(_rows("a", "llm", base)) == ["the gate needs runs of both the model and "
                                             "dualpi2"]


def test_the_standard_error_is_never_zero() -> None:
    # 19 of 20 seeds tie exactly, one is 1 ms better: the differences' own standard
    # error is tiny, but DualPI2's seed-to-seed noise floors it, so no gain is claimed.
    rng = random.Random(3)
    base = _noisy(rng, n=20)
    model = {k: list(v) for k, v in base.items()}
    model["c_p99_ms"][0] -= 1.0
    details = gate_details(_rows("a", "dualpi2", base) + _rows("a", "llm", model))
    c = next(r for r in details if r["figure"] == "c_p99_ms")
    assert c["pooled_standard_error"] > 0.4 and not c["better"]
    # Both deterministic and identical: a constant difference is never a gain.
    flat = {k: [BASE[k]] * 10 for k in FIG}
    lower = {**flat, "c_p99_ms": [BASE["c_p99_ms"] - 1] * 10}
    d = gate_details(_rows("a", "dualpi2", flat) + _rows("a", "llm", lower))
    assert all(r["pooled_standard_error"] == 0 and not r["better"] and r["non_inferior"]
               for r in d)
    # A model that ties DualPI2 on every seed does no harm, however noisy DualPI2 is.
    tie = gate_details(_rows("a", "dualpi2", base) + _rows("a", "llm", base))
    assert all(r["non_inferior"] and r["standard_error"] == 0 and not r["better"]
               for r in tie)


def test_too_few_seeds_cannot_pass() -> None:
    rng = random.Random(4)
    n = MIN_SEEDS - 1
    rows = _rows("a", "dualpi2", _noisy(rng, n=n)) + _rows(
        "a", "llm", _noisy(rng, {"c_p99_ms": -30.0}, n=n))
    assert gate(rows) == [f"a: {n} paired seed(s), the gate needs {MIN_SEEDS}"]


def test_a_scenario_without_a_common_seed_is_named_not_judged() -> None:
    # The model ran seeds 11-20, DualPI2 seeds 1-10 on "b": nothing to pair there (this
    # divided by zero before).
    rng = random.Random(9)
    rows = _rows("a", "dualpi2", _noisy(rng)) + _rows(
        "a", "llm", _noisy(rng, {"c_p99_ms": -15.0}))
    rows += _rows("b", "dualpi2", _noisy(rng))
    rows += [{**r, "seed": r["seed"] + 10} for r in _rows("b", "llm", _noisy(rng))]
    assert {r["scenario"] for r in gate_details(rows)} == {"a"}
    assert gate(rows) == ["b: no paired runs of the model and dualpi2"]


def _suite(rng: random.Random, effect: dict[str, float] | None, scenarios: int = 17,
           seeds: int = 10) -> list[dict]:
    rows: list[dict] = []
    for i in range(scenarios):
        rows += _rows(f"s{i}", "dualpi2", _noisy(rng, n=seeds))
        rows += _rows(f"s{i}", "llm", _noisy(rng, effect if i == 0 else None, n=seeds))
    return rows


def test_a_model_with_no_effect_passes_at_most_alpha_of_the_time() -> None:
    # The model only re-draws DualPI2's noise on 17 scenarios x 10 seeds; 1000 suites.
    rng = random.Random(5)
    trials = 1000
    passed = sum(not gate(_suite(rng, None)) for _ in range(trials))
    assert passed / trials <= ALPHA


def test_a_real_gain_on_one_scenario_passes_most_of_the_time() -> None:
    rng = random.Random(6)
    trials = 100
    passed = sum(not gate(_suite(rng, {"c_p99_ms": -8.0})) for _ in range(trials))
    assert passed / trials >= 0.7  # 0.80 measured: the 68 bounds cost some power


def test_a_run_whose_verdicts_timed_out_is_not_judged() -> None:
    rng = random.Random(7)
    rows = _rows("a", "dualpi2", _noisy(rng)) + _rows(
        "a", "llm", _noisy(rng, {"c_p99_ms": -15.0}))
    rows[-1]["verdict_timeouts"] = 1
    assert gate(rows) == ["1 model run(s) had a verdict time out on the wall clock (a loaded "
                          "host): their figures depend on the load; run the closed loop alone"]


def test_the_report_has_a_table_and_a_tradeoff_plot_per_scenario(tmp_path) -> None:  # noqa: ANN001
    import json

    from aqmllm_models.closed_loop import report

    rng = random.Random(8)
    rows = []
    for s in ("a", "b"):
        for policy in ("dualpi2", "fq_codel", "llm"):
            rows += _rows(s, policy, _noisy(rng))
    (tmp_path / "results.json").write_text(json.dumps({"rows": rows}))
    report(tmp_path / "results.json", tmp_path / "out")
    text = (tmp_path / "out" / "table.md").read_text()
    assert "### a" in text and "### b" in text and "## The gate" in text
    assert "| fq_codel | 10 |" in text
    head = (tmp_path / "out" / "headline.md").read_text().splitlines()
    assert head[0].startswith("| scenario | DualPI2 best") and "| FQ-CoDel | model |" in head[0]
    assert [line.split(" | ")[0] for line in head[2:]] == ["| a", "| b"]
    for s in ("a", "b"):
        png = tmp_path / "out" / s / "tradeoff.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_headline_table_is_rebuilt_from_the_held_out_suites_results() -> None:
    import json
    from pathlib import Path

    from aqmllm_models.closed_loop import headline_table

    suite = Path(__file__).resolve().parents[1] / "sim" / "figures" / "heldout-suite"
    rows = json.loads((suite / "results.json").read_text())["rows"]
    assert headline_table(rows) == (suite / "headline.md").read_text()
