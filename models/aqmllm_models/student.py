"""The student: a one-hidden-layer network distilled from the teacher, exported to ONNX.

Two shapes, both with normalisation inside the graph:
- plain: logits = MLP(normalised features), the shape the daemon's interim builder
  (aqmllmd.default_model.build.to_onnx) writes;
- on a DualPI2 prior (`prior="dualpi2"`): logits = log(DualPI2's own distribution for
  the state) + MLP(...). The network learns the teacher's *correction* to DualPI2, so
  where the data says nothing (long queues no recording reached) the student falls back
  on DualPI2's step marking instead of extrapolating a ReLU network.

Either way the network's inputs are clamped to the range seen in training, and
`teacher_weight` < 1 distils towards the geometric mixture prior^(1-w) * teacher^w, the
policy that minimises (1-w)*KL(pi||prior) + w*KL(pi||teacher): how far to trust an
undertrained teacher away from the classical controller.
With `guard="dualpi2"` the student is made for the core's DualPI2 verdict guard
(kmod/core/README.md), under which DualPI2's decision at dequeue wins wherever it is the
stricter. The student then learns the *residual*: the decisions the target takes beyond
DualPI2's, so that the two together take the target's (see `residual`). With
`queues="classic"` it adds to classic packets only and leaves the L4S queue to DualPI2
alone, whose step marking already acts within a millisecond (models/README.md). With
`queues="coupled"` it learns as with "classic"; classic packets take its decision (as
drops if they are Not-ECT), and L4S packets the mark DualPI2's coupling gives the signal
the classic packets beside them receive (see `coupled_l_mark`): its decisions for an
ECT(0) and a Not-ECT classic packet, mixed by the recent classic packets' Not-ECT share
(`hist_c_not_ect_share`). Extra classic marks are matched in the L4S queue, and only as
far as the classic flows really get them, so the two kinds of flow keep DualPI2's
balance.
`export` checks the file with the daemon's validator and against torch on held-out states.
"""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import torch
from torch import nn

from aqmllmd import contract, features
from aqmllmd.default_model.build import to_onnx
from aqmllmd.model import load as load_for_serving

PRIORS = ("none", "dualpi2")
#: The core's verdict guards a student can be made for (aqm_params.verdict_guard).
GUARDS = contract.VERDICT_GUARDS
#: The queues whose packets a student decides beyond its guard.
QUEUES = ("both", "classic", "coupled")
#: DualPI2's coupling factor k (p_CL = k * p'), the core's default (aqm_core.c).
COUPLING = 2.0
#: Floor under the prior's probabilities. It is also a random drop and mark rate on
#: every packet where DualPI2 would do nothing: 1e-3 cost CUBIC a sixth of a 50 Mbit/s
#: link in closed loop (models/EXPERIMENTS.md). A correction of 14 nats overrides 1e-6.
PRIOR_EPS = 1e-6
#: DualPI2's PI-driven part waits for 2 MTU of backlog (kmod/core/aqm_core.c), in kB.
FLOOR_KBYTES = 3.0
_COL = {name: i for i, name in enumerate(features.FEATURE_NAMES)}


def _col(x: torch.Tensor, name: str) -> torch.Tensor:
    return x[:, _COL[name]:_COL[name] + 1]


def _floor(x: torch.Tensor) -> torch.Tensor:
    """1 where the backlog reaches the 2 MTU that DualPI2's PI-driven parts wait for."""
    return ((_col(x, "backlog_kbytes_c") + _col(x, "backlog_kbytes_l"))
            >= FLOOR_KBYTES).float()


def dualpi2_prior(x: torch.Tensor, step_ms: float = 1.0) -> torch.Tensor:
    """DualPI2's probability of (enqueue, drop, mark) for each state, from its features.

    As the core decides at dequeue (aqm_core.c, dualpi2_decide), with the state's
    expected wait standing for the sojourn: a classic packet is dropped (Not-ECT, or in
    overload) or marked with p_C; an L4S packet is marked with p_CL, and always once its
    wait reaches the step threshold. Both PI-driven parts need 2 MTU of backlog."""
    def col(name: str) -> torch.Tensor:
        return _col(x, name)

    floor = _floor(x)
    step = (col("expected_wait_ms") >= step_ms).float()
    overload = (col("prob_cl") >= 1.0).float()
    prob_c, prob_cl = col("prob_c").clamp(0, 1), col("prob_cl").clamp(0, 1)
    is_l = col("queue_l").clamp(0, 1)  # clamps keep any input a distribution
    act_c = floor * prob_c
    drop_c = act_c * torch.maximum(overload, col("ecn_not_ect").clamp(0, 1))
    mark_l = 1 - (1 - floor * prob_cl) * (1 - step)
    drop = (1 - is_l) * drop_c
    mark = (1 - is_l) * (act_c - drop_c) + is_l * mark_l
    return torch.cat([(1 - drop - mark).clamp(0, 1), drop, mark], dim=1)


def check_shape(prior: str, step_ms: float, teacher_weight: float,
                guard: str = "dualpi2", queues: str = "both") -> None:
    """ValueError for a student shape that cannot be built."""
    if prior not in PRIORS:
        raise ValueError(f"prior must be one of {PRIORS}, not {prior!r}")
    if guard not in GUARDS:
        raise ValueError(f"guard must be one of {GUARDS}, not {guard!r}")
    if queues not in QUEUES:
        raise ValueError(f"queues must be one of {QUEUES}, not {queues!r}")
    if queues != "both" and guard != "dualpi2":
        raise ValueError(f"a student with queues={queues!r} leaves the L4S queue's own "
                         "signal to DualPI2: it needs the dualpi2 guard")
    if not 0.0 <= teacher_weight <= 1.0:
        raise ValueError(f"teacher_weight must be in [0, 1], not {teacher_weight}")
    if prior == "none" and teacher_weight != 1.0:
        raise ValueError("a teacher weight below 1 mixes the teacher with a prior: "
                         "choose one (prior dualpi2)")
    if not step_ms > 0:
        raise ValueError(f"step_ms must be positive, not {step_ms}")


class Student(nn.Module):
    def __init__(self, x: np.ndarray, hidden: int = 64, prior: str = "none",
                 step_ms: float = 1.0, teacher_weight: float = 1.0,
                 guard: str = "dualpi2", queues: str = "both") -> None:
        """A student for the states `x` (float32 [N, F]): they set the normalisation and
        the clamping range. `guard`: the core's verdict guard it will run under;
        `queues`: whose packets it decides beyond the guard."""
        super().__init__()
        check_shape(prior, step_ms, teacher_weight, guard, queues)
        self.guard, self.queues = guard, queues
        x = np.asarray(x, np.float32).reshape(-1, features.N_FEATURES)
        if len(x) == 0:
            raise ValueError("a student needs states to set its normalisation")
        self.prior, self.step_ms, self.teacher_weight = prior, float(step_ms), teacher_weight
        for name, value in (("mean", x.mean(0)), ("std", np.maximum(x.std(0), 1e-6)),
                            ("lo", x.min(0)), ("hi", x.max(0))):
            self.register_buffer(name, torch.tensor(value, dtype=torch.float32))
        self.l1 = nn.Linear(features.N_FEATURES, hidden)
        self.l2 = nn.Linear(hidden, 3)
        if prior != "none":  # start as the prior: the network learns a correction
            nn.init.zeros_(self.l2.weight)
            nn.init.zeros_(self.l2.bias)

    def prior_log_probs(self, x: torch.Tensor) -> torch.Tensor | None:
        if self.prior == "none":
            return None
        return torch.log(dualpi2_prior(x, self.step_ms) + PRIOR_EPS)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = (torch.minimum(torch.maximum(x, self.lo), self.hi) - self.mean) / self.std
        logits = self.l2(torch.relu(self.l1(z)))
        prior = self.prior_log_probs(x)
        return logits if prior is None else logits + prior

    def decide(self, x: torch.Tensor) -> torch.Tensor:
        """The distribution the exported model serves: softmax(forward), or with
        queues="coupled" the network's decision for the state seen as a classic packet of
        its own kind, ECN-capable (`as_classic`) or Not-ECT (its signal taken as drops),
        and for L4S packets `coupled_l_mark` of the classic signal expected beside them
        (`classic_signal`)."""
        if self.queues != "coupled":
            return torch.softmax(self(x), dim=-1)
        p_ect = torch.softmax(self(as_classic(x)), dim=-1)
        r_ect = 1 - p_ect[:, :1]
        r_not = 1 - torch.softmax(self(as_classic(x, "ecn_not_ect")), dim=-1)[:, :1]
        not_ect = _col(x, "ecn_not_ect").clamp(0, 1)
        nothing = torch.zeros_like(r_not)
        classic = (1 - not_ect) * p_ect + not_ect * torch.cat([1 - r_not, r_not, nothing], 1)
        mark = coupled_l_mark(x, classic_signal(x, r_ect, r_not))
        coupled = torch.cat([1 - mark, nothing, mark], dim=1)
        is_l = _col(x, "queue_l").clamp(0, 1)
        return (1 - is_l) * classic + is_l * coupled

    def config(self) -> dict:
        return {"hidden": self.l1.out_features, "prior": self.prior, "step_ms": self.step_ms,
                "teacher_weight": self.teacher_weight, "guard": self.guard,
                "queues": self.queues}


#: The ECN codepoints' one-hot features.
_ECN = ("ecn_not_ect", "ecn_ect1", "ecn_ect0", "ecn_ce")


def _classic_view(ecn: str) -> tuple[tuple[str, float], ...]:
    """The features `as_classic` sets, and to what; the rest stay."""
    return (("queue_l", 0.0), *((e, float(e == ecn)) for e in _ECN))


def as_classic(x: torch.Tensor, ecn: str = "ecn_ect0") -> torch.Tensor:
    """The same states as seen by a classic packet with codepoint `ecn` (ECT(0) by
    default): queue_l and the ECN one-hot changed, the queues' figures as they are."""
    c = x.clone()
    for name, value in _classic_view(ecn):
        c[:, _COL[name]] = value
    return c


def classic_signal(x: torch.Tensor, r_ect: torch.Tensor, r_not: torch.Tensor) -> torch.Tensor:
    """The residual the classic packets beside a state receive: `r_ect` for an ECN-capable
    one, `r_not` for a Not-ECT one, mixed by the recent classic packets' Not-ECT share.
    Coupling the ECT(0) signal alone into the L4S queue where the classic flow is Not-ECT
    and gets (almost) nothing slowed DCTCP and lengthened that CUBIC's tail
    (models/EXPERIMENTS.md, 2026-12-02)."""
    share = _col(x, "hist_c_not_ect_share").clamp(0, 1)
    return (1 - share) * r_ect + share * r_not


def coupled_l_mark(x: torch.Tensor, r_c: torch.Tensor) -> torch.Tensor:
    """The mark an L4S packet needs beyond DualPI2's own when the classic queue's
    signal is DualPI2's p_C plus a residual r_c (drawn independently): the coupling
    p_CL = k * sqrt(p_C) applied to that total, q_C = 1 - (1 - p_C)(1 - r_c). Zero when
    r_c is zero (k * sqrt(p'^2) = p_CL), and below DualPI2's 2 MTU floor, where the
    coupling's square root would turn a stray classic residual into many L4S marks.
    DualPI2's step and its own p_CL still act at dequeue, so only the excess over p_CL
    is marked (independently again)."""
    floor = _floor(x)
    q_c = 1 - (1 - floor * _col(x, "prob_c").clamp(0, 1)) * (1 - r_c.clamp(0, 1))
    q_l = (COUPLING * torch.sqrt(q_c)).clamp(max=1.0)
    own = floor * _col(x, "prob_cl").clamp(0, 1)
    return floor * ((q_l - own) / (1 - own).clamp(min=PRIOR_EPS)).clamp(0, 1)


def residual(target: np.ndarray, guard: np.ndarray) -> np.ndarray:
    """What a verdict must add to the guard's own (enqueue, drop, mark) distribution so
    that the stricter of the two (pass < mark < drop), drawn independently, follows
    `target`: pass needs both to pass (s_pass = t_pass / g_pass), a drop needs either to
    drop (s_drop = (t_drop - g_drop) / (1 - g_drop)), the rest is marks. Where the guard
    alone is already stricter than the target, the verdict adds nothing; where the two
    cannot both be met, passing as often as the target comes first."""
    t = np.asarray(target, np.float64)
    g = np.clip(np.asarray(guard, np.float64), PRIOR_EPS, 1 - PRIOR_EPS)
    s_pass = np.minimum(1.0, t[:, 0] / g[:, 0])
    s_drop = np.clip((t[:, 1] - g[:, 1]) / (1 - g[:, 1]), 0.0, 1.0 - s_pass)
    s_mark = 1.0 - s_pass - s_drop
    return np.stack([s_pass, s_drop, s_mark], axis=1).astype(np.float32)


def targets(student: Student, x: np.ndarray, teacher_p: np.ndarray) -> np.ndarray:
    """What the student learns: the teacher's distributions, or with teacher_weight w < 1
    their geometric mixture with the prior, prior^(1-w) * teacher^w, renormalised; under
    the DualPI2 guard, what that target needs beyond DualPI2 (`residual`), and nothing
    for L4S packets if the student decides the classic queue alone or couples the L4S
    queue to it (the coupled mark is computed, not learned)."""
    w = student.teacher_weight
    xt = torch.from_numpy(np.asarray(x, np.float32))
    prior = student.prior_log_probs(xt)
    if prior is None or w == 1.0:
        target = np.asarray(teacher_p, np.float32)
    else:
        mixed = (1 - w) * prior + w * torch.log(torch.from_numpy(
            np.asarray(teacher_p, np.float32)) + PRIOR_EPS)
        target = torch.softmax(mixed, dim=-1).numpy()
    if student.guard != "dualpi2":
        return target
    add = residual(target, dualpi2_prior(xt, student.step_ms).numpy())
    if student.queues != "both":  # coupled: the L4S decision is computed from it
        add[xt[:, _COL["queue_l"]].numpy() >= 0.5] = (1.0, 0.0, 0.0)
    return add


def save(student: Student, out: Path, info: dict) -> None:
    """The student's weights (safetensors: no pickle) and how it was made (student.json)."""
    import json

    from safetensors.torch import save_file

    out.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in student.state_dict().items()},
              out / "student.safetensors")
    (out / "student.json").write_text(json.dumps({**student.config(), **info}, indent=2))


def load(where: Path) -> tuple[Student, dict]:
    import json

    from safetensors.torch import load_file

    info = json.loads((where / "student.json").read_text())
    state = load_file(where / "student.safetensors")
    if "lo" not in state:  # saved before clamping existed: no clamp
        big = np.finfo(np.float32).max
        state["lo"] = torch.full_like(state["mean"], -big)
        state["hi"] = torch.full_like(state["mean"], big)
    student = Student(np.stack([state["lo"].numpy(), state["hi"].numpy()]),
                      int(info["hidden"]), info.get("prior", "none"),
                      float(info.get("step_ms", 1.0)), float(info.get("teacher_weight", 1.0)),
                      info.get("guard", "none"),  # made before guards: none
                      info.get("queues", "both"))
    student.load_state_dict(state)
    return student, info


def distill(student: Student, x: np.ndarray, teacher_p: np.ndarray, epochs: int = 20,
            lr: float = 3e-3, batch: int = 256, seed: int = 0) -> list[float]:
    """KL(target || student) on recorded states (target: see `targets`); returns the loss
    per epoch."""
    torch.manual_seed(seed)
    opt = torch.optim.Adam(student.parameters(), lr=lr)
    xt = torch.from_numpy(np.asarray(x, np.float32))
    pt = torch.from_numpy(targets(student, x, teacher_p))
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


def _params(student: Student) -> dict[str, np.ndarray]:
    return {"mean": student.mean.numpy(), "std": student.std.numpy(),
            "w1": student.l1.weight.detach().numpy().T, "b1": student.l1.bias.detach().numpy(),
            "w2": student.l2.weight.detach().numpy().T, "b2": student.l2.bias.detach().numpy()}


def student_graph(student: Student, description: str):  # noqa: ANN201 (onnx.ModelProto)
    """The student's graph: clamp, normalise, MLP, plus DualPI2's log prior, softmax."""
    from onnx import helper, numpy_helper

    model = to_onnx(_params(student), description)
    g = model.graph
    first = g.node[0]  # Sub(input, mean): feed it the clamped input instead
    consts = {"lo": student.lo.numpy(), "hi": student.hi.numpy()}
    nodes = [helper.make_node("Min", [contract.INPUT_NAME, "hi"], ["x_hi"]),
             helper.make_node("Max", ["x_hi", "lo"], ["x_clamped"])]
    first.input[0] = "x_clamped"
    softmax = g.node[-1]
    if student.prior != "none":
        consts.update({"floor_kb": np.float32(FLOOR_KBYTES), "step_ms": np.float32(student.step_ms),
                       "one": np.float32(1.0), "zero": np.float32(0.0),
                       "eps": np.float32(PRIOR_EPS)})

        def gather(name: str) -> str:
            consts[f"i_{name}"] = np.array([_COL[name]], np.int64)
            nodes.append(helper.make_node("Gather", [contract.INPUT_NAME, f"i_{name}"],
                                          [f"f_{name}"], axis=1))
            return f"f_{name}"

        def op(kind: str, *inputs: str, **attrs: object) -> str:
            out = f"p{len(nodes)}"
            nodes.append(helper.make_node(kind, list(inputs), [out], **attrs))
            return out

        def at_least(a: str, b: str) -> str:
            return op("Cast", op("GreaterOrEqual", a, b), to=1)  # to float

        floor = at_least(op("Add", gather("backlog_kbytes_c"), gather("backlog_kbytes_l")),
                         "floor_kb")
        step = at_least(gather("expected_wait_ms"), "step_ms")
        overload = at_least(gather("prob_cl"), "one")
        prob_c = op("Clip", gather("prob_c"), "zero", "one")
        prob_cl = op("Clip", "f_prob_cl", "zero", "one")
        is_l = op("Clip", gather("queue_l"), "zero", "one")
        is_c = op("Sub", "one", is_l)
        act_c = op("Mul", floor, prob_c)
        drop_c = op("Mul", act_c, op("Max", overload,
                                     op("Clip", gather("ecn_not_ect"), "zero", "one")))
        keep_l = op("Mul", op("Sub", "one", op("Mul", floor, prob_cl)), op("Sub", "one", step))
        mark_l = op("Sub", "one", keep_l)
        drop = op("Mul", is_c, drop_c)
        mark = op("Add", op("Mul", is_c, op("Sub", act_c, drop_c)), op("Mul", is_l, mark_l))
        enq = op("Clip", op("Sub", op("Sub", "one", drop), mark), "zero", "one")
        prior = op("Concat", enq, drop, mark, axis=1)
        log_prior = op("Log", op("Add", prior, "eps"))
        logits_in = softmax.input[0]
        nodes.append(helper.make_node("Add", [logits_in, log_prior], ["logits_prior"]))
        softmax.input[0] = "logits_prior"
    old = list(g.node)
    del g.node[:]
    g.node.extend(nodes[:2] + old[:-1] + nodes[2:] + old[-1:])
    g.initializer.extend(numpy_helper.from_array(np.asarray(v), k) for k, v in consts.items())
    if student.queues == "coupled":
        _couple(g)
    return model


def _couple(g) -> None:  # noqa: ANN001 (onnx.GraphProto)
    """Rewire a student's graph as `Student.decide` with queues="coupled": the network
    reads the batch twice in one run, as ECT(0) and as Not-ECT classic packets
    (`as_classic`); classic rows take their kind's decision (Not-ECT: its signal as
    drops), L4S rows the `coupled_l_mark` of `classic_signal`."""
    from onnx import helper, numpy_helper

    x, y = contract.INPUT_NAME, contract.OUTPUT_NAME
    for node in g.node:  # the network reads both classic views and writes their probs
        node.input[:] = ["c_views" if i == x else i for i in node.input]
        node.output[:] = ["c_probs" if o == y else o for o in node.output]
    n = len(features.FEATURE_NAMES)
    consts = {"c_one": np.float32(1.0), "c_zero": np.float32(0.0),
              "c_k": np.float32(COUPLING), "c_floor_kb": np.float32(FLOOR_KBYTES),
              "c_eps": np.float32(PRIOR_EPS), "c_i0": np.array([0], np.int64),
              "c_i1": np.array([1], np.int64), "c_end": np.array([2 ** 62], np.int64)}
    for ecn in ("ecn_ect0", "ecn_not_ect"):  # x * keep + put is as_classic(x, ecn)
        keep, put = np.ones(n, np.float32), np.zeros(n, np.float32)
        for name, value in _classic_view(ecn):
            keep[_COL[name]], put[_COL[name]] = 0.0, value
        consts[f"c_keep_{ecn}"], consts[f"c_put_{ecn}"] = keep, put
    first: list = []  # before the network
    nodes: list = []  # after it
    made = itertools.count()

    def op(kind: str, *inputs: str, into: list = nodes, **attrs: object) -> str:
        out = f"c{next(made)}"
        into.append(helper.make_node(kind, list(inputs), [out], **attrs))
        return out

    def col(name: str) -> str:
        consts[f"c_col_{name}"] = np.array([_COL[name]], np.int64)
        return op("Gather", x, f"c_col_{name}", axis=1)

    views = [op("Add", op("Mul", x, f"c_keep_{ecn}", into=first), f"c_put_{ecn}", into=first)
             for ecn in ("ecn_ect0", "ecn_not_ect")]
    first.append(helper.make_node("Concat", views, ["c_views"], axis=0))
    rows = op("Slice", op("Shape", x), "c_i0", "c_i1")  # the batch size, [1]
    p_ect = op("Slice", "c_probs", "c_i0", rows, "c_i0")  # rows [0, N) and [N, 2N)
    p_not = op("Slice", "c_probs", rows, "c_end", "c_i0")

    def signal(p: str) -> str:
        return op("Clip", op("Sub", "c_one", op("Slice", p, "c_i0", "c_i1", "c_i1")),
                  "c_zero", "c_one")

    r_ect, r_not = signal(p_ect), signal(p_not)
    nothing = op("Mul", r_not, "c_zero")
    not_ect = op("Clip", col("ecn_not_ect"), "c_zero", "c_one")
    as_drops = op("Concat", op("Sub", "c_one", r_not), r_not, nothing, axis=1)
    classic = op("Add", op("Mul", op("Sub", "c_one", not_ect), p_ect),
                 op("Mul", not_ect, as_drops))
    share = op("Clip", col("hist_c_not_ect_share"), "c_zero", "c_one")
    r_c = op("Add", op("Mul", op("Sub", "c_one", share), r_ect), op("Mul", share, r_not))
    floor = op("Cast", op("GreaterOrEqual", op("Add", col("backlog_kbytes_c"),
                                                col("backlog_kbytes_l")), "c_floor_kb"), to=1)
    p_c = op("Mul", floor, op("Clip", col("prob_c"), "c_zero", "c_one"))
    q_c = op("Sub", "c_one", op("Mul", op("Sub", "c_one", p_c), op("Sub", "c_one", r_c)))
    q_l = op("Clip", op("Mul", "c_k", op("Sqrt", q_c)), "c_zero", "c_one")
    own = op("Mul", floor, op("Clip", col("prob_cl"), "c_zero", "c_one"))
    mark = op("Mul", floor, op("Clip", op("Div", op("Sub", q_l, own),
                                          op("Max", op("Sub", "c_one", own), "c_eps")),
                               "c_zero", "c_one"))
    coupled = op("Concat", op("Sub", "c_one", mark), nothing, mark, axis=1)
    is_l = op("Clip", col("queue_l"), "c_zero", "c_one")
    mixed = op("Add", op("Mul", op("Sub", "c_one", is_l), classic), op("Mul", is_l, coupled))
    nodes.append(helper.make_node("Identity", [mixed], [y]))
    old = list(g.node)
    del g.node[:]
    g.node.extend(first + old + nodes)
    g.initializer.extend(numpy_helper.from_array(np.asarray(v), k) for k, v in consts.items())


def export(student: Student, out: Path, description: str, held_out: np.ndarray,
           tolerance: float = 1e-4, version: str = "student-1") -> dict[str, float]:
    """Write the ONNX file; check torch/ONNX Runtime parity and the daemon's contract."""
    import onnx

    model = student_graph(student, description)
    props = {p.key: p.value for p in model.metadata_props}
    props.update({contract.META_PRODUCER: "aqmllm_models.student (distilled from the "
                                          "AQM-LLM teacher)",
                  contract.META_VERSION: version,
                  "aqmllm.student": ", ".join(f"{k}={v}" for k, v in student.config().items()),
                  contract.META_VERDICT_GUARD: student.guard})
    onnx.helper.set_model_props(model, props)
    onnx.checker.check_model(model)
    out.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, out)
    out.chmod(0o644)
    served = load_for_serving(out)  # the daemon's own validator
    with torch.no_grad():
        want = student.decide(torch.from_numpy(held_out)).numpy()
    got = served.run(held_out)
    diff = float(np.abs(got - want).max())
    if diff > tolerance:
        raise AssertionError(f"torch/ONNX Runtime parity {diff:.2e} > {tolerance}")
    return {"max_abs_diff": diff}
