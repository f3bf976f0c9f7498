"""Behaviour policies for recording, the `make model` pipeline and the closed-loop table."""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from aqmllmd.features import N_FEATURES

pytestmark = pytest.mark.skipif(
    any(importlib.util.find_spec(m) is None for m in ("torch", "transformers", "peft", "ns3")),
    reason="needs the train and sim extras")

SCENARIO = ('name = "tiny"\nrate_mbps = 10\nduration_s = 2\n'
            '[[flows]]\ncc = "dctcp"\nrtt_ms = 20\n[[flows]]\ncc = "cubic"\nrtt_ms = 20\n')


@pytest.fixture
def scenario(tmp_path: Path) -> Path:
    p = tmp_path / "tiny.toml"
    p.write_text(SCENARIO)
    return p


def _record(scenario: Path, out: Path, *args: str):  # noqa: ANN202
    from aqmllm_sim.cli import cli as sim_cli
    from aqmllm_sim.dataset import load_npz

    r = CliRunner().invoke(sim_cli, ["record", str(scenario), "--out", str(out), *args])
    assert r.exit_code == 0, r.output
    return load_npz(out)


def test_pie_behaviour_decides_every_packet_by_verdict(scenario: Path, tmp_path: Path) -> None:
    cols, meta = _record(scenario, tmp_path / "pie.npz", "--policy", "pie")
    assert meta["behaviour_policy"] == "pie"
    assert (cols["source"] == 1).all()  # every decision came through the verdict path
    assert (cols["action"] == 1).any()  # PIE drops (CUBIC's startup overshoots)
    assert not ((cols["action"] == 1) & (cols["queue"] == 1)).any()  # L4S: marks only


def test_explore_behaviour_randomises_a_share(scenario: Path, tmp_path: Path) -> None:
    # (seed 1 happens to drop CUBIC's SYN, whose retry comes after the run ends)
    cols, meta = _record(scenario, tmp_path / "ex.npz", "--policy", "explore",
                         "--explore-rate", "0.05", "--seeds", "2")
    assert meta["explore_rate"] == 0.05
    classic = cols["queue"] == 0
    share = (cols["source"][classic] == 1).mean()
    assert 0.02 < share < 0.1, share  # the rest is DualPI2's
    assert not (cols["source"][~classic] == 1).any()  # L4S packets are never explored
    explored = cols["action"][cols["source"] == 1]
    assert len(np.unique(explored)) >= 2


def test_dualpi2_parameters_vary_per_recording(scenario: Path, tmp_path: Path) -> None:
    _, meta = _record(scenario, tmp_path / "d.npz", "--target-us", "5000",
                      "--step-threshold-us", "500", "--duration-s", "1")
    assert meta["dualpi2"] == {"target_us": 5000, "step_threshold_us": 500}


def test_interval_returns_are_relative_to_dualpi2_in_the_same_scenario_and_seed(
        scenario: Path, tmp_path: Path) -> None:
    from aqmllm_models.data import load

    _, meta = _record(scenario, tmp_path / "d.npz")
    assert meta["dualpi2_default"]
    _, meta = _record(scenario, tmp_path / "t.npz", "--target-us", "5000")
    assert not meta["dualpi2_default"]  # other parameters: not the baseline
    _record(scenario, tmp_path / "pie.npz", "--policy", "pie")
    steps = load(tmp_path / "d.npz", tmp_path / "pie.npz", returns="interval")
    own = steps.run_starts[1]
    assert not steps.returns[:own].any()  # DualPI2 against itself
    assert steps.returns[own:].std() > 0
    for lonely in ("pie.npz", "t.npz"):
        with pytest.raises(ValueError, match="no DualPI2 recording of scenario 'tiny', seed 1"):
            load(tmp_path / lonely, returns="interval")
    with pytest.raises(ValueError, match="not one of packet, interval"):
        load(tmp_path / "d.npz", returns="weekly")


@pytest.mark.parametrize("args, message", [
    (["--explore-rate", "2", "--policy", "explore"], "explore rate"),
    (["--target-us", "0"], "--target-us"),
    (["--duration-s", "-1"], "--duration-s"),
])
def test_bad_recording_options_are_refused(scenario: Path, tmp_path: Path, args: list[str],
                                           message: str) -> None:
    from aqmllm_sim.cli import cli as sim_cli

    r = CliRunner().invoke(sim_cli, ["record", str(scenario), "--out",
                                     str(tmp_path / "x.npz"), *args])
    assert r.exit_code != 0 and message in r.output
    assert not (tmp_path / "x.npz").exists()


def _tiny_recipe(scenario: Path, tmp_path: Path) -> Path:
    from aqmllmd.default_model import DEFAULT_MODEL

    recipe = tmp_path / "recipe.toml"
    recipe.write_text(f'''
[record]
seeds = "1"
[[record.jobs]]
scenario = "{scenario}"
[[record.jobs]]
scenario = "{scenario}"
policy = "pie"
[[record.jobs]]
scenario = "{scenario}"
policy = "llm"
model = "{DEFAULT_MODEL}"
[teacher]
max_steps = 4
batch = 8
returns = "interval"
[distill]
max_windows = 300
epochs = 2
[dagger]
rounds = 1
scenarios = ["{scenario}"]
max_visited = 200
epochs = 2
[evaluate]
baselines = "dualpi2"
scenarios = ["{scenario}"]
''')
    return recipe


def test_pipeline_makes_a_model_and_its_card(scenario: Path, tmp_path: Path) -> None:
    from aqmllm_models.cli import cli

    recipe = _tiny_recipe(scenario, tmp_path)
    out, work = tmp_path / "default", tmp_path / "work"
    args = ["pipeline", str(recipe), "--out", str(out), "--work", str(work), "--tiny"]
    r = CliRunner().invoke(cli, args)
    assert r.exit_code == 0, r.output
    from aqmllmd.model import load

    assert load(out / "model.onnx").run(np.zeros((2, N_FEATURES), np.float32)).shape == (2, 3)
    card = (out / "README.md").read_text()
    assert card.startswith("---\nlicense:") and "base_model:" in card
    assert "| tiny | model |" in card and "| tiny | dualpi2 |" in card
    assert "aqmllm_models.cli teacher" in card and "--policy pie" in card
    assert "--returns interval" in card and "--model " in card
    assert json.loads((work / "teacher" / "train.json").read_text())["returns"] == "interval"
    results = json.loads((out / "closed-loop-results.json").read_text())
    assert {r["policy"] for r in results["rows"]} == {"dualpi2", "llm"}
    assert (out / "closed-loop-summary.png").stat().st_size > 0
    assert "### Promotion gate" in card
    # A second run finds every stage done and only re-exports and re-evaluates.
    r = CliRunner().invoke(cli, args)
    assert r.exit_code == 0 and "[teacher] up to date" in r.output
    assert "[distill] up to date" in r.output and "[dagger] up to date" in r.output
    # A changed student shape distils again, and so runs every stage after it; the
    # teacher before it is kept.
    recipe.write_text(recipe.read_text().replace("epochs = 2\n[dagger]",
                                                 "epochs = 2\nguard = \"step\"\n[dagger]"))
    r = CliRunner().invoke(cli, args)
    assert r.exit_code == 0 and "[teacher] up to date" in r.output
    assert "[distill] up to date" not in r.output and "[dagger] up to date" not in r.output
    assert json.loads((work / "student" / "student.json").read_text())["guard"] == "step"


def test_backbone_ablation_in_closed_loop_shares_recordings_and_resumes(
        scenario: Path, tmp_path: Path) -> None:
    """`ablation-closed-loop`: one set of recordings, a pipeline per backbone kind, each
    student judged by the gate; a finished run is not run again."""
    from aqmllm_models.cli import cli

    recipe = _tiny_recipe(scenario, tmp_path)
    data, out = tmp_path / "data", tmp_path / "abl"
    args = ["ablation-closed-loop", str(recipe), "--kinds", "gru,constant", "--seeds", "0",
            "--data", str(data), "--out", str(out), "--tiny"]
    r = CliRunner().invoke(cli, args)
    assert r.exit_code == 0, r.output
    assert sorted(p.name for p in data.glob("data-*.npz")) == [
        "data-0-dualpi2.npz", "data-1-pie.npz", "data-2-llm.npz"]
    for kind in ("gru", "constant"):
        run = out / f"{kind}-seed0"
        assert json.loads((run / "teacher" / "train.json").read_text())["kind"] == kind
        assert not list(run.glob("data-*.npz"))  # the shared recordings only
        assert (run / "model" / "closed-loop-results.json").is_file()
    results = json.loads((out / "results.json").read_text())["columns"]
    assert set(results) == {"gru s0", "constant s0"}
    for col in results.values():
        assert isinstance(col["gate_failures"], list) and col["details"]
        assert col["teacher_seconds"]["teacher"] > 0
    table = (out / "table.md").read_text()
    assert "| tiny | utilisation |" in table and "**gate failures**" in table
    # Another model's results as a column: its own rows, judged the same way.
    other = out / "gru-seed0" / "model" / "closed-loop-results.json"
    r = CliRunner().invoke(cli, [*args, "--kinds", "gru", "--compare", f"again={other}"])
    assert r.exit_code == 0, r.output
    assert "up to date" in r.output and "[teacher]" not in r.output
    again = json.loads((out / "results.json").read_text())["columns"]
    assert again["again"]["details"] == again["gru s0"]["details"]
    r = CliRunner().invoke(cli, [*args, "--kinds", "lstm"])
    assert r.exit_code == 2 and "lstm" in r.output
    # More teacher steps than the recipe's: a run of its own, the rest unchanged.
    r = CliRunner().invoke(cli, [*args, "--kinds", "gru", "--teacher-steps", "3"])
    assert r.exit_code == 0, r.output
    longer = out / "gru-seed0-steps3"
    assert json.loads((longer / "teacher" / "train.json").read_text())["steps"] == 3
    assert set(json.loads((out / "results.json").read_text())["columns"]) == {
        "gru s0 3 steps"}


def test_the_sealed_set_judges_a_recipe_once_on_two_rebuilds(scenario: Path,
                                                             tmp_path: Path) -> None:
    from aqmllm_models.cli import cli
    from aqmllm_models.recipe import DAEMON_DEFAULT
    from aqmllmd.default_model import DEFAULT_MODEL, STUDENT_MODEL

    recipe = _tiny_recipe(scenario, tmp_path)
    sealed = tmp_path / "sealed"
    sealed.mkdir()
    shutil.copy(scenario, sealed / "tiny.toml")
    ledger = tmp_path / "LEDGER.json"
    common = ["--out", str(tmp_path / "o"), "--seeds", "1,2", "--baselines", "dualpi2",
              "--scenarios", str(sealed), "--ledger", str(ledger), "--install"]
    before = DAEMON_DEFAULT.read_bytes()
    r = CliRunner().invoke(cli, ["sealed-test", str(recipe), str(STUDENT_MODEL), *common])
    assert r.exit_code == 2 and "or more independent rebuilds" in r.output
    # A rebuild that differs only in its metadata (another work directory) is one model.
    import onnx

    twin = onnx.load(str(STUDENT_MODEL))
    onnx.helper.set_model_props(twin, {"aqmllm.description": "built in build/elsewhere"})
    onnx.save(twin, str(tmp_path / "twin.onnx"))
    assert (tmp_path / "twin.onnx").read_bytes() != STUDENT_MODEL.read_bytes()
    r = CliRunner().invoke(cli, ["sealed-test", str(recipe), str(STUDENT_MODEL),
                                 str(tmp_path / "twin.onnx"), *common])
    assert r.exit_code == 2 and "same model" in r.output
    assert not ledger.exists()  # a refused call uses no turn
    r = CliRunner().invoke(cli, ["sealed-test", str(recipe), str(STUDENT_MODEL),
                                 str(DEFAULT_MODEL), *common])
    assert r.exit_code == 0, r.output
    entry, = json.loads(ledger.read_text())
    assert entry["status"] == "failed the gate"  # two seeds: the gate needs five
    assert all(m["gate_failures"] for m in entry["models"])
    assert DAEMON_DEFAULT.read_bytes() == before  # failed: nothing installed
    assert "### Rebuild 1" in (tmp_path / "o" / "table.md").read_text()
    r = CliRunner().invoke(cli, ["sealed-test", str(recipe), str(STUDENT_MODEL),
                                 str(DEFAULT_MODEL), *common])
    assert r.exit_code == 1 and "already judged this recipe" in r.output
    # A changed recipe is a new one: it gets its own turn, recorded beside the first.
    recipe.write_text(recipe.read_text() + "# frozen again\n")
    ledger_text = ledger.read_text()
    ledger.write_text(ledger_text.replace('"status": "failed the gate"', '"status": "started"'))
    r = CliRunner().invoke(cli, ["sealed-test", str(recipe), str(STUDENT_MODEL),
                                 str(DEFAULT_MODEL), *common[:-1], "--seeds", "1"])
    assert r.exit_code == 0, r.output
    assert len(json.loads(ledger.read_text())) == 2


@pytest.mark.parametrize("text, message", [
    ("[record]\n", "missing [teacher]"),
    ('[record]\n[[record.jobs]]\nscenario = "x"\nspeed = 1\n[teacher]\n[distill]\n'
     '[dagger]\n[evaluate]\n', "unknown ['speed']"),
    ("[record\n", "recipe.toml"),
    ("[record]\n[teacher]\n[distill]\n[dagger]\n[evaluate]\n", "lists a recording"),
    ('[record.generate]\nseed = 1\ncount = 0\npolicies = [{policy = "pie"}]\n[teacher]\n'
     '[distill]\n[dagger]\n[evaluate]\n', "count must be 1-200"),
    ('[record.generate]\nseed = 1\ncount = 2\npolicies = [{scenario = "x"}]\n[teacher]\n'
     '[distill]\n[dagger]\n[evaluate]\n', "without a scenario"),
    ('[record]\n[[record.jobs]]\nscenario = "x"\n[teacher]\nkind = "lstm"\n[distill]\n'
     '[dagger]\n[evaluate]\n', "'lstm' is not one of"),
])
def test_bad_recipes_are_refused(tmp_path: Path, text: str, message: str) -> None:
    from aqmllm_models.cli import cli

    (tmp_path / "recipe.toml").write_text(text)
    r = CliRunner().invoke(cli, ["pipeline", str(tmp_path / "recipe.toml"), "--out",
                                 str(tmp_path / "o"), "--work", str(tmp_path / "w")])
    assert r.exit_code != 0 and message in r.output


def test_generated_scenarios_are_recorded_under_each_policy(tmp_path: Path) -> None:
    """[record.generate] writes its scenarios with `aqmllm-sim generate` into the work
    directory (once: a second run finds them) and records each under every policy."""
    import sys

    from aqmllm_models.recipe import Pipeline

    recipe = tmp_path / "recipe.toml"
    recipe.write_text('[record]\nseeds = "1"\n[record.generate]\nseed = 7\ncount = 3\n'
                      'policies = [{policy = "dualpi2"}, {policy = "explore", '
                      'explore_rate = 0.05}]\n[teacher]\n[distill]\n[dagger]\n[evaluate]\n')
    lines: list[str] = []
    pipe = Pipeline(recipe, tmp_path / "o", tmp_path / "w", echo=lines.append)
    pipe.work.mkdir()
    sim = [sys.executable, "-m", "aqmllm_sim.cli"]
    jobs = pipe._record_jobs(sim)
    assert [j["policy"] for j in jobs] == ["dualpi2", "explore"] * 3
    scenarios = sorted({j["scenario"] for j in jobs})
    assert len(scenarios) == 3 and all(Path(s).is_file() for s in scenarios)
    assert all(Path(s).parent == tmp_path / "w" / "generated-7-3" for s in scenarios)
    assert jobs[1]["explore_rate"] == 0.05
    again = Pipeline(recipe, tmp_path / "o", tmp_path / "w", echo=lines.append)
    assert again._record_jobs(sim) == jobs
    assert any(line.startswith("[generate] up to date") for line in lines)


def test_closed_loop_refuses_unknown_baselines(scenario: Path, tmp_path: Path) -> None:
    from aqmllm_models.cli import cli
    from aqmllmd.default_model import DEFAULT_MODEL

    r = CliRunner().invoke(cli, ["closed-loop", str(DEFAULT_MODEL), str(scenario),
                                 "--policies", "dualpi2,bogus", "--out", str(tmp_path / "o")])
    assert r.exit_code != 0 and "bogus" in r.output


def _row(scenario: str, policy: str, util: float, jain: float, l99: float, c99: float) -> dict:
    return {"scenario": scenario, "policy": policy, "seed": 1, "utilisation": util,
            "jain": jain, "l_p99_ms": l99, "c_p99_ms": c99, "loss": 0.0}


# The promotion gate's own tests are in tests/test_gate.py.


def test_paired_rows_compare_the_model_with_dualpi2_seed_by_seed() -> None:
    from aqmllm_models.closed_loop import paired_rows, paired_table

    rows = []
    for seed, (base, model) in enumerate([(10.0, 8.0), (20.0, 19.0), (5.0, 6.0)], start=1):
        rows += [{**_row("a", "dualpi2", 0.9, 0.9, 1.0, base), "seed": seed},
                 {**_row("a", "llm", 0.9 + seed / 100, 0.9, 1.0, model), "seed": seed},
                 {**_row("a", "pie", 0.5, 0.5, 9.0, 9.0), "seed": seed}]
    by = {r["figure"]: r for r in paired_rows(rows)}
    assert set(by) == {"utilisation", "jain", "l_p99_ms", "c_p99_ms"}  # PIE is not paired
    c = by["c_p99_ms"]
    assert c["seeds"] == 3 and c["model_better"] == 2  # lower is better for a p99
    assert c["mean_difference"] == pytest.approx(-2 / 3)
    assert c["standard_error"] == pytest.approx(np.std([-2, -1, 1], ddof=1) / np.sqrt(3))
    assert by["utilisation"]["model_better"] == 3  # higher is better
    assert by["l_p99_ms"]["model_better"] == 0  # a tie is no win
    assert "| a | c_p99_ms | -0.667 ± 0.882 | 2 of 3 |" in paired_table(rows)


def test_a_model_run_whose_verdicts_timed_out_is_run_again(
        scenario: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Its figures depend on the host's load at that moment; a run without a time out
    is the same every time, so the closed loop keeps the first such run."""
    import aqmllm_sim.runner
    from aqmllm_models import closed_loop
    from aqmllmd.default_model import DEFAULT_MODEL

    timeouts = iter([2, 1, 0, 3, 3, 3])  # seed 1: third try; seed 2: never

    def run(sc, policy: str, out: Path, **_: object) -> dict:  # noqa: ANN001
        late = next(timeouts)
        return {"scenario": sc.name, "policy": policy, "utilisation": 0.9, "jain": 0.9,
                "sojourn_ms_l": {"p99": 1.0}, "sojourn_ms_c": {"p99": 10.0 + late},
                "queue_disc": {"sent": 100, "dropped": 0}, "decisions_model": 100,
                "decisions_fallback": late, "verdict_timeouts": late}

    monkeypatch.setattr(aqmllm_sim.runner, "run", run)
    monkeypatch.setattr(closed_loop, "_figures", lambda *a, **k: None)
    rows = closed_loop.evaluate_closed_loop(DEFAULT_MODEL, [scenario], [], [1, 2], tmp_path)
    assert [(r["seed"], r["verdict_timeouts"], r["c_p99_ms"]) for r in rows] == [
        (1, 0, 10.0), (2, 3, 13.0)]
    assert closed_loop.timed_out_runs(rows) == 1
    assert "1 of 2 model runs had a verdict time out" in (tmp_path / "table.md").read_text()


def test_baseline_rows_of_an_earlier_evaluation_are_reused_not_run(
        scenario: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import aqmllm_sim.runner
    from aqmllm_models import closed_loop
    from aqmllmd.default_model import STUDENT_MODEL

    ran: list[tuple[str, int]] = []

    def run(sc, policy: str, out: Path, **_: object) -> dict:  # noqa: ANN001
        ran.append((policy, sc.seed))
        return {"scenario": sc.name, "policy": policy, "utilisation": 0.9, "jain": 0.9,
                "sojourn_ms_l": {"p99": 1.0}, "sojourn_ms_c": {"p99": 10.0},
                "queue_disc": {"sent": 100, "dropped": 0}, "decisions_model": 100,
                "decisions_fallback": 0, "verdict_timeouts": 0}

    monkeypatch.setattr(aqmllm_sim.runner, "run", run)
    monkeypatch.setattr(closed_loop, "_figures", lambda *a, **k: None)
    earlier = [{**_row("tiny", "dualpi2", 0.8, 0.7, 2.0, 20.0), "seed": s} for s in (1, 2)]
    earlier += [{**_row("tiny", "llm", 0.1, 0.1, 9.0, 90.0), "seed": 1},  # never reused
                {**_row("other", "dualpi2", 0.1, 0.1, 9.0, 90.0), "seed": 1}]
    rows = closed_loop.evaluate_closed_loop(STUDENT_MODEL, [scenario], ["dualpi2"], [1, 2],
                                            tmp_path, jobs=1, reuse=earlier)
    assert ran == [("llm", 1), ("llm", 2)]
    assert sorted((r["policy"], r["seed"], r["utilisation"]) for r in rows) == [
        ("dualpi2", 1, 0.8), ("dualpi2", 2, 0.8), ("llm", 1, 0.9), ("llm", 2, 0.9)]
