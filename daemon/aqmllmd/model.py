"""Loading a model: every check of the contract, then an ONNX Runtime session.

A file that fails any check is refused with a `ModelError` saying what is wrong; the
daemon keeps serving the model it had.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
import subprocess
import sys
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

from . import contract
from .features import FEATURE_NAMES, N_FEATURES


class ModelError(Exception):
    """A model file that cannot be served, and why."""


#: Longest metadata strings kept (longer ones are cut, with an ellipsis).
MAX_VERSION_CHARS = 64
MAX_PRODUCER_CHARS = 128
MAX_DESCRIPTION_CHARS = 2048
#: Longest piece of a model's own text quoted in an error message.
MAX_QUOTED_CHARS = 80


def clean_text(value: str, limit: int) -> str:
    """A metadata string safe for a log line, a status reply and a Prometheus label:
    control, format and separator characters (newlines included) become '?', and it
    is cut to `limit` characters."""
    out = "".join("?" if unicodedata.category(ch)[0] in "CZ" and ch != " " else ch
                  for ch in value[:limit + 1])
    return out if len(out) <= limit else out[:limit - 1] + "\u2026"


def _default_owners() -> frozenset[int]:
    return frozenset({0, os.geteuid()})


@dataclass(frozen=True)
class TrustPolicy:
    """Who may own a model file: root or the daemon's own user (on a router, root), and
    nobody else may write to it."""

    owner_uids: frozenset[int] = field(default_factory=_default_owners)
    check_owner: bool = sys.platform.startswith(("linux", "freebsd"))


def resolve_path(path: str | os.PathLike[str]) -> Path:
    """The model path as served: absolute, with no symbolic link in any component.

    A relative path is taken against the caller's working directory (the daemon's
    control plane and configuration refuse relative paths before they get here: the
    daemon's directory is not the operator's). A symbolic link anywhere in the path
    could be swapped under the daemon's checks by whoever owns the directory it sits
    in: refused, naming the link, and so is '..'.
    """
    if "\x00" in os.fspath(path):
        raise ModelError(f"{os.fspath(path)[:200]!r}: NUL byte in the model path")
    path = Path(path)
    if ".." in path.parts:
        raise ModelError(f"{path}: '..' in the model path; give it without")
    path = Path(os.path.abspath(path))
    walked = Path(path.anchor)
    for part in path.parts[1:]:
        walked = walked / part
        if walked.is_symlink():
            raise ModelError(f"{path}: {walked} is a symbolic link; give the real path")
    return path


def check_file(path: Path, trust: TrustPolicy) -> bytes:
    """The file's bytes, once its kind, owner, mode and size are acceptable."""
    path = resolve_path(path)
    try:
        # Non-blocking: a FIFO (or a device) at the path must not hold the daemon
        # until a writer shows up; its kind is refused just below.
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOFOLLOW", 0)
                     | getattr(os, "O_NOCTTY", 0))
    except OSError as e:
        raise ModelError(f"{path}: cannot open: {e.strerror}") from e
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        os.close(fd)
        raise ModelError(f"{path}: not a regular file")
    os.set_blocking(fd, True)
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
        try:
            data = f.read(contract.MAX_MODEL_BYTES + 1)
        except OSError as e:
            raise ModelError(f"{path}: cannot read: {e.strerror}") from e
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
        got = meta.get(contract.META_CONTRACT)
        raise ModelError(f"contract version "
                         f"{None if got is None else clean_text(got, MAX_QUOTED_CHARS)!r}, "
                         f"this daemon "
                         f"serves {contract.CONTRACT_VERSION!r} (metadata "
                         f"{contract.META_CONTRACT})")
    features = tuple(meta.get(contract.META_FEATURES, "").split(","))
    if features != FEATURE_NAMES:
        raise ModelError(f"feature names differ from this daemon's pipeline: model has "
                         f"{clean_text(','.join(features), MAX_QUOTED_CHARS)!r}, pipeline "
                         f"has {','.join(FEATURE_NAMES)!r}")
    guard = meta.get(contract.META_VERDICT_GUARD)
    if guard is not None and guard not in contract.VERDICT_GUARDS:
        raise ModelError(f"verdict guard {clean_text(guard, 40)!r} "
                         f"({contract.META_VERDICT_GUARD}), "
                         f"want one of {', '.join(contract.VERDICT_GUARDS)}")
    actions = tuple(meta.get(contract.META_ACTIONS, "").split(","))
    if actions != contract.ACTIONS:
        raise ModelError(f"action order {clean_text(','.join(actions), MAX_QUOTED_CHARS)!r}, "
                         f"want {','.join(contract.ACTIONS)!r}")
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
    #: Validation's best time for a realistic batch of max_batch states, us.
    infer_us: float = 0.0

    def run(self, features: np.ndarray) -> np.ndarray:
        (out,) = self.session.run([contract.OUTPUT_NAME], {contract.INPUT_NAME: features})
        return out


def parse(data: bytes) -> dict[str, str]:
    """The graph's contract checks; returns its metadata (raw)."""
    try:
        proto = onnx.load_from_string(data)
    except Exception as e:  # noqa: BLE001 - a parse failure of any kind refuses the file
        raise ModelError(f"not a readable ONNX model ({type(e).__name__}: "
                         f"{clean_text(str(e), MAX_QUOTED_CHARS)})") from e
    try:
        onnx.checker.check_model(proto)
    except onnx.checker.ValidationError as e:
        raise ModelError(f"invalid ONNX graph: "
                         f"{clean_text(str(e).splitlines()[0], 200)}") from e
    return check_graph(proto)


def open_session(data: bytes, threads: int) -> ort.InferenceSession:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    try:
        return ort.InferenceSession(data, sess_options=opts,
                                    providers=["CPUExecutionProvider"])
    except Exception as e:  # noqa: BLE001
        raise ModelError(f"ONNX Runtime refused it: {clean_text(str(e), 200)}") from e


@dataclass(frozen=True)
class Limits:
    """What validation holds a model to: serving's batch size and time budget, and how
    long the whole validation may take."""

    max_batch: int = 1024
    max_infer_us: int = 5000
    timeout_s: float = 20.0
    memory_mib: int = 4096  # the child's address space; 0: unlimited


def validate_isolated(data: bytes, threads: int, limits: Limits) -> float:
    """Probe the model in a child process (aqmllmd.validate) killed after
    `limits.timeout_s`; returns its best time for a full batch, us."""
    cmd = [sys.executable, "-m", "aqmllmd.validate", str(threads), str(limits.max_batch),
           str(limits.max_infer_us), str(limits.memory_mib)]
    try:
        done = subprocess.run(cmd, input=data, capture_output=True,
                              timeout=limits.timeout_s, check=False)
    except subprocess.TimeoutExpired as e:
        raise ModelError(f"validation did not finish in {limits.timeout_s:g} s "
                         f"(model.validate_timeout_s): far too slow to serve") from e
    try:
        answer = json.loads(done.stdout.decode().strip().splitlines()[-1])
    except (ValueError, IndexError, UnicodeDecodeError) as e:
        tail = done.stderr.decode(errors="replace").strip().splitlines()[-1:] or [""]
        raise ModelError(f"validation crashed (exit {done.returncode}): "
                         f"{clean_text(tail[0], 200)}") from e
    if not answer.get("ok"):
        raise ModelError(str(answer.get("error", "validation failed")))
    return float(answer["infer_us"])


def load(path: str | os.PathLike[str], trust: TrustPolicy | None = None,
         threads: int = 1, limits: Limits | None = None) -> Model:
    """Validate and load a model file, or raise ModelError saying why not."""
    path = resolve_path(path)
    data = check_file(path, trust or TrustPolicy())
    try:
        meta = parse(data)
        infer_us = validate_isolated(data, threads, limits or Limits())
        session = open_session(data, threads)
    except ModelError as e:
        raise ModelError(f"{path}: {e}") from e
    digest = hashlib.sha256(data).hexdigest()
    return Model(path=path,
                 version=clean_text(meta.get(contract.META_VERSION, digest[:12]),
                                    MAX_VERSION_CHARS),
                 producer=clean_text(meta.get(contract.META_PRODUCER, "unknown"),
                                     MAX_PRODUCER_CHARS),
                 description=clean_text(meta.get(contract.META_DESCRIPTION, ""),
                                        MAX_DESCRIPTION_CHARS),
                 sha256=digest, session=session,
                 verdict_guard=meta.get(contract.META_VERDICT_GUARD), infer_us=infer_us)
