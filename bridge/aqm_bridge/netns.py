"""Real packets through the core: sender, router and receiver network namespaces.

A `Testbed` builds, on this machine only, one namespace per sender (so each has its
own TCP settings: ECN on or off is a per-namespace sysctl), a router namespace and a
receiver namespace, joined by veth pairs:

    sender i  10.77.(10+i).1  fd77:(10+i)::1 --veth-- router --veth-- 10.77.2.1 fd77:2::1
                                                 |                     receiver
                            TUN "tf" (to the receiver), TUN "tr" (back to the senders)

The router routes what arrives from the senders into the TUN device `tf` and what
arrives from the receiver into `tr` (policy rules by incoming interface); build/aqm-fwd
reads both, runs the forward direction through the core's queues and the bottleneck,
delays both directions by the path's base RTT, and writes the packets back, so the
router's stack routes them on. Every address lives inside the namespaces made here.

Everything the testbed starts (namespaces, processes, the channel region) is removed
when it is closed, also when the body of the `with` raised or was interrupted. A run
killed outright takes its processes with it (each gets SIGTERM when the process that
started it dies), and the namespaces and region it left (their names hold its pid) are
removed by the next `Testbed`.

The senders: iperf3 clients (kernel TCP: cubic, reno, bbr; this kernel has no DCTCP or
Prague), and build/aqm-udpflow, a UDP sender of this project that sends ECT(1) and
reacts to the CE marks its receiver echoes (a scalable, DCTCP-like window: minus half a
packet per mark, plus one per window otherwise). It is not TCP: it exists because the
kernel's TCP here cannot send ECT(1) (IP_TOS cannot set the ECN bits of a TCP socket).
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import re
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from ._ffi import REPO_ROOT

FWD = REPO_ROOT / "build" / "aqm-fwd"
UDPFLOW = REPO_ROOT / "build" / "aqm-udpflow"
PREFIX = "aqmllm"
RECEIVER_V4 = "10.77.2.1"
RECEIVER_V6 = "fd77:2::1"
CCS = ("cubic", "reno", "bbr")


class NetnsError(RuntimeError):
    """A namespace command failed; the message says which and why."""


def sender_v4(i: int) -> str:
    return f"10.77.{10 + i}.1"


def sender_v6(i: int) -> str:
    return f"fd77:{10 + i}::1"


def unavailable() -> str | None:
    """Why real-traffic runs cannot happen here, or None if they can."""
    if os.geteuid() != 0:
        return "network namespaces need root (run as root, as CI does)"
    for tool in ("ip", "iperf3"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (scripts/setup.sh installs iproute2 and iperf3)"
    if not Path("/dev/net/tun").exists():
        return "/dev/net/tun is missing (no TUN support)"
    for exe in (FWD, UDPFLOW):
        if not exe.is_file():
            return f"{exe} missing: run `make` first"
    name = f"{PREFIX}-probe-{os.getpid()}"
    r = subprocess.run(["ip", "netns", "add", name], capture_output=True, text=True)
    if r.returncode != 0:
        return f"cannot create a network namespace: {r.stderr.strip()}"
    subprocess.run(["ip", "netns", "del", name], capture_output=True)
    return None


def _ip(*args: str, ns: str | None = None) -> None:
    cmd = ["ip", *(["-n", ns] if ns else []), *args]
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        raise NetnsError(f"{' '.join(cmd)}: {r.stderr.strip()}")


def _sysctl(ns: str, key: str, value: str) -> None:
    path = "/proc/sys/" + key.replace(".", "/")
    r = subprocess.run(["ip", "netns", "exec", ns, "sh", "-c", f"echo {value} > {path}"],
                       capture_output=True, text=True)
    if r.returncode != 0:
        raise NetnsError(f"sysctl {key}={value} in {ns}: {r.stderr.strip()}")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _die_with_parent() -> None:
    """In the child before exec: SIGTERM when the parent dies (PR_SET_PDEATHSIG)."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(1, signal.SIGTERM, 0, 0, 0)      # PR_SET_PDEATHSIG = 1


def _can_realtime() -> bool:
    if shutil.which("chrt") is None:
        return False
    return subprocess.run(["chrt", "-f", "1", "true"], capture_output=True).returncode == 0


#: Channel regions the real-traffic runs name after their pid: /dev/shm/aqm-<kind>-<pid>.
REGION_KINDS = ("tcp", "fail", "bench")


def remove_stale() -> list[str]:
    """Delete namespaces of testbeds, and channel regions of real-traffic runs, whose
    process is gone (killed before it could clean up); returns their names."""
    gone = []
    for path in Path("/dev/shm").glob("aqm-*-*"):
        m = re.fullmatch(rf"aqm-(?:{'|'.join(REGION_KINDS)})-(\d+)", path.name)
        if m and not _pid_alive(int(m.group(1))):
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
                gone.append(str(path))
    r = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True)
    for line in r.stdout.splitlines():
        name = line.split()[0] if line.strip() else ""
        m = re.fullmatch(rf"{PREFIX}(\d+)[a-z]+\d*", name)
        if m and not _pid_alive(int(m.group(1))):
            subprocess.run(["ip", "netns", "del", name], capture_output=True)
            gone.append(name)
    return gone


@dataclass
class Sender:
    """One sender namespace: its congestion control, ECN setting and base RTT."""

    cc: str                 # cubic | reno | bbr | ect1 (build/aqm-udpflow)
    rtt_ms: float = 20.0
    ecn: bool = False       # TCP: net.ipv4.tcp_ecn=1 in its namespace
    v6: bool = False        # ect1: send over IPv6

    def __post_init__(self) -> None:
        if self.cc not in (*CCS, "ect1"):
            raise ValueError(f"sender cc {self.cc!r}: want one of {', '.join(CCS)} or ect1")
        if not 0 <= self.rtt_ms <= 10000:
            raise ValueError(f"sender rtt_ms {self.rtt_ms}: want 0..10000")

    @property
    def label(self) -> str:
        if self.cc == "ect1":
            return f"ECT(1) UDP{'v6' if self.v6 else ''} (scalable)"
        return f"{self.cc}{' ECN' if self.ecn else ''}"


@dataclass
class Testbed:
    """Namespaces, veths, TUN devices and routes; `with Testbed(senders) as tb:`."""

    __test__ = False        # not a pytest class

    senders: Sequence[Sender]
    tag: str = field(default_factory=lambda: str(os.getpid()))
    namespaces: list[str] = field(default_factory=list)
    procs: list[subprocess.Popen[Any]] = field(default_factory=list)
    shm: list[Path] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not 1 <= len(self.senders) <= 8:
            raise ValueError("want 1..8 senders")
        base = f"{PREFIX}{self.tag}"
        self.router = f"{base}r"
        self.receiver = f"{base}d"
        self.sender_ns = [f"{base}s{i}" for i in range(len(self.senders))]

    # -- life cycle -----------------------------------------------------------------

    def __enter__(self) -> Testbed:
        remove_stale()
        try:
            self._build()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Stop every process started here, then delete every namespace and region."""
        for p in reversed(self.procs):
            if p.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    p.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 5
        for p in self.procs:
            try:
                p.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    p.kill()
                p.wait()
        self.procs.clear()
        for ns in reversed(self.namespaces):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)
        self.namespaces.clear()
        for path in self.shm:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()

    def _add_ns(self, name: str) -> None:
        _ip("netns", "add", name)
        self.namespaces.append(name)
        _ip("link", "set", "lo", "up", ns=name)

    def _build(self) -> None:
        r, d = self.router, self.receiver
        self._add_ns(r)
        self._add_ns(d)
        for key in ("net.ipv4.ip_forward", "net.ipv6.conf.all.forwarding"):
            _sysctl(r, key, "1")
        for key in ("all", "default"):
            _sysctl(r, f"net.ipv4.conf.{key}.rp_filter", "0")
        for dev, table in (("tf", "100"), ("tr", "101")):
            _ip("tuntap", "add", "dev", dev, "mode", "tun", ns=r)
            _ip("link", "set", dev, "mtu", "1500", "txqueuelen", "10000", "up", ns=r)
            _sysctl(r, f"net.ipv4.conf.{dev}.rp_filter", "0")
            for fam in ("-4", "-6"):
                _ip(fam, "route", "add", "default", "dev", dev, "table", table, ns=r)
        # The receiver side.
        _ip("link", "add", "eth0", "netns", d, "type", "veth", "peer", "name", "d0",
            "netns", r)
        self._addr(d, "eth0", f"{RECEIVER_V4}/24", f"{RECEIVER_V6}/64")
        self._addr(r, "d0", "10.77.2.254/24", "fd77:2::fe/64")
        _ip("route", "add", "default", "via", "10.77.2.254", ns=d)
        _ip("-6", "route", "add", "default", "via", "fd77:2::fe", ns=d)
        for fam in ("-4", "-6"):
            _ip(fam, "rule", "add", "iif", "d0", "lookup", "101", "pref", "100", ns=r)
        for i, (s, snd) in enumerate(zip(self.sender_ns, self.senders, strict=True)):
            self._add_ns(s)
            _sysctl(s, "net.ipv4.tcp_ecn", "1" if snd.ecn else "0")
            _ip("link", "add", "eth0", "netns", s, "type", "veth", "peer", "name", f"s{i}",
                "netns", r)
            self._addr(s, "eth0", f"{sender_v4(i)}/24", f"{sender_v6(i)}/64")
            self._addr(r, f"s{i}", f"10.77.{10 + i}.254/24", f"fd77:{10 + i}::fe/64")
            _ip("route", "add", "default", "via", f"10.77.{10 + i}.254", ns=s)
            _ip("-6", "route", "add", "default", "via", f"fd77:{10 + i}::fe", ns=s)
            for fam in ("-4", "-6"):
                _ip(fam, "rule", "add", "iif", f"s{i}", "lookup", "100", "pref", "100", ns=r)

    @staticmethod
    def _addr(ns: str, dev: str, v4: str, v6: str) -> None:
        _ip("addr", "add", v4, "dev", dev, ns=ns)
        _ip("-6", "addr", "add", v6, "dev", dev, "nodad", ns=ns)
        _ip("link", "set", dev, "up", ns=ns)

    # -- processes ---------------------------------------------------------------------

    def popen(self, ns: str, args: Sequence[str], **kw: Any) -> subprocess.Popen[Any]:
        """Start a process in namespace ns; it is stopped when the testbed closes, and
        gets SIGTERM if this process dies first (even by SIGKILL). Call it from the
        thread that lives as long as the testbed (the death signal follows the thread
        that started the child)."""
        p = subprocess.Popen(["ip", "netns", "exec", ns, *args], preexec_fn=_die_with_parent,
                             **kw)
        self.procs.append(p)
        return p

    def spawn(self, args: Sequence[str], **kw: Any) -> subprocess.Popen[Any]:
        """Start a process outside the namespaces (aqmllmd), stopped as popen's are."""
        p = subprocess.Popen(list(args), preexec_fn=_die_with_parent, **kw)
        self.procs.append(p)
        return p

    def start_forwarder(self, *, rate_mbps: float | None = 100.0,
                        trace: Path | None = None, shm: str | None = None,
                        wait_consumer_s: float = 0.0, duration_s: float = 0.0,
                        on_region: Callable[[Path], None] | None = None,
                        cpu: int | None = None, realtime: bool = True,
                        extra: Sequence[str] = ()) -> subprocess.Popen[str]:
        """build/aqm-fwd in the router namespace, with each sender's base RTT as its
        path; returns once it has attached its devices (and the channel region).

        With shm, the region is /dev/shm/<shm>; on_region(path) runs once it exists
        (start the daemon there), and the forwarder waits up to wait_consumer_s for a
        consumer before it says it is ready. cpu pins it to that CPU (taskset).

        realtime: run it under SCHED_FIFO priority 1 (chrt) where the system allows,
        as a data path in a kernel is never preempted by user processes: on a
        machine with few cores the daemon, the senders and the forwarder compete, and
        a forwarder that waits for a core holds packets that no AQM decided on.
        The kernel's RT throttling (95 % of each second by default) still leaves
        others their share, and the forwarder sleeps whenever nothing is due."""
        args = [str(FWD), "--fwd-tun", "tf", "--rev-tun", "tr", "--json",
                "--duration", str(duration_s)]
        args += ["--trace", str(trace)] if trace else ["--rate-mbps", str(rate_mbps)]
        for i, snd in enumerate(self.senders):
            args += ["--path", f"{sender_v4(i)}={snd.rtt_ms}",
                     "--path", f"{sender_v6(i)}={snd.rtt_ms}"]
        if shm:
            self.shm.append(Path("/dev/shm", shm))
            args += ["--shm", shm, "--wait-consumer", str(wait_consumer_s)]
        else:
            args.append("--no-channel")
        pin = ["taskset", "-c", str(cpu)] if cpu is not None else []
        if realtime and _can_realtime():
            pin = ["chrt", "-f", "1", *pin]
        fwd = self.popen(self.router, [*pin, *args, *extra], stdout=subprocess.PIPE, text=True)
        assert fwd.stdout is not None
        if shm and on_region is not None:
            region = Path("/dev/shm", shm)
            deadline = time.monotonic() + 10
            while not region.exists() and fwd.poll() is None:
                if time.monotonic() > deadline:
                    raise NetnsError(f"aqm-fwd made no region {region} in 10 s")
                time.sleep(0.01)
            if fwd.poll() is None:
                on_region(region)
        line = fwd.stdout.readline()
        if line.strip() != "ready":
            fwd.wait(timeout=10)
            raise NetnsError(f"aqm-fwd did not start (exit {fwd.returncode})")
        return fwd

    @staticmethod
    def stop_forwarder(fwd: subprocess.Popen[str], timeout: float = 30) -> dict[str, Any]:
        """SIGTERM the forwarder and return its JSON report."""
        if fwd.poll() is None:
            fwd.send_signal(signal.SIGTERM)
        out, _ = fwd.communicate(timeout=timeout)
        if fwd.returncode != 0:
            raise NetnsError(f"aqm-fwd failed (exit {fwd.returncode})")
        return json.loads(out)

    def iperf3_server(self, port: int) -> subprocess.Popen[str]:
        return self.popen(self.receiver, ["iperf3", "-s", "-1", "-p", str(port), "-B",
                                          RECEIVER_V4], stdout=subprocess.DEVNULL,
                          stderr=subprocess.DEVNULL, text=True)

    def iperf3_client(self, i: int, port: int, duration_s: float,
                      interval_s: float = 0.2) -> subprocess.Popen[str]:
        snd = self.senders[i]
        return self.popen(self.sender_ns[i],
                          ["iperf3", "-c", RECEIVER_V4, "-p", str(port), "-B", sender_v4(i),
                           "-t", str(duration_s), "-i", str(interval_s), "-C", snd.cc, "-J"],
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def udpflow_echo(self, port: int) -> subprocess.Popen[str]:
        return self.popen(self.receiver, [str(UDPFLOW), "echo", "--port", str(port)],
                          stdout=subprocess.PIPE, text=True)

    def udpflow_send(self, i: int, port: int, duration_s: float, *, mode: str = "scalable",
                     tos: int = 1, interval_ms: float = 10.0,
                     v6: bool = False) -> subprocess.Popen[str]:
        dst = RECEIVER_V6 if v6 else RECEIVER_V4
        return self.popen(self.sender_ns[i],
                          [str(UDPFLOW), mode, "--dst", dst, "--port", str(port),
                           "--duration", str(duration_s), "--tos", str(tos),
                           "--interval-ms", str(interval_ms)],
                          stdout=subprocess.PIPE, text=True)

    def wait_listening(self, port: int, proto: str = "t", timeout: float = 5) -> None:
        """Until something in the receiver namespace listens on port."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            r = subprocess.run(["ip", "netns", "exec", self.receiver, "ss", f"-{proto}lnH",
                                "sport", f"= :{port}"], capture_output=True, text=True)
            if r.stdout.strip():
                return
            time.sleep(0.02)
        raise NetnsError(f"nothing listens on port {port} in {self.receiver}")

    # -- what the stacks saw ----------------------------------------------------------

    def netstat(self, ns: str) -> dict[str, int]:
        """The namespace's /proc/net/netstat, snmp and snmp6 counters, named
        'IpExt.InCEPkts', 'Ip.InCsumErrors', 'Ip6.Ip6InCEPkts'."""
        out: dict[str, int] = {}
        for f in ("/proc/net/netstat", "/proc/net/snmp"):
            text = subprocess.run(["ip", "netns", "exec", ns, "cat", f], capture_output=True,
                                  text=True, check=True).stdout.splitlines()
            for head, vals in zip(text[::2], text[1::2], strict=False):
                kind, *names = head.split()
                _, *nums = vals.split()
                for n, v in zip(names, nums, strict=False):
                    with contextlib.suppress(ValueError):
                        out[f"{kind.rstrip(':')}.{n}"] = int(v)
        text = subprocess.run(["ip", "netns", "exec", ns, "cat", "/proc/net/snmp6"],
                              capture_output=True, text=True).stdout
        for line in text.splitlines():
            parts = line.split()
            if len(parts) == 2 and parts[1].isdigit():
                out[f"Ip6.{parts[0]}"] = int(parts[1])
        return out


def ss_sample(ns: str, dst: str = RECEIVER_V4) -> list[dict[str, Any]]:
    """One `ss -tin` look at the TCP connections to dst from namespace ns: cwnd,
    ssthresh, retrans, delivered, delivered_ce (packets delivered with an ECE echo),
    lost, rtt_ms, cc, and the ecn/ecnseen flags where this ss prints them (Debian 12's
    does not on kernel 6.18: delivered_ce is the evidence there)."""
    r = subprocess.run(["ip", "netns", "exec", ns, "ss", "-tinH", "dst", dst],
                       capture_output=True, text=True)
    conns = []
    for info in re.split(r"\n(?=\S)", r.stdout.strip()):
        if not info:
            continue
        c: dict[str, Any] = {"ecn": " ecn " in f" {info} ", "ecnseen": "ecnseen" in info}
        for key in ("cwnd", "retrans", "ssthresh", "delivered", "delivered_ce", "lost"):
            m = re.search(rf"\b{key}:(\d+)(?:/(\d+))?", info)
            if m:
                c[key] = int(m.group(2) or m.group(1)) if key == "retrans" else int(m.group(1))
        m = re.search(r"\brtt:([\d.]+)/([\d.]+)", info)
        if m:
            c["rtt_ms"] = float(m.group(1))
        m = re.search(r"\bcc:(\w+)|\b(cubic|reno|bbr)\b", info)
        if m:
            c["cc"] = m.group(1) or m.group(2)
        conns.append(c)
    return conns


class SsSampler:
    """Samples `ss -tin` in some namespaces every period_s on a thread, until stopped."""

    def __init__(self, namespaces: Sequence[str], period_s: float = 0.25) -> None:
        self.namespaces = list(namespaces)
        self.period_s = period_s
        self.samples: dict[str, list[tuple[float, list[dict[str, Any]]]]] = {
            ns: [] for ns in self.namespaces}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        t0 = time.monotonic()
        while not self._stop.wait(self.period_s):
            for ns in self.namespaces:
                self.samples[ns].append((time.monotonic() - t0, ss_sample(ns)))

    def __enter__(self) -> SsSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)


def iperf3_summary(report: dict[str, Any]) -> dict[str, Any]:
    """Goodput, retransmits, RTT and the window's range from an iperf3 -J client report."""
    end = report.get("end", {})
    stream = (end.get("streams") or [{}])[0].get("sender", {})
    cwnds = [iv["streams"][0].get("snd_cwnd", 0) for iv in report.get("intervals", [])
             if iv.get("streams")]
    rtts = [iv["streams"][0].get("rtt", 0) / 1000 for iv in report.get("intervals", [])
            if iv.get("streams")]
    return {
        "goodput_mbps": end.get("sum_received", {}).get("bits_per_second", 0) / 1e6,
        "retransmits": end.get("sum_sent", {}).get("retransmits", 0),
        "mean_rtt_ms": stream.get("mean_rtt", 0) / 1000,
        "max_rtt_ms": stream.get("max_rtt", 0) / 1000,
        "min_rtt_ms": stream.get("min_rtt", 0) / 1000,
        "cwnd_bytes": cwnds,
        "rtt_ms": rtts,
        "error": report.get("error"),
    }


def read_json(stream: IO[str] | None) -> dict[str, Any]:
    """The JSON report a process prints last (after any "ready" line)."""
    if stream is None:
        return {}
    text = stream.read().strip()
    last = text.splitlines()[-1] if text else ""
    for candidate in (text, last):
        try:
            return json.loads(candidate) if candidate else {}
        except json.JSONDecodeError:
            continue
    return {"error": f"not JSON: {text[:200]!r}"}


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """SIGTERM raises KeyboardInterrupt inside the block, so cleanup runs."""
    def handler(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    old = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)
