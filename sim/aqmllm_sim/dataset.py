"""The recorded dataset: one row per departing packet (sim/DATASET.md).

The runner's `record` writes fixed 96-byte rows: the packet's state record as the data
path published it at enqueue (struct aqm_state_rec, times relative to the start of the
simulation), then when it left and what was done. `load_rows` reads them with no
per-row Python; `save_npz` writes the documented dataset file.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from aqm_bridge.abi import STATE_DTYPE

ROW_DTYPE = np.dtype({
    "names": ["state", "dequeue_ns", "action", "source"],
    "formats": [STATE_DTYPE, "<u8", "u1", "u1"],
    "offsets": [0, 80, 88, 89],
    "itemsize": 96,
})
ACTIONS_TAKEN = ("forwarded", "dropped", "marked")
SCHEMA_VERSION = 2


def load_rows(path: str | Path) -> np.ndarray:
    return np.fromfile(path, dtype=ROW_DTYPE)


def flatten(rows: np.ndarray) -> dict[str, np.ndarray]:
    """Named columns: the state record's fields, then what followed."""
    s = rows["state"]
    cols: dict[str, np.ndarray] = {name: np.ascontiguousarray(s[name])
                                   for name in STATE_DTYPE.names}
    cols["dequeue_ns"] = rows["dequeue_ns"].copy()
    cols["packet_sojourn_ns"] = (rows["dequeue_ns"] - s["ts_ns"]).astype(np.int64)
    cols["action"] = rows["action"].copy()
    cols["source"] = rows["source"].copy()
    return cols


def save_npz(rows: np.ndarray, out: str | Path, meta: dict[str, Any],
             timeseries: str | Path | list[str | Path] | None = None) -> Path:
    """The dataset file: columns, the per-interval time series, and metadata.

    With meta["runs"] giving each run's `recorded` rows (in order), a `run` column says
    which run each row is from; with one time series per run, `ts_run` does the same
    for the per-interval rows.
    """
    cols = flatten(rows)
    runs = meta.get("runs") or []
    sizes = [int(r.get("recorded", -1)) for r in runs]
    if runs and sum(sizes) == len(rows) and min(sizes) >= 0:
        cols["run"] = np.repeat(np.arange(len(sizes), dtype=np.uint16), sizes)
    if timeseries is not None:
        series = timeseries if isinstance(timeseries, list) else [timeseries]
        parts = []
        for k, path in enumerate(series):
            if Path(path).is_file():
                ts = np.genfromtxt(path, delimiter=",", names=True)
                part = {f"ts_{n}": np.atleast_1d(np.asarray(ts[n])) for n in ts.dtype.names or ()}
                part["ts_run"] = np.full(len(part["ts_time_s"]), k, np.uint16)
                parts.append(part)
        if parts:
            # Runs of one scenario share their columns; a column some run lacks is NaN.
            names = list(dict.fromkeys(n for part in parts for n in part))
            for n in names:
                cols[n] = np.concatenate([
                    part[n] if n in part else np.full(len(part["ts_run"]), np.nan)
                    for part in parts])
    meta = {**meta, "schema_version": SCHEMA_VERSION, "rows": int(len(rows)),
            "actions_taken": list(ACTIONS_TAKEN)}
    out = Path(out)
    np.savez_compressed(out, meta=np.array(json.dumps(meta)), **cols)
    return out


def load_npz(path: str | Path) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    with np.load(path, allow_pickle=False) as z:
        meta = json.loads(str(z["meta"]))
        return {k: z[k] for k in z.files if k != "meta"}, meta
