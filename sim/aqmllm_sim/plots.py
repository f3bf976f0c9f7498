"""PNG plots of one run: sojourn CDF, throughput over time, congestion windows."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def _pyplot():  # noqa: ANN202 - matplotlib only where plots are made (the sim extra)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def sojourn_cdf(sojourns: Path, out: Path, title: str) -> Path:
    plt = _pyplot()
    raw = np.fromfile(sojourns, dtype="<u8")
    queue, ns = raw >> np.uint64(63), raw & np.uint64((1 << 63) - 1)
    fig, ax = plt.subplots(figsize=(6, 4))
    for q, label in ((1, "L queue"), (0, "C queue" if (queue == 1).any() else "queue")):
        v = np.sort(ns[queue == q] / 1e6)
        if len(v):
            ax.plot(v, np.arange(1, len(v) + 1) / len(v), label=label)
    ax.set_xscale("log")
    ax.set_xlabel("sojourn (ms)")
    ax.set_ylabel("CDF")
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out


def timeseries(csv: Path, out_dir: Path, title: str, flows: list[str]) -> list[Path]:
    plt = _pyplot()
    ts = np.genfromtxt(csv, delimiter=",", names=True)
    outs = []
    for prefix, ylabel, name in (("tput_mbps_", "throughput (Mbit/s)", "throughput.png"),
                                 ("cwnd_bytes_", "cwnd (kB)", "cwnd.png")):
        fig, ax = plt.subplots(figsize=(7, 4))
        for i, label in enumerate(flows):
            col = f"{prefix}{i}"
            if col in (ts.dtype.names or ()):
                y = ts[col] / (1e3 if prefix.startswith("cwnd") else 1)
                ax.plot(ts["time_s"], y, label=f"{i}: {label}")
        ax.set_xlabel("time (s)")
        ax.set_ylabel(ylabel)
        ax.set_title(title)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize="small")
        fig.tight_layout()
        fig.savefig(out_dir / name, dpi=120)
        plt.close(fig)
        outs.append(out_dir / name)
    return outs
