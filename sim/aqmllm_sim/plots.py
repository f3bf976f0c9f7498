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


def compare_cdf(runs: dict[str, Path], out: Path, title: str) -> Path:
    """Sojourn CDFs of several policies on one scenario: one line per queue."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for policy, sojourns in runs.items():
        raw = np.fromfile(sojourns, dtype="<u8")
        queue, ns = raw >> np.uint64(63), raw & np.uint64((1 << 63) - 1)
        two = (queue == 1).any()
        for q, suffix, style in ((0, " C" if two else "", "-"), (1, " L", "--")):
            v = np.sort(ns[queue == q] / 1e6)
            if len(v):
                ax.plot(np.maximum(v, 1e-3), np.arange(1, len(v) + 1) / len(v), style,
                        label=f"{policy}{suffix}")
    ax.set_xscale("log")
    ax.set_xlabel("sojourn (ms)")
    ax.set_ylabel("CDF")
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    ax.set_xlim(left=0.05)
    ax.legend(fontsize="small", ncol=2)
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out


def sweep_summary(results: list[dict], out: Path, title: str = "sweep") -> Path:
    """Per scenario and policy: scalable/classic throughput ratio, and p99 sojourn
    (classic queue, or the only one) with the L queue's p99 for the core's policies."""
    plt = _pyplot()
    scenarios = list(dict.fromkeys(r["scenario"] for r in results))
    policies = list(dict.fromkeys(r["policy"] for r in results))
    by = {(r["scenario"], r["policy"]): r for r in results}
    width = 0.8 / max(1, len(policies))
    x = np.arange(len(scenarios))
    fig, (a1, a2) = plt.subplots(2, 1, figsize=(max(7, 1.1 * len(scenarios)), 7), sharex=True)
    for k, p in enumerate(policies):
        rs = [by.get((s, p)) for s in scenarios]
        ratio = [r["scalable_classic_ratio"] if r and r.get("scalable_classic_ratio") is not None
                 else np.nan for r in rs]
        c99 = [(r.get("sojourn_ms_c") or r["sojourn_ms"])["p99"] if r else np.nan for r in rs]
        a1.bar(x + k * width, ratio, width, label=p)
        a2.bar(x + k * width, c99, width, label=p)
        l99 = [r["sojourn_ms_l"]["p99"] if r and "sojourn_ms_l" in r else np.nan for r in rs]
        if not np.isnan(l99).all():
            a2.scatter(x + k * width, l99, marker="_", s=200, color="k", zorder=3,
                       label="L queue p99" if k == 0 else None)
    a1.axhline(1, color="k", linewidth=0.8)
    a1.set_yscale("log")
    a1.set_ylabel("scalable / classic throughput")
    a1.set_title(title)
    a1.legend(fontsize="small", ncol=len(policies))
    a2.set_yscale("log")
    a2.set_ylabel("p99 sojourn, ms (C or all)")
    a2.set_xticks(x + 0.4 - width / 2, scenarios, rotation=30, ha="right", fontsize="small")
    a2.legend(fontsize="small", ncol=len(policies) + 1)
    for a in (a1, a2):
        a.grid(True, axis="y", which="both", alpha=0.3)
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out
