"""Throughput logs to Mahimahi traces, and the committed traces rebuilt from their excerpts."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from aqmllm_sim.scenario import check_trace
from aqmllm_sim.traces import (
    TraceError,
    mean_mbps,
    opportunities,
    read,
    read_gnettrack,
    read_mbps,
    window,
)

TRACES = Path(__file__).resolve().parents[1] / "sim" / "traces"
#: Every committed trace directory (sim/traces/README.md): each trace in them has its
#: excerpt in sources/ and comes from a log no other directory uses.
SETS = ("held-out", "train", "sealed")
COMMITTED = sorted(p for d in SETS for p in TRACES.glob(f"{d}/*.mahimahi"))


def test_a_constant_rate_gives_one_opportunity_per_packet_time() -> None:
    # 12 Mbit/s: one 1500-byte packet per ms.
    times = opportunities([(0.0, 12.0), (1.0, 12.0)])
    assert times == list(range(1, 1001))
    assert mean_mbps(times) == pytest.approx(12.0)


def test_rates_hold_until_the_next_sample_and_the_period_is_kept() -> None:
    # 12 Mbit/s for 1 s, nothing for 1 s, 24 Mbit/s for 1 s.
    times = opportunities([(0.0, 12.0), (1.0, 0.0), (2.0, 24.0), (3.0, 0.0)])
    assert sum(t <= 1000 for t in times) == 1000
    assert not any(1000 < t < 2000 for t in times)
    assert sum(2000 <= t <= 3000 for t in times) == 2000
    assert times[-1] == 3000
    assert opportunities([(0.0, 6.0), (1.0, 6.0)], scale=2.0) == times[:1000]


def test_a_window_is_cut_and_retimed() -> None:
    samples = [(0.0, 1.0), (5.0, 2.0), (10.0, 3.0), (15.0, 4.0)]
    assert window(samples, 7.0, 5.0) == [(0.0, 2.0), (3.0, 3.0), (5.0, 3.0)]
    with pytest.raises(TraceError, match="outside the log"):
        window(samples, 12.0, 5.0)


def test_gnettrack_keeps_downloading_seconds_one_sample_each() -> None:
    text = ("Timestamp,DL_bitrate,State,NetworkMode\n"
            "2020.01.16_07.26.43,1000,D,LTE\n2020.01.16_07.26.43,3000,D,LTE\n"
            "2020.01.16_07.26.44,9000,I,LTE\n2020.01.16_07.26.45,2000,D,5G\n")
    assert read_gnettrack(text) == [(0.0, 3.0), (2.0, 2.0)]
    with pytest.raises(TraceError, match="not a G-NetTrack CSV"):
        read_gnettrack("a,b\n1,2\n")


@pytest.mark.parametrize(("text", "message"), [
    ("0 1\n", "fewer than two samples"),
    ("0 1\n0 2\n", "is not after"),
    ("0 1\n1 -2\n", "rate >= 0"),
    ("0 x\n1 2\n", "want 'time_s mbps'"),
])
def test_bad_logs_are_refused_with_the_line(text: str, message: str) -> None:
    with pytest.raises(TraceError, match=message):
        read_mbps(text)


def test_a_log_without_capacity_is_refused() -> None:
    with pytest.raises(TraceError, match="no capacity"):
        opportunities([(0.0, 0.0), (5.0, 0.0)])


@pytest.mark.parametrize("trace", COMMITTED, ids=[p.stem for p in COMMITTED])
def test_each_committed_trace_is_rebuilt_from_its_excerpt(trace: Path) -> None:
    excerpt = TRACES / "sources" / f"{trace.stem}.tsv"
    samples = read(excerpt, "mbps")
    rebuilt = opportunities(window(samples, 0.0, samples[-1][0]))
    assert "".join(f"{t}\n" for t in rebuilt) == trace.read_text()
    assert check_trace(trace, trace.name) == len(rebuilt)


def test_held_out_training_and_sealed_traces_come_from_different_logs() -> None:
    stems = {d: {p.stem for p in TRACES.glob(f"{d}/*.mahimahi")} for d in SETS}
    assert len(stems["held-out"]) >= 5 and len(stems["train"]) >= 5
    assert len(stems["sealed"]) >= 3
    excerpts = {p.stem: p.read_text() for p in TRACES.glob("sources/*.tsv")}
    for i, a in enumerate(SETS):
        for b in SETS[i + 1:]:
            assert not stems[a] & stems[b], (a, b)
            assert not {excerpts[s] for s in stems[a]} & {excerpts[s] for s in stems[b]}
    # The README's table names each trace's log (| `DIR/NAME` | mean | log | ...); no log
    # may feed two directories.
    rows = [re.match(r"\| `([^/`]+)/([^`]+)` \| [\d.]+ \| ([^|]+) \|", line)
            for line in (TRACES / "README.md").read_text().splitlines()]
    logs = {d: {m[3].strip() for m in rows if m and m[1] == d} for d in SETS}
    assert {d: {m[2] for m in rows if m and m[1] == d} for d in SETS} == stems
    for i, a in enumerate(SETS):
        for b in SETS[i + 1:]:
            assert not logs[a] & logs[b], (a, b)
