"""Truncating the channel region under load: who survives.

As root: `.venv/bin/python bench/region_truncate.py [--duration 6] [--json]`.

Runs build/aqm-host (open-loop load at 90 % of 50 Mbit/s) with aqmllmd serving its
default model, as the README runs them, and meanwhile a scribbler that every 5 ms
opens /dev/shm/NAME read-write and calls ftruncate with 0, one page and twice the
region's size (what anyone who can open the object may do). Twice:

- *sealed*: aqm-host's default region, a memfd sealed against shrinking and growing;
- *unsealed*: `--keep-shm`, a plain POSIX shm object (as the Python test host makes
  its own; aqm-fwd's is sealed, as aqm-host's default).

For each: truncations attempted and refused (EPERM), how the host ended (its exit
status: -7 is SIGBUS), its report's channel counters, whether aqmllmd was still running
and attached, and the verdicts it wrote. Not a test: nothing is asserted.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import click

ROOT = Path(__file__).resolve().parents[1]
HOST = ROOT / "build" / "aqm-host"
sys.path[:0] = [str(ROOT / "bridge"), str(ROOT / "daemon")]

from aqm_bridge.channel import ChannelError, Region  # noqa: E402
from aqmllmd.ctl import Client  # noqa: E402


def scribble(path: Path, size: int, stop: threading.Event, tally: dict[str, int]) -> None:
    while not stop.is_set():
        for n in (0, 4096, 2 * size):
            tally["tried"] += 1
            try:
                fd = os.open(path, os.O_RDWR)
            except OSError:
                tally["unopenable"] += 1
                continue
            try:
                os.ftruncate(fd, n)
                tally["done"] += 1
            except PermissionError:
                tally["refused"] += 1
            finally:
                os.close(fd)
        # Put the size back so that the next round truncates again.
        try:
            os.truncate(path, size)
        except OSError:
            pass
        time.sleep(0.005)


def one(sealed: bool, duration: float, tmp: Path) -> dict[str, Any]:
    name = f"aqm-bench-trunc-{os.getpid()}-{int(sealed)}"
    shm = Path("/dev/shm", name)
    control = f"ipc://{tmp}/ctl-{int(sealed)}.sock"
    host = subprocess.Popen([str(HOST), "--shm", name, "--rate-mbps", "50", "--load",
                             "0.9", "--duration", str(duration + 4), "--json",
                             *([] if sealed else ["--keep-shm"])],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    daemon = subprocess.Popen([sys.executable, "-m", "aqmllmd.main", "--channel", str(shm),
                               "--control", control, "--metrics", ""],
                              stderr=subprocess.DEVNULL,
                              env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    tally = {"tried": 0, "done": 0, "refused": 0, "unopenable": 0}
    stop = threading.Event()
    out: dict[str, Any] = {"sealed": sealed}
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                with Region.open(shm) as r:
                    size = r.size
                    if r.indices()[2] > 0:  # aqmllmd is writing verdicts
                        break
            except ChannelError:
                pass
            if time.monotonic() > deadline:
                raise click.ClickException("aqmllmd never served the host")
            time.sleep(0.05)
        t = threading.Thread(target=scribble, args=(shm, size, stop, tally))
        t.start()
        time.sleep(duration)
        stop.set()
        t.join()
        out["truncations"] = tally
        c = Client(control, timeout_ms=2000)
        try:
            st = c.call("status") if daemon.poll() is None else {}
        except click.ClickException:
            st = {}
        finally:
            c.close()
        out["daemon_running"] = daemon.poll() is None
        out["daemon_attached"] = bool(st.get("attached"))
        out["daemon_verdicts"] = st.get("verdicts")
        rep, err = host.communicate(timeout=duration + 30)
        out["host_exit"] = host.returncode
        try:
            r = json.loads(rep)
            out["host"] = {k: r[k] for k in ("channel_errors", "verdicts_applied",
                                             "verdicts_late", "states_published",
                                             "delivered_mbps", "sealed")}
        except (json.JSONDecodeError, KeyError):
            out["host"] = None
            out["host_stderr"] = err.strip()[-200:]
    finally:
        stop.set()
        for p in (host, daemon):
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
                try:
                    p.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    p.kill()
        if os.path.lexists(shm):
            shm.unlink()
    return out


@click.command()
@click.option("--duration", default=6.0, help="seconds of truncation attempts")
@click.option("--json", "as_json", is_flag=True)
def main(duration: float, as_json: bool) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        results = [one(True, duration, Path(tmp)), one(False, duration, Path(tmp))]
    if as_json:
        click.echo(json.dumps(results, indent=1))
        return
    for r in results:
        t = r.get("truncations", {})
        click.echo(f"{'sealed' if r['sealed'] else 'unsealed'}: truncations tried "
                   f"{t.get('tried')}, done {t.get('done')}, refused {t.get('refused')}; "
                   f"host exit {r.get('host_exit')} {r.get('host')}; aqmllmd running "
                   f"{r.get('daemon_running')}, attached {r.get('daemon_attached')}, "
                   f"verdicts {r.get('daemon_verdicts')}")


if __name__ == "__main__":
    main()
