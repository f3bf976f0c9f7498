"""The student's shapes: DualPI2's prior, clamped inputs, trust in the teacher, export."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.skipif(importlib.util.find_spec("torch") is None,
                                reason="the train extra (torch) is not installed")

from aqmllmd import features  # noqa: E402

COL = {name: i for i, name in enumerate(features.FEATURE_NAMES)}


def branch_states(n: int = 3000, seed: int = 0) -> np.ndarray:
    """States that reach every branch of DualPI2's decision: both queues, every ECN
    codepoint, below and above the 2-MTU floor and the step, overload."""
    rng = np.random.default_rng(seed)
    x = np.zeros((n, features.N_FEATURES), np.float32)
    x[:, COL["queue_l"]] = rng.integers(0, 2, n)
    x[np.arange(n), COL["ecn_not_ect"] + rng.integers(0, 4, n)] = 1
    x[:, COL["backlog_kbytes_c"]] = rng.choice([0, 1, 50, 500], n)
    x[:, COL["backlog_kbytes_l"]] = rng.choice([0, 1, 20], n)
    x[:, COL["prob_c"]] = rng.uniform(0, 0.3, n)
    x[:, COL["prob_cl"]] = rng.choice([0.1, 0.5, 1.0], n)
    x[:, COL["expected_wait_ms"]] = rng.choice([0, 0.5, 1.0, 2, 50], n)
    x[:, COL["hist_c_not_ect_share"]] = rng.choice([0.0, 0.5, 1.0], n)
    return x


def test_the_prior_is_dualpi2s_decision_on_the_real_core() -> None:
    import torch

    from aqmllm_models.student import dualpi2_prior
    from aqmllmd.default_model.build import record

    x, taken = record(20000, 1)  # DualPI2 on the C core: states and its decisions
    p = dualpi2_prior(torch.from_numpy(x)).numpy()
    assert np.allclose(p.sum(1), 1) and p.min() >= 0
    for action in (1, 2):  # drop, mark: likelier where DualPI2 took them
        assert p[taken == action, action].mean() > 2 * p[taken != action, action].mean()
    marginal = np.bincount(taken, minlength=3) / len(taken)
    assert (np.log(p[np.arange(len(x)), taken] + 1e-3).mean()
            > np.log(marginal[taken]).mean())


def test_the_prior_marks_every_l4s_packet_past_the_step() -> None:
    import torch

    from aqmllm_models.student import dualpi2_prior

    x = branch_states()
    p = dualpi2_prior(torch.from_numpy(x), step_ms=1.0).numpy()
    past = (x[:, COL["queue_l"]] == 1) & (x[:, COL["expected_wait_ms"]] >= 1.0)
    assert np.all(p[past, 2] == 1)
    empty = x[:, COL["backlog_kbytes_c"]] + x[:, COL["backlog_kbytes_l"]] < 3
    assert np.all(p[empty & (x[:, COL["expected_wait_ms"]] < 1.0), 0] == 1)
    l4s = x[:, COL["queue_l"]] == 1
    assert np.all(p[l4s, 1] == 0)  # L4S packets are marked, not dropped


def test_a_student_on_the_prior_starts_as_dualpi2_and_learns_a_correction() -> None:
    import torch

    from aqmllm_models.student import Student, distill, dualpi2_prior

    x = branch_states()
    student = Student(x, 16, prior="dualpi2", guard="step")  # learns the teacher itself
    with torch.no_grad():
        p = torch.softmax(student(torch.from_numpy(x)), -1).numpy()
    assert np.abs(p - dualpi2_prior(torch.from_numpy(x)).numpy()).max() < 3e-3
    teacher = np.tile(np.float32([0.5, 0.0, 0.5]), (len(x), 1))  # marks half of all
    history = distill(student, x, teacher, epochs=30, lr=1e-2)
    assert history[-1] < history[0] / 2
    with torch.no_grad():
        p = torch.softmax(student(torch.from_numpy(x)), -1).numpy()
    assert abs(p[:, 2].mean() - 0.5) < 0.1


def test_teacher_weight_mixes_the_prior_and_the_teacher() -> None:
    import torch

    from aqmllm_models.student import PRIOR_EPS as eps
    from aqmllm_models.student import Student, dualpi2_prior, targets

    x = branch_states(500)
    teacher = np.tile(np.float32([0.2, 0.3, 0.5]), (len(x), 1))

    def mixed(w: float) -> np.ndarray:  # the target itself: no residual over a guard
        return targets(Student(x, prior="dualpi2", teacher_weight=w, guard="step"), x, teacher)

    assert np.allclose(mixed(1.0), teacher)
    prior = dualpi2_prior(torch.from_numpy(x)).numpy()
    none = mixed(0.0)
    assert np.abs(none - prior).max() < 5e-3
    half = mixed(0.5)
    assert np.allclose(half.sum(1), 1)
    # prior^0.5 * teacher^0.5, renormalised: the log ratio is the same for every action
    ratio = np.log(half) - 0.5 * np.log(prior + eps) - 0.5 * np.log(teacher + eps)
    assert np.allclose(ratio, ratio[:, :1], atol=1e-4)


def test_the_residual_and_the_guard_together_take_the_target() -> None:
    from aqmllm_models.student import residual

    rng = np.random.default_rng(4)
    target = rng.dirichlet([3, 1, 1], 4000)
    guard = rng.dirichlet([6, 1, 1], 4000)
    s = residual(target, guard)
    assert np.allclose(s.sum(1), 1, atol=1e-6) and (s >= 0).all()
    # The stricter of two independent draws (pass < mark < drop).
    both_pass = s[:, 0] * guard[:, 0]
    either_drops = 1 - (1 - s[:, 1]) * (1 - guard[:, 1])
    # Where the guard alone is not already stricter than the target, and passing as
    # often as the target leaves the verdict room for its drops, the two together take
    # the target exactly.
    s_pass = target[:, 0] / guard[:, 0]
    s_drop = (target[:, 1] - guard[:, 1]) / (1 - guard[:, 1])
    reachable = (s_pass <= 1) & (s_drop >= 0) & (s_pass + s_drop <= 1)
    assert reachable.mean() > 0.3
    assert np.allclose(both_pass[reachable], target[reachable, 0], atol=1e-5)
    assert np.allclose(either_drops[reachable], target[reachable, 1], atol=1e-5)
    # A target laxer than the guard: the verdict adds nothing.
    lax = residual(np.array([[1.0, 0.0, 0.0]]), np.array([[0.5, 0.2, 0.3]]))
    assert np.allclose(lax, [[1.0, 0.0, 0.0]])


def test_a_student_made_for_the_dualpi2_guard_learns_the_residual() -> None:
    import torch

    from aqmllm_models.student import Student, dualpi2_prior, residual, targets

    x = branch_states(500)
    teacher = np.tile(np.float32([0.5, 0.1, 0.4]), (len(x), 1))
    student = Student(x, guard="dualpi2")
    want = residual(teacher, dualpi2_prior(torch.from_numpy(x)).numpy())
    assert np.allclose(targets(student, x, teacher), want)
    assert np.allclose(targets(Student(x, guard="step"), x, teacher), teacher)
    # For the classic queue alone: the same residual on classic packets, nothing on L4S.
    classic = targets(Student(x, guard="dualpi2", queues="classic"), x, teacher)
    is_l = x[:, COL["queue_l"]] >= 0.5
    assert is_l.any() and (~is_l).any()
    assert np.allclose(classic[~is_l], want[~is_l])
    assert np.allclose(classic[is_l], [[1.0, 0.0, 0.0]])


def test_inputs_are_clamped_to_the_training_range() -> None:
    import torch

    from aqmllm_models.student import Student

    x = branch_states(500)
    student = Student(x, 16)
    far = x.copy()
    far[:, COL["expected_wait_ms"]] = 5000.0  # 100x the longest wait seen
    edge = x.copy()
    edge[:, COL["expected_wait_ms"]] = x[:, COL["expected_wait_ms"]].max()
    with torch.no_grad():
        assert torch.equal(student(torch.from_numpy(far)), student(torch.from_numpy(edge)))


def test_bad_student_options_are_refused() -> None:
    from aqmllm_models.student import Student

    x = branch_states(10)
    for kwargs in ({"prior": "pie"}, {"teacher_weight": 1.5}, {"step_ms": 0.0},
                   {"teacher_weight": 0.5},  # a weight below 1 needs a prior
                   {"guard": "pie"}, {"queues": "l4s"},
                   # the L4S queue left to a guard that is not DualPI2's whole decision
                   {"queues": "classic", "guard": "step"},
                   {"queues": "coupled", "guard": "none"}):
        with pytest.raises(ValueError):
            Student(x, **kwargs)
    with pytest.raises(ValueError, match="needs states"):
        Student(x[:0])


@pytest.mark.parametrize("prior", ["none", "dualpi2"])
def test_export_matches_torch_and_the_daemon_serves_it(prior: str, tmp_path: Path) -> None:
    from aqmllm_models.student import Student, distill, export, load, save
    from aqmllmd.model import load as load_for_serving

    x = branch_states()
    weight = 0.7 if prior == "dualpi2" else 1.0  # below 1 only with a prior
    guard, queues = ("dualpi2", "classic") if prior == "none" else ("step", "both")
    student = Student(x, 16, prior=prior, teacher_weight=weight, guard=guard, queues=queues)
    rng = np.random.default_rng(1)
    distill(student, x, rng.dirichlet([1, 1, 1], len(x)).astype(np.float32), epochs=2)
    save(student, tmp_path / "s", {"teacher": "test"})
    again, info = load(tmp_path / "s")
    assert info["prior"] == prior and info["teacher_weight"] == weight
    assert again.guard == guard and again.queues == queues
    beyond = x * 4  # outside the training range: the clamp must agree too
    r = export(again, tmp_path / "m.onnx", "test", np.concatenate([x, beyond]))
    assert r["max_abs_diff"] < 1e-4
    import onnx

    # The daemon's validator accepts it, and reads the guard it was made for.
    assert load_for_serving(tmp_path / "m.onnx").verdict_guard == guard
    meta = {p.key: p.value for p in onnx.load(str(tmp_path / "m.onnx")).metadata_props}
    assert f"prior={prior}" in meta["aqmllm.student"]


def test_the_coupled_l4s_mark_follows_dualpi2s_coupling_of_the_classic_signal() -> None:
    import torch

    from aqmllm_models.student import COUPLING, coupled_l_mark

    rng = np.random.default_rng(2)
    n = 2000
    x = np.zeros((n, features.N_FEATURES), np.float32)
    base = rng.uniform(0, 0.45, n).astype(np.float32)  # p', as the core keeps it
    x[:, COL["prob_base"]], x[:, COL["prob_c"]] = base, base ** 2
    x[:, COL["prob_cl"]] = COUPLING * base
    x[:, COL["backlog_kbytes_c"]] = rng.choice([0.0, 1.0, 50.0], n)
    xt = torch.from_numpy(x)
    above = x[:, COL["backlog_kbytes_c"]] >= 3.0
    r_c = torch.from_numpy(rng.uniform(0, 0.2, (n, 1)).astype(np.float32))
    mark = coupled_l_mark(xt, r_c).numpy()[:, 0]
    # No residual, nothing to add: DualPI2 already couples its own p_C.
    assert np.abs(coupled_l_mark(xt, torch.zeros(n, 1)).numpy()).max() < 1e-4  # float32
    # Below the 2 MTU floor nothing either; above it, with DualPI2's own p_CL drawn
    # independently, the L4S signal is k * sqrt of the classic one.
    assert np.all(mark[~above] == 0)
    q_c = 1 - (1 - x[:, COL["prob_c"]]) * (1 - r_c.numpy()[:, 0])
    total = 1 - (1 - x[:, COL["prob_cl"]]) * (1 - mark)
    assert np.allclose(total[above], np.minimum(1, COUPLING * np.sqrt(q_c[above])), atol=1e-5)


def test_a_coupled_student_couples_what_the_classic_packets_receive_and_exports(
        tmp_path: Path) -> None:
    import torch

    from aqmllm_models.student import (
        Student,
        as_classic,
        classic_signal,
        coupled_l_mark,
        distill,
        export,
        targets,
    )
    from aqmllmd.model import load as load_for_serving

    x = branch_states()
    teacher = np.random.default_rng(3).dirichlet([1, 1, 1], len(x)).astype(np.float32)
    student = Student(x, 16, prior="dualpi2", teacher_weight=0.5, queues="coupled")
    classic = Student(x, 16, prior="dualpi2", teacher_weight=0.5, queues="classic")
    # It learns what the classic-queue student learns: its L4S decision is computed.
    assert np.allclose(targets(student, x, teacher), targets(classic, x, teacher))
    distill(student, x, teacher, epochs=2)
    is_l = x[:, COL["queue_l"]] >= 0.5
    share = x[:, COL["hist_c_not_ect_share"]]
    with torch.no_grad():
        xt = torch.from_numpy(x)
        p = student.decide(xt).numpy()
        ect0 = torch.softmax(student(as_classic(xt)), -1).numpy()
        not_ect_view = torch.softmax(student(as_classic(xt, "ecn_not_ect")), -1).numpy()
        r_ect, r_not = 1 - ect0[:, :1], 1 - not_ect_view[:, :1]
        want = coupled_l_mark(xt, classic_signal(
            xt, torch.from_numpy(r_ect), torch.from_numpy(r_not))).numpy()[:, 0]
        alone = [coupled_l_mark(xt, torch.from_numpy(r)).numpy()[:, 0] for r in (r_ect, r_not)]
    assert np.allclose(p.sum(1), 1, atol=1e-6)
    # Classic packets take the network's decision for their own kind: ECN-capable ones
    # that for an ECT(0) packet, Not-ECT ones that for a Not-ECT packet, as drops.
    not_ect = x[:, COL["ecn_not_ect"]] == 1
    assert (~is_l & ~not_ect).any() and (~is_l & not_ect).any()
    assert np.allclose(p[~is_l & ~not_ect], ect0[~is_l & ~not_ect], atol=1e-6)
    assert np.allclose(p[~is_l & not_ect, 1], r_not[~is_l & not_ect, 0], atol=1e-6)
    assert np.all(p[~is_l & not_ect, 2] == 0)
    assert np.all(p[is_l, 1] == 0)  # L4S packets are never dropped by it
    # L4S packets: the coupling of what the classic packets beside them receive, the
    # ECT(0) signal where they are all ECN-capable, the Not-ECT one where none is.
    assert np.allclose(p[is_l, 2], want[is_l], atol=1e-6)
    for value, expected in ((0.0, alone[0]), (1.0, alone[1])):
        rows = is_l & (share == value)
        assert rows.any() and np.allclose(p[rows, 2], expected[rows], atol=1e-6)
    assert (p[is_l, 2] > 0).any() and (p[is_l, 2] == 0).any()
    r = export(student, tmp_path / "m.onnx", "test", np.concatenate([x, x * 4]))
    assert r["max_abs_diff"] < 1e-4
    served = load_for_serving(tmp_path / "m.onnx")
    assert served.verdict_guard == "dualpi2"
    for rows in (x[:1], x[1:4]):  # a batch of one, and a small one, too
        want_rows = student.decide(torch.from_numpy(rows)).detach().numpy()
        assert np.abs(served.run(rows) - want_rows).max() < 1e-4
