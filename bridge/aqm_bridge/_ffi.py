"""The cffi binding of libaqmcore.so (ABI mode: no compiler needed at import).

The declarations mirror kmod/core/aqm_core.h and bridge/aqm_channel.h; tests compare
every size and offset with what the library itself reports (aqm_abi_describe), so a
drift between this text and the headers fails loudly instead of corrupting memory.
"""

from __future__ import annotations

import ctypes.util
import os
from pathlib import Path

from cffi import FFI

CDEF = """
struct aqm_params {
    uint32_t limit_pkts; uint32_t limit_bytes; uint32_t target_ns; uint32_t tupdate_ns;
    uint32_t alpha_mhz; uint32_t beta_mhz; uint32_t step_thresh_ns; uint32_t coupling_factor;
    uint32_t c_protection_pct; uint32_t mtu_bytes; uint32_t drop_overload; uint32_t verdict_guard;
    uint32_t step_thresh_pkts; uint32_t min_qlen_step; uint32_t harm_budget_pct;
    uint32_t reserved0;
};
struct aqm_counters {
    uint64_t pkts_in[2]; uint64_t bytes_in[2]; uint64_t pkts_out[2]; uint64_t bytes_out[2];
    uint64_t drops_limit[2]; uint64_t marks_model[2]; uint64_t drops_model[2];
    uint64_t marks_fallback[2]; uint64_t drops_fallback[2];
    uint64_t step_marks; uint64_t decisions_model; uint64_t decisions_fallback;
    uint64_t verdicts_applied; uint64_t verdicts_late; uint64_t verdicts_bad;
    uint64_t states_published; uint64_t states_lost; uint64_t channel_errors; uint64_t pi_updates;
    uint64_t verdicts_capped[2]; uint64_t states_slot_busy;
};
struct aqm_pkt {
    uint64_t seq; uint64_t ts_ns; uint32_t len; uint8_t queue; uint8_t ecn; uint16_t flags;
};
struct aqm_decision { uint32_t verdict; uint32_t source; };
struct aqm_abi_entry { const char *name; uint64_t value; };
struct aqm_core;

void aqm_params_default(struct aqm_params *p);
int aqm_params_validate(const struct aqm_params *p);
uint64_t aqm_core_size(void);
int aqm_core_init(struct aqm_core *c, const struct aqm_params *p, uint64_t seed, uint64_t now_ns);
int aqm_core_set_params(struct aqm_core *c, const struct aqm_params *p);
void aqm_core_get_params(const struct aqm_core *c, struct aqm_params *p);
int aqm_enqueue(struct aqm_core *c, uint64_t now_ns, uint32_t len, uint8_t ecn,
                struct aqm_pkt *pkt);
int aqm_select(struct aqm_core *c, uint64_t now_ns);
void aqm_dequeue(struct aqm_core *c, uint64_t now_ns, const struct aqm_pkt *pkt,
                 uint64_t next_head_ts, struct aqm_decision *d);
void aqm_forget(struct aqm_core *c, const struct aqm_pkt *pkt, uint64_t next_head_ts);
void aqm_tick(struct aqm_core *c, uint64_t now_ns);
int64_t aqm_collect_verdicts(struct aqm_core *c);
int aqm_verdict_ready(const struct aqm_core *c, uint64_t seq);
void aqm_set_verdict_delay(struct aqm_core *c, uint64_t ns);
int aqm_attach(struct aqm_core *c, void *region, uint64_t size, uint64_t now_ns);
void aqm_detach(struct aqm_core *c);
uint32_t aqm_prob_base(const struct aqm_core *c);
uint32_t aqm_prob_c(const struct aqm_core *c);
uint32_t aqm_prob_cl(const struct aqm_core *c);
void aqm_counters_get(const struct aqm_core *c, struct aqm_counters *out);
void aqm_counters_publish(struct aqm_core *c, uint64_t now_ns);
uint32_t aqm_abi_describe(struct aqm_abi_entry *out, uint32_t max);

uint64_t aqm_chan_handle_size(void);
uint64_t aqm_chan_region_bytes(uint32_t, uint32_t);
int aqm_chan_layout(void *handle, void *base, uint64_t size, uint32_t se, uint32_t ve);
int aqm_chan_attach_view(void *handle, void *base, uint64_t size);
int64_t aqm_chan_pending_states(void *handle);
int64_t aqm_chan_read_states(void *handle, void *out, uint32_t max);
int64_t aqm_chan_write_verdicts(void *handle, const uint64_t *seq, const uint32_t *action,
                                uint32_t model_tag, uint32_t n);
int aqm_chan_read_ctrl(void *handle, void *counters, void *current, uint64_t *now_ns,
                       uint64_t *prob_base);
uint32_t aqm_chan_request_params(void *handle, const void *params);
int aqm_chan_poll_params(void *handle, uint32_t req, int32_t *result);
uint32_t aqm_chan_get_flags(void *handle);
void aqm_chan_change_flags(void *handle, uint32_t set, uint32_t clear);
void aqm_chan_set_index(void *handle, uint32_t which, uint32_t value);
const char *aqm_chan_strerror(int code);
int aqm_chan_params_pending(void *handle);
"""

ffi = FFI()
ffi.cdef(CDEF)

REPO_ROOT = Path(__file__).resolve().parents[2]
_LIB_ENV = "AQM_CORE_LIB"


def library_path() -> Path:
    """Where libaqmcore.so is: $AQM_CORE_LIB, build/ at the repository root, or installed."""
    env = os.environ.get(_LIB_ENV)
    if env:
        return Path(env)
    built = REPO_ROOT / "build" / "libaqmcore.so"
    if built.is_file():
        return built
    installed = ctypes.util.find_library("aqmcore")
    return Path(installed) if installed else built


def _load():
    path = library_path()
    if not path.is_file():
        raise ImportError(
            f"{path} not found: build the core first with `make` at the repository root "
            f"(or point {_LIB_ENV} at libaqmcore.so)"
        )
    return ffi.dlopen(str(path))


lib = _load()


def abi_table() -> dict[str, int]:
    """Every size and offset the compiled library was built with."""
    n = lib.aqm_abi_describe(ffi.NULL, 0)
    buf = ffi.new("struct aqm_abi_entry[]", n)
    lib.aqm_abi_describe(buf, n)
    return {ffi.string(buf[i].name).decode(): int(buf[i].value) for i in range(n)}
