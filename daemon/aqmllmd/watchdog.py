"""The harm watchdog: a served model that signals far more than DualPI2 would, or keeps
failing, is taken out of service.

Every state record carries what DualPI2 would do with its packet: the classic signal
probability p_C, the L4S one p_CL, and (deadline - arrival) for the L4S step. The
watchdog sums those over the states the model decided (DualPI2's expected signals) next
to the signals the model actually gave (drop or mark verdicts written), and reads the
data path's counters for the link's delivered rate and the verdict signals the core's
harm budget refused (`verdicts_capped`, ABI v2). Per window (`window_ms`):

- `signals`: the model's signal share exceeds DualPI2's expected share by at least
  `excess_pct` percentage points and is at least twice it;
- `utilisation`: the delivered rate fell under `util_floor` of the best recent window
  while the model signals at least twice DualPI2's share plus one point;
- `failing`: at least `fail_pct` % of the window's states got no verdict because the
  model raised, gave non-finite or invalid output, or was too slow.

A window with fewer than `min_states` states is not judged: it carries over into the
next (up to `MAX_CARRY_S`), so a model that starves the link of packets (an always-drop
model leaves TCP a few retransmissions a second) is judged once enough have come; the
`signals` test also wants the model's excess to be at least `MIN_EXCESS_SIGNALS`
packets, so that a handful of packets cannot condemn a model by chance.
`windows` consecutive harmful windows trip it (one window does when the model signals
at least 50 points above DualPI2's share over at least 100 states looked at):
the model is quarantined (by sha256) and, with `action = "rollback"`, the previous model
(or the packaged default) serves from the next batch; with `action = "pause"`, or when
no model is left that was not quarantined, the data path is paused (DualPI2 decides
everything) until an operator resumes it or sets another model.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from aqm_bridge.abi import QUEUE_L

PROB_ONE = float(0xFFFFFFFF)
#: A window too small to judge carries over at most this long (then starts afresh).
MAX_CARRY_S = 10.0
#: The `signals` test wants at least this many signals above DualPI2's expectation.
MIN_EXCESS_SIGNALS = 10
#: A window this far above DualPI2's share, over at least DECISIVE_STATES looked-at
#: states, trips at once rather than after `windows` windows.
DECISIVE_EXCESS = 0.5
DECISIVE_STATES = 100
REASONS = ("signals", "utilisation", "failing")
#: The serving loop looks at one batch per this long at most (Watchdog.observe).
OBSERVE_EVERY_NS = 1_000_000


@dataclass(frozen=True)
class WatchdogConfig:
    enabled: bool = True
    window_ms: int = 250
    windows: int = 2
    min_states: int = 20
    excess_pct: int = 10
    util_floor_pct: int = 90
    fail_pct: int = 50
    action: str = "rollback"  # or "pause"


@dataclass
class Window:
    """What one window saw, for the harm test and for status."""

    states: int = 0  # states observed: the model's verdicts on them looked at
    signals: int = 0  # drop or mark verdicts it gave on them
    expected: float = 0.0  # DualPI2's expected signals on the same states
    decided: int = 0  # every state given a verdict (observed or not)
    failed: int = 0  # states of batches without verdicts (model failure)

    def share(self) -> tuple[float, float]:
        n = max(self.states, 1)
        return self.signals / n, self.expected / n

    def total(self) -> int:
        return max(self.decided, self.states) + self.failed


def dualpi2_expected(recs: np.ndarray, step_ns: int) -> float:
    """Expected DualPI2 signals (drops and marks) on these state records: p_C for a
    classic packet, p_CL or the step (expected sojourn at the step threshold) for L4S."""
    if not len(recs):
        return 0.0
    is_l = recs["queue"] == QUEUE_L
    p = np.where(is_l, recs["prob_cl"], recs["prob_c"]) / PROB_ONE
    if step_ns:
        wait = recs["deadline_ns"].astype(np.int64) - recs["ts_ns"].astype(np.int64)
        p = np.where(is_l & (wait >= step_ns), 1.0, p)
    return float(np.minimum(p, 1.0).sum())


@dataclass
class Watchdog:
    cfg: WatchdogConfig = field(default_factory=WatchdogConfig)
    step_ns: int = 1_000_000
    window: Window = field(default_factory=Window)
    last: dict[str, Any] = field(default_factory=dict)  # the last closed window
    strikes: int = 0
    trips: dict[str, int] = field(default_factory=lambda: dict.fromkeys(REASONS, 0))
    last_trip: dict[str, Any] | None = None
    quarantined: dict[str, str] = field(default_factory=dict)  # sha256 -> version
    _peak_bps: float = 0.0
    _prev_counters: dict[str, Any] | None = None
    _window_start: float | None = None
    _looked_at: float = 0.0  # the last close_window (monotonic s)

    def observe(self, recs: np.ndarray, actions: np.ndarray) -> None:
        """A batch the model decided (records and the actions written), looked at. The
        serving loop looks at one batch per OBSERVE_EVERY_NS at most (the shares are
        the same; the cost, some 10 us a batch, is not) and counts all of them."""
        w = self.window
        w.states += len(actions)
        w.signals += int(np.count_nonzero(actions))
        w.expected += dualpi2_expected(recs, self.step_ns)

    def count(self, n: int) -> None:
        """n states given verdicts (observed or not)."""
        self.window.decided += n

    def observe_failure(self, n: int) -> None:
        self.window.failed += n

    def reset(self) -> None:
        """A new model serves: its record starts clean."""
        self.window = Window()
        self.strikes = 0

    def due(self, now_s: float) -> bool:
        """Whether to close the window now: `window_ms` after it started, and after the
        last look at it when it was too small to judge (once a window, not every pass
        of the serving loop while it carries over)."""
        if self._window_start is None:
            self._window_start = now_s
        since = now_s - max(self._window_start, self._looked_at)
        return since >= self.cfg.window_ms / 1000

    def close_window(self, now_s: float, counters: dict[str, Any] | None) -> str | None:
        """End the window; the reason if the model has now harmed `windows` in a row."""
        start = self._window_start if self._window_start is not None else now_s
        self._looked_at = now_s
        dt = max(now_s - start, 1e-6)
        w = self.window
        unseen = w.decided > 0 and w.states == 0  # verdicts, none looked at yet
        if (w.total() < self.cfg.min_states or unseen) and now_s - start < MAX_CARRY_S:
            return None  # too little to judge: carry on into the next window
        self._window_start = now_s
        self.window = Window()
        util, capped = self._from_counters(counters, dt)
        model_share, dualpi2_share = w.share()
        self.last = {"states": w.total(), "observed": w.states,
                     "model_signal_share": round(model_share, 4),
                     "dualpi2_signal_share": round(dualpi2_share, 4),
                     "failed_share": round(w.failed / max(w.total(), 1), 4),
                     "utilisation": None if util is None else round(util, 3),
                     "verdicts_capped": capped}
        reason = self._judge(w, util)
        self.strikes = self.strikes + 1 if reason else 0
        decisive = (reason == "signals" and w.states >= DECISIVE_STATES
                    and model_share - dualpi2_share >= DECISIVE_EXCESS)
        if reason and (self.strikes >= self.cfg.windows or decisive):
            self.strikes = 0
            return reason
        return None

    def _from_counters(self, counters: dict[str, Any] | None,
                       dt: float) -> tuple[float | None, int | None]:
        prev, self._prev_counters = self._prev_counters, counters
        if not counters or not prev:
            return None, None
        sent = sum(counters["bytes_out"]) - sum(prev["bytes_out"])
        capped = None
        if "verdicts_capped" in counters and "verdicts_capped" in prev:
            capped = sum(counters["verdicts_capped"]) - sum(prev["verdicts_capped"])
        if sent < 0:  # a new data path (restart): start over
            self._peak_bps = 0.0
            return None, capped
        bps = 8 * sent / dt
        self._peak_bps = max(bps, self._peak_bps * 0.995)
        return (bps / self._peak_bps if self._peak_bps > 0 else None), capped

    def _judge(self, w: Window, util: float | None) -> str | None:
        c = self.cfg
        if w.total() < c.min_states:
            return None
        if w.failed * 100 >= c.fail_pct * w.total():
            return "failing"
        model, dualpi2 = w.share()
        if (model - dualpi2 >= c.excess_pct / 100 and model >= 2 * dualpi2
                and w.signals - w.expected >= MIN_EXCESS_SIGNALS):
            return "signals"
        if (util is not None and util * 100 < c.util_floor_pct
                and model >= 2 * dualpi2 + 0.01):
            return "utilisation"
        return None

    def describe(self, reason: str) -> str:
        s = self.last
        util = s.get("utilisation")
        model, dualpi2 = 100 * s["model_signal_share"], 100 * s["dualpi2_signal_share"]
        return (f"{reason}: model signalled {model:.1f} % of {s['observed']} packets where "
                f"DualPI2 would have {dualpi2:.1f} %, {100 * s['failed_share']:.0f} % without "
                f"verdicts, utilisation "
                f"{'unknown' if util is None else f'{100 * util:.0f} % of the best recent'}")

    def status(self) -> dict[str, Any]:
        return {"enabled": self.cfg.enabled, "action": self.cfg.action,
                "strikes": self.strikes, "trips": dict(self.trips),
                "last_trip": self.last_trip, "last_window": self.last,
                "quarantined": sorted(self.quarantined.values())}
