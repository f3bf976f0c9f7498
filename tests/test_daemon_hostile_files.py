"""Model paths and files an attacker or a careless operator could hand the daemon.

Each of these hung, misled or slipped through an earlier daemon: a FIFO held the
control thread, a symbolic link in a directory component was followed, a relative path
resolved against the daemon's working directory, metadata forged log lines and labels,
and a validator that probed only synthetic inputs accepted models that fail (or are
too slow) on real traffic.
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from test_daemon_model import good_params, save, set_meta

from aqmllmd import hostile
from aqmllmd.default_model import INTERIM_MODEL
from aqmllmd.default_model.build import to_onnx
from aqmllmd.model import Limits, ModelError, clean_text, load
from aqmllmd.validate import realistic_features, realistic_states


def test_a_fifo_is_refused_without_blocking(tmp_path: Path) -> None:
    fifo = tmp_path / "m.onnx"
    os.mkfifo(fifo, 0o644)
    result: list[BaseException | None] = []

    def attempt() -> None:
        try:
            load(fifo)
            result.append(None)
        except BaseException as e:  # noqa: BLE001
            result.append(e)

    t = threading.Thread(target=attempt, daemon=True)
    t.start()
    t.join(timeout=10)
    if t.is_alive():  # unblock the open() so the thread can end, then fail
        with open(fifo, "wb"):
            pass
        pytest.fail("loading a FIFO blocked")
    assert isinstance(result[0], ModelError) and "not a regular file" in str(result[0])


def test_symlinks_in_any_component_are_refused(tmp_path: Path) -> None:
    real = tmp_path / "real"
    real.mkdir()
    target = Path(os.readlink(INTERIM_MODEL)) if INTERIM_MODEL.is_symlink() else INTERIM_MODEL
    model = real / "m.onnx"
    model.write_bytes(target.read_bytes())
    os.chmod(model, 0o644)
    assert load(model).version  # the real path serves
    (tmp_path / "alias").symlink_to(real, target_is_directory=True)
    with pytest.raises(ModelError, match="alias is a symbolic link"):
        load(tmp_path / "alias" / "m.onnx")


def test_relative_paths_and_dotdot(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A relative path is refused where it would be the daemon's directory's (the
    configuration file, a control request); the library takes it against the caller's
    directory; '..' is refused everywhere."""
    from aqmllmd.config import ConfigError
    from aqmllmd.config import load as load_config
    from aqmllmd.control import ControlPlane, RequestError
    from aqmllmd.metrics import Metrics
    from aqmllmd.server import Server

    save(to_onnx(good_params(), "t"), tmp_path / "m.onnx")
    monkeypatch.chdir(tmp_path)
    assert load("m.onnx").path == tmp_path / "m.onnx"
    with pytest.raises(ModelError, match=r"'\.\.'"):
        load(tmp_path / ".." / tmp_path.name / "m.onnx")
    conf = tmp_path / "c.toml"
    conf.write_text(f'[model]\npath = "m.onnx"\n[control]\nendpoint = "ipc://{tmp_path}/c"\n')
    with pytest.raises(ConfigError, match="relative path"):
        load_config(conf)
    cfg = load_config(None, {"control": f"ipc://{tmp_path}/c.sock", "metrics": "",
                             "channel": str(tmp_path / "none")})
    plane = ControlPlane(Server(cfg, load(INTERIM_MODEL), Metrics(lambda: None)),
                         cfg.control)
    try:
        with pytest.raises(RequestError, match="relative model path"):
            plane.dispatch("set_model", {"path": "m.onnx"})
    finally:
        plane.server.stop_event.set()
        plane.stop()


@pytest.mark.parametrize("version", ["1.0\n2026-01-01 aqmllmd WARNING forged", "v" * (1 << 20),
                                     "a\x1b[31mred\x00\u2028b"])
def test_metadata_strings_are_sanitised_and_bounded(tmp_path: Path, version: str) -> None:
    m = to_onnx(good_params(), "desc\nwith\rnewlines " + "d" * 100_000)
    set_meta(m, "aqmllm.version", version)
    set_meta(m, "aqmllm.producer", "p\n" * 1000)
    model = load(save(m, tmp_path / "m.onnx"))
    for text, limit in ((model.version, 64), (model.producer, 128), (model.description, 2048)):
        assert len(text) <= limit
        assert text.isprintable(), text[:80]


def test_a_huge_feature_list_is_quoted_bounded(tmp_path: Path) -> None:
    m = to_onnx(good_params(), "t")
    set_meta(m, "aqmllm.features", "x\n" * 500_000)
    with pytest.raises(ModelError) as e:
        load(save(m, tmp_path / "m.onnx"))
    assert len(str(e.value)) < 2000 and "\n" not in str(e.value)


def test_clean_text() -> None:
    assert clean_text("ok 1.2-rc", 64) == "ok 1.2-rc"
    assert clean_text("a\nb", 64) == "a?b"
    assert len(clean_text("x" * 100, 10)) == 10


def test_realistic_probe_covers_the_serving_ranges() -> None:
    s = realistic_states(4096, np.random.default_rng(0))
    assert s["len"].min() == 64 and s["len"].max() == 1500
    assert set(s["ecn"]) == {0, 1, 2, 3} and set(s["queue"]) == {0, 1}
    assert s["sojourn_ns"].max() > 3 * 10**9  # seconds
    x = realistic_features(1024)
    assert np.isfinite(x).all() and x[:, 5].max() == 1500


def test_a_model_bad_only_on_real_packets_is_refused(tmp_path: Path) -> None:
    """Valid on zeros and uniform(0, 50) probes, negative on 1500-byte features."""
    with pytest.raises(ModelError, match="realistic states.*not probability distributions"):
        load(hostile.write("adversarial-negative", tmp_path / "a.onnx"))


def test_a_model_nan_only_on_real_packets_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="realistic states.*NaN"):
        load(hostile.write("nan-sometimes", tmp_path / "n.onnx"))


def test_a_model_slower_than_max_infer_us_is_refused(tmp_path: Path) -> None:
    path = hostile.write("slow", tmp_path / "s.onnx", loop_iters=200, dim=128)
    with pytest.raises(ModelError, match="too slow"):
        load(path, limits=Limits(max_infer_us=1, timeout_s=60))


def test_validation_is_killed_after_its_time_limit(tmp_path: Path) -> None:
    """An ONNX Loop of 26 000 256x256 MatMuls: refused once the limit passes."""
    path = hostile.write("slow", tmp_path / "s.onnx")
    t0 = time.monotonic()
    with pytest.raises(ModelError, match="did not finish in 2 s"):
        load(path, limits=Limits(timeout_s=2))
    assert time.monotonic() - t0 < 30  # the child was killed, not waited for


@pytest.mark.parametrize("kind", ["always-drop", "always-mark", "uniform", "adversarial"])
def test_wrong_but_valid_models_pass_validation(tmp_path: Path, kind: str) -> None:
    """These are valid distributions everywhere: the contract cannot refuse them; the
    core's harm budget and the daemon's watchdog bound what they cost."""
    assert load(hostile.write(kind, tmp_path / f"{kind}.onnx")).version == f"hostile-{kind}"


@pytest.mark.parametrize("path", [f"/proc/{os.getpid()}/mem", "/a\x00b.onnx", "/dev/zero",
                                  "/", f"/proc/{os.getpid()}/environ"])
def test_odd_files_are_refused_by_name(path: str) -> None:
    with pytest.raises(ModelError, match="cannot read|NUL byte|not a regular file|not a "
                                         "readable ONNX|symbolic link"):
        load(path)


def test_a_model_that_allocates_without_bound_is_refused(tmp_path: Path) -> None:
    """8 GiB for one tensor: the validating child's address space (validate_memory_mib)
    runs out, not the router's memory."""
    with pytest.raises(ModelError, match="failed to run|crashed"):
        load(hostile.write("huge-alloc", tmp_path / "h.onnx"), limits=Limits(memory_mib=2048))
