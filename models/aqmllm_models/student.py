"""The student: a one-hidden-layer network distilled from the teacher, exported to ONNX.

It is the shape the daemon's builder (aqmllmd.default_model.build.to_onnx) writes, with
normalisation inside the graph, so export needs no torch exporter and the file meets the
daemon's contract by construction; `export` still checks it with the daemon's validator
and against torch on held-out states.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from aqmllmd import features
from aqmllmd.default_model.build import to_onnx
from aqmllmd.model import load as load_for_serving


class Student(nn.Module):
    def __init__(self, mean: np.ndarray, std: np.ndarray, hidden: int = 64) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32))
        self.register_buffer("std", torch.tensor(np.maximum(std, 1e-6), dtype=torch.float32))
        self.l1 = nn.Linear(features.N_FEATURES, hidden)
        self.l2 = nn.Linear(hidden, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.l2(torch.relu(self.l1((x - self.mean) / self.std)))


def save(student: Student, out: Path, info: dict) -> None:
    """The student's weights (safetensors: no pickle) and how it was made (student.json)."""
    import json

    from safetensors.torch import save_file

    out.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in student.state_dict().items()},
              out / "student.safetensors")
    (out / "student.json").write_text(json.dumps({"hidden": student.l1.out_features, **info},
                                                 indent=2))


def load(where: Path) -> tuple[Student, dict]:
    import json

    from safetensors.torch import load_file

    info = json.loads((where / "student.json").read_text())
    state = load_file(where / "student.safetensors")
    student = Student(state["mean"].numpy(), state["std"].numpy(), int(info["hidden"]))
    student.load_state_dict(state)
    return student, info


def distill(student: Student, x: np.ndarray, teacher_p: np.ndarray, epochs: int = 20,
            lr: float = 3e-3, batch: int = 256, seed: int = 0) -> list[float]:
    """KL(teacher || student) on recorded states; returns the loss per epoch."""
    torch.manual_seed(seed)
    opt = torch.optim.Adam(student.parameters(), lr=lr)
    xt, pt = torch.from_numpy(x), torch.from_numpy(teacher_p.astype(np.float32))
    kl = nn.KLDivLoss(reduction="batchmean")
    history = []
    for _ in range(epochs):
        perm = torch.randperm(len(xt))
        total = 0.0
        for i in range(0, len(xt), batch):
            j = perm[i:i + batch]
            loss = kl(torch.log_softmax(student(xt[j]), dim=-1), pt[j])
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += float(loss.detach()) * len(j)
        history.append(total / len(xt))
    return history


def export(student: Student, out: Path, description: str, held_out: np.ndarray,
           tolerance: float = 1e-4, version: str = "student-1") -> dict[str, float]:
    """Write the ONNX file; check torch/ONNX Runtime parity and the daemon's contract."""
    params = {"mean": student.mean.numpy(), "std": student.std.numpy(),
              "w1": student.l1.weight.detach().numpy().T, "b1": student.l1.bias.detach().numpy(),
              "w2": student.l2.weight.detach().numpy().T, "b2": student.l2.bias.detach().numpy()}
    model = to_onnx(params, description)
    for prop in model.metadata_props:
        if prop.key == "aqmllm.producer":
            prop.value = "aqmllm_models.student (distilled from the AQM-LLM teacher)"
        if prop.key == "aqmllm.version":
            prop.value = version
    import onnx

    out.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, out)
    out.chmod(0o644)
    served = load_for_serving(out)  # the daemon's own validator
    with torch.no_grad():
        want = torch.softmax(student(torch.from_numpy(held_out)), dim=-1).numpy()
    got = served.run(held_out)
    diff = float(np.abs(got - want).max())
    if diff > tolerance:
        raise AssertionError(f"torch/ONNX Runtime parity {diff:.2e} > {tolerance}")
    return {"max_abs_diff": diff}
