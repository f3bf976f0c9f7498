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


def timeseries(csv: Path, out_dir: Path, title: str, flows: list[str],
               bulk: list[bool] | None = None, max_flows: int = 8) -> list[Path]:
    """throughput.png (chosen flows, the link and its capacity) and cwnd.png (chosen
    flows): the first `max_flows` bulk flows; short flows are summed into one line."""
    plt = _pyplot()
    ts = np.genfromtxt(csv, delimiter=",", names=True)
    names = ts.dtype.names or ()
    bulk = bulk if bulk is not None else [True] * len(flows)
    chosen = [i for i, b in enumerate(bulk) if b][:max_flows]
    short = [i for i, b in enumerate(bulk) if not b]
    outs = []
    for prefix, ylabel, name in (("tput_mbps_", "throughput (Mbit/s)", "throughput.png"),
                                 ("cwnd_bytes_", "cwnd (kB)", "cwnd.png")):
        fig, ax = plt.subplots(figsize=(7, 4))
        for i in chosen:
            col = f"{prefix}{i}"
            if col in names:
                y = ts[col] / (1e3 if prefix.startswith("cwnd") else 1)
                ax.plot(ts["time_s"], y, label=f"{i}: {flows[i]}")
        if prefix == "tput_mbps_":
            if short:
                ax.plot(ts["time_s"], sum(ts[f"{prefix}{i}"] for i in short),
                        label=f"{len(short)} short flows", alpha=0.7)
            for col, style, label in (("capacity_mbps", "k--", "capacity"),
                                      ("link_mbps", "k:", "link")):
                if col in names:
                    ax.plot(ts["time_s"], ts[col], style, label=label, linewidth=1)
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
