"""The best-DualPI2-per-link search: the choice rule and the scenario file it writes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from aqmllm_sim.scenario import LINUX_STEP, load, parse
from aqmllm_sim.tune import CANDIDATES, TUNING_SEEDS, choose, write_step


def _rows(label: str, util: float, jain: float, l99: float, c99: float) -> list[dict[str, Any]]:
    return [{"scenario": "s", "path": "s.toml", "candidate": label, "seed": seed,
             "utilisation": util, "jain": jain, "l_p99_ms": l99, "c_p99_ms": c99}
            for seed in (1, 2)]


def test_the_best_eligible_candidate_wins_and_ties_keep_linux() -> None:
    base = _rows("1ms", 0.80, 0.70, 5.0, 50.0)
    better = _rows("2pkt", 0.90, 0.95, 6.0, 52.0)
    too_slow = _rows("4pkt", 0.99, 0.99, 30.0, 50.0)  # L p99 over 1.5 x 5 + 2
    assert choose(base + better + too_slow)["s"]["chosen"] == "2pkt"
    assert choose(base + too_slow)["s"]["chosen"] == "1ms"
    tie = _rows("1pkt", 0.802, 0.701, 5.0, 50.0)  # better by less than TIE
    assert choose(base + tie)["s"]["chosen"] == "1ms"
    classic_worse = _rows("2pkt", 0.90, 0.95, 6.0, 80.0)  # C p99 over 1.5 x 50 + 2
    assert choose(base + classic_worse)["s"]["chosen"] == "1ms"
    emptier = _rows("2pkt", 0.77, 0.99, 5.0, 50.0)  # utilisation 0.03 below the default's
    assert choose(base + emptier)["s"]["chosen"] == "1ms"


def test_candidates_start_with_linux_and_tuning_seeds_are_not_comparison_seeds() -> None:
    assert CANDIDATES[0][1] == LINUX_STEP
    assert not set(TUNING_SEEDS) & set(range(1, 41)) and not set(TUNING_SEEDS) & set(
        range(101, 111))


def test_write_step_fills_the_dualpi2_table(tmp_path: Path) -> None:
    p = tmp_path / "s.toml"
    p.write_text('name = "s"\n\n[[flows]]\ncc = "dctcp"\n')
    write_step(p, {"step_threshold_us": 1000, "step_thresh_pkts": 2, "min_qlen_step": 0},
               "best: test")
    assert load(p).step_thresh_pkts == 2
    # Again, over an existing table with another key: replaced, the other key kept.
    p.write_text('name = "s"\n\n[dualpi2]\ntarget_us = 20000\nstep_thresh_pkts = 4\n\n'
                 '[[flows]]\ncc = "dctcp"\n')
    write_step(p, {"step_threshold_us": 1000, "step_thresh_pkts": 1, "min_qlen_step": 2},
               "best: test")
    sc = load(p)
    assert (sc.step_thresh_pkts, sc.min_qlen_step, sc.target_us) == (1, 2, 20000)
    write_step(p, {"step_threshold_us": 1000, "step_thresh_pkts": 1, "min_qlen_step": 2},
               "best: test")
    assert p.read_text().count("best: test") == 1


def test_dualpi2_default_ignores_the_scenarios_step() -> None:
    sc = parse({"flows": [{"cc": "dctcp"}], "dualpi2": {"step_thresh_pkts": 2,
                                                        "min_qlen_step": 3}})
    assert "step_thresh_pkts 2" in sc.flat("dualpi2").splitlines()
    flat = sc.flat("dualpi2-default").splitlines()
    assert "policy dualpi2" in flat
    assert {"step_thresh_pkts 0", "min_qlen_step 0", "step_threshold_us 1000"} <= set(flat)


def test_dualpi2_gain2_doubles_the_pi_gains_and_keeps_the_scenarios_step() -> None:
    sc = parse({"flows": [{"cc": "dctcp"}], "dualpi2": {"step_thresh_pkts": 2}})
    flat = sc.flat("dualpi2-gain2").splitlines()
    assert "policy dualpi2" in flat and "pi_gain_pct 200" in flat
    assert "step_thresh_pkts 2" in flat
    assert not any(line.startswith("pi_gain_pct") for line in sc.flat("dualpi2").splitlines())


def test_doubled_pi_gains_hold_a_shorter_classic_queue_on_ns3() -> None:
    """The PI answers a standing classic queue twice as hard, so CUBIC backs off sooner
    (over the run it may see fewer signals in all) and the classic tail is shorter."""
    import dataclasses
    import importlib.util

    import pytest

    if importlib.util.find_spec("ns3") is None:
        pytest.skip("the ns3 wheel (sim extra) is not installed")
    from aqm_bridge._ffi import REPO_ROOT
    from aqmllm_sim.runner import run

    sc = dataclasses.replace(
        load(REPO_ROOT / "sim" / "scenarios" / "held-out" / "rate-30m-rtt-40ms.toml"),
        seed=101, duration_s=6.0)
    plain, gain2 = run(sc, "dualpi2"), run(sc, "dualpi2-gain2")
    assert gain2["policy"] == "dualpi2-gain2"

    assert gain2["sojourn_ms_c"]["p99"] < 0.8 * plain["sojourn_ms_c"]["p99"]
