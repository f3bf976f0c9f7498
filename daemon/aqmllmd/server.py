"""The serving loop: states in, batched inference, verdicts out; and the model slot.

The loop never blocks the data path (the channel never blocks either side): it reads
whatever states are there, batches them by size and by age, drops those whose deadline
has passed, runs the model, and writes the verdicts in one call. When idle it spins
briefly, then sleeps. A model failure (exception, non-finite output, too slow) costs
that batch its verdicts and nothing else: the data path falls back to DualPI2.
"""

from __future__ import annotations

import fcntl
import gc
import logging
import os
import stat
import struct
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from aqm_bridge.abi import STATE_DTYPE, VERDICT_GUARDS
from aqm_bridge.channel import ChannelError, ConsumerBusy, Region

from . import features
from .config import Config
from .contract import PROB_SUM_TOLERANCE
from .metrics import Metrics
from .model import Limits, Model, ModelError, TrustPolicy, load
from .watchdog import OBSERVE_EVERY_NS, Watchdog, WatchdogConfig

log = logging.getLogger("aqmllmd")

COUNTERS_EVERY_S = 1.0
#: How often the loop checks that the channel path still names the region mapped.
CHANNEL_CHECK_EVERY_S = 0.25
#: Waiting between attach attempts: while the region is absent, and after a refusal
#: or a channel error (doubled each time, up to the maximum; back to the minimum once
#: an attach has served CHANNEL_HEALTHY_S without error).
ATTACH_POLL_S, ATTACH_BACKOFF_MAX_S, CHANNEL_HEALTHY_S = 0.1, 5.0, 2.0
#: Channel refusals and errors are logged once, then one line per this many seconds.
CHANNEL_LOG_EVERY_S = 10.0
#: Model failures are logged once, then at most one line per this many seconds.
FAIL_LOG_EVERY_S = 10.0
_GUARD_NAMES = {code: name for name, code in VERDICT_GUARDS.items()}
_NO_STATES = np.zeros(0, STATE_DTYPE)


def choose_actions(probs: np.ndarray, policy: str, rng: np.random.Generator) -> np.ndarray:
    """One action per row: drawn from the distribution, or its most likely action."""
    if policy == "argmax":
        return probs.argmax(axis=1).astype(np.uint32)
    # Inverse CDF over (enqueue, drop, mark): how many of the first two cumulative
    # probabilities u exceeds (a row short of 1 by rounding leaves its excess to mark).
    u = rng.random(len(probs))
    p_enq = probs[:, 0]
    action = (u > p_enq).astype(np.uint32)
    action += u > p_enq + probs[:, 1]
    return action


def settle_heap() -> None:
    """Keep the cyclic garbage collector off the serving path's back.

    A full collection walks every object of numpy, onnx and ONNX Runtime's bindings:
    about 17 ms here, enough to miss every deadline of the batch it falls into. What
    exists once the model is loaded lives as long as the daemon, so it is frozen out of
    the collector's sight (objects are still freed by reference counting); the loop
    itself makes little cyclic garbage.
    """
    gc.collect()
    gc.freeze()


#: FreeBSD's AQMLLM_INFO, _IOR('Q', 1, 64 bytes) (kmod/freebsd/aqm_llm_ioctl.h).
AQMLLM_INFO = 0x40405101
_INFO = struct.Struct("<4IQiI2Q2IQ")
#: aqm_chan_hdr: producer_gen and consumer_gen, two uint32 at offset 56 (ABI v2).
_GEN_OFF = 56


def parse_info(raw: bytes, now_ns: int) -> dict[str, Any]:
    """What status shows of AQMLLM_INFO: the scheduler and instance served, and the
    last take-over of the region by a new instance."""
    (_abi, _se, _ve, _inst, _size, sched, _n, instance, attach_ns, attach_count,
     _configured, _res) = _INFO.unpack(raw)
    return {"scheduler": sched if sched >= 0 else None,
            "instance": instance or None,
            "reattached_s_ago": round((now_ns - attach_ns) / 1e9, 3) if attach_ns else None,
            "reattaches": attach_count}


def region_info(region: Region | None) -> dict[str, Any]:
    """Which data path the region serves: the generations in its header (portable), and
    on FreeBSD the module's AQMLLM_INFO."""
    if region is None:
        return {}
    out: dict[str, Any] = {}
    mm = getattr(region, "_mm", None)
    if mm is not None and not getattr(region, "_closed", False):
        try:
            out["producer_gen"], out["consumer_gen"] = struct.unpack_from("<2I", mm, _GEN_OFF)
        except (ValueError, struct.error):
            pass
    fd = getattr(region, "_fd", None)
    if fd is not None and sys.platform.startswith("freebsd"):
        try:
            if stat.S_ISCHR(os.fstat(fd).st_mode):
                raw = fcntl.ioctl(fd, AQMLLM_INFO, bytes(_INFO.size))
                out.update(parse_info(raw, time.monotonic_ns()))
        except OSError as e:
            out["info_error"] = e.strerror
    return out


def watchdog_config(cfg: Config) -> WatchdogConfig:
    return WatchdogConfig(
        enabled=cfg.watchdog, action=cfg.watchdog_action, window_ms=cfg.watchdog_window_ms,
        windows=cfg.watchdog_windows, min_states=cfg.watchdog_min_states,
        excess_pct=cfg.watchdog_excess_pct, util_floor_pct=cfg.watchdog_util_floor_pct,
        fail_pct=cfg.watchdog_fail_pct)


def model_tag(model: Model) -> int:
    return int(model.sha256[:8], 16)


class ModelSlot:
    """The served model, its predecessor, and a swap that takes effect between batches."""

    def __init__(self, model: Model) -> None:
        self._lock = threading.Lock()
        self.current = model
        self.previous: Model | None = None
        self._pending: Model | None = None

    def offer(self, model: Model) -> tuple[str, str]:
        with self._lock:
            old = (self._pending or self.current).version
            self._pending = model
        return old, model.version

    def rollback(self) -> tuple[str, str]:
        with self._lock:
            if self.previous is None:
                raise ModelError("no previous model to roll back to")
            old = (self._pending or self.current).version
            self._pending = self.previous
            return old, self.previous.version

    def take_pending(self) -> Model | None:
        """Called by the loop between batches: the model to serve from now on, if new."""
        with self._lock:
            if self._pending is None:
                return None
            if self._pending is not self.current:
                self.previous, self.current = self.current, self._pending
            self._pending = None
            return self.current


class Server:
    def __init__(self, cfg: Config, model: Model, metrics: Metrics) -> None:
        self.cfg = cfg
        self.slot = ModelSlot(model)
        self.metrics = metrics
        self.metrics.set_model(model.version, model.producer, model.sha256)
        self.stop_event = threading.Event()
        self.paused = False
        self.region: Region | None = None
        #: Held by the loop while it unmaps the region and by the control thread while it
        #: reads or writes the region: a closed mapping read from C is a segfault.
        self.region_lock = threading.Lock()
        #: Why the channel could not be attached, last time it was tried (None: it was).
        self.channel_error: str | None = None
        #: Set when the daemon must stop (another consumer holds the region).
        self.fatal: str | None = None
        self.channel_refusals = 0
        self._attach_wait_s = ATTACH_POLL_S
        self._attached_at = 0.0
        self._chan_log_at = -CHANNEL_LOG_EVERY_S
        self._chan_unlogged = 0
        self._chan_last = ""
        self.datapath: dict[str, Any] | None = None
        self.stats = metrics.loop
        self.started = time.time()
        self._rng = np.random.default_rng(cfg.seed or None)
        self._history = features.History()
        self.watchdog = Watchdog(watchdog_config(cfg))
        #: What the watchdog rolls back to when there is no usable previous model: the
        #: packaged default (main loads it when another model is configured).
        self.safe_model: Model | None = None
        #: Why the data path is paused, when the watchdog paused it (None otherwise).
        self.pause_reason: str | None = None
        self._fail_counts: dict[str, int] = {}
        self._fail_logged_at = -FAIL_LOG_EVERY_S
        self._fail_last = ""
        self._observed_ns = 0
        metrics.watchdog_status = lambda: (self.watchdog.status(),
                                           self.pause_reason is not None)
        #: Benchmarks: called with (records given verdicts, time written) after each batch.
        self.on_batch: Callable[[np.ndarray, int], None] | None = None

    @staticmethod
    def trusted_load(cfg: Config, path: str) -> Model:
        """Load and validate a model under the configuration's ownership rules."""
        trust = (TrustPolicy(owner_uids=frozenset(cfg.model_owner_uids))
                 if cfg.model_owner_uids else TrustPolicy())
        return load(path, trust, threads=cfg.threads,
                    limits=Limits(max_batch=cfg.max_batch, max_infer_us=cfg.max_infer_us,
                                  timeout_s=cfg.validate_timeout_s,
                                  memory_mib=cfg.validate_memory_mib))

    def load_model(self, path: str) -> Model:
        return self.trusted_load(self.cfg, path)

    # -- channel ---------------------------------------------------------------------
    def _attach(self) -> Region | None:
        """Open the region and claim it as its one consumer (None: not now, see
        channel_error; another consumer holding it sets fatal)."""
        try:
            region = Region.open(self.cfg.channel)
        except ChannelError as e:
            self._channel_refused(str(e))
            return None
        try:
            if stat.S_ISCHR(os.fstat(region._fd).st_mode):
                region.attach_scheduler(self.cfg.sched)
            gen = region.claim_consumer()
        except ConsumerBusy as e:
            region.close()
            self.fatal = self.channel_error = str(e)
            log.error("%s", e)
            self.stop_event.set()
            return None
        except ChannelError as e:
            region.close()
            self._channel_refused(str(e))
            return None
        self.channel_error = None
        self._attached_at = time.monotonic()
        region.paused = self.paused
        self._history = features.History()
        log.info("attached to %s as consumer %d (data path %s, region %s)",
                 self.cfg.channel, gen, "up" if region.producer_up else "not attached yet",
                 "sealed" if region.sealed else "not sealed")
        self._check_guard(region)
        return region

    def _channel_refused(self, reason: str) -> None:
        """Why the region cannot be used: in status; a region that is not there yet
        (or whose data path is gone) is only DEBUG and polled every ATTACH_POLL_S; a
        refusal (bad magic, ABI, size, owner, mode) waits exponentially longer each
        time and is logged at WARNING once per distinct reason, then at most one line
        per CHANNEL_LOG_EVERY_S with the count."""
        waiting = any(w in reason for w in ("No such file", "is empty", "is gone"))
        if waiting:
            self._attach_wait_s = ATTACH_POLL_S
            if reason != self.channel_error:
                log.debug("channel %s", reason)
        else:
            self._channel_trouble(f"refused: {reason}")
        self.channel_error = reason

    def _channel_trouble(self, what: str) -> None:
        """A refusal or a channel error: counted, the next attach put off (doubling),
        logged when unlike the last one logged or when CHANNEL_LOG_EVERY_S has passed,
        with the count since."""
        new, self._chan_last = what != self._chan_last, what
        self.channel_refusals += 1
        now = time.monotonic()
        if self._attached_at and now - self._attached_at >= CHANNEL_HEALTHY_S:
            self._attach_wait_s = ATTACH_POLL_S
        else:
            self._attach_wait_s = min(2 * self._attach_wait_s, ATTACH_BACKOFF_MAX_S)
        self._attached_at = 0.0
        self._chan_unlogged += 1
        if new or now - self._chan_log_at >= CHANNEL_LOG_EVERY_S:
            more = (f" ({self._chan_unlogged} times since the last report)"
                    if self._chan_unlogged > 1 else "")
            log.warning("channel %s%s; next attach in %.1f s", what, more,
                        self._attach_wait_s)
            self._chan_log_at, self._chan_unlogged = now, 0

    @staticmethod
    def _guard_in_force(region: Region | None) -> str | None:
        """The data path's verdict guard (kmod/core/README.md), None if unknown."""
        if region is None:
            return None
        code = region.current_params()["verdict_guard"]
        return _GUARD_NAMES.get(code, str(code))

    def _check_guard(self, region: Region | None) -> None:
        """Warn when the model was made for another verdict guard than the data path's:
        it is served anyway (the guard is the operator's), but decides other than it
        was evaluated."""
        try:
            have = self._guard_in_force(region)
        except ChannelError as e:
            log.warning("data path parameters unreadable: %s", e)
            return
        want = self.slot.current.verdict_guard
        if want is not None and have is not None and want != have:
            log.warning("model %s was made for verdict_guard %s, the data path runs %s: "
                        "aqmllmctl params set verdict_guard=%d", self.slot.current.version,
                        want, have, VERDICT_GUARDS[want])

    def set_paused(self, on: bool, reason: str | None = None) -> None:
        self.paused = on
        self.pause_reason = reason if on else None
        self.metrics.paused.set(1 if on else 0)
        with self.region_lock:
            if self.region is not None:
                self.region.paused = on

    # -- the loop --------------------------------------------------------------------
    def run(self) -> None:
        cfg = self.cfg
        max_wait_ns, spin_ns = cfg.max_wait_us * 1000, cfg.spin_us * 1000
        max_sleep_s, sleep_s = cfg.max_sleep_us / 1e6, cfg.sleep_us / 1e6
        pending: list[np.ndarray] = []
        pending_n, oldest_ns, idle_since = 0, 0, 0
        next_counters = next_check = 0.0
        producer_was_up, down_checks = False, 0
        settle_heap()
        while not self.stop_event.is_set():
            if self.region is None:
                self.region = self._attach()
                if self.region is None:
                    self.stop_event.wait(self._attach_wait_s)
                    continue
                next_check = time.monotonic() + CHANNEL_CHECK_EVERY_S
                producer_was_up, down_checks = self.region.producer_up, 0
            if self.cfg is not cfg:  # reloaded: batching as configured now
                cfg = self.cfg
                max_wait_ns, spin_ns = cfg.max_wait_us * 1000, cfg.spin_us * 1000
                max_sleep_s = cfg.max_sleep_us / 1e6
                self.watchdog.cfg = watchdog_config(cfg)
            if self.watchdog.due(time.monotonic()):
                self._watchdog_tick()
            model = self.slot.take_pending()
            if model is not None:
                self.watchdog.reset()
                if self.pause_reason is not None:  # another model: the watchdog's pause ends
                    log.info("model %s replaces the one the watchdog paused; resuming",
                             model.version)
                    self.set_paused(False)
                settle_heap()
                self.metrics.set_model(model.version, model.producer, model.sha256)
                log.info("now serving model %s (%s)", model.version, model.path)
                self._check_guard(self.region)
            try:
                # Idle, a look at the indices is enough; busy, read straight away.
                recs = (_NO_STATES if idle_since and not self.region.pending_states() else
                        self.region.read_states(max(cfg.max_batch - pending_n, 0)))
            except ChannelError as e:
                self._channel_trouble(f"error: {e}; reattaching")
                self._detach()
                pending, pending_n = [], 0  # the old mapping's
                self.stop_event.wait(self._attach_wait_s)
                continue
            now = time.monotonic_ns()
            if len(recs):
                if not pending_n:
                    # A batch's age runs from its oldest packet's enqueue: states that
                    # queued in the ring while the last batch was served are already old
                    # and go at once. Not later than now: a data path whose clock runs
                    # ahead (ns-3's simulated time) still gets batches by age.
                    oldest_ns = min(now, int(recs["ts_ns"][0]))
                pending.append(recs)
                pending_n += len(recs)
                idle_since = 0
            if pending_n and (pending_n >= cfg.max_batch or now - oldest_ns >= max_wait_ns):
                batch = pending[0] if len(pending) == 1 else np.concatenate(pending)
                pending, pending_n = [], 0
                self.serve(batch)
                continue
            if time.monotonic() >= next_check:
                next_check = time.monotonic() + CHANNEL_CHECK_EVERY_S
                if not self.region.still_current() or self.region.producer_gone():
                    # A data path restarted under the same name publishes another
                    # region; one that stopped or died removes it or leaves its
                    # lock: follow it (pending states belong to the old one).
                    log.info("channel %s: the data path mapped here is gone or was "
                             "replaced; reattaching", cfg.channel)
                    self._detach()
                    pending, pending_n = [], 0
                    continue
                up = self.region.producer_up
                down_checks = down_checks + 1 if producer_was_up and not up else 0
                if down_checks == 2:
                    # The data path left the channel (a channel error) but is still
                    # there two checks later (one that stops removes its name at
                    # once): claim the region again (indices made consistent, a new
                    # consumer_gen) and it re-attaches.
                    try:
                        gen = self.region.claim_consumer()
                    except ChannelError as e:
                        self._channel_trouble(f"error: {e}; reattaching")
                        self._detach()
                        continue
                    pending, pending_n = [], 0
                    self._channel_trouble("error: the data path detached from the "
                                          "region; claimed it again so that it "
                                          "re-attaches")
                    log.debug("consumer generation %d", gen)
                    down_checks = 0
                producer_was_up = up or down_checks > 0
            if time.monotonic() >= next_counters:
                next_counters = time.monotonic() + COUNTERS_EVERY_S
                self._refresh_counters()
            if not len(recs) and not pending_n:
                # Idle: poll for spin_us, then sleep between polls, sleep_us at first,
                # twice as long each time the ring is still empty, up to max_sleep_us.
                # With states pending, poll on until the batch is full or old enough.
                # (The first packets after a silence have short sojourns: DualPI2
                # decides them before any verdict could arrive anyway.)
                if not idle_since:
                    idle_since, sleep_s = now, cfg.sleep_us / 1e6
                if now - idle_since >= spin_ns:
                    time.sleep(sleep_s)
                    sleep_s = min(2 * sleep_s, max_sleep_s)
        self._detach()

    def _watchdog_tick(self) -> None:
        """Close the watchdog's window; take a model that harms out of service."""
        wd = self.watchdog
        counters = None
        if self.region is not None:
            try:
                counters = self.datapath = self.region.counters()
                params = self.region.current_params()
                wd.step_ns = params["step_thresh_ns"]
            except ChannelError as e:
                log.warning("data path counters unreadable: %s", e)
        self._flush_failures(time.monotonic())
        reason = wd.close_window(time.monotonic(), counters)
        if reason is None or not wd.cfg.enabled or self.paused:
            return
        self._trip(reason)

    def _trip(self, reason: str) -> None:
        wd = self.watchdog
        model = self.slot.current
        detail = wd.describe(reason)
        wd.trips[reason] += 1
        wd.quarantined[model.sha256] = model.version
        target = None
        if wd.cfg.action == "rollback":
            for cand in (self.slot.previous, self.safe_model):
                if (cand is not None and cand.sha256 != model.sha256
                        and cand.sha256 not in wd.quarantined):
                    target = cand
                    break
        if target is not None:
            self.slot.offer(target)
            action = f"rolled back to {target.version}"
        else:
            self.set_paused(True, f"watchdog: model {model.version} {detail}")
            action = "paused: DualPI2 decides every packet until resume or set-model"
        wd.last_trip = {"model": model.version, "sha256": model.sha256, "reason": reason,
                        "detail": detail, "action": action, "at": round(time.time(), 3)}
        log.warning("watchdog: model %s harms (%s); %s", model.version, detail, action)
        wd.reset()

    def _refresh_counters(self) -> None:
        if self.region is None:
            return
        try:
            self.datapath = self.region.counters()
        except ChannelError as e:
            log.warning("data path counters unreadable: %s", e)

    def _detach(self) -> None:
        with self.region_lock:
            if self.region is not None:
                try:
                    self.region.consumer_up = False
                finally:
                    self.region.close()
                    self.region = None

    def serve(self, recs: np.ndarray) -> None:
        """One batch: features, deadline filter, inference, verdicts."""
        m, st = self.metrics, self.stats
        n = len(recs)
        feats = features.compute(recs, self._history)  # history sees every record
        st.states += n
        m.batch_size.observe(n)
        if self.paused and self.pause_reason is None:
            return
        live = recs["deadline_ns"] > time.monotonic_ns()
        n_live = int(np.count_nonzero(live))
        if n_live < n:
            st.skipped += n - n_live
            if not n_live:
                return
            recs, feats = recs[live], feats[live]
        if self.paused:
            # The watchdog's pause: the model stays out of it, and the data path ignores
            # verdicts; placeholders still answer hosts that wait for every verdict
            # (ns-3's closed loop), which would otherwise stall a second per packet.
            self._write(recs, np.zeros(n_live, np.uint32), 0)
            return
        model = self.slot.current
        t0 = time.perf_counter_ns()
        try:
            probs = model.run(feats)
        except Exception as e:  # noqa: BLE001 - a failing model must not stop serving
            self._failed("exception", f"model {model.version} raised {e!r}"[:300], n_live)
            return
        elapsed = time.perf_counter_ns() - t0
        m.infer.observe(elapsed / 1e9)
        # The sum is finite if and only if every value is (values of a few rows: no
        # overflow unless the model is broken anyway).
        if probs.shape != (n_live, 3):
            self._failed("invalid", f"model {model.version} gave output of shape "
                         f"{probs.shape} for {n_live} states", n_live)
            return
        if not np.isfinite(probs.sum(dtype=np.float64)):
            self._failed("nan", f"model {model.version} gave non-finite output", n_live)
            return
        if (probs.min() < 0 or probs.max() > 1 or np.abs(probs.sum(axis=1) - 1).max()
                > PROB_SUM_TOLERANCE):
            self._failed("invalid", f"model {model.version} gave rows that are not "
                         "probability distributions", n_live)
            return
        if elapsed > self.cfg.max_infer_us * 1000:
            self._failed("slow", f"batch of {n_live} took {elapsed / 1e3:.0f} us", n_live)
            return
        actions = choose_actions(probs, self.cfg.policy, self._rng)
        written = self._write(recs, actions, model_tag(model))
        if written is None:
            return
        done = time.monotonic_ns()
        st.batches += 1
        st.verdicts += written
        if written < n_live:
            st.ring_full += n_live - written
        self.watchdog.count(written)
        if done - self._observed_ns >= OBSERVE_EVERY_NS:
            self._observed_ns = done
            self.watchdog.observe(recs[:written], actions[:written])
        # One sample per batch, its oldest record: the batch's worst latency.
        m.state_to_verdict.observe(max(0, done - int(recs["ts_ns"][0])) / 1e9)
        if self.on_batch is not None:
            self.on_batch(recs[:written], done)

    def _write(self, recs: np.ndarray, actions: np.ndarray, tag: int) -> int | None:
        assert self.region is not None
        try:
            return self.region.write_verdicts(recs["seq"], actions, tag)
        except ChannelError as e:
            self._channel_trouble(f"error: verdict ring refused: {e}; reattaching")
            self._detach()
            return None

    def _failed(self, reason: str, message: str, n_states: int) -> None:
        """A batch without verdicts: counted; logged at once the first time, then at
        most one line per FAIL_LOG_EVERY_S with the counts by reason."""
        self.stats.failures += 1
        self.stats.failures_by_reason[reason] += 1
        self.watchdog.observe_failure(n_states)
        self._fail_counts[reason] = self._fail_counts.get(reason, 0) + 1
        self._fail_last = message
        self._flush_failures(time.monotonic())

    def _flush_failures(self, now: float) -> None:
        if not self._fail_counts or now - self._fail_logged_at < FAIL_LOG_EVERY_S:
            return
        total = sum(self._fail_counts.values())
        by = ", ".join(f"{k} {v}" for k, v in sorted(self._fail_counts.items()))
        log.warning("no verdicts for %d batch%s since the last report (%s): %s", total,
                    "" if total == 1 else "es", by, self._fail_last)
        self._fail_counts = {}
        self._fail_logged_at = now

    def status(self) -> dict[str, Any]:
        with self.region_lock:
            return self._status(self.region)

    def _status(self, region: Region | None) -> dict[str, Any]:
        model = self.slot.current
        try:
            guard = self._guard_in_force(region)
        except ChannelError as e:  # a data path stuck mid-write of its counters
            guard = None
            self.channel_error = str(e)
        return {
            "model": {"version": model.version, "producer": model.producer,
                      "path": str(model.path), "sha256": model.sha256,
                      "description": model.description,
                      "verdict_guard": model.verdict_guard},
            "verdict_guard": guard,
            "previous_model": self.slot.previous.version if self.slot.previous else None,
            "paused": self.paused,
            "pause_reason": self.pause_reason,
            "channel": self.cfg.channel,
            "attached": region is not None,
            "channel_error": self.channel_error,
            "channel_refusals": self.channel_refusals,
            "channel_sealed": bool(region is not None and region.sealed),
            "data_path_up": bool(region is not None and region.producer_up),
            "data_path": region_info(region),
            "uptime_s": round(time.time() - self.started, 3),
            "states": self.stats.states, "batches": self.stats.batches,
            "verdicts": self.stats.verdicts, "skipped_deadline": self.stats.skipped,
            "model_failures": self.stats.failures,
            "model_failures_by_reason": dict(self.stats.failures_by_reason),
            "watchdog": self.watchdog.status(),
        }
