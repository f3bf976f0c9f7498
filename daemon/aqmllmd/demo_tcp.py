"""The main job on real packets: kernel TCP through build/aqm-fwd, DualPI2 alone and with
aqmllmd.

As root, `python -m aqmllmd.demo` runs this: sender, router and receiver network
namespaces (aqm_bridge.netns), the forwarder in the router with a bottleneck at
--rate-mbps and --rtt-ms base RTT, and four flows through it for --duration seconds:

- cubic with ECN (net.ipv4.tcp_ecn=1 in its namespace; ECT(0), the C queue),
- reno without ECN (Not-ECT: drops, the C queue),
- bbr without ECN,
- aqm-udpflow's scalable sender: ECT(1), the L queue. This kernel has no DCTCP or Prague
  and a TCP socket cannot send ECT(1), so this UDP sender, which takes half a packet off
  its window per echoed CE mark, stands in for a scalable TCP. It is not TCP.

plus two ping-style probes (Not-ECT and ECT(1), one datagram per 10 ms) measuring the
round trip under load through each queue. The same load runs twice: DualPI2 alone (no
channel), then with the channel attached and aqmllmd serving its default model as a
separate process. It prints the data path's table (aqm_bridge.demo.summarise) and the
flows' own view: goodput, retransmits or losses, RTT.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import click

from aqm_bridge.demo import summarise
from aqm_bridge.netns import (
    Sender,
    SsSampler,
    Testbed,
    iperf3_summary,
    read_json,
    sigterm_as_interrupt,
    unavailable,
)

from .ctl import status_or_none

ECHO_PORT = 5301
IPERF_PORT = 5201


def mix(rtt_ms: float) -> list[Sender]:
    """The main job's flow mix (one namespace each)."""
    return [Sender("ect1", rtt_ms), Sender("cubic", rtt_ms, ecn=True),
            Sender("reno", rtt_ms), Sender("bbr", rtt_ms)]


def run_once(senders: list[Sender], *, rate_mbps: float, duration_s: float,
             with_daemon: bool, model: str | None = None,
             trace: Path | None = None, probes: bool = True,
             ss_period_s: float = 0.5) -> dict[str, Any]:
    """One run: the forwarder's report, each flow's view (its tool's report and, for
    TCP, `ss -tin` every ss_period_s), the probes, the receiver's ECN counts and (with
    the daemon) its status."""
    result: dict[str, Any] = {}
    with Testbed(senders) as tb, tempfile.TemporaryDirectory() as tmp:
        control = f"ipc://{tmp}/ctl.sock"
        shm = f"aqm-tcp-{os.getpid()}" if with_daemon else None

        def start_daemon(region: Path) -> None:
            cmd = [sys.executable, "-m", "aqmllmd.main", "--channel", str(region),
                   "--control", control, "--metrics", ""]
            if model:
                cmd += ["--model", model]
            with open(Path(tmp, "aqmllmd.log"), "w") as log:
                tb.spawn(cmd, stderr=log)

        fwd = tb.start_forwarder(rate_mbps=rate_mbps, trace=trace, shm=shm,
                                 wait_consumer_s=30, on_region=start_daemon)
        echo = tb.udpflow_echo(ECHO_PORT)
        tb.wait_listening(ECHO_PORT, proto="u")
        clients: list[tuple[int, subprocess.Popen[str]]] = []
        for i, snd in enumerate(senders):
            if snd.cc != "ect1":
                tb.iperf3_server(IPERF_PORT + i)
        for i, snd in enumerate(senders):
            if snd.cc != "ect1":
                tb.wait_listening(IPERF_PORT + i)
        for i, snd in enumerate(senders):
            if snd.cc == "ect1":
                clients.append((i, tb.udpflow_send(i, ECHO_PORT, duration_s, v6=snd.v6)))
            else:
                clients.append((i, tb.iperf3_client(i, IPERF_PORT + i, duration_s)))
        probe = {q: tb.udpflow_send(0, ECHO_PORT, duration_s, mode="probe", tos=tos)
                 for q, tos in (("C", 0), ("L", 1))} if probes else {}
        flows = []
        tcp_ns = [tb.sender_ns[i] for i, snd in enumerate(senders) if snd.cc != "ect1"]
        with SsSampler(tcp_ns, period_s=ss_period_s) as ss:
            for i, p in clients:
                rep = read_json(p.stdout)
                p.wait(timeout=60)
                snd = senders[i]
                flows.append({"label": snd.label, "cc": snd.cc, "ecn": snd.ecn,
                              "rtt_ms": snd.rtt_ms,
                              "report": rep if snd.cc == "ect1" else iperf3_summary(rep),
                              "ss": ss.samples.get(tb.sender_ns[i], [])})
        result["probes"] = {q: read_json(p.stdout) for q, p in probe.items()}
        if with_daemon:
            result["daemon_status"] = status_or_none(control)
        result["forwarder"] = tb.stop_forwarder(fwd)
        echo.terminate()
        echo.wait(timeout=10)
        result["echo"] = read_json(echo.stdout)
        result["sender_tcp"] = [
            {k.split(".")[1]: v for k, v in tb.netstat(ns).items()
             if k in ("TcpExt.TCPDeliveredCE", "Tcp.RetransSegs", "TcpExt.TCPECNReceived")}
            for ns in tb.sender_ns]
        stats = tb.netstat(tb.receiver)
        result["receiver_ip"] = {k: v for k, v in stats.items()
                                 if k in ("Ip.InHdrErrors", "IpExt.InCsumErrors",
                                          "Ip.InReceives", "Ip6.Ip6InCEPkts")}
        result["receiver_ip_ecn"] = {k.split(".")[1]: v for k, v in stats.items()
                                     if k.startswith("IpExt.In") and "Pkts" in k
                                     and ("ECT" in k or "CE" in k)}
        result["flows"] = flows
    return result


def flow_lines(r: dict[str, Any]) -> list[str]:
    """The flows' own view of one run."""
    lines = ["  flows (their own view):"]
    for f in r["flows"]:
        rep = f["report"]
        if f["cc"] == "ect1":
            lines.append(
                f"    {f['label']:<22} {rep.get('goodput_mbps', 0):6.1f} Mbit/s, "
                f"{rep.get('lost', 0)} lost, {rep.get('ce_echoed', 0)} CE echoed, "
                f"RTT p50 {rep.get('rtt_ms', {}).get('p50', 0):.1f} ms")
        else:
            err = f" ({rep['error']})" if rep.get("error") else ""
            lines.append(
                f"    {f['label']:<22} {rep['goodput_mbps']:6.1f} Mbit/s, "
                f"{rep['retransmits']} retransmits, RTT mean {rep['mean_rtt_ms']:.1f} ms, "
                f"max {rep['max_rtt_ms']:.1f} ms{err}")
    for q, p in r["probes"].items():
        rtt = p.get("rtt_ms", {})
        lines.append(f"    probe via the {q} queue    RTT p50 {rtt.get('p50', 0):.1f} ms, "
                     f"p99 {rtt.get('p99', 0):.1f} ms ({p.get('echoed', 0)} of "
                     f"{p.get('sent', 0)} answered)")
    ecn = r["receiver_ip_ecn"]
    lines.append(f"    receiver's IP layer: {ecn.get('InCEPkts', 0)} CE, "
                 f"{ecn.get('InECT1Pkts', 0)} ECT(1), {ecn.get('InECT0Pkts', 0)} ECT(0), "
                 f"{ecn.get('InNoECTPkts', 0)} Not-ECT packets")
    return lines


def why_not(load: float = 0.0) -> str | None:
    """Why the main job does not run on real traffic here, or None: asked for the
    synthetic load (--load, or AQMLLM_DEMO=synthetic), or no root or namespaces."""
    if load > 0:
        return "--load asks for the open-loop synthetic load"
    if os.environ.get("AQMLLM_DEMO") == "synthetic":
        return "AQMLLM_DEMO=synthetic asks for the synthetic load"
    return unavailable()


def main_real(duration: float, rate_mbps: float, rtt_ms: float, as_json: bool,
              model: str | None = None) -> None:
    """The real-traffic main job (call only when why_not() is None)."""
    senders = mix(rtt_ms)
    if not as_json:
        click.echo(f"Linux data path on real packets (build/aqm-fwd between network "
                   f"namespaces): {rate_mbps:g} Mbit/s bottleneck, {rtt_ms:g} ms base RTT, "
                   f"{', '.join(s.label for s in senders)}, {duration:g} s per run")
    with sigterm_as_interrupt():     # a killed job still removes its namespaces
        alone = run_once(senders, rate_mbps=rate_mbps, duration_s=duration,
                         with_daemon=False)
        looped = run_once(senders, rate_mbps=rate_mbps, duration_s=duration,
                          with_daemon=True, model=model)
    if as_json:
        click.echo(json.dumps({"dualpi2": alone, "aqmllmd": looped}, indent=2))
        return
    what = f"model {model}" if model else ("embedded default model: decides nothing "
                                           "beyond DualPI2")
    for label, r in (("DualPI2 alone:", alone), (f"aqmllmd in the loop ({what}):", looped)):
        click.echo("\n".join(summarise(label, r["forwarder"])))
        click.echo("\n".join(flow_lines(r)))
    if looped.get("daemon_status") is None:
        click.echo("(aqmllmd's status could not be read after the run: it may have died)")
