"""`Core`: the portable C core wrapped for tests and tools.

Like every host, the wrapper keeps each queue's packet metadata itself (two FIFOs of
`struct aqm_pkt`), so a caller only says when packets arrive and when the link is free:

    core = Core(seed=1)
    verdict, queue, seq = core.enqueue(now_ns, 1500, ECN_ECT1)
    q = core.select(now_ns)
    if q is not None:
        verdict, seq, source = core.dequeue(now_ns, q)

Parameters use the C names and units of `struct aqm_params` (limit_pkts, target_ns,
alpha_mhz, ...). A refused value raises ValueError and changes nothing.
"""

from __future__ import annotations

from collections import deque
from typing import Any, Protocol

from ._ffi import ffi, lib

QUEUE_C, QUEUE_L = 0, 1
ECN_NOT_ECT, ECN_ECT1, ECN_ECT0, ECN_CE = 0, 1, 2, 3
PASS, DROP, MARK = 0, 1, 2
SOURCE_FALLBACK, SOURCE_MODEL = 0, 1
PROB_ONE = 0xFFFFFFFF
#: aqm_params.harm_budget_pct value that turns the harm budget off (AQM_HARM_BUDGET_OFF).
HARM_BUDGET_OFF = 0xFFFFFFFF
SEQ_NONE = 0xFFFFFFFFFFFFFFFF

PARAM_NAMES = (
    "limit_pkts",
    "limit_bytes",
    "target_ns",
    "tupdate_ns",
    "alpha_mhz",
    "beta_mhz",
    "step_thresh_ns",
    "coupling_factor",
    "c_protection_pct",
    "mtu_bytes",
    "drop_overload",
    "verdict_guard",
    "step_thresh_pkts",
    "min_qlen_step",
    "harm_budget_pct",
)
# reserved0 (must be 0) is left out: params_from_dict always writes it as 0.

COUNTER_NAMES = (
    "pkts_in",
    "bytes_in",
    "pkts_out",
    "bytes_out",
    "drops_limit",
    "marks_model",
    "drops_model",
    "marks_fallback",
    "drops_fallback",
    "step_marks",
    "decisions_model",
    "decisions_fallback",
    "verdicts_applied",
    "verdicts_late",
    "verdicts_bad",
    "states_published",
    "states_lost",
    "channel_errors",
    "pi_updates",
    "verdicts_capped",
    "states_slot_busy",
)
PER_QUEUE_COUNTERS = (*COUNTER_NAMES[:9], "verdicts_capped")


class Attachable(Protocol):
    """A mapped channel region: anything with a base address and a size."""

    @property
    def address(self) -> int: ...

    @property
    def size(self) -> int: ...


def default_params() -> dict[str, int]:
    """Linux sch_dualpi2's defaults, in the core's units."""
    p = ffi.new("struct aqm_params *")
    lib.aqm_params_default(p)
    return params_to_dict(p)


def params_to_dict(p: Any) -> dict[str, int]:
    return {name: int(getattr(p, name)) for name in PARAM_NAMES}


def params_from_dict(values: dict[str, int], base: dict[str, int] | None = None) -> Any:
    """A `struct aqm_params` from `base` (default: defaults) updated with `values`."""
    unknown = set(values) - set(PARAM_NAMES)
    if unknown:
        raise ValueError(f"unknown DualPI2 parameter(s): {', '.join(sorted(unknown))}")
    merged = dict(default_params() if base is None else base)
    merged.update(values)
    p = ffi.new("struct aqm_params *")
    for name, value in merged.items():
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"parameter {name} must be an integer, got {value!r}")
        if not 0 <= value <= 0xFFFFFFFF:
            raise ValueError(f"parameter {name}={value} does not fit 32 bits unsigned")
        setattr(p, name, value)
    return p


def counters_to_dict(cnt: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name in COUNTER_NAMES:
        value = getattr(cnt, name)
        out[name] = [int(value[0]), int(value[1])] if name in PER_QUEUE_COUNTERS else int(value)
    return out


class Core:
    """One instance of the C core plus the two FIFOs of packet metadata a host keeps."""

    def __init__(self, *, seed: int = 0, now_ns: int = 0, **params: int) -> None:
        p = params_from_dict(params)
        self._mem = ffi.new("char[]", lib.aqm_core_size())
        self._c = ffi.cast("struct aqm_core *", self._mem)
        if lib.aqm_core_init(self._c, p, seed, now_ns) != 0:
            raise ValueError(f"DualPI2 parameters refused: {params_to_dict(p)}")
        self._queues: tuple[deque[Any], deque[Any]] = (deque(), deque())
        self._region: Attachable | None = None
        self._decision = ffi.new("struct aqm_decision *")

    # -- packet path -------------------------------------------------------------------
    def enqueue(self, now_ns: int, length: int, ecn: int) -> tuple[int, int, int | None]:
        """Offer a packet: (PASS or DROP, queue, sequence number or None when dropped)."""
        pkt = ffi.new("struct aqm_pkt *")
        verdict = lib.aqm_enqueue(self._c, now_ns, length, ecn, pkt)
        if verdict == DROP:
            return DROP, int(pkt.queue), None
        self._queues[pkt.queue].append(pkt)
        return PASS, int(pkt.queue), int(pkt.seq)

    def select(self, now_ns: int) -> int | None:
        """Which queue the scheduler serves next, or None when both are empty."""
        q = lib.aqm_select(self._c, now_ns)
        return None if q < 0 else int(q)

    def dequeue(self, now_ns: int, queue: int) -> tuple[int, int, int]:
        """Pop the head of `queue`: (PASS, MARK or DROP, its seq, who decided)."""
        fifo = self._queues[queue]
        if not fifo:
            raise IndexError(f"queue {queue} is empty")
        pkt = fifo.popleft()
        next_ts = fifo[0].ts_ns if fifo else 0
        lib.aqm_dequeue(self._c, now_ns, pkt, next_ts, self._decision)
        return int(self._decision.verdict), int(pkt.seq), int(self._decision.source)

    def tick(self, now_ns: int) -> None:
        lib.aqm_tick(self._c, now_ns)

    def collect_verdicts(self) -> int:
        """File the verdicts waiting in the ring now; how many were waiting."""
        return int(lib.aqm_collect_verdicts(self._c))

    def verdict_ready(self, seq: int) -> bool:
        return bool(lib.aqm_verdict_ready(self._c, seq))

    def set_verdict_delay(self, ns: int) -> None:
        """Apply verdicts only to packets that stayed at least ns (emulated latency)."""
        lib.aqm_set_verdict_delay(self._c, ns)

    def backlog(self, queue: int) -> int:
        return len(self._queues[queue])

    def head_ecn(self, queue: int) -> int:
        return int(self._queues[queue][0].ecn)

    # -- control -----------------------------------------------------------------------
    def params(self) -> dict[str, int]:
        p = ffi.new("struct aqm_params *")
        lib.aqm_core_get_params(self._c, p)
        return params_to_dict(p)

    def set_params(self, **kw: int) -> None:
        p = params_from_dict(kw, base=self.params())
        if lib.aqm_core_set_params(self._c, p) != 0:
            raise ValueError(f"DualPI2 parameters refused (nothing changed): {kw}")

    def stats(self) -> dict[str, Any]:
        cnt = ffi.new("struct aqm_counters *")
        lib.aqm_counters_get(self._c, cnt)
        out = counters_to_dict(cnt)
        p_c, p_cl = lib.aqm_prob_c(self._c), lib.aqm_prob_cl(self._c)
        out["p_c"] = p_c / PROB_ONE
        out["p_cl"] = p_cl / PROB_ONE
        out["p_prime"] = self.prob_base() / PROB_ONE
        out["backlog_pkts"] = [len(self._queues[0]), len(self._queues[1])]
        return out

    def prob_base(self) -> int:
        """p' as the core's 32-bit fraction of PROB_ONE (exact, for tests)."""
        return int(lib.aqm_prob_base(self._c))

    # -- channel -----------------------------------------------------------------------
    def attach(self, region: Attachable, now_ns: int = 0) -> None:
        rc = lib.aqm_attach(self._c, ffi.cast("void *", region.address), region.size, now_ns)
        if rc != 0:
            raise ValueError(f"channel region refused by the core (code {rc})")
        self._region = region

    def detach(self) -> None:
        lib.aqm_detach(self._c)
        self._region = None
