"""DualPI2 in the C core against RFC 9332 and Linux sch_dualpi2's behaviour."""

from __future__ import annotations

import math

import pytest

from aqm_bridge.core import (
    DROP,
    ECN_CE,
    ECN_ECT0,
    ECN_ECT1,
    ECN_NOT_ECT,
    MARK,
    PASS,
    PROB_ONE,
    QUEUE_C,
    QUEUE_L,
    SOURCE_FALLBACK,
    Core,
    default_params,
)

MS = 1_000_000
US = 1_000
TUPDATE = 16 * MS
TARGET = 15 * MS
ALPHA, BETA = 0.16, 3.2


def p_prime(core: Core) -> float:
    return core.prob_base() / PROB_ONE


def reference_pi(sojourns_s: list[float], alpha: float = ALPHA, beta: float = BETA,
                 target_s: float = TARGET / 1e9) -> list[float]:
    """RFC 9332's PI update in floating point: p' after each update."""
    p, prev, out = 0.0, 0.0, []
    for q in sojourns_s:
        p = min(1.0, max(0.0, p + alpha * (q - target_s) + beta * (q - prev)))
        prev = q
        out.append(p)
    return out


def drive_to_prob(core: Core, at_least: float) -> int:
    """Hold a standing classic packet until p' >= at_least; freeze the PI; return now."""
    core.enqueue(0, 1500, ECN_NOT_ECT)
    now = 0
    while p_prime(core) < at_least:
        now += TUPDATE
        core.tick(now)
        assert now < 60 * 1_000 * MS, "PI never reached the wanted probability"
    core.set_params(alpha_mhz=0, beta_mhz=0)
    core.dequeue(now, QUEUE_C)
    return now


def measure(core: Core, now: int, queue_ecn: int, n: int, standing: int = 8) -> dict[int, int]:
    """Keep `standing` packets queued, push n through one queue, count verdicts."""
    for _ in range(standing):
        core.enqueue(now, 1500, queue_ecn)
    counts = {PASS: 0, MARK: 0, DROP: 0}
    queue = QUEUE_L if queue_ecn in (ECN_ECT1, ECN_CE) else QUEUE_C
    for _ in range(n):
        now += US
        core.enqueue(now, 1500, queue_ecn)
        verdict, _, source = core.dequeue(now, queue)
        assert source == SOURCE_FALLBACK
        counts[verdict] += 1
    return counts


def within(observed: int, n: int, p: float, sigmas: float = 5.0) -> bool:
    sd = math.sqrt(max(p * (1 - p), 1e-9) / n)
    return abs(observed / n - p) <= sigmas * sd + 2e-4


class TestPiController:
    def test_trajectory_with_a_growing_standing_queue(self) -> None:
        core = Core(seed=1)
        core.enqueue(0, 1500, ECN_NOT_ECT)  # head of C from t=0: sojourn = now
        sojourns, observed = [], []
        for k in range(1, 40):
            core.tick(k * TUPDATE)
            sojourns.append(k * TUPDATE / 1e9)
            observed.append(p_prime(core))
        for got, want in zip(observed, reference_pi(sojourns), strict=True):
            assert got == pytest.approx(want, abs=2e-5)
        assert observed[-1] > 0.9

    def test_trajectory_follows_an_arbitrary_delay_sequence(self) -> None:
        """Set the head-of-line sojourn before each update; p' follows the equation."""
        delays_ms = [20, 40, 60, 30, 10, 5, 50, 80, 15, 0, 0, 25, 70, 90, 1, 14, 16]
        t0 = 1_000 * MS
        core = Core(seed=2, now_ns=t0)
        for k, d in enumerate(delays_ms, start=1):
            t_update = t0 + k * TUPDATE
            while core.backlog(QUEUE_C):
                core.dequeue(t_update - TUPDATE + 1, QUEUE_C)
            if d:
                core.enqueue(t_update - d * MS, 1500, ECN_NOT_ECT)
            core.tick(t_update)
            want = reference_pi([x / 1e3 for x in delays_ms[:k]])[-1]
            assert p_prime(core) == pytest.approx(want, abs=2e-5), f"update {k}, delay {d} ms"

    def test_p_stays_in_0_1(self) -> None:
        core = Core(seed=3)
        core.enqueue(0, 1500, ECN_NOT_ECT)
        for k in range(1, 400):
            core.tick(k * TUPDATE)
        assert core.prob_base() == PROB_ONE
        core.dequeue(400 * TUPDATE, QUEUE_C)
        for k in range(401, 2000):
            core.tick(k * TUPDATE)
        assert core.prob_base() == 0

    def test_larger_of_the_two_queues_drives_the_update(self) -> None:
        core = Core(seed=4)
        core.enqueue(0, 1500, ECN_ECT1)  # L head from 0
        core.enqueue(10 * MS, 1500, ECN_NOT_ECT)  # C head from 10 ms
        core.tick(TUPDATE)
        assert p_prime(core) == pytest.approx(reference_pi([0.016])[0], abs=2e-5)

    def test_updates_run_lazily_without_a_timer(self) -> None:
        core = Core(seed=5)
        core.enqueue(0, 1500, ECN_NOT_ECT)
        core.enqueue(3 * TUPDATE + 1, 1500, ECN_NOT_ECT)  # catches up three updates
        assert core.stats()["pi_updates"] == 3
        # All three catch-up updates see the delay at the time they run.
        assert p_prime(core) == pytest.approx(
            reference_pi([(3 * TUPDATE + 1) / 1e9] * 3)[-1], abs=2e-5)


@pytest.fixture(scope="module")
def frozen() -> tuple[Core, int, float]:
    """A core whose p' was driven to about 0.3 and then frozen (alpha = beta = 0)."""
    core = Core(seed=7, step_thresh_ns=1_000_000_000)
    now = drive_to_prob(core, 0.3)
    p = p_prime(core)
    assert 0.3 <= p < 0.5, "want k*p' < 1 for these tests"
    return core, now, p


class TestCoupledProbabilities:
    def test_classic_ect_marks_with_p_squared(self, frozen: tuple[Core, int, float]) -> None:
        core, now, p = frozen
        n = 60_000
        counts = measure(core, now, ECN_ECT0, n)
        assert counts[DROP] == 0
        assert within(counts[MARK], n, p * p), (counts, p * p)
        assert core.stats()["p_c"] == pytest.approx(p * p, rel=1e-6)

    def test_classic_not_ect_drops_with_p_squared(self, frozen: tuple[Core, int, float]) -> None:
        core, now, p = frozen
        n = 60_000
        counts = measure(core, now, ECN_NOT_ECT, n)
        assert counts[MARK] == 0
        assert within(counts[DROP], n, p * p), (counts, p * p)

    def test_l4s_marks_with_k_times_p(self, frozen: tuple[Core, int, float]) -> None:
        core, now, p = frozen
        n = 60_000
        counts = measure(core, now, ECN_ECT1, n)
        assert counts[DROP] == 0
        assert within(counts[MARK], n, 2 * p), (counts, 2 * p)
        assert core.stats()["p_cl"] == pytest.approx(2 * p, rel=1e-6)

    def test_coupling_factor_is_a_parameter(self) -> None:
        core = Core(seed=8, step_thresh_ns=1_000_000_000, coupling_factor=3)
        now = drive_to_prob(core, 0.2)
        p = p_prime(core)
        assert 3 * p < 1
        n = 40_000
        counts = measure(core, now, ECN_ECT1, n)
        assert within(counts[MARK], n, 3 * p), (counts, 3 * p)


class TestStepAndFloor:
    def test_native_step_marks_at_one_millisecond(self) -> None:
        core = Core(seed=9)
        core.enqueue(0, 1500, ECN_ECT1)
        assert core.dequeue(1 * MS - 1, QUEUE_L)[0] == PASS
        core.enqueue(10 * MS, 1500, ECN_ECT1)
        assert core.dequeue(11 * MS, QUEUE_L)[0] == MARK
        assert core.stats()["step_marks"] == 1

    def test_step_threshold_is_a_parameter(self) -> None:
        core = Core(seed=9, step_thresh_ns=5 * MS)
        core.enqueue(0, 1500, ECN_ECT1)
        assert core.dequeue(4 * MS, QUEUE_L)[0] == PASS
        core.enqueue(10 * MS, 1500, ECN_ECT1)
        assert core.dequeue(15 * MS, QUEUE_L)[0] == MARK

    def test_step_does_not_apply_to_the_classic_queue(self) -> None:
        core = Core(seed=9)
        core.enqueue(0, 1500, ECN_ECT0)
        assert core.dequeue(5 * MS, QUEUE_C)[0] == PASS

    def test_no_pi_marking_or_dropping_below_two_mtu(self) -> None:
        core = Core(seed=10, step_thresh_ns=1_000_000_000)
        now = drive_to_prob(core, 0.45)
        for _ in range(20_000):
            now += US
            core.enqueue(now, 1400, ECN_NOT_ECT)  # backlog after dequeue: 0 bytes
            assert core.dequeue(now, QUEUE_C)[0] == PASS
            core.enqueue(now, 1400, ECN_ECT1)
            assert core.dequeue(now, QUEUE_L)[0] == PASS
        stats = core.stats()
        assert stats["drops_fallback"] == [0, 0] and stats["marks_fallback"] == [0, 0]


class TestOverload:
    def test_classic_packets_are_dropped_in_overload(self) -> None:
        core = Core(seed=11, step_thresh_ns=1_000_000_000)
        now = drive_to_prob(core, 0.6)
        p = p_prime(core)
        n = 40_000
        counts = measure(core, now, ECN_ECT0, n)
        assert counts[MARK] == 0, "ECT classic packets are dropped, not marked, in overload"
        assert within(counts[DROP], n, p * p), (counts, p * p)

    def test_l4s_packets_all_marked_or_dropped_in_overload(self) -> None:
        core = Core(seed=12, step_thresh_ns=1_000_000_000)
        now = drive_to_prob(core, 0.6)
        p = p_prime(core)
        n = 40_000
        counts = measure(core, now, ECN_ECT1, n)
        assert counts[PASS] == 0
        assert within(counts[DROP], n, p * p), (counts, p * p)

    def test_without_drop_overload_p_is_capped_and_l_never_dropped(self) -> None:
        core = Core(seed=13, drop_overload=0, step_thresh_ns=1_000_000_000)
        core.enqueue(0, 1500, ECN_NOT_ECT)
        for k in range(1, 200):
            core.tick(k * TUPDATE)
        assert core.prob_base() == PROB_ONE // 2
        core.set_params(alpha_mhz=0, beta_mhz=0)
        core.dequeue(200 * TUPDATE, QUEUE_C)
        counts = measure(core, 200 * TUPDATE, ECN_ECT1, 10_000)
        assert counts[DROP] == 0 and counts[MARK] == 10_000


class TestScheduler:
    @pytest.mark.parametrize("pct", [10, 30, 50])
    def test_wrr_gives_classic_its_share_under_saturation(self, pct: int) -> None:
        core = Core(seed=14, c_protection_pct=pct)
        now = 0
        sizes = [1500, 600, 1200, 64, 1500]
        for i in range(20):
            core.enqueue(now, sizes[i % 5], ECN_ECT1)
            core.enqueue(now, sizes[(i + 2) % 5], ECN_ECT0)
        sent = [0, 0]
        for i in range(60_000):
            now += US
            q = core.select(now)
            assert q is not None
            verdict, _, _ = core.dequeue(now, q)
            assert verdict == PASS
            length = sizes[i % 5]
            sent[q] += length  # refill what left, same queue, varying sizes
            core.enqueue(now, length, ECN_ECT1 if q == QUEUE_L else ECN_ECT0)
        stats = core.stats()
        share = stats["bytes_out"][QUEUE_C] / sum(stats["bytes_out"])
        assert share == pytest.approx(pct / 100, abs=0.01)

    def test_either_queue_alone_gets_the_whole_link(self) -> None:
        core = Core(seed=15)
        core.enqueue(0, 1500, ECN_ECT0)
        assert core.select(1) == QUEUE_C
        core.dequeue(1, QUEUE_C)
        assert core.select(2) is None
        core.enqueue(3, 1500, ECN_ECT1)
        assert core.select(4) == QUEUE_L

    def test_l_queue_goes_first_after_idle(self) -> None:
        core = Core(seed=16)
        core.enqueue(0, 1500, ECN_ECT0)
        core.enqueue(1, 1500, ECN_ECT1)
        assert core.select(2) == QUEUE_L


class TestClassification:
    @pytest.mark.parametrize(("ecn", "queue"), [
        (ECN_NOT_ECT, QUEUE_C), (ECN_ECT0, QUEUE_C), (ECN_ECT1, QUEUE_L), (ECN_CE, QUEUE_L)])
    def test_ecn_codepoint_picks_the_queue(self, ecn: int, queue: int) -> None:
        assert Core().enqueue(0, 100, ecn)[1] == queue

    def test_sequence_numbers_are_consecutive(self) -> None:
        core = Core()
        seqs = [core.enqueue(i, 100, i % 4)[2] for i in range(10)]
        assert seqs == list(range(10))


class TestLimits:
    def test_packet_limit_drops_at_enqueue(self) -> None:
        core = Core(limit_pkts=5)
        verdicts = [core.enqueue(i, 100, ECN_ECT1)[0] for i in range(7)]
        assert verdicts == [PASS] * 5 + [DROP] * 2
        assert core.stats()["drops_limit"] == [0, 2]
        assert core.enqueue(10, 100, ECN_ECT1)[2] is None, "a dropped packet gets no seq"

    def test_byte_limit_drops_at_enqueue(self) -> None:
        core = Core(limit_bytes=4000, mtu_bytes=1500)
        verdicts = [core.enqueue(i, 1500, ECN_NOT_ECT)[0] for i in range(3)]
        assert verdicts == [PASS, PASS, DROP]
        assert core.enqueue(5, 1000, ECN_NOT_ECT)[0] == PASS
        assert core.stats()["drops_limit"] == [1, 0]


class TestParameters:
    def test_defaults_are_linux_dualpi2s(self) -> None:
        assert default_params() == {
            "limit_pkts": 10000, "limit_bytes": 15_000_000, "target_ns": 15 * MS,
            "tupdate_ns": 16 * MS, "alpha_mhz": 160, "beta_mhz": 3200,
            "step_thresh_ns": 1 * MS, "coupling_factor": 2, "c_protection_pct": 10,
            "mtu_bytes": 1500, "drop_overload": 1, "verdict_guard": 2,
            "step_thresh_pkts": 0, "min_qlen_step": 0, "harm_budget_pct": 200}

    @pytest.mark.parametrize(("name", "value"), [
        ("limit_pkts", 0), ("limit_pkts", 16384), ("limit_bytes", 10),
        ("target_ns", 0), ("target_ns", 2_000_000_000), ("tupdate_ns", 10),
        ("alpha_mhz", 100_001), ("beta_mhz", 2**31), ("step_thresh_ns", 0),
        ("coupling_factor", 0), ("coupling_factor", 256), ("c_protection_pct", 101),
        ("mtu_bytes", 20), ("mtu_bytes", 70000), ("drop_overload", 2),
        ("verdict_guard", 3), ("verdict_guard", 4), ("step_thresh_pkts", 16384),
        ("min_qlen_step", 16384), ("harm_budget_pct", 1001)])
    def test_out_of_range_is_refused_and_changes_nothing(self, name: str, value: int) -> None:
        core = Core()
        before = core.params()
        with pytest.raises(ValueError):
            core.set_params(**{name: value})
        assert core.params() == before
        with pytest.raises(ValueError):
            Core(**{name: value})

    @pytest.mark.parametrize("bad", [-1, 2**32, 1.5, "3", True])
    def test_non_integers_are_refused(self, bad: object) -> None:
        with pytest.raises(ValueError):
            Core().set_params(target_ns=bad)  # type: ignore[arg-type]

    def test_unknown_names_are_refused(self) -> None:
        with pytest.raises(ValueError, match="unknown"):
            Core().set_params(target_ms=5)

    def test_valid_changes_read_back_and_take_effect(self) -> None:
        core = Core()
        core.set_params(target_ns=5 * MS, alpha_mhz=320, c_protection_pct=25)
        params = core.params()
        assert (params["target_ns"], params["alpha_mhz"], params["c_protection_pct"]) == (
            5 * MS, 320, 25)
        core.enqueue(0, 1500, ECN_NOT_ECT)
        core.tick(TUPDATE)
        assert p_prime(core) == pytest.approx(
            reference_pi([0.016], alpha=0.32, target_s=0.005)[0], abs=2e-5)
