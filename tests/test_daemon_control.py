"""The control plane refuses hostile requests with an error and keeps serving."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import msgpack
import pytest

from aqmllmd.config import ConfigError, load
from aqmllmd.default_model import INTERIM_MODEL


def pack(obj: object) -> bytes:
    return msgpack.packb(obj, use_bin_type=True)


def test_socket_file_is_private(plane, tmp_path: Path) -> None:  # noqa: ANN001
    assert stat.S_IMODE(os.stat(tmp_path / "ctl.sock").st_mode) == 0o600


@pytest.mark.parametrize(("frame", "message"), [
    (os.urandom(64), "malformed|want a map"),
    (b"", "malformed"),
    (pack({"cmd": "status", "args": {"x": "y" * 100_000}}), "exceeds"),
    (pack([1, 2, 3]), "want a map"),
    (pack({"cmd": 7}), "unknown command"),
    (pack({"cmd": "format_disk"}), "unknown command"),
    (pack({"cmd": "set_model", "args": {"path": 3}}), "must be str"),
    (pack({"cmd": "set_model", "args": {}}), "takes arguments"),
    (pack({"cmd": "status", "args": [1]}), "must be a map"),
    (pack({"cmd": "status", "extra": 1}), "want a map"),
    (pack({"cmd": "params_set", "args": {"params": {"target_ns": "fast"}}}), "integers"),
    (pack({"cmd": "status", "args": {"a": [[[[[]]]]]}}), "takes arguments"),
    (pack({"cmd": "x" * 5000}), "malformed"),
])
def test_hostile_requests_get_an_error_and_serving_goes_on(plane, frame: bytes,  # noqa: ANN001
                                                           message: str) -> None:
    _, client, _ = plane
    reply = client.raw(frame)
    assert reply["ok"] is False
    import re
    assert re.search(message, reply["error"]), reply["error"]
    assert client.call("status")["model"]["version"] == "interim-dualpi2-fit-1"


def test_set_model_validates_then_swaps_and_rolls_back(plane, tmp_path: Path) -> None:  # noqa: ANN001
    _, client, server = plane
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not onnx")
    reply = client.raw(pack({"cmd": "set_model", "args": {"path": str(bad)}}))
    assert not reply["ok"] and "not a readable ONNX model" in reply["error"]
    assert server.slot.take_pending() is None  # the running model is untouched
    r = client.call("set_model", path=str(INTERIM_MODEL))
    assert r == {"old": "interim-dualpi2-fit-1", "new": "interim-dualpi2-fit-1"}
    assert server.slot.take_pending() is not None
    assert server.slot.previous is not None
    assert client.call("rollback")["new"] == "interim-dualpi2-fit-1"


def test_rollback_without_history_is_an_error(plane) -> None:  # noqa: ANN001
    _, client, _ = plane
    reply = client.raw(pack({"cmd": "rollback"}))
    assert not reply["ok"] and "no previous model" in reply["error"]


def test_pause_resume_and_params_without_a_data_path(plane) -> None:  # noqa: ANN001
    _, client, server = plane
    assert client.call("pause") == {"paused": True} and server.paused
    assert client.call("resume") == {"paused": False}
    reply = client.raw(pack({"cmd": "params_get"}))
    assert not reply["ok"] and "not attached" in reply["error"]


class TestConfig:
    def test_file_and_overrides(self, tmp_path: Path) -> None:
        f = tmp_path / "a.toml"
        f.write_text('[batch]\nmax_batch = 64\n[control]\nendpoint = "tcp://127.0.0.1:5555"\n')
        cfg = load(f, {"max_wait_us": 10})
        assert (cfg.max_batch, cfg.max_wait_us, cfg.control) == (64, 10, "tcp://127.0.0.1:5555")

    @pytest.mark.parametrize(("text", "message"), [
        ("[batch]\nmax_batch = 0\n", "max_batch=0 out of range"),
        ("[batch]\nmax_batch = 'x'\n", "want int"),
        ("[bogus]\nx = 1\n", r"unknown table \[bogus\]"),
        ("[model]\nweights = 1\n", "unknown key model.weights"),
        ("[control]\nendpoint = \"tcp://0.0.0.0:5555\"\n", "not on loopback"),
        ("[model]\npolicy = \"greedy\"\n", "policy"),
        ("not toml [", "not valid TOML"),
        ("[batch]\nsleep_us = 500\nmax_sleep_us = 100\n", "max_sleep_us=100 below"),
    ])
    def test_bad_files_are_refused_by_name(self, tmp_path: Path, text: str, message: str) -> None:
        f = tmp_path / "bad.toml"
        f.write_text(text)
        with pytest.raises(ConfigError, match=message):
            load(f)

    def test_remote_tcp_needs_an_explicit_yes(self, tmp_path: Path) -> None:
        f = tmp_path / "r.toml"
        f.write_text('[control]\nendpoint = "tcp://0.0.0.0:5555"\nallow_remote = true\n')
        assert load(f).control_allow_remote

    def test_the_sample_configuration_loads(self) -> None:
        sample = Path(__file__).resolve().parents[1] / "daemon" / "aqmllmd.conf.sample"
        assert load(sample).max_batch > 0


def test_aqmllmctl_commands(plane) -> None:  # noqa: ANN001
    from click.testing import CliRunner

    from aqmllmd.ctl import cli

    cp, _, _ = plane
    run = CliRunner().invoke
    r = run(cli, ["-e", cp.endpoint, "status", "--json"])
    assert r.exit_code == 0 and '"version": "interim-dualpi2-fit-1"' in r.output
    r = run(cli, ["-e", cp.endpoint, "stats", "--json"])
    assert r.exit_code == 0 and "aqmllm_states_total" in r.output
    r = run(cli, ["-e", cp.endpoint, "set-model", str(INTERIM_MODEL)])
    assert r.exit_code == 0 and "->" in r.output
    r = run(cli, ["-e", cp.endpoint, "params", "set", "target_ns=fast"])
    assert r.exit_code != 0 and "NAME=INTEGER" in r.output
    r = run(cli, ["-e", cp.endpoint, "params", "get"])
    assert r.exit_code != 0 and "not attached" in r.output
    r = run(cli, ["-e", cp.endpoint, "pause"])
    assert r.exit_code == 0 and "paused" in r.output
    r = run(cli, ["-e", cp.endpoint, "watch", "--count", "1", "--interval", "0"])
    assert r.exit_code == 0 and "PAUSED" in r.output
