"""Scenarios as TOML files, validated before anything runs.

    name = "l4s-50m-20ms"
    rate_mbps = 50          # bottleneck
    duration_s = 20
    classic_ecn = true      # classic flows negotiate ECN (ECT(0)) unless a flow says
    seed = 1

    loss = 0.0              # optional: random packet loss on the bottleneck
    trace = "traces/x.mahimahi"  # optional: capacity from a Mahimahi trace, replayed
                            # opportunity by opportunity (rate_mbps is then unused)

    [[flows]]
    cc = "dctcp"            # dctcp (sends ECT(1): L4S) | cubic | reno
    rtt_ms = 20             # base round-trip time
    count = 1               # optional, identical flows
    start_s = 0             # optional
    stop_s = 20             # optional, default duration_s
    ecn = true              # optional, classic flows: overrides classic_ecn
    size_kb = 500           # optional: a finite transfer, timed (flow completion time)

    [[short_flows]]         # optional: Poisson arrivals of finite transfers
    cc = "cubic"
    rtt_ms = 20
    per_s = 5               # mean arrivals per second
    size_kb = 100
    start_s = 0             # optional
    stop_s = 20             # optional: no arrival after this
    ecn = true              # optional

    [dualpi2]               # optional: the core's DualPI2 (policies dualpi2 and llm)
    step_threshold_us = 1000  # L queue step marking threshold, in time
    step_thresh_pkts = 0    # nonzero: the step threshold is this many L packets
                            # instead (Linux's `step_thresh N packets`); at low rates,
                            # where one packet's serialisation exceeds the time
                            # threshold, use packets (sim/README.md)
    min_qlen_step = 0       # no step mark while the L queue holds fewer packets
    harm_budget_pct = 200   # policy llm: what verdicts may signal beyond DualPI2's own
    target_us = 15000       # PI target delay
    verdict_guard = "dualpi2"  # policy llm: what DualPI2 still decides over a verdict:
                            # none | step (L packets past the step are marked) |
                            # dualpi2 (its whole decision, where it is the stronger)

    [[rate_steps]]          # optional: capacity changes
    at_s = 10
    rate_mbps = 25

    [[udp]]                 # optional: unresponsive on/off background
    rate_mbps = 5
    on_s = 0.5
    off_s = 0.5
    pattern = "constant"    # optional: or "exponential" (on/off periods with these means)
    start_s = 0             # optional
    stop_s = 20             # optional

A Mahimahi trace has one line per 1500-byte delivery opportunity, its time in ms; it
repeats when it ends (its last timestamp is the period). Every error names the field it
is about.
"""

from __future__ import annotations

import random
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aqm_bridge.abi import VERDICT_GUARDS

CCS = ("dctcp", "cubic", "reno")
POLICIES = ("dualpi2", "dualpi2-default", "dualpi2-gain2", "llm", "fifo", "pie", "codel",
            "fq_codel", "red")
#: dualpi2-default: the core's DualPI2 with Linux's step defaults (1 ms, no
#: min_qlen_step), whatever the scenario's [dualpi2] table says; dualpi2 uses the table.
#: dualpi2-gain2: dualpi2 with both PI gains doubled, a stronger classic signal for the
#: same queue (the baseline a student that adds to DualPI2's classic signal must beat).
PI_GAIN_PCT = {"dualpi2-gain2": 200}
LINUX_STEP = {"step_threshold_us": 1000, "step_thresh_pkts": 0, "min_qlen_step": 0}
GUARDS = VERDICT_GUARDS  # aqm_params.verdict_guard
#: The core's bounds (kmod/core/aqm_core.h: AQM_LIMIT_PKTS_MAX, AQM_HARM_BUDGET_*).
LIMIT_PKTS_MAX = 16383
HARM_BUDGET_DEFAULT, HARM_BUDGET_MAX = 200, 1000
#: harm_budget_pct = "off": verdicts applied as sent (verdict-mechanics tests, experiments).
HARM_BUDGET_OFF = 0xFFFFFFFF


class ScenarioError(Exception):
    """A scenario that cannot run, and which field says so."""


@dataclass(frozen=True)
class Flow:
    cc: str
    rtt_ms: float
    start_s: float
    stop_s: float
    bytes: int = 0           # 0: bulk until stop_s
    ecn: bool | None = None  # None: classic_ecn (scalable flows always use ECN)


@dataclass(frozen=True)
class Udp:
    rate_mbps: float
    on_s: float
    off_s: float
    start_s: float
    stop_s: float
    exponential: bool = False


@dataclass(frozen=True)
class Scenario:
    name: str
    rate_mbps: float
    duration_s: float
    classic_ecn: bool
    seed: int
    flows: tuple[Flow, ...]
    rate_steps: tuple[tuple[float, float], ...] = ()
    loss: float = 0.0
    udp: tuple[Udp, ...] = ()
    trace: Path | None = None
    step_threshold_us: int = 1000  # the core's DualPI2 (policies dualpi2 and llm)
    target_us: int = 15000
    verdict_guard: str = "dualpi2"  # policy llm: what DualPI2 decides over a verdict (GUARDS)
    step_thresh_pkts: int = 0      # nonzero: the L step in packets, step_threshold_us unused
    min_qlen_step: int = 0         # no step mark below this many L packets
    harm_budget_pct: int = HARM_BUDGET_DEFAULT  # policy llm: verdicts' signal budget

    def step_config(self) -> dict[str, int]:
        """The core's step settings (the [dualpi2] keys that the best-per-link search
        varies)."""
        return {"step_threshold_us": self.step_threshold_us,
                "step_thresh_pkts": self.step_thresh_pkts,
                "min_qlen_step": self.min_qlen_step}

    def flat(self, policy: str, channel: str = "", llm_latency_us: int = 0) -> str:
        """The runner's input (sim/ns3/aqm-sim.cc)."""
        if policy not in POLICIES:
            raise ScenarioError(f"policy {policy!r}: want one of {', '.join(POLICIES)}")
        step = self.step_config()
        gain_pct = PI_GAIN_PCT.get(policy, 100)
        if policy == "dualpi2-default":
            policy, step = "dualpi2", dict(LINUX_STEP)
        elif policy in PI_GAIN_PCT:
            policy = "dualpi2"
        lines = [f"rate_mbps {self.rate_mbps}", f"duration_s {self.duration_s}",
                 f"policy {policy}", f"classic_ecn {int(self.classic_ecn)}",
                 f"seed {self.seed}"]
        if channel:
            lines += [f"channel {channel}", f"llm_latency_us {llm_latency_us}"]
        if policy in ("dualpi2", "llm"):
            lines += [f"step_threshold_us {step['step_threshold_us']}",
                      f"target_us {self.target_us}",
                      f"step_thresh_pkts {step['step_thresh_pkts']}",
                      f"min_qlen_step {step['min_qlen_step']}"]
        if gain_pct != 100:
            lines.append(f"pi_gain_pct {gain_pct}")
        if policy == "llm":
            lines += [f"verdict_guard {GUARDS[self.verdict_guard]}",
                      f"harm_budget_pct {self.harm_budget_pct}"]
        lines += [f"flow {f.cc} {f.rtt_ms} {f.start_s} {f.stop_s} {f.bytes} "
                  f"{-1 if f.ecn is None else int(f.ecn)}" for f in self.flows]
        lines += [f"rate_at {t} {r}" for t, r in self.rate_steps]
        if self.trace is not None:
            lines.append(f"trace {self.trace.resolve()}")
        if self.loss:
            lines.append(f"loss {self.loss}")
        lines += [f"udp {u.rate_mbps} {u.on_s} {u.off_s} {u.start_s} {u.stop_s}"
                  + (" exp" if u.exponential else "") for u in self.udp]
        return "\n".join(lines) + "\n"


def _number(where: str, value: Any, lo: float, hi: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ScenarioError(f"{where}: want a number, got {value!r}")
    if not lo <= value <= hi:
        raise ScenarioError(f"{where}: {value} is outside [{lo}, {hi}]")
    return float(value)


def _check_keys(where: str, table: dict[str, Any], allowed: set[str]) -> None:
    unknown = set(table) - allowed
    if unknown:
        raise ScenarioError(f"{where}: unknown field(s) {', '.join(sorted(unknown))} "
                            f"(known: {', '.join(sorted(allowed))})")


def _tables(where: str, value: Any) -> list[dict[str, Any]]:
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(t, dict) for t in value):
        raise ScenarioError(f"{where}: want [[tables]]")
    return value


def check_trace(path: Path, where: str) -> int:
    """A readable Mahimahi trace: integer ms, in time order. Returns its line count."""
    try:
        text = path.read_text()
    except OSError as e:
        raise ScenarioError(f"{where}: cannot read trace {path}: {e.strerror}") from e
    try:
        times = [int(line) for line in text.split()]
    except ValueError as e:
        raise ScenarioError(f"{where}: {path} is not a Mahimahi trace (one integer ms "
                            "per line)") from e
    if not times or times != sorted(times) or times[0] < 0:
        raise ScenarioError(f"{where}: {path} is empty or not in time order")
    if times[-1] == 0:
        raise ScenarioError(f"{where}: {path} has no duration (last timestamp 0 ms)")
    return len(times)


def trace_rate(path: Path, bin_ms: float = 100) -> tuple[list[float], list[float]]:
    """The trace's capacity over one period, Mbit/s per bin (for plots and docs)."""
    times = [int(line) for line in path.read_text().split()]
    n = int(times[-1] / bin_ms) + 1
    counts = [0] * n
    for t in times:
        counts[min(n - 1, int(t / bin_ms))] += 1
    return ([b * bin_ms / 1000 for b in range(n)],
            [c * 1500 * 8 / (bin_ms / 1000) / 1e6 for c in counts])


def _integer(where: str, value: Any, lo: int, hi: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ScenarioError(f"{where}: want an integer, got {value!r}")
    if not lo <= value <= hi:
        raise ScenarioError(f"{where}: {value} is outside [{lo}, {hi}]")
    return value


def _ecn(where: str, value: Any) -> bool | None:
    if value is None:
        return None
    if not isinstance(value, bool):
        raise ScenarioError(f"{where}: want true or false, got {value!r}")
    return value


def _cc(where: str, cc: Any) -> str:
    if cc not in CCS:
        raise ScenarioError(f"{where}: {cc!r}, want one of {', '.join(CCS)}")
    return cc


MAX_FLOWS = 1000


def parse(data: dict[str, Any], origin: str = "scenario", base: Path | None = None) -> Scenario:
    _check_keys(origin, data, {"name", "rate_mbps", "duration_s", "classic_ecn", "seed",
                               "flows", "short_flows", "rate_steps", "loss", "udp", "trace",
                               "dualpi2"})
    duration = _number(f"{origin}: duration_s", data.get("duration_s", 10), 0.1, 3600)
    rate = _number(f"{origin}: rate_mbps", data.get("rate_mbps", 50), 0.01, 100_000)
    ecn = data.get("classic_ecn", True)
    if not isinstance(ecn, bool):
        raise ScenarioError(f"{origin}: classic_ecn: want true or false, got {ecn!r}")
    seed = data.get("seed", 1)
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 1:
        raise ScenarioError(f"{origin}: seed: want a positive integer, got {seed!r}")
    raw_flows = data.get("flows")
    if not isinstance(raw_flows, list) or not raw_flows:
        raise ScenarioError(f"{origin}: flows: want at least one [[flows]] table")
    flows: list[Flow] = []
    for i, f in enumerate(raw_flows):
        where = f"{origin}: flows[{i}]"
        if not isinstance(f, dict):
            raise ScenarioError(f"{where}: want a table")
        _check_keys(where, f, {"cc", "rtt_ms", "count", "start_s", "stop_s", "ecn",
                               "size_kb"})
        cc = _cc(f"{where}.cc", f.get("cc"))
        rtt = _number(f"{where}.rtt_ms", f.get("rtt_ms", 20), 2, 2000)
        start = _number(f"{where}.start_s", f.get("start_s", 0), 0, duration)
        stop = _number(f"{where}.stop_s", f.get("stop_s", duration), 0, duration)
        if stop <= start:
            raise ScenarioError(f"{where}.stop_s: {stop} is not after start_s {start}")
        count = int(_number(f"{where}.count", f.get("count", 1), 1, 64))
        size = f.get("size_kb")
        nbytes = 0 if size is None else int(_number(f"{where}.size_kb", size, 1, 10**7) * 1000)
        flows += [Flow(cc, rtt, start, stop, nbytes, _ecn(f"{where}.ecn", f.get("ecn")))] * count
    rng = random.Random(seed)
    for i, f in enumerate(_tables(f"{origin}: short_flows", data.get("short_flows"))):
        where = f"{origin}: short_flows[{i}]"
        _check_keys(where, f, {"cc", "rtt_ms", "per_s", "size_kb", "start_s", "stop_s", "ecn"})
        cc = _cc(f"{where}.cc", f.get("cc"))
        rtt = _number(f"{where}.rtt_ms", f.get("rtt_ms", 20), 2, 2000)
        per_s = _number(f"{where}.per_s", f.get("per_s"), 0.001, 1000)
        nbytes = int(_number(f"{where}.size_kb", f.get("size_kb"), 1, 10**7) * 1000)
        start = _number(f"{where}.start_s", f.get("start_s", 0), 0, duration)
        stop = _number(f"{where}.stop_s", f.get("stop_s", duration), 0, duration)
        if stop <= start:
            raise ScenarioError(f"{where}.stop_s: {stop} is not after start_s {start}")
        flow_ecn = _ecn(f"{where}.ecn", f.get("ecn"))
        t = start + rng.expovariate(per_s)
        while t < stop:
            flows.append(Flow(cc, rtt, round(t, 6), duration, nbytes, flow_ecn))
            if len(flows) > MAX_FLOWS:
                break
            t += rng.expovariate(per_s)
    if len(flows) > MAX_FLOWS:
        raise ScenarioError(f"{origin}: flows: {len(flows)} flows (short_flows included), "
                            f"at most {MAX_FLOWS}")
    steps: list[tuple[float, float]] = []
    for i, st in enumerate(_tables(f"{origin}: rate_steps", data.get("rate_steps"))):
        where = f"{origin}: rate_steps[{i}]"
        _check_keys(where, st, {"at_s", "rate_mbps"})
        steps.append((_number(f"{where}.at_s", st.get("at_s"), 0, duration),
                      _number(f"{where}.rate_mbps", st.get("rate_mbps"), 0.01, 100_000)))
    trace_path = None
    if "trace" in data:
        if steps:
            raise ScenarioError(f"{origin}: trace and rate_steps both set: choose one")
        trace = data["trace"]
        if not isinstance(trace, str):
            raise ScenarioError(f"{origin}: trace: want a file name")
        trace_path = (base or Path.cwd()) / trace
        check_trace(trace_path, f"{origin}: trace")
    loss = _number(f"{origin}: loss", data.get("loss", 0.0), 0, 0.5)
    udp: list[Udp] = []
    for i, u in enumerate(_tables(f"{origin}: udp", data.get("udp"))):
        where = f"{origin}: udp[{i}]"
        _check_keys(where, u, {"rate_mbps", "on_s", "off_s", "start_s", "stop_s", "pattern"})
        start = _number(f"{where}.start_s", u.get("start_s", 0), 0, duration)
        stop = _number(f"{where}.stop_s", u.get("stop_s", duration), 0, duration)
        if stop <= start:
            raise ScenarioError(f"{where}.stop_s: {stop} is not after start_s {start}")
        pattern = u.get("pattern", "constant")
        if pattern not in ("constant", "exponential"):
            raise ScenarioError(f"{where}.pattern: {pattern!r}, want constant or exponential")
        udp.append(Udp(_number(f"{where}.rate_mbps", u.get("rate_mbps"), 0.001, 100_000),
                       _number(f"{where}.on_s", u.get("on_s", 1), 0.001, 3600),
                       _number(f"{where}.off_s", u.get("off_s", 0), 0, 3600), start, stop,
                       pattern == "exponential"))
    core = data.get("dualpi2", {})
    if not isinstance(core, dict):
        raise ScenarioError(f"{origin}: dualpi2: want a [dualpi2] table")
    _check_keys(f"{origin}: dualpi2", core, {"step_threshold_us", "target_us", "verdict_guard",
                                              "step_thresh_pkts", "min_qlen_step",
                                              "harm_budget_pct"})
    step_us = int(_number(f"{origin}: dualpi2.step_threshold_us",
                          core.get("step_threshold_us", 1000), 1, 1_000_000))
    target_us = int(_number(f"{origin}: dualpi2.target_us", core.get("target_us", 15000),
                            1, 1_000_000))
    guard = core.get("verdict_guard", "dualpi2")
    if guard not in GUARDS:
        raise ScenarioError(f"{origin}: dualpi2.verdict_guard: {guard!r}, "
                            f"want one of {', '.join(GUARDS)}")
    step_pkts = _integer(f"{origin}: dualpi2.step_thresh_pkts",
                         core.get("step_thresh_pkts", 0), 0, LIMIT_PKTS_MAX)
    min_qlen = _integer(f"{origin}: dualpi2.min_qlen_step", core.get("min_qlen_step", 0), 0,
                        LIMIT_PKTS_MAX)
    budget = core.get("harm_budget_pct", HARM_BUDGET_DEFAULT)
    budget = HARM_BUDGET_OFF if budget == "off" else _integer(
        f"{origin}: dualpi2.harm_budget_pct", budget, 0, HARM_BUDGET_MAX)
    name = data.get("name", origin)
    return Scenario(str(name), rate, duration, ecn, seed, tuple(flows), tuple(steps), loss,
                    tuple(udp), trace_path, step_us, target_us, guard, step_pkts, min_qlen,
                    budget)


def load(path: str | Path) -> Scenario:
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text())
    except OSError as e:
        raise ScenarioError(f"{path}: cannot read: {e.strerror}") from e
    except tomllib.TOMLDecodeError as e:
        raise ScenarioError(f"{path}: not valid TOML: {e}") from e
    return parse(data, origin=str(path.name), base=path.parent)
