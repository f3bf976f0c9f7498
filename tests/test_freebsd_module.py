"""The FreeBSD module in CI: its glue in a user-space harness, its man pages, its rc.d."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from aqm_bridge._ffi import REPO_ROOT

HARNESS = REPO_ROOT / "build" / "freebsd" / "harness"
FREEBSD = REPO_ROOT / "freebsd"


def test_module_glue_in_the_harness_under_asan() -> None:
    r = subprocess.run([str(HARNESS)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    m = re.search(r"(\d+) passed, (\d+) failed", r.stdout)
    assert m and int(m.group(1)) > 100 and m.group(2) == "0"
    assert "ERROR: AddressSanitizer" not in r.stderr and "runtime error" not in r.stderr


def test_aqmllmd_follows_the_region_across_instances(tmp_path: Path) -> None:
    """The harness's module serves scheduler 1 while dummynet expires its instance, or
    the scheduler is reconfigured (a new state takes the region over), every 1.2 s; one
    aqmllmd, never restarted, keeps giving verdicts through both."""
    region = Path("/dev/shm", f"aqm-test-fbsd-{os.getpid()}")
    env = {**os.environ, "AQM_LLM_SHIM_REGION": str(region)}
    data_path = subprocess.Popen([str(HARNESS), "serve", "14", "1200"], env=env,
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    daemon = subprocess.Popen(
        [sys.executable, "-m", "aqmllmd.main", "--channel", str(region),
         "--control", f"ipc://{tmp_path}/ctl.sock", "--metrics", "", "--seed", "1"],
        stderr=subprocess.DEVNULL)
    try:
        out, err = data_path.communicate(timeout=120)
        assert daemon.poll() is None, "aqmllmd stopped"
    finally:
        daemon.kill()
        daemon.wait()
        data_path.kill()
        region.unlink(missing_ok=True)
    assert data_path.returncode == 0, out + err
    windows = [json.loads(line) for line in out.splitlines()]
    assert len(windows) >= 6, out
    across_expiry = across_takeover = 0
    for a, b in zip(windows, windows[1:], strict=False):
        if a["then"] == "expire":
            # The expired instance's state served on, for the next instance.
            assert (b["served"], b["producer_gen"]) == (a["served"], a["producer_gen"])
            across_expiry += a["verdicts_applied"] > 0 and \
                b["verdicts_applied"] > a["verdicts_applied"]
        else:
            # A new scheduler's state took the region over: one producer generation.
            assert b["served"] > a["served"] and b["producer_gen"] == a["producer_gen"] + 1
            across_takeover += a["verdicts_applied"] > 0 and b["verdicts_applied"] > 0
    assert across_expiry >= 1 and across_takeover >= 1, out


@pytest.mark.skipif(shutil.which("mandoc") is None, reason="mandoc not installed")
@pytest.mark.parametrize("page", ["aqm_llm.4", "aqmllmd.8", "aqmllmctl.8"])
def test_man_pages_are_lint_clean(page: str) -> None:
    r = subprocess.run(["mandoc", "-T", "lint", "-W", "warning", str(FREEBSD / "man" / page)],
                       capture_output=True, text=True)
    assert r.returncode == 0 and r.stdout.strip() == "", r.stdout + r.stderr


def test_rc_script_follows_rc_subr() -> None:
    text = (FREEBSD / "rc.d" / "aqmllmd").read_text()
    for needle in ("# PROVIDE: aqmllmd", ". /etc/rc.subr", 'name="aqmllmd"',
                   'rcvar="aqmllmd_enable"', "load_rc_config $name", "pidfile=",
                   ": ${aqmllmd_enable:=\"NO\"}", "sig_reload=\"HUP\"",
                   'run_rc_command "$1"'):
        assert needle in text, needle
    r = subprocess.run(["sh", "-n", str(FREEBSD / "rc.d" / "aqmllmd")], capture_output=True)
    assert r.returncode == 0


def test_port_skeleton_lists_what_it_installs() -> None:
    port = FREEBSD / "port" / "net" / "aqm-llm"
    plist = (port / "pkg-plist").read_text()
    for path in ("/boot/modules/aqm_llm.ko", "etc/rc.d/aqmllmd", "share/man/man4/aqm_llm.4.gz",
                 "share/man/man8/aqmllmd.8.gz", "share/man/man8/aqmllmctl.8.gz",
                 "etc/aqmllmd.conf.sample"):
        assert path in plist, path
    makefile = (port / "Makefile").read_text()
    assert "PORTNAME=\taqm-llm" in makefile and "USE_RC_SUBR=\taqmllmd" in makefile
    assert (port / "pkg-descr").read_text().strip()
