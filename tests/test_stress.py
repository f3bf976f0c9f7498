"""Two processes over the shared-memory object: the C data path and a Python consumer.

Every sequence number must be accounted for: decided once, by a verdict that the
consumer really sent (applied as sent), or by DualPI2; and every verdict sent is counted
applied, late or still unread. Nothing blocks the producer.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest

from aqm_bridge._ffi import REPO_ROOT
from aqm_bridge.channel import ChannelError, Region

HOST = REPO_ROOT / "build" / "aqm-host"
PASS, DROP, MARK = 0, 1, 2
NOT_ECT_SLOT = 2  # the stress load cycles ECN as ECT(1), ECT(0), Not-ECT, CE by seq % 4


def open_when_ready(path: Path, timeout_s: float = 10.0) -> Region:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return Region.open(path)
        except ChannelError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.005)


@pytest.mark.parametrize(("npkts", "pps", "backlog", "to_stdout"),
                         [(60_000, 300_000, 512, False), (40_000, 0, 64, True)])
def test_every_sequence_number_is_accounted_for(tmp_path: Path, npkts: int, pps: int,
                                                backlog: int, to_stdout: bool) -> None:
    name = f"aqm-test-stress-{os.getpid()}-{pps}"
    log = tmp_path / "decisions.bin"
    # The decision log goes to a file, or to stdout (then the report goes to stderr).
    log_arg = "-" if to_stdout else str(log)
    log_out = open(log, "wb") if to_stdout else None  # noqa: SIM115
    host = subprocess.Popen(
        [str(HOST), "--shm", name, "--stress", str(npkts), "--pps", str(pps),
         "--backlog", str(backlog), "--stress-log", log_arg, "--wait-consumer", "10",
         "--keep-shm", "--state-ring", "4096", "--verdict-ring", "4096", "--json",
         "--verdict-guard", "0", "--harm-budget", "off"],  # every verdict applied as sent
        stdout=log_out or subprocess.PIPE, stderr=subprocess.PIPE if to_stdout else None,
        text=True)
    region = open_when_ready(Path("/dev/shm", name))
    sent_seq, sent_act = [], []
    try:
        region.consumer_up = True
        rng = np.random.default_rng(0)
        seen_producer = False
        while True:
            states = region.read_states(1024)
            if len(states):
                # Answer about two thirds, with every action.
                keep = states[rng.random(len(states)) < 0.67]
                actions = (keep["seq"] % 3).astype(np.uint32)
                n = region.write_verdicts(keep["seq"], actions)
                sent_seq.append(keep["seq"][:n])
                sent_act.append(actions[:n])
                continue
            up = region.producer_up
            seen_producer |= up
            if seen_producer and not up and region.pending_states() == 0:
                break
            if host.poll() is not None:
                break
            time.sleep(0.0002)
        out, err = host.communicate(timeout=60)
        assert host.returncode == 0
        report = json.loads(err if to_stdout else out)
        v_prod, v_cons = region.indices()[2:]
    finally:
        if host.poll() is None:
            host.kill()
        region.close(unlink=True)
        if log_out is not None:
            log_out.close()

    print(f"stress {npkts} pkts at {pps or 'max'} pps: {report['wall_s']:.3f} s, "
          f"{len(np.concatenate(sent_seq))} verdicts sent, applied "
          f"{report['verdicts_applied']}, late {report['verdicts_late']}, states lost "
          f"{report['states_lost']}, model share {report['model_share']:.3f}")
    sent = dict(zip(np.concatenate(sent_seq).tolist(), np.concatenate(sent_act).tolist(),
                    strict=True))
    rec = np.fromfile(log, dtype=np.uint64).reshape(-1, 2)
    seqs, source, verdict = rec[:, 0], rec[:, 1] & 0xFF, (rec[:, 1] >> 8) & 0xFF

    # Each packet decided exactly once.
    assert np.array_equal(np.sort(seqs), np.arange(npkts, dtype=np.uint64))
    assert report["decisions"] == npkts
    assert report["drops_limit"] == [0, 0]
    # Model decisions are exactly the verdicts sent for them, as sent.
    model = source == 1
    assert model.sum() == report["decisions_model"] == report["verdicts_applied"]
    for s, v in zip(seqs[model].tolist(), verdict[model].tolist(), strict=True):
        want = sent[s]
        if want == MARK and s % 4 == NOT_ECT_SLOT:
            want = DROP  # RFC 3168
        assert v == want, f"seq {s}: applied {v}, sent {sent[s]}"
    # Every verdict sent is applied, late, or still in the ring; none is bad.
    unread = (v_prod - v_cons) % (1 << 32)
    assert report["verdicts_bad"] == 0
    assert len(sent) == report["verdicts_applied"] + report["verdicts_late"] + unread
    # Every state published reached the consumer or was counted lost.
    assert report["states_published"] + report["states_lost"] == npkts
    if pps:
        assert report["verdicts_applied"] > npkts // 10, "a paced load lets verdicts in"
