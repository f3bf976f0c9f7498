"""An ONNX model to the contract (aqmllmd.contract) from its graph's nodes and weights:
the packaged default and interim models (default_model.dualpi2_only, default_model.build)
and the hostile ones (hostile) are assembled here, with the contract's input, output
and metadata."""

from __future__ import annotations

import onnx
from onnx import TensorProto, helper

from . import contract
from .features import FEATURE_NAMES

OPSET = 17
IR_VERSION = 8


def contract_model(nodes: list[onnx.NodeProto], inits: list[onnx.TensorProto], name: str, *,
                   producer_name: str, producer: str, version: str,
                   description: str, verdict_guard: str | None = None) -> onnx.ModelProto:
    """The graph `name` of these nodes over `contract.INPUT_NAME` to
    `contract.OUTPUT_NAME`, with the contract's metadata; checked by onnx."""
    graph = helper.make_graph(
        nodes, name,
        [helper.make_tensor_value_info(contract.INPUT_NAME, TensorProto.FLOAT,
                                       ["batch", len(FEATURE_NAMES)])],
        [helper.make_tensor_value_info(contract.OUTPUT_NAME, TensorProto.FLOAT,
                                       ["batch", len(contract.ACTIONS)])],
        inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                              producer_name=producer_name)
    model.ir_version = IR_VERSION
    helper.set_model_props(model, {
        contract.META_CONTRACT: contract.CONTRACT_VERSION,
        contract.META_FEATURES: ",".join(FEATURE_NAMES),
        contract.META_ACTIONS: ",".join(contract.ACTIONS),
        contract.META_PRODUCER: producer,
        contract.META_VERSION: version,
        contract.META_DESCRIPTION: description,
        **({contract.META_VERDICT_GUARD: verdict_guard} if verdict_guard else {}),
    })
    onnx.checker.check_model(model)
    return model
