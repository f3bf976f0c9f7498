"""Loading a model: every check of the contract, then an ONNX Runtime session.

A file that fails any check is refused with a `ModelError` saying what is wrong; the
daemon keeps serving the model it had.
"""

from __future__ import annotations

import hashlib
import os
import stat
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

from . import contract
from .features import FEATURE_NAMES, N_FEATURES


class ModelError(Exception):
    """A model file that cannot be served, and why."""


def _default_owners() -> frozenset[int]:
    return frozenset({0, os.geteuid()})


@dataclass(frozen=True)
class TrustPolicy:
    """Who may own a model file: root or the daemon's own user (on a router, root), and
    nobody else may write to it."""

    owner_uids: frozenset[int] = field(default_factory=_default_owners)
    check_owner: bool = sys.platform.startswith(("linux", "freebsd"))


def check_file(path: Path, trust: TrustPolicy) -> bytes:
    """The file's bytes, once its kind, owner, mode and size are acceptable."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    except OSError as e:
        raise ModelError(f"{path}: cannot open: {e.strerror}") from e
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        os.close(fd)
        raise ModelError(f"{path}: not a regular file")
    with os.fdopen(fd, "rb") as f:
        if trust.check_owner:
            if st.st_uid not in trust.owner_uids:
                raise ModelError(f"{path}: owned by uid {st.st_uid}; models must belong to "
                                 f"uid {sorted(trust.owner_uids)}")
            if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
                raise ModelError(f"{path}: writable by group or others (mode "
                                 f"{stat.S_IMODE(st.st_mode):04o}); chmod go-w it")
        if st.st_size > contract.MAX_MODEL_BYTES:
            raise ModelError(f"{path}: {st.st_size} bytes, over the "
                             f"{contract.MAX_MODEL_BYTES} byte limit")
        data = f.read(contract.MAX_MODEL_BYTES + 1)
    if len(data) > contract.MAX_MODEL_BYTES:
        raise ModelError(f"{path}: grew past the size limit while being read")
    return data


def _dims(value_info: onnx.ValueInfoProto) -> list[int | str]:
    shape = value_info.type.tensor_type.shape
    return [d.dim_value if d.HasField("dim_value") else (d.dim_param or "?")
            for d in shape.dim]


def check_graph(model: onnx.ModelProto) -> dict[str, str]:
    """Contract checks on the graph itself; returns its metadata."""
    meta = {p.key: p.value for p in model.metadata_props}
    if meta.get(contract.META_CONTRACT) != contract.CONTRACT_VERSION:
        raise ModelError(f"contract version {meta.get(contract.META_CONTRACT)!r}, this daemon "
                         f"serves {contract.CONTRACT_VERSION!r} (metadata "
                         f"{contract.META_CONTRACT})")
    features = tuple(meta.get(contract.META_FEATURES, "").split(","))
    if features != FEATURE_NAMES:
        raise ModelError(f"feature names differ from this daemon's pipeline: model has "
                         f"{list(features)}, pipeline has {list(FEATURE_NAMES)}")
    guard = meta.get(contract.META_VERDICT_GUARD)
    if guard is not None and guard not in contract.VERDICT_GUARDS:
        raise ModelError(f"verdict guard {guard[:40]!r} ({contract.META_VERDICT_GUARD}), "
                         f"want one of {', '.join(contract.VERDICT_GUARDS)}")
    actions = tuple(meta.get(contract.META_ACTIONS, "").split(","))
    if actions != contract.ACTIONS:
        raise ModelError(f"action order {list(actions)}, want {list(contract.ACTIONS)}")
    for imp in model.opset_import:
        if imp.domain not in contract.ALLOWED_DOMAINS:
            raise ModelError(f"custom operator domain {imp.domain!r} imported")
        if not contract.MIN_OPSET <= imp.version <= contract.MAX_OPSET:
            raise ModelError(f"opset {imp.version}, want {contract.MIN_OPSET}.."
                             f"{contract.MAX_OPSET}")
    for node in model.graph.node:
        if node.domain not in contract.ALLOWED_DOMAINS:
            raise ModelError(f"node {node.name or node.op_type!r} uses custom operator "
                             f"{node.domain}::{node.op_type}")
    inputs = [i for i in model.graph.input
              if i.name not in {init.name for init in model.graph.initializer}]
    if [i.name for i in inputs] != [contract.INPUT_NAME]:
        raise ModelError(f"inputs {[i.name for i in inputs]}, want [{contract.INPUT_NAME!r}]")
    if [o.name for o in model.graph.output] != [contract.OUTPUT_NAME]:
        raise ModelError(f"outputs {[o.name for o in model.graph.output]}, want "
                         f"[{contract.OUTPUT_NAME!r}]")
    in_dims, out_dims = _dims(inputs[0]), _dims(model.graph.output[0])
    if len(in_dims) != 2 or in_dims[1] != N_FEATURES:
        raise ModelError(f"input shape {in_dims}, want [batch, {N_FEATURES}]")
    if len(out_dims) != 2 or out_dims[1] != len(contract.ACTIONS):
        raise ModelError(f"output shape {out_dims}, want [batch, {len(contract.ACTIONS)}]")
    for vi, kind in ((inputs[0], "input"), (model.graph.output[0], "output")):
        if vi.type.tensor_type.elem_type != onnx.TensorProto.FLOAT:
            raise ModelError(f"{kind} {vi.name!r} is not float32")
    return meta


def probe(session: ort.InferenceSession) -> None:
    """Finite probabilities that sum to one, on zeros and on plausible random inputs."""
    rng = np.random.default_rng(0)
    batches = [np.zeros((contract.PROBE_BATCH, N_FEATURES), np.float32),
               rng.uniform(0, 50, (contract.PROBE_BATCH, N_FEATURES)).astype(np.float32)]
    for batch in batches:
        try:
            (out,) = session.run([contract.OUTPUT_NAME], {contract.INPUT_NAME: batch})
        except Exception as e:  # noqa: BLE001 - any runtime failure refuses the model
            raise ModelError(f"probe batch failed to run: {e}") from e
        if out.shape != (len(batch), len(contract.ACTIONS)):
            raise ModelError(f"probe output shape {out.shape}, want "
                             f"({len(batch)}, {len(contract.ACTIONS)})")
        if not np.all(np.isfinite(out)):
            raise ModelError("probe output has NaN or infinite probabilities")
        if np.any(out < 0) or np.any(out > 1) or not np.allclose(
                out.sum(axis=1), 1.0, atol=contract.PROB_SUM_TOLERANCE):
            raise ModelError("probe output rows are not probability distributions")


@dataclass
class Model:
    """A validated model, ready to run."""

    path: Path
    version: str
    producer: str
    description: str
    sha256: str
    session: ort.InferenceSession
    #: The core's verdict guard the model was made for; None: it does not say.
    verdict_guard: str | None = None

    def run(self, features: np.ndarray) -> np.ndarray:
        (out,) = self.session.run([contract.OUTPUT_NAME], {contract.INPUT_NAME: features})
        return out


def load(path: str | os.PathLike[str], trust: TrustPolicy | None = None,
         threads: int = 1) -> Model:
    """Validate and load a model file, or raise ModelError saying why not."""
    path = Path(path)
    data = check_file(path, trust or TrustPolicy())
    try:
        proto = onnx.load_from_string(data)
    except Exception as e:  # noqa: BLE001 - a parse failure of any kind refuses the file
        raise ModelError(f"{path}: not a readable ONNX model ({type(e).__name__}: {e})") from e
    try:
        onnx.checker.check_model(proto)
    except onnx.checker.ValidationError as e:
        raise ModelError(f"{path}: invalid ONNX graph: {str(e).splitlines()[0]}") from e
    try:
        meta = check_graph(proto)
    except ModelError as e:
        raise ModelError(f"{path}: {e}") from e
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    try:
        session = ort.InferenceSession(data, sess_options=opts,
                                       providers=["CPUExecutionProvider"])
    except Exception as e:  # noqa: BLE001
        raise ModelError(f"{path}: ONNX Runtime refused it: {e}") from e
    try:
        probe(session)
    except ModelError as e:
        raise ModelError(f"{path}: {e}") from e
    digest = hashlib.sha256(data).hexdigest()
    return Model(path=path, version=meta.get(contract.META_VERSION, digest[:12]),
                 producer=meta.get(contract.META_PRODUCER, "unknown"),
                 description=meta.get(contract.META_DESCRIPTION, ""),
                 sha256=digest, session=session,
                 verdict_guard=meta.get(contract.META_VERDICT_GUARD))
