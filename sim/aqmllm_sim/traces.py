"""Throughput logs to Mahimahi traces (sim/traces/convert.py is the command).

A throughput log is a step function: (time s, Mbit/s) samples, each rate holding until
the next sample's time. Two published forms are read:

- ``mbps``: two whitespace-separated columns, time in s and throughput in Mbit/s, one
  sample per line (the "cooked" 3G/HSDPA Norway and FCC traces of the adaptive-bitrate
  literature, e.g. Pensieve's ``cooked_traces``; also the excerpts in sim/traces/sources);
- ``gnettrack``: the CSV of G-NetTrack Pro (the UCC 4G/5G production datasets):
  ``Timestamp`` (``YYYY.MM.DD_hh.mm.ss``, one-second resolution, several rows per
  second possible) and ``DL_bitrate`` (kbit/s); only rows whose ``State`` is ``D``
  (downloading) are kept, one sample per second (the second's largest reading).

The Mahimahi form has one line per 1500-byte delivery opportunity, its time in integer
ms; the last line is the trace's period (sim/aqmllm_sim/scenario.py replays it).
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import math
from collections.abc import Iterable
from pathlib import Path

#: Bits one Mahimahi delivery opportunity carries.
OPPORTUNITY_BITS = 1500 * 8
FORMATS = ("mbps", "gnettrack")


class TraceError(Exception):
    """A log that cannot be converted, and why."""


def read_mbps(text: str, origin: str = "log") -> list[tuple[float, float]]:
    """(time s, Mbit/s) samples of a two-column log, in time order."""
    out: list[tuple[float, float]] = []
    for n, line in enumerate(text.splitlines(), 1):
        parts = line.split()
        if not parts or parts[0].startswith("#"):
            continue
        try:
            t, r = float(parts[0]), float(parts[1])
        except (ValueError, IndexError) as e:
            raise TraceError(f"{origin}:{n}: want 'time_s mbps', got {line!r}") from e
        if not (math.isfinite(t) and math.isfinite(r)) or r < 0:
            raise TraceError(f"{origin}:{n}: time and rate must be finite, rate >= 0")
        if out and t <= out[-1][0]:
            raise TraceError(f"{origin}:{n}: time {t} is not after {out[-1][0]}")
        out.append((t, r))
    if len(out) < 2:
        raise TraceError(f"{origin}: fewer than two samples")
    return out


def read_gnettrack(text: str, origin: str = "log") -> list[tuple[float, float]]:
    """(time s from the first kept second, Mbit/s): one sample per downloading second."""
    per_s: dict[dt.datetime, float] = {}
    reader = csv.DictReader(io.StringIO(text))
    missing = {"Timestamp", "DL_bitrate", "State"} - set(reader.fieldnames or ())
    if missing:
        raise TraceError(f"{origin}: not a G-NetTrack CSV (no {', '.join(sorted(missing))})")
    for n, row in enumerate(reader, 2):
        if row["State"] != "D":
            continue
        try:
            t = dt.datetime.strptime(row["Timestamp"], "%Y.%m.%d_%H.%M.%S")
            kbps = float(row["DL_bitrate"])
        except ValueError as e:
            raise TraceError(f"{origin}:{n}: bad Timestamp or DL_bitrate") from e
        per_s[t] = max(per_s.get(t, 0.0), kbps / 1000)
    if len(per_s) < 2:
        raise TraceError(f"{origin}: fewer than two downloading seconds")
    t0 = min(per_s)
    return [((t - t0).total_seconds(), r) for t, r in sorted(per_s.items())]


def read(path: Path, fmt: str) -> list[tuple[float, float]]:
    if fmt not in FORMATS:
        raise TraceError(f"format {fmt!r}: want one of {', '.join(FORMATS)}")
    try:
        text = path.read_text()
    except OSError as e:
        raise TraceError(f"cannot read {path}: {e.strerror}") from e
    return (read_mbps if fmt == "mbps" else read_gnettrack)(text, str(path))


def window(samples: list[tuple[float, float]], start_s: float,
           duration_s: float) -> list[tuple[float, float]]:
    """The step function over [start_s, start_s + duration_s), re-timed from 0, with a
    closing sample at duration_s (the last rate before the window's end holds)."""
    if duration_s <= 0:
        raise TraceError(f"duration {duration_s} s: want > 0")
    end = start_s + duration_s
    if start_s < samples[0][0] or end > samples[-1][0]:
        raise TraceError(f"window [{start_s}, {end}] s is outside the log's "
                         f"[{samples[0][0]}, {samples[-1][0]}] s")
    rate_at_start = [r for t, r in samples if t <= start_s][-1]
    inner = [(t - start_s, r) for t, r in samples if start_s < t < end]
    return [(0.0, rate_at_start), *inner, (duration_s, inner[-1][1] if inner
                                            else rate_at_start)]


def opportunities(samples: list[tuple[float, float]], scale: float = 1.0) -> list[int]:
    """Mahimahi delivery times (ms) of the step function from its first to its last
    sample's time: opportunity k leaves when the capacity offered so far reaches k
    1500-byte packets. The last line is the period (the last sample's time)."""
    if scale <= 0:
        raise TraceError(f"scale {scale}: want > 0")
    out: list[int] = []
    sent_bits = 0.0  # capacity offered up to the current sample's time
    k = 1
    for (t0, r), (t1, _) in zip(samples, samples[1:], strict=False):
        bps = r * scale * 1e6
        seg_end = sent_bits + bps * (t1 - t0)
        while bps > 0 and k * OPPORTUNITY_BITS <= seg_end + 1e-6:
            at = t0 + (k * OPPORTUNITY_BITS - sent_bits) / bps
            out.append(math.floor(at * 1000 + 1e-9))
            k += 1
        sent_bits = seg_end
    if not out:
        raise TraceError("the log offers no capacity in this window")
    period = round(samples[-1][0] * 1000)
    if out[-1] < period:
        out.append(period)
    if out[-1] <= 0:
        raise TraceError("the window is shorter than 1 ms")
    return out


def mahimahi_text(times: Iterable[int]) -> str:
    return "".join(f"{t}\n" for t in times)


def mean_mbps(times: list[int]) -> float:
    """Mean capacity of a Mahimahi trace over its period."""
    return len(times) * OPPORTUNITY_BITS / (times[-1] / 1000) / 1e6
