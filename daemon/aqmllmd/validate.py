"""A model's validation, run in a child process with a time limit.

`aqmllmd.model.load` hands the file's bytes (already checked for kind, owner, mode and
size) to `python -m aqmllmd.validate` on stdin; the child parses the graph, checks the
contract, builds an ONNX Runtime session and probes it as serving will use it:

- a batch of zeros and one of uniform(0, 50) values (synthetic);
- realistic states: state records drawn over the ranges the data paths produce (packet
  lengths 64-1500 bytes, every ECN codepoint, both queues, backlogs up to the default
  limit, head sojourns and expected waits up to the 32-bit field's 4.29 s, rates up to
  10 Gbit/s, every probability from 0 to 1, plus the all-minimum and all-maximum
  records), run through the serving feature pipeline (`features.compute`) so the model
  sees exactly what it will be fed;
- every output row must be finite, in [0, 1] and sum to 1;
- speed: the best of three runs on a realistic batch of `max_batch` states must be
  within `max_infer_us`, or every batch it serves would fail.

It answers one JSON line on stdout. The parent kills it after `validate_timeout_s`: a
model that takes longer (an ONNX Loop of 26 000 MatMuls, say) is refused without ever
holding the control thread longer than that. Its address space is limited to
`validate_memory_mib` (4096): a model that allocates without bound fails there.
"""

from __future__ import annotations

import json
import resource
import sys
import time

import numpy as np

from aqm_bridge.abi import STATE_DTYPE

from . import contract, features

U32_MAX = 0xFFFFFFFF
#: Ranges of the state fields, as the data paths produce them (sim/DATASET.md).
LEN_RANGE = (64, 1500)
MAX_BACKLOG_PKTS = 10_000  # the default limit_pkts
MAX_RATE_BYTES_S = 1_250_000_000  # 10 Gbit/s
SPEED_RUNS = 3


def realistic_states(n: int, rng: np.random.Generator) -> np.ndarray:
    """n state records over the ranges serving sees; the first two are the all-minimum
    and all-maximum records."""
    s = np.zeros(n, STATE_DTYPE)
    now = 3_600_000_000_000 + np.cumsum(rng.integers(0, 200_000, n))
    s["seq"] = np.arange(n)
    s["ts_ns"] = now
    wait = np.where(rng.random(n) < 0.5, rng.integers(0, 2_000_000, n),
                    rng.integers(0, U32_MAX, n))
    s["deadline_ns"] = now + wait
    s["rate_bps"] = rng.integers(0, MAX_RATE_BYTES_S, n)
    s["len"] = np.where(rng.random(n) < 0.5, LEN_RANGE[1], rng.integers(*LEN_RANGE, n,
                                                                         endpoint=True))
    s["queue"] = rng.integers(0, 2, n)
    s["ecn"] = rng.integers(0, 4, n)
    pkts = rng.integers(0, MAX_BACKLOG_PKTS, (n, 2), endpoint=True)
    s["backlog_pkts"] = pkts
    s["backlog_bytes"] = pkts * rng.integers(*LEN_RANGE, (n, 2), endpoint=True)
    short = rng.integers(0, 50_000_000, (n, 2))  # up to 50 ms, where queues usually are
    long = rng.integers(0, U32_MAX, (n, 2), endpoint=True)  # up to 4.29 s
    s["sojourn_ns"] = np.where(rng.random((n, 1)) < 0.5, short, long)
    for f in ("prob_base", "prob_c", "prob_cl"):
        s[f] = np.where(rng.random(n) < 0.3, rng.integers(0, U32_MAX // 100, n),
                        rng.integers(0, U32_MAX, n, endpoint=True))
    if n >= 2:
        lo, hi = s[0], s[1]
        for f in ("rate_bps", "backlog_pkts", "backlog_bytes", "sojourn_ns", "prob_base",
                  "prob_c", "prob_cl", "queue", "ecn"):
            lo[f] = 0
        lo["len"], lo["deadline_ns"] = LEN_RANGE[0], lo["ts_ns"]
        hi["rate_bps"], hi["len"] = MAX_RATE_BYTES_S, LEN_RANGE[1]
        hi["queue"], hi["ecn"] = 1, 3
        hi["backlog_pkts"] = MAX_BACKLOG_PKTS
        hi["backlog_bytes"] = MAX_BACKLOG_PKTS * LEN_RANGE[1]
        hi["sojourn_ns"] = U32_MAX
        hi["prob_base"] = hi["prob_c"] = hi["prob_cl"] = U32_MAX
        hi["deadline_ns"] = hi["ts_ns"] + U32_MAX
    return s


def realistic_features(n: int, seed: int = 0) -> np.ndarray:
    """Features of n realistic states, through the serving pipeline."""
    rng = np.random.default_rng(seed)
    return features.compute(realistic_states(n, rng), features.History())


def check_output(out: np.ndarray, rows: int, what: str) -> str | None:
    """What is wrong with a model's output on `rows` inputs, or None."""
    want = (rows, len(contract.ACTIONS))
    if out.shape != want:
        return f"{what}: output shape {out.shape}, want {want}"
    if not np.all(np.isfinite(out)):
        bad = int(np.count_nonzero(~np.isfinite(out).all(axis=1)))
        return f"{what}: {bad} of {rows} rows have NaN or infinite probabilities"
    sums = out.sum(axis=1, dtype=np.float64)
    bad_rows = ((out < 0) | (out > 1)).any(axis=1) | (
        np.abs(sums - 1.0) > contract.PROB_SUM_TOLERANCE)
    if bad_rows.any():
        i = int(np.argmax(bad_rows))
        return (f"{what}: {int(bad_rows.sum())} of {rows} rows are not probability "
                f"distributions (first: {np.round(out[i], 4).tolist()})")
    return None


def probe(session, max_batch: int, max_infer_us: int) -> float:  # noqa: ANN001
    """Raise ValueError saying what is wrong; returns the best time of a full batch, us."""
    rng = np.random.default_rng(0)
    n = contract.PROBE_BATCH
    batches = [("zeros", np.zeros((n, features.N_FEATURES), np.float32)),
               ("random", rng.uniform(0, 50, (n, features.N_FEATURES)).astype(np.float32)),
               ("realistic states", realistic_features(max(4 * n, 1024), seed=1))]
    for what, batch in batches:
        try:
            (out,) = session.run([contract.OUTPUT_NAME], {contract.INPUT_NAME: batch})
        except Exception as e:  # noqa: BLE001 - any runtime failure refuses the model
            raise ValueError(f"probe on {what} failed to run: {e}") from e
        problem = check_output(np.asarray(out), len(batch), f"probe on {what}")
        if problem:
            raise ValueError(problem)
    full = realistic_features(max_batch, seed=2)
    best = float("inf")
    for _ in range(SPEED_RUNS):
        t0 = time.perf_counter_ns()
        session.run([contract.OUTPUT_NAME], {contract.INPUT_NAME: full})
        best = min(best, (time.perf_counter_ns() - t0) / 1e3)
        if best <= max_infer_us:
            break
    if best > max_infer_us:
        raise ValueError(f"too slow: {best:.0f} us for a realistic batch of {max_batch} "
                         f"states, max_infer_us is {max_infer_us}: every batch would fail")
    return best


def main() -> None:
    """Child side: argv threads max_batch max_infer_us memory_mib; the model's bytes on
    stdin."""
    from .model import ModelError, open_session, parse

    threads, max_batch, max_infer_us, memory_mib = (int(a) for a in sys.argv[1:5])
    if memory_mib:  # a model that allocates without bound fails here, not on the router
        limit = memory_mib << 20
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    data = sys.stdin.buffer.read()
    try:
        parse(data)
        session = open_session(data, threads)
        infer_us = probe(session, max_batch, max_infer_us)
        answer = {"ok": True, "infer_us": infer_us}
    except (ModelError, ValueError) as e:
        answer = {"ok": False, "error": str(e)}
    sys.stdout.write(json.dumps(answer) + "\n")


if __name__ == "__main__":
    main()
