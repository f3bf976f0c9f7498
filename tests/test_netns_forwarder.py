"""Real packets through the core: build/aqm-fwd between network namespaces.

The namespace tests need root and network namespaces (CI has both); elsewhere they are
skipped with the reason. Every address they use lives inside the namespaces they make.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from aqm_bridge.netns import (
    FWD,
    PREFIX,
    Sender,
    Testbed,
    unavailable,
)

WHY = unavailable()
needs_netns = pytest.mark.skipif(WHY is not None, reason=f"real-traffic tests: {WHY}")


def _namespaces(tag: str) -> list[str]:
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    return [line.split()[0] for line in out.splitlines()
            if line.startswith(f"{PREFIX}{tag}")]


def _children() -> list[int]:
    """This process's children (from /proc: no ps needed)."""
    kids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == os.getpid():
            kids.append(int(stat.parent.name))
    return sorted(kids)


def test_forwarder_refuses_bad_arguments_with_one_line(tmp_path: Path) -> None:
    if not FWD.is_file():
        pytest.skip(f"{FWD} missing: run `make` first")
    bad = tmp_path / "bad.mahimahi"
    bad.write_text("0\n5\n3\n")
    cases = [
        (["--trace", str(bad)], "not a Mahimahi trace"),
        (["--trace", str(tmp_path / "none")], "cannot open trace"),
        (["--path", "10.0.0.1"], "want ADDR=RTT_MS"),
        (["--path", "nowhere=10"], "not an IPv4 or IPv6 address"),
        (["--rate-mbps", "0"], "--rate-mbps 0"),
    ]
    for args, msg in cases:
        r = subprocess.run([str(FWD), "--fwd-tun", "x", "--rev-tun", "y", "--no-channel",
                            *args], capture_output=True, text=True, timeout=10)
        assert r.returncode != 0, args
        assert msg in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr


@needs_netns
def test_real_tcp_through_the_core_with_aqmllmd() -> None:
    """Cubic with ECN, reno without, an ECT(1) sender over IPv6, each on its own base
    RTT, aqmllmd attached."""
    from aqmllmd.demo_tcp import run_once

    senders = [Sender("cubic", 20, ecn=True), Sender("reno", 40), Sender("ect1", 10, v6=True)]
    before = _children()
    r = run_once(senders, rate_mbps=20, duration_s=4, with_daemon=True, ss_period_s=0.25)
    fwd = r["forwarder"]
    cubic, reno, ect1 = (f["report"] for f in r["flows"])

    # Packets forwarded both ways, through both queues.
    assert fwd["tx_fwd"] > 2000 and fwd["tx_rev"] > 1000
    assert fwd["pkts_out"][0] > 1000 and fwd["pkts_out"][1] > 100
    assert fwd["write_errors"] == 0 and fwd["pool_empty"] == 0
    # Each path has its own base RTT (IPv4 and IPv6 alike): no round trip is shorter.
    assert cubic["min_rtt_ms"] >= 20 and reno["min_rtt_ms"] >= 40
    assert ect1["rtt_ms"]["min"] >= 10
    # CE written into IPv4 headers (checksum intact: the receiver's IP layer took them
    # all) and IPv6 ones, and arriving at the receiver.
    assert fwd["ce_v4"] > 0 and fwd["ce_v6"] > 0
    assert r["receiver_ip_ecn"]["InCEPkts"] > 0
    assert r["receiver_ip"]["IpExt.InCsumErrors"] == 0 and r["receiver_ip"]["Ip.InHdrErrors"] == 0
    assert r["receiver_ip"]["Ip6.Ip6InCEPkts"] > 0
    assert r["echo"]["ce"] >= ect1["ce_echoed"] > 0   # the L probe's marks too
    # The marks are the forwarder's only: nothing CE-marked came in.
    assert fwd["ecn_in"][3] == 0 and fwd["mark_not_ect"] == 0
    # The ECN senders' windows react: cubic's snd_cwnd falls with no loss needed (its
    # stack counts deliveries acknowledged with ECE), the ECT(1) sender's window falls
    # after its first CE echo.
    assert r["sender_tcp"][0]["TCPDeliveredCE"] > 0
    cw = cubic["cwnd_bytes"]
    assert any(b < a for a, b in zip(cw, cw[1:], strict=False)), cw
    # ss -tin agrees: cubic's connection had packets delivered with ECE echoes, reno's
    # none, and cubic's window fell between two looks.
    ss_cubic = [c for _, conns in r["flows"][0]["ss"] for c in conns if c.get("cc") == "cubic"]
    ss_reno = [c for _, conns in r["flows"][1]["ss"] for c in conns if c.get("cc") == "reno"]
    assert ss_cubic and ss_reno
    assert max(c.get("delivered_ce", 0) for c in ss_cubic) > 0
    assert max(c.get("delivered_ce", 0) for c in ss_reno) == 0
    sw = [c["cwnd"] for c in ss_cubic if "cwnd" in c]
    assert any(b < a for a, b in zip(sw, sw[1:], strict=False)), sw
    assert ect1["ce_echoed"] > 0 and min(ect1["cwnd"][1:]) < ect1["cwnd_at_first_ce"]
    # The Not-ECT flow loses packets to DualPI2's drops and retransmits them.
    assert fwd["drops_fallback"][0] > 0
    assert reno["retransmits"] > 0 and r["sender_tcp"][1]["TCPDeliveredCE"] == 0
    # aqmllmd served the forwarder unchanged and its verdicts were applied.
    assert r["daemon_status"] is not None
    assert r["daemon_status"]["channel_sealed"] is True     # the memfd, as aqm-host's
    assert fwd["verdicts_applied"] > 0 and fwd["decisions_model"] > 0
    assert fwd["states_published"] > 0 and fwd["channel_errors"] == 0
    # Nothing left behind.
    assert _namespaces(str(os.getpid())) == []
    assert _children() == before
    assert not list(Path("/dev/shm").glob(f"aqm-tcp-{os.getpid()}*"))


@needs_netns
@pytest.mark.parametrize("exc", [RuntimeError, KeyboardInterrupt])
def test_everything_is_removed_when_the_run_fails(exc: type[BaseException]) -> None:
    tag = f"{os.getpid()}x"
    procs: list[subprocess.Popen[str]] = []
    with pytest.raises(exc), Testbed([Sender("cubic", 10, ecn=True)], tag=tag) as tb:
        procs.append(tb.start_forwarder(rate_mbps=10, shm=f"aqm-fail-{os.getpid()}"))
        procs.append(tb.iperf3_server(5201))
        procs.append(tb.udpflow_echo(5301))
        assert len(_namespaces(tag)) == 3
        raise exc("the run failed")
    assert _namespaces(tag) == []
    assert all(p.poll() is not None for p in procs)
    assert not Path("/dev/shm", f"aqm-fail-{os.getpid()}").exists()


@needs_netns
def test_a_stale_testbed_is_removed_by_the_next() -> None:
    # A namespace and a region named as a testbed's of a process that is gone (pid
    # 2**22+1 is above any pid_max, so it never ran).
    stale = f"{PREFIX}{2**22 + 1}r"
    region = Path("/dev/shm", f"aqm-tcp-{2**22 + 1}")
    subprocess.run(["ip", "netns", "add", stale], check=True)
    region.write_bytes(b"")
    try:
        with Testbed([Sender("reno", 10)], tag=f"{os.getpid()}y"):
            assert stale not in _namespaces(str(2**22 + 1))
            assert not region.exists()
    finally:
        subprocess.run(["ip", "netns", "del", stale], capture_output=True)
        region.unlink(missing_ok=True)


def _trace_capacity_bytes(trace: Path, seconds: float) -> int:
    """Bytes a Mahimahi trace offers in its first `seconds` (it loops)."""
    times = [int(x) for x in trace.read_text().split()]
    period = max(times[-1], 1)
    ms = seconds * 1000
    full, rest = divmod(ms, period)
    return 1500 * (int(full) * len(times) + sum(1 for t in times if t < rest))


@needs_netns
def test_a_mahimahi_trace_is_the_bottleneck() -> None:
    """The trace sim/ replays: the forwarder never sends more than its opportunities
    carry, and the queue forms there."""
    from aqm_bridge._ffi import REPO_ROOT
    from aqmllmd.demo_tcp import run_once

    trace = REPO_ROOT / "sim" / "traces" / "variable-5-40mbit.mahimahi"
    r = run_once([Sender("cubic", 20, ecn=True)], rate_mbps=0, duration_s=3,
                 with_daemon=False, trace=trace, probes=False)
    fwd = r["forwarder"]
    assert r["flows"][0]["report"]["goodput_mbps"] > 0
    assert 0 < sum(fwd["bytes_out"]) <= _trace_capacity_bytes(trace, fwd["wall_s"] + 0.002)
    assert fwd["sojourn_ms_c"]["p99"] > 1


@needs_netns
def test_a_link_faster_than_the_loop_is_served_back_to_back() -> None:
    """At 100 Gbit/s a packet's time on the wire is shorter than one pass of the
    forwarder's loop: a UDP flood must leave as fast as it is read, never filling the
    queue to its limit (it did when one packet left per pass)."""
    from aqm_bridge.netns import RECEIVER_V4, sender_v4

    with Testbed([Sender("cubic", 0)], tag=f"{os.getpid()}f") as tb:
        fwd = tb.start_forwarder(rate_mbps=100000, realtime=False)
        tb.iperf3_server(5201)
        tb.wait_listening(5201)
        cl = tb.popen(tb.sender_ns[0], ["iperf3", "-c", RECEIVER_V4, "-B", sender_v4(0),
                                        "-u", "-b", "0", "-l", "1400", "-t", "2"],
                      stdout=subprocess.DEVNULL)
        cl.wait(timeout=30)
        rep = tb.stop_forwarder(fwd)
    assert rep["pkts_in"][0] > 10000
    assert rep["drops_limit"] == [0, 0]


KILLED_RUN = """
import os, sys
from aqm_bridge.netns import Sender, Testbed
tb = Testbed([Sender("cubic", 10)]).__enter__()
fwd = tb.start_forwarder(rate_mbps=10, shm=f"aqm-fail-{os.getpid()}")
echo = tb.udpflow_echo(5301)
tb.iperf3_server(5201)
tb.wait_listening(5201)
print(os.getpid(), *(p.pid for p in tb.procs), flush=True)
sys.stdin.read()
"""


@needs_netns
def test_a_killed_run_takes_its_processes_with_it() -> None:
    """SIGKILL leaves no time to clean up: the testbed's processes still get SIGTERM
    (their parent's death signal), and the next testbed removes the namespaces."""
    import signal
    import sys
    import time

    run = subprocess.Popen([sys.executable, "-c", KILLED_RUN], stdin=subprocess.PIPE,
                           stdout=subprocess.PIPE, text=True)
    assert run.stdout is not None
    tag, *pids = (int(p) for p in run.stdout.readline().split())
    assert len(pids) == 3 and len(_namespaces(str(tag))) == 3
    run.send_signal(signal.SIGKILL)
    run.wait()
    deadline = time.monotonic() + 10
    alive = pids
    while alive and time.monotonic() < deadline:
        time.sleep(0.05)
        alive = [p for p in pids if _running(p)]
    assert alive == []
    with Testbed([Sender("reno", 10)], tag=f"{os.getpid()}z"):
        assert _namespaces(str(tag)) == []
    assert not Path("/dev/shm", f"aqm-fail-{tag}").exists()


def _running(pid: int) -> bool:
    """Alive and not a zombie (a zombie's parent has not waited for it yet)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


@needs_netns
def test_a_saturated_trace_link_uses_its_opportunities(tmp_path: Path) -> None:
    """Two 1500-byte opportunities every ms (24 Mbit/s) under a 100 Mbit/s UDP flood: the
    link carries what its opportunities offer, however late the forwarder wakes (an
    opportunity is lost only while no packet waits for it; taking "passed by the time
    the forwarder looked" as lost delivered 0.48 of it). Packets are stamped when the
    forwarder reads them, so a stall longer than the queue's backlog still loses the
    rest of the stall's opportunities: 0.76-0.96 were carried on the 2 shared cores,
    hence the margin."""
    from aqm_bridge.netns import RECEIVER_V4, sender_v4

    trace = tmp_path / "24mbit.mahimahi"
    trace.write_text("".join(f"{ms}\n{ms}\n" for ms in range(1, 1001)))
    with Testbed([Sender("cubic", 0)], tag=f"{os.getpid()}t") as tb:
        fwd = tb.start_forwarder(trace=trace)
        tb.iperf3_server(5201)
        tb.wait_listening(5201)
        cl = tb.popen(tb.sender_ns[0], ["iperf3", "-c", RECEIVER_V4, "-B", sender_v4(0),
                                        "-u", "-b", "100M", "-l", "1400", "-t", "3"],
                      stdout=subprocess.DEVNULL)
        cl.wait(timeout=30)
        rep = tb.stop_forwarder(fwd)
    assert sum(rep["bytes_out"]) >= 0.65 * 24e6 * 3 / 8, rep["bytes_out"]


@needs_netns
def test_the_forwarder_takes_a_consumer_back_after_a_channel_error() -> None:
    """Garbage in the consumer's index detaches the core (DualPI2 decides alone, packets
    still flow); a consumer that attaches since gets the channel back, as aqm-host's."""
    import time

    from aqm_bridge.channel import IDX_STATE_CONS, Region

    def until(cond: object, what: str) -> None:
        deadline = time.monotonic() + 10
        while not cond():  # type: ignore[operator]
            assert time.monotonic() < deadline, what
            time.sleep(0.01)

    shm = f"aqm-fail-{os.getpid()}"
    with Testbed([Sender("cubic", 0)], tag=f"{os.getpid()}c") as tb:
        # A small state ring: the core looks at the consumer's index when it seems full.
        fwd = tb.start_forwarder(rate_mbps=10, shm=shm, extra=["--state-ring", "64"])
        tb.udpflow_echo(5301)
        tb.wait_listening(5301, proto="u")
        probe = tb.udpflow_send(0, 5301, 30, mode="probe", tos=0, interval_ms=1)
        path = Path("/dev/shm", shm)
        with Region.open(path) as r:
            assert r.sealed
            r.claim_consumer()
            until(lambda: len(r.read_states(65536)) > 0, "no states")
            r.set_index(IDX_STATE_CONS, 0x7FFF0000)
            until(lambda: not r.producer_up, "the forwarder never saw the garbage")
        with Region.open(path) as again:
            again.claim_consumer()
            until(lambda: again.producer_up, "the forwarder never re-attached")
            until(lambda: len(again.read_states(65536)) > 0, "no states after")
        rep = tb.stop_forwarder(fwd)
        probe.terminate()
    assert rep["channel_errors"] == 1 and rep["channel_reattaches"] == 1
    assert rep["sealed"] is True and rep["tx_fwd"] > 0
