"""Recording, plots and sweeps of the ns-3 evaluation."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from aqmllm_sim.cli import cli
from aqmllm_sim.dataset import load_npz
from aqmllm_sim.runner import RunError, run
from aqmllm_sim.scenario import parse
from aqmllm_sim.sweep import sweep
from aqmllmd import features

pytestmark = pytest.mark.skipif(importlib.util.find_spec("ns3") is None,
                                reason="the ns3 wheel (sim extra) is not installed")

TINY = {"name": "tiny", "rate_mbps": 10, "duration_s": 3,
        "flows": [{"cc": "dctcp", "rtt_ms": 20}, {"cc": "cubic", "rtt_ms": 20}]}


def test_record_writes_the_documented_dataset(tmp_path: Path) -> None:
    scenario = tmp_path / "tiny.toml"
    scenario.write_text('name = "tiny"\nrate_mbps = 10\nduration_s = 3\n'
                        '[[flows]]\ncc = "dctcp"\n[[flows]]\ncc = "cubic"\n')
    out = tmp_path / "d.npz"
    r = CliRunner().invoke(cli, ["record", str(scenario), "--out", str(out), "--seeds", "1,2"])
    assert r.exit_code == 0, r.output
    cols, meta = load_npz(out)
    assert meta["schema_version"] == 2 and meta["rows"] == len(cols["seq"]) > 1000
    assert [run["seed"] for run in meta["runs"]] == [1, 2]
    # Rows and per-interval series of both runs, each saying which run it is from.
    assert np.bincount(cols["run"]).tolist() == [run["recorded"] for run in meta["runs"]]
    per_run = np.bincount(cols["ts_run"])
    assert len(per_run) == 2 and per_run.min() >= 25  # 3 s in 100 ms intervals
    for name in ("ts_link_mbps", "ts_capacity_mbps", "ts_marks_l", "ts_drops_c"):
        assert len(cols[name]) == len(cols["ts_run"]), name
    assert set(np.unique(cols["action"])) <= {0, 1, 2}
    assert (cols["packet_sojourn_ns"] >= 0).all() and (cols["dequeue_ns"] >= cols["ts_ns"]).all()
    assert set(np.unique(cols["queue"])) == {0, 1}
    assert (cols["queue"] == np.isin(cols["ecn"], [1, 3])).all()
    assert "ts_tput_mbps_0" in cols
    # The shared feature pipeline takes the recorded states as they are.
    from aqm_bridge.abi import STATE_DTYPE
    states = np.zeros(len(cols["seq"]), STATE_DTYPE)
    for name in STATE_DTYPE.names:
        states[name] = cols[name]
    assert features.compute(states).shape == (len(states), features.N_FEATURES)


def test_recording_is_refused_for_other_policies(tmp_path: Path) -> None:
    with pytest.raises(RunError, match="core's policies"):
        run(parse(TINY), "fifo", record=tmp_path / "x.bin")


def test_a_run_with_out_dir_writes_series_and_plots(tmp_path: Path) -> None:
    run(parse(TINY), "dualpi2", tmp_path / "run")
    for name in ("result.json", "timeseries.csv", "sojourns.bin", "sojourn_cdf.png",
                 "throughput.png", "cwnd.png"):
        assert (tmp_path / "run" / name).stat().st_size > 0, name
    ts = np.genfromtxt(tmp_path / "run" / "timeseries.csv", delimiter=",", names=True)
    assert len(ts) >= 25 and ts["tput_mbps_0"].max() > 0


def test_sweep_runs_everything_in_parallel(tmp_path: Path) -> None:
    a, b = parse(TINY), parse({**TINY, "name": "tiny2", "rate_mbps": 5})
    results = sweep([a, b], ["dualpi2", "fifo"], jobs=2, out=tmp_path)
    assert [(r["scenario"], r["policy"]) for r in results] == [
        ("tiny", "dualpi2"), ("tiny", "fifo"), ("tiny2", "dualpi2"), ("tiny2", "fifo")]
    assert (tmp_path / "tiny2" / "fifo" / "result.json").is_file()


def test_recording_under_the_model_in_the_loop(tmp_path: Path) -> None:
    from aqmllm_sim.dataset import load_rows

    r = run(parse({**TINY, "dualpi2": {"verdict_guard": "none", "harm_budget_pct": "off"}}),
            "llm",
            record=tmp_path / "rows.bin")
    rows = load_rows(tmp_path / "rows.bin")
    assert r["recorded"] == len(rows) > 1000
    assert (rows["source"] == 1).mean() > 0.99  # the model decided them


def test_compare_and_sweep_write_their_tables_and_figures(tmp_path: Path) -> None:
    scenario = tmp_path / "tiny.toml"
    scenario.write_text('name = "tiny"\nrate_mbps = 10\nduration_s = 2\n'
                        '[[flows]]\ncc = "dctcp"\n[[flows]]\ncc = "cubic"\n')
    r = CliRunner().invoke(cli, ["compare", str(scenario), "--policies", "dualpi2,fifo",
                                 "--out", str(tmp_path / "cmp")])
    assert r.exit_code == 0, r.output
    lines = r.output.strip().splitlines()
    assert lines[0].split()[:3] == ["policy", "util", "jain"]
    assert [line.split()[0] for line in lines[1:]] == ["dualpi2", "fifo"]
    for name in ("sojourn_cdf.png", "compare.json", "dualpi2/result.json", "fifo/cwnd.png"):
        assert (tmp_path / "cmp" / name).stat().st_size > 0, name
    r = CliRunner().invoke(cli, ["sweep", str(scenario), "--policies", "dualpi2,fifo",
                                 "--jobs", "2", "--out", str(tmp_path / "sw")])
    assert r.exit_code == 0, r.output
    assert (tmp_path / "sw" / "sweep.png").stat().st_size > 0
    r = CliRunner().invoke(cli, ["compare", str(scenario), "--policies", "dualpi2,wred"])
    assert r.exit_code != 0 and "unknown policies ['wred']" in r.output


def test_the_cli_refuses_a_bad_scenario_naming_the_field(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('[[flows]]\ncc = "cubic"\nrtt_ms = 0\n')
    r = CliRunner().invoke(cli, ["run", str(bad)])
    assert r.exit_code != 0 and "flows[0].rtt_ms: 0 is outside [2, 2000]" in r.output
    bad.write_text('trace = "nowhere.mahimahi"\n[[flows]]\ncc = "cubic"\n')
    r = CliRunner().invoke(cli, ["run", str(bad)])
    assert r.exit_code != 0 and "trace: cannot read trace" in r.output
