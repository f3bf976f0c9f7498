"""Scenarios as TOML files, validated before anything runs.

    name = "l4s-50m-20ms"
    rate_mbps = 50          # bottleneck
    duration_s = 20
    classic_ecn = true      # classic flows negotiate ECN (ECT(0)) or not
    seed = 1

    [[flows]]
    cc = "dctcp"            # dctcp (sends ECT(1): L4S) | cubic | reno
    rtt_ms = 20             # base round-trip time
    count = 1               # optional, identical flows
    start_s = 0             # optional
    stop_s = 20             # optional, default duration_s

Every error names the field it is about.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

CCS = ("dctcp", "cubic", "reno")
POLICIES = ("dualpi2", "llm", "fifo", "pie", "codel", "fq_codel", "red")


class ScenarioError(Exception):
    """A scenario that cannot run, and which field says so."""


@dataclass(frozen=True)
class Flow:
    cc: str
    rtt_ms: float
    start_s: float
    stop_s: float


@dataclass(frozen=True)
class Scenario:
    name: str
    rate_mbps: float
    duration_s: float
    classic_ecn: bool
    seed: int
    flows: tuple[Flow, ...]

    def flat(self, policy: str, channel: str = "", llm_latency_us: int = 0) -> str:
        """The runner's input (sim/ns3/aqm-sim.cc)."""
        if policy not in POLICIES:
            raise ScenarioError(f"policy {policy!r}: want one of {', '.join(POLICIES)}")
        lines = [f"rate_mbps {self.rate_mbps}", f"duration_s {self.duration_s}",
                 f"policy {policy}", f"classic_ecn {int(self.classic_ecn)}",
                 f"seed {self.seed}"]
        if channel:
            lines += [f"channel {channel}", f"llm_latency_us {llm_latency_us}"]
        lines += [f"flow {f.cc} {f.rtt_ms} {f.start_s} {f.stop_s}" for f in self.flows]
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


def parse(data: dict[str, Any], origin: str = "scenario") -> Scenario:
    _check_keys(origin, data, {"name", "rate_mbps", "duration_s", "classic_ecn", "seed",
                               "flows"})
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
        _check_keys(where, f, {"cc", "rtt_ms", "count", "start_s", "stop_s"})
        cc = f.get("cc")
        if cc not in CCS:
            raise ScenarioError(f"{where}.cc: {cc!r}, want one of {', '.join(CCS)}")
        rtt = _number(f"{where}.rtt_ms", f.get("rtt_ms", 20), 2, 2000)
        start = _number(f"{where}.start_s", f.get("start_s", 0), 0, duration)
        stop = _number(f"{where}.stop_s", f.get("stop_s", duration), 0, duration)
        if stop <= start:
            raise ScenarioError(f"{where}.stop_s: {stop} is not after start_s {start}")
        count = int(_number(f"{where}.count", f.get("count", 1), 1, 64))
        flows += [Flow(cc, rtt, start, stop)] * count
    if len(flows) > 256:
        raise ScenarioError(f"{origin}: flows: {len(flows)} flows, at most 256")
    name = data.get("name", origin)
    return Scenario(str(name), rate, duration, ecn, seed, tuple(flows))


def load(path: str | Path) -> Scenario:
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text())
    except OSError as e:
        raise ScenarioError(f"{path}: cannot read: {e.strerror}") from e
    except tomllib.TOMLDecodeError as e:
        raise ScenarioError(f"{path}: not valid TOML: {e}") from e
    return parse(data, origin=str(path.name))
