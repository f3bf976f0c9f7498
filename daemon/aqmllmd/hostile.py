"""Wrong models on purpose: ONNX files that pass (or nearly pass) the contract and harm.

Tests and `bench/daemon_bench.py harm` serve them to check that a wrong model costs at
most the model's benefit: the core's harm budget and aqmllmd's watchdog
(`aqmllmd.watchdog`) must keep the delivered rate near DualPI2's. Built with the onnx
package alone (no torch):

    python -m aqmllmd.hostile --out /tmp/hostile      # one file per kind below

- `always-drop`: drop, for every packet.
- `always-mark`: mark, for every packet.
- `uniform`: a fresh random distribution per packet (RandomUniformLike, normalised).
- `adversarial`: enqueue on inputs unlike real traffic (what a synthetic probe feeds);
  on real full-size packets (`len_bytes` > 1000) a valid distribution, 90 % drop.
- `adversarial-negative`: as `adversarial`, but on full-size packets a row that sums
  to 1 with a negative entry (refused by a validator that probes realistic states).
- `nan-sometimes`: enqueue, but NaN for full-size packets of the L queue.
- `huge-alloc`: enqueue, after expanding a value to 2^31 floats (8 GiB).
- `slow`: enqueue after an ONNX Loop of `loop_iters` (26 000) MatMuls of `dim` x `dim`
  (256): seconds to minutes per batch.
"""

from __future__ import annotations

import os
from pathlib import Path

import click
import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from . import contract
from .features import FEATURE_NAMES, N_FEATURES
from .onnx_build import contract_model

LEN_INDEX = FEATURE_NAMES.index("len_bytes")
QUEUE_L_INDEX = FEATURE_NAMES.index("queue_l")
#: `len_bytes` above this is a real full-size packet (probes of uniform(0, 50) never are).
REAL_LEN = 1000.0

KINDS = ("always-drop", "always-mark", "uniform", "adversarial", "adversarial-negative",
         "nan-sometimes", "slow", "huge-alloc")


def _const(name: str, value: np.ndarray) -> onnx.TensorProto:
    return numpy_helper.from_array(np.asarray(value, np.float32), name)


def _finish(nodes: list[onnx.NodeProto], inits: list[onnx.TensorProto],
            kind: str) -> onnx.ModelProto:
    return contract_model(nodes, inits, f"aqmllm_hostile_{kind.replace('-', '_')}",
                          producer_name="aqmllmd.hostile",
                          producer="aqmllmd.hostile (a wrong model, on purpose)",
                          version=f"hostile-{kind}",
                          description=f"Hostile test model {kind}: never serve it.")


def _constant_rows(row: list[float], kind: str) -> onnx.ModelProto:
    nodes: list[onnx.NodeProto] = []
    inits = [_const("row", np.array([row]))]
    inits.append(_const("zero_w", np.zeros((N_FEATURES, 3))))
    inits.append(_const("big", np.array(1e30)))
    nodes += [
        # Clip keeps inf out of the MatMul (0 * inf is NaN); IsNaN's rows are zeroed.
        helper.make_node("Clip", [contract.INPUT_NAME, "neg_big", "big"], ["clipped"]),
        helper.make_node("IsNaN", ["clipped"], ["isnan"]),
        helper.make_node("Where", ["isnan", "zero_s", "clipped"], ["clean"]),
        helper.make_node("MatMul", ["clean", "zero_w"], ["zeros"]),
        helper.make_node("Add", ["zeros", "row"], [contract.OUTPUT_NAME]),
    ]
    inits += [_const("neg_big", np.array(-1e30)), _const("zero_s", np.array(0.0))]
    return _finish(nodes, inits, kind)


def _split_on_real_packets(real_row: list[float], probe_row: list[float],
                           kind: str) -> onnx.ModelProto:
    """`real_row` where len_bytes > REAL_LEN, `probe_row` elsewhere."""
    inits = [_const("real_row", np.array([real_row])), _const("probe_row", np.array([probe_row])),
             _const("real_len", np.array(REAL_LEN)),
             numpy_helper.from_array(np.array([LEN_INDEX], np.int64), "len_idx")]
    nodes = [
        helper.make_node("Gather", [contract.INPUT_NAME, "len_idx"], ["len"], axis=1),
        helper.make_node("Greater", ["len", "real_len"], ["is_real"]),
        helper.make_node("Where", ["is_real", "real_row", "probe_row"],
                         [contract.OUTPUT_NAME]),
    ]
    return _finish(nodes, inits, kind)


def _uniform() -> onnx.ModelProto:
    nodes: list[onnx.NodeProto] = []
    inits: list[onnx.TensorProto] = []
    inits.append(_const("zero_w", np.zeros((N_FEATURES, 3))))
    nodes += [
        helper.make_node("MatMul", [contract.INPUT_NAME, "zero_w"], ["zeros"]),
        helper.make_node("RandomUniformLike", ["zeros"], ["u"], low=0.01, high=1.0),
        helper.make_node("ReduceSum", ["u", "axis1"], ["total"], keepdims=1),
        helper.make_node("Div", ["u", "total"], [contract.OUTPUT_NAME]),
    ]
    inits.append(numpy_helper.from_array(np.array([1], np.int64), "axis1"))
    # RandomUniformLike ignores its input's values: NaN or inf features cannot leak.
    return _finish(nodes, inits, "uniform")


def _nan_sometimes() -> onnx.ModelProto:
    """Enqueue, except NaN for real full-size L4S packets."""
    inits = [_const("ok_row", np.array([[1.0, 0.0, 0.0]])),
             _const("nan_row", np.array([[np.nan, np.nan, np.nan]])),
             _const("real_len", np.array(REAL_LEN)), _const("half", np.array(0.5)),
             numpy_helper.from_array(np.array([LEN_INDEX], np.int64), "len_idx"),
             numpy_helper.from_array(np.array([QUEUE_L_INDEX], np.int64), "q_idx")]
    nodes = [
        helper.make_node("Gather", [contract.INPUT_NAME, "len_idx"], ["len"], axis=1),
        helper.make_node("Gather", [contract.INPUT_NAME, "q_idx"], ["q"], axis=1),
        helper.make_node("Greater", ["len", "real_len"], ["is_real"]),
        helper.make_node("Greater", ["q", "half"], ["is_l"]),
        helper.make_node("And", ["is_real", "is_l"], ["bad"]),
        helper.make_node("Where", ["bad", "nan_row", "ok_row"], [contract.OUTPUT_NAME]),
    ]
    return _finish(nodes, inits, "nan-sometimes")


def _slow(loop_iters: int, dim: int) -> onnx.ModelProto:
    """Enqueue after `loop_iters` dim x dim MatMuls in an ONNX Loop."""
    body = helper.make_graph(
        [helper.make_node("Identity", ["cond_in"], ["cond_out"]),
         helper.make_node("MatMul", ["acc_in", "w"], ["acc_mm"]),
         helper.make_node("Tanh", ["acc_mm"], ["acc_out"])],
        "body",
        [helper.make_tensor_value_info("i", TensorProto.INT64, []),
         helper.make_tensor_value_info("cond_in", TensorProto.BOOL, []),
         helper.make_tensor_value_info("acc_in", TensorProto.FLOAT, [dim, dim])],
        [helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []),
         helper.make_tensor_value_info("acc_out", TensorProto.FLOAT, [dim, dim])],
        [_const("w", np.full((dim, dim), 1 / dim))])
    inits = [numpy_helper.from_array(np.array(loop_iters, np.int64), "trips"),
             numpy_helper.from_array(np.array(True), "cond"),
             _const("acc0", np.eye(dim)), _const("zero_w", np.zeros((N_FEATURES, 3))),
             _const("row", np.array([[1.0, 0.0, 0.0]])),
             _const("zero_s", np.array(0.0)), _const("neg_big", np.array(-1e30)),
             _const("big", np.array(1e30))]
    nodes = [
        helper.make_node("Clip", [contract.INPUT_NAME, "neg_big", "big"], ["clipped"]),
        helper.make_node("IsNaN", ["clipped"], ["isnan"]),
        helper.make_node("Where", ["isnan", "zero_s", "clipped"], ["clean"]),
        helper.make_node("MatMul", ["clean", "zero_w"], ["zeros"]),
        # The loop's start depends on the input, so it cannot be folded at load time.
        helper.make_node("ReduceSum", ["zeros"], ["z"], keepdims=0),
        helper.make_node("Add", ["acc0", "z"], ["acc_start"]),
        helper.make_node("Loop", ["trips", "cond", "acc_start"], ["acc"], body=body),
        helper.make_node("ReduceSum", ["acc"], ["s"], keepdims=0),
        helper.make_node("Mul", ["s", "zero_s"], ["s0"]),
        helper.make_node("Add", ["zeros", "row"], ["rows"]),
        helper.make_node("Add", ["rows", "s0"], [contract.OUTPUT_NAME]),
    ]
    return _finish(nodes, inits, "slow")


def _huge_alloc() -> onnx.ModelProto:
    """Enqueue, after filling a tensor of 2^31 floats (8 GiB) that depends on the input."""
    inits = [numpy_helper.from_array(np.array([1 << 31], np.int64), "big_shape"),
             _const("row", np.array([[1.0, 0.0, 0.0]])), _const("zero_s", np.array(0.0)),
             _const("zero_w", np.zeros((N_FEATURES, 3)))]
    nodes = [
        helper.make_node("MatMul", [contract.INPUT_NAME, "zero_w"], ["zeros"]),
        helper.make_node("ReduceSum", ["zeros"], ["z"], keepdims=0),
        helper.make_node("Expand", ["z", "big_shape"], ["big"]),
        helper.make_node("ReduceSum", ["big"], ["s"], keepdims=0),
        helper.make_node("Mul", ["s", "zero_s"], ["s0"]),
        helper.make_node("Add", ["zeros", "row"], ["rows"]),
        helper.make_node("Add", ["rows", "s0"], [contract.OUTPUT_NAME]),
    ]
    return _finish(nodes, inits, "huge-alloc")


def build(kind: str, loop_iters: int = 26_000, dim: int = 256) -> onnx.ModelProto:
    """The hostile model `kind` (one of KINDS)."""
    if kind == "always-drop":
        return _constant_rows([0.0, 1.0, 0.0], kind)
    if kind == "always-mark":
        return _constant_rows([0.0, 0.0, 1.0], kind)
    if kind == "uniform":
        return _uniform()
    if kind == "adversarial":
        return _split_on_real_packets([0.05, 0.9, 0.05], [1.0, 0.0, 0.0], kind)
    if kind == "adversarial-negative":
        return _split_on_real_packets([-1.0, 1.0, 1.0], [1.0, 0.0, 0.0], kind)
    if kind == "nan-sometimes":
        return _nan_sometimes()
    if kind == "slow":
        return _slow(loop_iters, dim)
    if kind == "huge-alloc":
        return _huge_alloc()
    raise ValueError(f"unknown hostile model {kind!r} (known: {', '.join(KINDS)})")


def write(kind: str, path: str | os.PathLike[str], **kw: int) -> Path:
    """Save `kind` at `path`, mode 0644 (what the daemon's file checks accept)."""
    path = Path(path)
    onnx.save(build(kind, **kw), path)
    os.chmod(path, 0o644)
    return path


@click.command()
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), required=True)
@click.option("--kind", "kinds", multiple=True, type=click.Choice(KINDS),
              help="only these (default: all)")
def main(out: Path, kinds: tuple[str, ...]) -> None:
    """Write hostile models (one ONNX file per kind) for tests and benchmarks."""
    out.mkdir(parents=True, exist_ok=True)
    for kind in kinds or KINDS:
        click.echo(write(kind, out / f"{kind}.onnx"))


if __name__ == "__main__":
    main()
