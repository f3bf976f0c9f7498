"""build/aqm-fwd on one core: the packets per second it forwards, and the latency it adds.

As root (network namespaces): `.venv/bin/python bench/fwd_bench.py [--duration 3]`.

- Packet rate: an iperf3 UDP client floods the forward direction (-b 0) with datagrams
  of a given size through a forwarder pinned to CPU 0 whose bottleneck is far above
  what it can carry (100 Gbit/s, 0 ms base RTT), so the figure is the forwarder's own:
  packets it wrote out per second, and the CPU time it used per packet (on a shared
  machine the rate depends on what else runs; the CPU per packet much less). The
  forwarder runs at normal priority here: under SCHED_FIFO (as the tests and the main
  job run it) it takes CPU 0 from the flood's sender, and the sender, not the
  forwarder, sets the rate. DualPI2 alone, and with the channel attached and aqmllmd
  serving its default model.
- Added latency: aqm-udpflow's probe (one datagram per ms, Not-ECT) between sender and
  receiver, idle, through the router's kernel forwarding alone (the policy rules that
  send traffic into the TUN devices removed), and through the forwarder (both
  directions cross it, under SCHED_FIFO as in the tests and the main job). The
  difference of the round trips is what the forwarder adds for two crossings.

Prints a table and, with --json, the raw figures. Not a test: nothing is asserted.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import click

from aqm_bridge.netns import (
    RECEIVER_V4,
    Sender,
    Testbed,
    _ip,
    read_json,
    sender_v4,
    unavailable,
)

BIG_RATE = 100000.0


def _daemon(tb: Testbed, tmp: str) -> Any:
    def start(region: Path) -> None:
        cmd = [sys.executable, "-m", "aqmllmd.main", "--channel", str(region),
               "--control", f"ipc://{tmp}/ctl.sock", "--metrics", ""]
        tb.spawn(cmd, stderr=subprocess.DEVNULL)
    return start


def _cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (all of it spent forwarding here)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def packet_rate(size: int, duration: float, with_daemon: bool) -> dict[str, Any]:
    with Testbed([Sender("cubic", 0)], tag=f"{os.getpid()}b") as tb, \
            tempfile.TemporaryDirectory() as tmp:
        shm = f"aqm-bench-{os.getpid()}" if with_daemon else None
        fwd = tb.start_forwarder(rate_mbps=BIG_RATE, shm=shm, wait_consumer_s=30,
                                 on_region=_daemon(tb, tmp) if with_daemon else None, cpu=0,
                                 realtime=False)
        tb.iperf3_server(5201)
        tb.wait_listening(5201)
        cl = tb.popen(tb.sender_ns[0], ["iperf3", "-c", RECEIVER_V4, "-B", sender_v4(0),
                                        "-u", "-b", "0", "-l", str(size), "-t", str(duration),
                                        "-J"], stdout=subprocess.PIPE, text=True)
        ip = read_json(cl.stdout)
        cl.wait()
        cpu_s = _cpu_seconds(fwd.pid)
        rep = tb.stop_forwarder(fwd)
    sent = ip.get("end", {}).get("sum", {}).get("packets", 0)
    return {"size": size, "daemon": with_daemon, "wall_s": rep["wall_s"],
            "offered_pps": sent / duration if duration else 0,
            "forwarded_pps": rep["pkts_out"][0] / duration,
            "cpu_s": cpu_s, "pkts_out": rep["pkts_out"][0],
            "us_per_pkt_cpu": 1e6 * cpu_s / max(1, rep["pkts_out"][0]),
            "decided": rep["decisions"], "model_share": rep["model_share"],
            "verdicts_applied": rep["verdicts_applied"], "states_lost": rep["states_lost"]}


def probe_rtt(duration: float, through_forwarder: bool) -> dict[str, Any]:
    with Testbed([Sender("cubic", 0)], tag=f"{os.getpid()}p") as tb:
        if through_forwarder:
            fwd = tb.start_forwarder(rate_mbps=BIG_RATE, cpu=0)
        else:
            fwd = None
            for fam in ("-4", "-6"):
                for dev in ("s0", "d0"):
                    _ip(fam, "rule", "del", "iif", dev, ns=tb.router)
        echo = tb.udpflow_echo(5301)
        tb.wait_listening(5301, proto="u")
        p = tb.udpflow_send(0, 5301, duration, mode="probe", tos=0, interval_ms=1)
        rep = read_json(p.stdout)
        p.wait()
        echo.terminate()
        if fwd is not None:
            tb.stop_forwarder(fwd)
    return {"through_forwarder": through_forwarder, **rep["rtt_ms"],
            "answered": rep["echoed"], "sent": rep["sent"]}


@click.command()
@click.option("--duration", default=3.0, show_default=True, help="seconds per measurement")
@click.option("--sizes", default="64,1400", show_default=True, help="UDP payload sizes")
@click.option("--json", "as_json", is_flag=True)
def main(duration: float, sizes: str, as_json: bool) -> None:
    why = unavailable()
    if why:
        raise click.ClickException(why)
    t0 = time.time()
    rates = [packet_rate(int(s), duration, d) for s in sizes.split(",")
             for d in (False, True)]
    lat = [probe_rtt(duration, f) for f in (False, True)]
    if as_json:
        click.echo(json.dumps({"rate": rates, "latency": lat}, indent=2))
        return
    click.echo(f"aqm-fwd pinned to CPU 0 ({os.cpu_count()} CPUs; load average "
               f"{os.getloadavg()[0]:.2f}), {duration:g} s each")
    click.echo("| UDP payload | channel | offered pps | forwarded pps | CPU s | "
               "µs CPU per packet | by a verdict |")
    click.echo("|---|---|---|---|---|---|---|")
    for r in rates:
        click.echo(f"| {r['size']} B | {'aqmllmd' if r['daemon'] else 'none'} | "
                   f"{r['offered_pps']:.0f} | {r['forwarded_pps']:.0f} | {r['cpu_s']:.2f} | "
                   f"{r['us_per_pkt_cpu']:.2f} | {100 * r['model_share']:.1f}% |")
    click.echo("| probe path | RTT p50 ms | p90 | p99 | max |")
    click.echo("|---|---|---|---|---|")
    for r in lat:
        click.echo(f"| {'aqm-fwd' if r['through_forwarder'] else 'kernel only'} | "
                   f"{r['p50']:.3f} | {r['p90']:.3f} | {r['p99']:.3f} | {r['max']:.3f} |")
    click.echo(f"added by two crossings of aqm-fwd: p50 {lat[1]['p50'] - lat[0]['p50']:.3f} "
               f"ms, p99 {lat[1]['p99'] - lat[0]['p99']:.3f} ms ({time.time() - t0:.0f} s)")


if __name__ == "__main__":
    main()
