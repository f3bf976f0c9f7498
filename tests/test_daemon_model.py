"""aqmllmd's model contract: the default model passes, hostile files are refused clearly."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from aqm_bridge.abi import STATE_DTYPE
from aqmllmd import contract, features
from aqmllmd.default_model import DEFAULT_MODEL, INTERIM_MODEL, STUDENT_MODEL
from aqmllmd.default_model.build import to_onnx
from aqmllmd.model import ModelError, TrustPolicy, load

N = features.N_FEATURES


def good_params(n_in: int = N) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {"mean": np.zeros(n_in), "std": np.ones(n_in), "w1": rng.normal(size=(n_in, 8)),
            "b1": np.zeros(8), "w2": rng.normal(size=(8, 3)), "b2": np.zeros(3)}


def save(model: onnx.ModelProto, path: Path) -> Path:
    onnx.save(model, path)
    os.chmod(path, 0o644)
    return path


def test_the_shipped_models_pass_and_run() -> None:
    for path in (DEFAULT_MODEL, STUDENT_MODEL, INTERIM_MODEL):
        model = load(path)
        probs = model.run(np.zeros((5, N), np.float32))
        assert probs.shape == (5, 3) and np.allclose(probs.sum(axis=1), 1, atol=1e-5)
    # The default and the student are made for the guard the core runs by default.
    assert load(DEFAULT_MODEL).verdict_guard == "dualpi2" == load(STUDENT_MODEL).verdict_guard
    assert "not the trained" in load(INTERIM_MODEL).description.lower()


def test_the_default_decides_nothing_beyond_dualpi2() -> None:
    """It answers enqueue for every state, so under the core's default dualpi2 guard every
    decision is DualPI2's own (tests/test_core_verdicts.py,
    test_under_the_dualpi2_guard_a_model_that_always_enqueues_is_dualpi2)."""
    from aqmllmd.default_model import dualpi2_only
    from aqmllmd.server import choose_actions
    from aqmllmd.validate import realistic_features

    assert DEFAULT_MODEL.read_bytes() == dualpi2_only.build().SerializeToString(), \
        "default.onnx is not what `python -m aqmllmd.default_model.dualpi2_only` writes"
    model = load(DEFAULT_MODEL)
    assert model.version == dualpi2_only.VERSION and model.verdict_guard == "dualpi2"
    rng = np.random.default_rng(4)
    hostile_rows = rng.choice(np.array([np.nan, np.inf, -np.inf, 0.0, 1e30, -1e30],
                                       np.float32), size=(64, N))
    for x in (realistic_features(4096), hostile_rows, np.zeros((1, N), np.float32)):
        probs = model.run(x)
        assert probs.shape == (len(x), 3)
        assert (probs == np.array([1, 0, 0], np.float32)).all()
        for policy in ("sample", "argmax"):
            assert not choose_actions(probs, policy, rng).any()


def test_the_interim_model_ignores_what_dualpi2_does_not_read() -> None:
    """Its synthetic training load mixes Not-ECT and ECT(0) classic packets at random;
    real classic flows give a Not-ECT share of 0 or 1, and a fit that read it once kept
    a link 22 % busy. The builder leaves it out: the share cannot move a decision."""
    from aqmllmd.default_model.build import NOT_FITTED

    model = load(INTERIM_MODEL)
    x = np.random.default_rng(4).uniform(0, 20, (256, N)).astype(np.float32)
    want = model.run(x)
    for name in NOT_FITTED:
        for value in (0.0, 0.4, 1.0):
            x[:, features.FEATURE_NAMES.index(name)] = value
            np.testing.assert_array_equal(model.run(x), want)


def test_a_fresh_export_passes(tmp_path: Path) -> None:
    assert load(save(to_onnx(good_params(), "test"), tmp_path / "m.onnx")).version


def edited(tmp_path: Path, edit) -> Path:  # noqa: ANN001
    model = to_onnx(good_params(), "test")
    edit(model)
    return save(model, tmp_path / "m.onnx")


def set_meta(model: onnx.ModelProto, key: str, value: str) -> None:
    for p in model.metadata_props:
        if p.key == key:
            p.value = value


@pytest.mark.parametrize(("edit", "message"), [
    (lambda m: set_meta(m, contract.META_CONTRACT, "0"), "contract version"),
    (lambda m: set_meta(m, contract.META_FEATURES, "a,b"), "feature names"),
    (lambda m: set_meta(m, contract.META_ACTIONS, "drop,enqueue,mark"), "action order"),
    (lambda m: setattr(m.graph.output[0], "name", "scores"), "outputs|invalid"),
])
def test_contract_violations_are_refused(tmp_path: Path, edit, message: str) -> None:  # noqa: ANN001
    with pytest.raises(ModelError, match=message):
        load(edited(tmp_path, edit))


def test_wrong_input_width_is_refused(tmp_path: Path) -> None:
    model = to_onnx(good_params(N - 1), "test")
    model.graph.input[0].type.tensor_type.shape.dim[1].dim_value = N - 1
    with pytest.raises(ModelError, match="input shape"):
        load(save(model, tmp_path / "m.onnx"))


def test_nan_output_is_refused(tmp_path: Path) -> None:
    def poison(m: onnx.ModelProto) -> None:
        for init in m.graph.initializer:
            if init.name == "b2":
                init.CopyFrom(onnx.numpy_helper.from_array(
                    np.array([np.nan, 0, 0], np.float32), "b2"))
    with pytest.raises(ModelError, match="NaN"):
        load(edited(tmp_path, poison))


def test_a_custom_operator_is_refused(tmp_path: Path) -> None:
    def evil(m: onnx.ModelProto) -> None:
        m.graph.node.append(helper.make_node("Exfiltrate", ["probs"], ["x"], domain="com.evil"))
        m.opset_import.append(helper.make_opsetid("com.evil", 1))
    with pytest.raises(ModelError, match="custom operator"):
        load(edited(tmp_path, evil))


def test_non_distribution_output_is_refused(tmp_path: Path) -> None:
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["features", "w"], ["probs"])], "g",
        [helper.make_tensor_value_info("features", TensorProto.FLOAT, ["b", N])],
        [helper.make_tensor_value_info("probs", TensorProto.FLOAT, ["b", 3])],
        [onnx.numpy_helper.from_array(np.ones((N, 3), np.float32), "w")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    helper.set_model_props(model, {
        contract.META_CONTRACT: "1", contract.META_FEATURES: ",".join(features.FEATURE_NAMES),
        contract.META_ACTIONS: ",".join(contract.ACTIONS)})
    with pytest.raises(ModelError, match="not probability distributions"):
        load(save(model, tmp_path / "m.onnx"))


def test_a_truncated_file_is_refused(tmp_path: Path) -> None:
    data = DEFAULT_MODEL.read_bytes()
    path = tmp_path / "cut.onnx"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelError, match="not a readable ONNX model|invalid"):
        load(path)


def test_garbage_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "junk.onnx"
    path.write_bytes(os.urandom(4096))
    with pytest.raises(ModelError):
        load(path)


def test_a_world_writable_file_is_refused(tmp_path: Path) -> None:
    path = save(to_onnx(good_params(), "t"), tmp_path / "m.onnx")
    os.chmod(path, 0o666)
    with pytest.raises(ModelError, match="writable by group or others"):
        load(path)


def test_a_file_of_another_user_is_refused(tmp_path: Path) -> None:
    path = save(to_onnx(good_params(), "t"), tmp_path / "m.onnx")
    with pytest.raises(ModelError, match="owned by uid"):
        load(path, TrustPolicy(owner_uids=frozenset({12345})))


def test_size_limit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(contract, "MAX_MODEL_BYTES", 100)
    with pytest.raises(ModelError, match="limit"):
        load(DEFAULT_MODEL)


def test_not_a_regular_file(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="not a regular file"):
        load(tmp_path)
    link = tmp_path / "link.onnx"
    link.symlink_to(DEFAULT_MODEL)
    with pytest.raises(ModelError, match="symbolic link"):
        load(link)


class TestFeatures:
    def states(self, n: int) -> np.ndarray:
        rng = np.random.default_rng(1)
        s = np.zeros(n, STATE_DTYPE)
        s["seq"] = np.arange(n)
        s["ts_ns"] = np.arange(n) * 1000
        s["deadline_ns"] = s["ts_ns"] + rng.integers(0, 10**7, n)
        s["queue"] = rng.integers(0, 2, n)
        s["ecn"] = rng.integers(0, 4, n)
        s["len"] = 1500
        s["sojourn_ns"] = rng.integers(0, 10**7, (n, 2))
        s["backlog_bytes"] = rng.integers(0, 10**6, (n, 2))
        return s

    def test_shape_and_names(self) -> None:
        x = features.compute(self.states(10))
        assert x.shape == (10, N) and x.dtype == np.float32
        assert len(set(features.FEATURE_NAMES)) == N

    def test_history_carries_across_batches(self) -> None:
        s = self.states(100)
        whole = features.compute(s, features.History())
        h = features.History()
        parts = np.vstack([features.compute(s[:37], h), features.compute(s[37:], h)])
        np.testing.assert_allclose(parts, whole, rtol=1e-6)

    def test_history_is_the_mean_of_the_previous_records(self) -> None:
        s = self.states(40)
        x = features.compute(s, features.History())
        col = features.FEATURE_NAMES.index("hist_sojourn_ms_c")
        want = s["sojourn_ns"][20 - features.HISTORY_LEN:20, 0].mean() / 1e6
        assert x[20, col] == pytest.approx(want, rel=1e-5)
        assert x[0, col] == 0
