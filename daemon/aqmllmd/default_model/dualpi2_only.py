"""Build the packaged default model: one that decides nothing beyond DualPI2.

It answers "enqueue" with probability 1 for every state, whatever the features (NaN
included: the output does not read their values, only how many rows there are). Under
the core's `dualpi2` verdict guard, the default, an "enqueue" verdict leaves DualPI2's
decision standing with its own random rolls, so every packet is decided exactly as
DualPI2 alone decides it (kmod/core/README.md, "The verdict guard"), while the channel,
aqmllmd's batching, its metrics and the watchdog all run. It is the default because no
trained model passes the promotion gate on the held-out suite (models/README.md); the
AQM-LLM student ships beside it as student.onnx, one `aqmllmctl set-model` away.

    python -m aqmllmd.default_model.dualpi2_only [--out PATH]

The build is deterministic: tests/test_daemon_model.py checks that the packaged file is
what this writes.
"""

from __future__ import annotations

from pathlib import Path

import click
import numpy as np
import onnx
from onnx import helper, numpy_helper

from .. import contract
from ..onnx_build import contract_model

HERE = Path(__file__).resolve().parent
DEFAULT_OUT = HERE / "default.onnx"
VERSION = "dualpi2-only-1"
DESCRIPTION = (
    "Decides nothing beyond DualPI2: answers enqueue for every packet, so under the "
    "dualpi2 verdict guard every decision is DualPI2's own (same decisions, same random "
    "rolls). aqmllmd's packaged default because no trained model passes the promotion "
    "gate on the held-out suite; the AQM-LLM student is student.onnx beside it.")


def build() -> onnx.ModelProto:
    enqueue = np.zeros((1, len(contract.ACTIONS)), np.float32)
    enqueue[0, contract.ACTIONS.index("enqueue")] = 1.0
    inits = [numpy_helper.from_array(enqueue, "enqueue"),
             numpy_helper.from_array(np.array([0], np.int64), "zero"),
             numpy_helper.from_array(np.array([1], np.int64), "one"),
             numpy_helper.from_array(np.array([len(contract.ACTIONS)], np.int64), "n_actions")]
    nodes = [
        helper.make_node("Shape", [contract.INPUT_NAME], ["in_shape"]),
        helper.make_node("Slice", ["in_shape", "zero", "one"], ["batch"]),
        helper.make_node("Concat", ["batch", "n_actions"], ["out_shape"], axis=0),
        helper.make_node("Expand", ["enqueue", "out_shape"], [contract.OUTPUT_NAME]),
    ]
    return contract_model(nodes, inits, "aqmllm_dualpi2_only",
                          producer_name="aqmllmd.default_model.dualpi2_only",
                          producer="aqmllmd.default_model.dualpi2_only (no learning)",
                          version=VERSION, description=DESCRIPTION, verdict_guard="dualpi2")


@click.command()
@click.option("--out", type=click.Path(path_type=Path), default=DEFAULT_OUT, show_default=True)
def main(out: Path) -> None:
    """Write the model that decides nothing beyond DualPI2."""
    onnx.save(build(), str(out))
    out.chmod(0o644)
    click.echo(f"wrote {out}")


if __name__ == "__main__":
    main()
