"""`make model`: record, train, distil, DAgger, export, evaluate, write the model card.

Each stage runs the public command (aqmllm-sim, aqmllm-train) in a child process, so the
card's list of commands is exactly what produced the model, and a stage whose output is
already in the work directory is not run again (a killed run resumes; the teacher
resumes from its checkpoint).
"""

from __future__ import annotations

import json
import shlex
import shutil
import subprocess
import sys
import time
import tomllib
from pathlib import Path
from typing import Any

from .backbones import check_kind

REPO = Path(__file__).resolve().parents[2]
DAEMON_DEFAULT = REPO / "daemon" / "aqmllmd" / "default_model" / "default.onnx"
#: Where the student ships, opt-in (`aqmllmctl set-model`), whatever the gate says.
DAEMON_STUDENT = REPO / "daemon" / "aqmllmd" / "default_model" / "student.onnx"
_RECORD_KEYS = {"scenario", "policy", "explore_rate", "target_us", "step_threshold_us",
                "duration_s", "seeds", "model"}
_GENERATE_KEYS = {"seed", "count", "policies"}
#: Scenarios a recipe may generate (each is recorded once per policy).
MAX_GENERATED = 200


class RecipeError(ValueError):
    pass


def load_recipe(path: Path) -> dict[str, Any]:
    try:
        recipe = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as e:
        raise RecipeError(f"{path}: {e}") from e
    for section in ("record", "teacher", "distill", "dagger", "evaluate"):
        if not isinstance(recipe.get(section), dict):
            raise RecipeError(f"{path}: missing [{section}]")
    jobs = recipe["record"].get("jobs", [])
    gen = recipe["record"].get("generate")
    if not isinstance(jobs, list) or not (jobs or gen):
        raise RecipeError(f"{path}: neither [[record.jobs]] nor [record.generate] lists a "
                          "recording")
    for i, job in enumerate(jobs):
        unknown = set(job) - _RECORD_KEYS
        if unknown or "scenario" not in job:
            raise RecipeError(f"{path}: record.jobs[{i}]: unknown {sorted(unknown)} or no "
                              "scenario")
    if gen is not None:
        _check_generate(path, gen)
    try:
        check_kind(recipe["teacher"].get("kind", "pretrained"))
    except ValueError as e:
        raise RecipeError(f"{path}: teacher: {e}") from e
    seed = recipe["teacher"].get("seed", 0)
    if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
        raise RecipeError(f"{path}: teacher.seed must be an integer >= 0")
    return recipe


def _check_generate(path: Path, gen: Any) -> None:
    """[record.generate]: seed, count and the policies each generated scenario is recorded
    under (record.jobs entries without a scenario)."""
    if not isinstance(gen, dict) or set(gen) - _GENERATE_KEYS:
        raise RecipeError(f"{path}: [record.generate] takes {sorted(_GENERATE_KEYS)}")
    seed, count = gen.get("seed"), gen.get("count")
    if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
        raise RecipeError(f"{path}: record.generate.seed must be an integer >= 0")
    if not isinstance(count, int) or isinstance(count, bool) or not 1 <= count <= MAX_GENERATED:
        raise RecipeError(f"{path}: record.generate.count must be 1-{MAX_GENERATED}")
    policies = gen.get("policies")
    if not isinstance(policies, list) or not policies:
        raise RecipeError(f"{path}: record.generate.policies lists no policy")
    for i, tpl in enumerate(policies):
        if not isinstance(tpl, dict) or "scenario" in tpl or set(tpl) - _RECORD_KEYS:
            raise RecipeError(f"{path}: record.generate.policies[{i}]: a record.jobs entry "
                              "without a scenario")


class Pipeline:
    def __init__(self, recipe_path: Path, out: Path, work: Path, tiny: bool = False,
                 install: bool = False, force_install: bool = False,
                 echo: Any = print, until_export: bool = False, data: Path | None = None,
                 teacher: dict[str, Any] | None = None,
                 evaluate: dict[str, Any] | None = None) -> None:
        self.recipe = load_recipe(recipe_path)
        if teacher:  # the ablation's overrides of [teacher] (kind, seed)
            self.recipe["teacher"] = {**self.recipe["teacher"], **teacher}
        if evaluate:  # ... and of [evaluate] (seeds)
            self.recipe["evaluate"] = {**self.recipe["evaluate"], **evaluate}
        self.recipe_path = recipe_path
        self.out, self.work, self.tiny, self.install = out, work, tiny, install
        #: Where the recordings (and generated scenarios) live: several teachers can
        #: share one set of recordings.
        self.data = data or work
        self.force_install = force_install
        #: Stop once the model is exported and judged offline (no closed loop, no card).
        self.until_export = until_export
        self.gate_failures: list[str] = []
        self.reran = False
        self.installed = False  # as aqmllmd's student.onnx
        self.installed_default = False
        self.echo = echo
        self.commands: list[str] = []
        self.seconds: dict[str, float] = {}

    def _run(self, stage: str, args: list[str], done: Path, ledger: Path | None = None) -> str:
        """Run one stage, or skip it if `done` exists from the same command and nothing
        before it ran again (each stage reads what the earlier ones wrote). The commands
        that made each output are kept in LEDGER/stage-commands.json (the work
        directory's unless given)."""
        cmd = [str(a) for a in args]
        shown = " ".join(shlex.quote(_rel(a)) for a in cmd)
        self.commands.append(shown)
        made_by = (ledger or self.work) / "stage-commands.json"
        commands = json.loads(made_by.read_text()) if made_by.is_file() else {}
        if done.exists() and not self.reran and commands.get(str(done)) == shown:
            self.echo(f"[{stage}] up to date: {_rel(str(done))}")
            return ""
        self.reran = True
        self.echo(f"[{stage}] {shown}")
        t0 = time.perf_counter()
        r = subprocess.run(cmd, stdout=subprocess.PIPE, text=True, cwd=REPO)
        self.seconds[stage] = self.seconds.get(stage, 0) + time.perf_counter() - t0
        times = self.work / "stage-seconds.json"
        kept = json.loads(times.read_text()) if times.is_file() else {}
        kept[stage] = self.seconds[stage]
        times.write_text(json.dumps(kept))
        if r.returncode != 0:
            raise RuntimeError(f"stage {stage} failed ({r.returncode}): {shown}")
        made_by.write_text(json.dumps({**commands, str(done): shown}, indent=1))
        return r.stdout

    def _record_jobs(self, sim: list[str]) -> list[dict[str, Any]]:
        """[[record.jobs]], then each scenario of [record.generate] (written into the work
        directory by `aqmllm-sim generate`) under each of its policies."""
        rec = self.recipe["record"]
        jobs = list(rec.get("jobs", []))
        gen = rec.get("generate")
        if gen:
            out = self.data / f"generated-{gen['seed']}-{gen['count']}"
            self._run("generate", [*sim, "generate", "--seed", gen["seed"], "--count",
                                   gen["count"], "--out", out], out, self.data)
            scenarios = sorted(out.glob("*.toml"))
            if len(scenarios) != gen["count"]:
                raise RecipeError(f"{out}: {len(scenarios)} scenarios, want {gen['count']}")
            jobs += [{**tpl, "scenario": str(sc)} for sc in scenarios
                     for tpl in gen["policies"]]
        return jobs

    def run(self) -> Path:
        self.seconds.clear()
        self.reran = False
        rec, t, d, g, ev = (self.recipe[k] for k in ("record", "teacher", "distill", "dagger",
                                                      "evaluate"))
        self.work.mkdir(parents=True, exist_ok=True)
        self.data.mkdir(parents=True, exist_ok=True)
        sim = [sys.executable, "-m", "aqmllm_sim.cli"]
        train = [sys.executable, "-m", "aqmllm_models.cli"]
        datasets = []
        for i, job in enumerate(self._record_jobs(sim)):
            ds = self.data / f"data-{i}-{job.get('policy', 'dualpi2')}.npz"
            args = [*sim, "record", REPO / job["scenario"], "--out", ds,
                    "--seeds", job.get("seeds", rec.get("seeds", "1")),
                    "--policy", job.get("policy", "dualpi2")]
            for key in ("explore_rate", "target_us", "step_threshold_us", "duration_s"):
                if key in job:
                    args += [f"--{key.replace('_', '-')}", job[key]]
            if "model" in job:
                args += ["--model", REPO / job["model"]]
            self._run("record", args, ds, self.data)
            datasets.append(ds)
        teacher_dir = self.work / "teacher"
        bb = ["--tiny"] if self.tiny else (["--backbone", t["backbone"]] if t.get("backbone")
                                           else [])
        # The defaults (the pretrained LM, seed 0) are not spelled out, so a work directory
        # made before kinds and seeds were recipe keys stays up to date.
        kind = ["--kind", t["kind"]] if t.get("kind", "pretrained") != "pretrained" else []
        seed = ["--seed", t["seed"]] if t.get("seed", 0) else []
        self._run("teacher", [*train, "teacher", *datasets, *bb, *kind, *seed,
                              "--window", t.get("window", 8),
                              "--max-steps", t["max_steps"], "--batch", t.get("batch", 32),
                              "--lr", t.get("lr", 1e-3),
                              "--weight-power", t.get("weight_power", 1.0),
                              "--returns", t.get("returns", "packet"),
                              "--resume", "--out", teacher_dir],
                  teacher_dir / "train.json")
        student_dir = self.work / "student"
        shape = ["--prior", d.get("prior", "none"), "--step-ms", d.get("step_ms", 1.0),
                 "--teacher-weight", d.get("teacher_weight", 1.0),
                 "--guard", d.get("guard", "dualpi2"), "--queues", d.get("queues", "both")]
        self._run("distill", [*train, "distill", teacher_dir, *datasets, *bb,
                              "--max-windows", d.get("max_windows", 20000),
                              "--epochs", d.get("epochs", 20), "--hidden", d.get("hidden", 64),
                              *shape, "--out", student_dir], student_dir / "student.json")
        final_dir = student_dir
        if g.get("rounds", 0) > 0:
            final_dir = self.work / "dagger"
            scen = [a for s in g["scenarios"] for a in ("--scenario", REPO / s)]
            self._run("dagger", [*train, "dagger", teacher_dir, *datasets, *scen, *bb,
                                 "--rounds", g["rounds"],
                                 "--max-windows", d.get("max_windows", 20000),
                                 "--max-visited", g.get("max_visited", 5000),
                                 "--labels", student_dir / "labels.npz",
                                 "--epochs", g.get("epochs", 10),
                                 "--hidden", d.get("hidden", 64), *shape,
                                 "--out", final_dir],
                      final_dir / "dagger.json")
        self.out.mkdir(parents=True, exist_ok=True)
        model = self.out / "model.onnx"
        export = json.loads(self._run(
            "export", [*train, "export", final_dir, *datasets, "--out", model,
                       "--int8", self.work / "model-int8.onnx",
                       "--version", f"aqm-llm-{time.strftime('%Y%m%d')}"],
            self.work / "never") .strip().splitlines()[-1])
        offline = json.loads(self._run("evaluate", [*train, "evaluate", model, *datasets],
                                       self.work / "never"))
        if self.until_export:
            (self.out / "offline.json").write_text(json.dumps(
                {"export": export, "offline": offline, "commands": self.commands}, indent=1))
            return model
        ev_dir = self.work / "closed-loop"
        held_out = [REPO / s for s in ev.get("scenarios", [])]
        reuse = (["--baselines-from", REPO / ev["baselines_from"]]
                 if ev.get("baselines_from") else [])
        self._run("closed-loop", [*train, "closed-loop", model, *held_out, *reuse,
                                  "--policies", ev["baselines"],
                                  "--seeds", ev.get("seeds", "1"), "--out", ev_dir],
                  self.work / "never")
        for f in ("table.md", "results.json", "summary.png"):
            shutil.copy(ev_dir / f, self.out / f"closed-loop-{f}")
        from .card import write_card
        from .closed_loop import gate

        self.gate_failures = gate(json.loads((ev_dir / "results.json").read_text())["rows"])
        for why in self.gate_failures:
            self.echo(f"[gate] {why}")
        if self.install:
            shutil.copy(model, DAEMON_STUDENT)
            DAEMON_STUDENT.chmod(0o644)
            self.installed = True
            self.echo(f"installed as aqmllmd's student model: {_rel(str(DAEMON_STUDENT))}")
        if self.install and self.force_install:
            shutil.copy(model, DAEMON_DEFAULT)
            DAEMON_DEFAULT.chmod(0o644)
            self.installed_default = True
            self.echo(f"installed as aqmllmd's default model: {_rel(str(DAEMON_DEFAULT))}")
        elif self.install:
            # The held-out suite is the development set (recipes were chosen on it): the
            # default is decided once per frozen recipe on the sealed set (sealed.py).
            self.echo("not installed as aqmllmd's default: that is decided once per frozen "
                      "recipe on the sealed set (aqmllm-train sealed-test RECIPE MODEL1 "
                      f"MODEL2 --install); the default stays {_rel(str(DAEMON_DEFAULT))}")
        write_card(self, teacher_dir, final_dir, datasets, export, offline, ev_dir)
        return model


def _rel(s: str) -> str:
    if s == sys.executable:
        return "python"
    try:
        return str(Path(s).resolve().relative_to(REPO)) if "/" in s else s
    except ValueError:
        return s.replace(sys.executable, "python")
