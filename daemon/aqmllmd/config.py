"""aqmllmd's configuration: a TOML file, then command-line overrides, then checks."""

from __future__ import annotations

import ipaddress
import os
import socket
import stat
import sys
import tomllib
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from .default_model import DEFAULT_MODEL

DEFAULT_CHANNEL = "/dev/aqm_llm" if sys.platform.startswith("freebsd") else "/dev/shm/aqm_llm"
DEFAULT_CONTROL = "ipc:///var/run/aqmllmd.sock"


class ConfigError(Exception):
    """A configuration that cannot be used, and which key is wrong."""


@dataclass(frozen=True)
class Config:
    channel: str = DEFAULT_CHANNEL
    sched: int = 1  # FreeBSD: the dummynet scheduler to attach /dev/aqm_llm to
    model: str = str(DEFAULT_MODEL)
    model_owner_uids: tuple[int, ...] = ()  # () = root and the daemon's own user
    threads: int = 1
    policy: str = "sample"  # draw actions from the model's distribution, or "argmax"
    max_batch: int = 1024
    max_wait_us: int = 50
    spin_us: int = 200
    sleep_us: int = 50  # first sleep once idle; doubles while idle, up to max_sleep_us
    max_sleep_us: int = 1000
    max_infer_us: int = 5000  # a batch slower than this is a failure: no verdicts
    validate_timeout_s: int = 20  # a model whose validation takes longer is refused
    validate_memory_mib: int = 4096  # the validating child's address space
    control: str = DEFAULT_CONTROL
    control_allow_remote: bool = False
    metrics: str = "127.0.0.1:9464"  # "" disables the HTTP exporter
    metrics_allow_remote: bool = False
    pidfile: str = ""
    log: str = "stderr"  # or "syslog"
    log_level: str = "info"
    seed: int = 0
    watchdog: bool = True  # take a harmful model out of service (aqmllmd.watchdog)
    watchdog_action: str = "rollback"  # or "pause"
    watchdog_window_ms: int = 250
    watchdog_windows: int = 2
    watchdog_min_states: int = 20
    watchdog_excess_pct: int = 10
    watchdog_util_floor_pct: int = 90
    watchdog_fail_pct: int = 50
    extra: dict[str, Any] = field(default_factory=dict, compare=False)


# TOML tables and the keys they may hold, mapped to Config fields.
SCHEMA: dict[str, dict[str, str]] = {
    "channel": {"path": "channel", "sched": "sched"},
    "model": {"path": "model", "owner_uids": "model_owner_uids", "threads": "threads",
              "policy": "policy", "max_infer_us": "max_infer_us",
              "validate_timeout_s": "validate_timeout_s",
              "validate_memory_mib": "validate_memory_mib"},
    "batch": {"max_batch": "max_batch", "max_wait_us": "max_wait_us", "spin_us": "spin_us",
              "sleep_us": "sleep_us", "max_sleep_us": "max_sleep_us"},
    "control": {"endpoint": "control", "allow_remote": "control_allow_remote"},
    "metrics": {"listen": "metrics", "allow_remote": "metrics_allow_remote"},
    "daemon": {"pidfile": "pidfile", "log": "log", "log_level": "log_level", "seed": "seed"},
    "watchdog": {"enabled": "watchdog", "action": "watchdog_action",
                 "window_ms": "watchdog_window_ms", "windows": "watchdog_windows",
                 "min_states": "watchdog_min_states", "excess_pct": "watchdog_excess_pct",
                 "util_floor_pct": "watchdog_util_floor_pct", "fail_pct": "watchdog_fail_pct"},
}

_TYPES = {f.name: f.type for f in fields(Config)}


def load(path: str | Path | None, overrides: dict[str, Any] | None = None) -> Config:
    values: dict[str, Any] = {}
    if path is not None:
        try:
            raw = tomllib.loads(_read_config(Path(path)).decode("utf-8"))
        except OSError as e:
            raise ConfigError(f"{path}: cannot read: {e.strerror}") from e
        except UnicodeDecodeError as e:
            raise ConfigError(f"{path}: not UTF-8 text (byte {e.start})") from e
        except tomllib.TOMLDecodeError as e:
            raise ConfigError(f"{path}: not valid TOML: {e}") from e
        for table, body in raw.items():
            if table not in SCHEMA or not isinstance(body, dict):
                raise ConfigError(f"{path}: unknown table [{table}] (known: "
                                  f"{', '.join(SCHEMA)})")
            for key, value in body.items():
                if key not in SCHEMA[table]:
                    raise ConfigError(f"{path}: unknown key {table}.{key} (known: "
                                      f"{', '.join(SCHEMA[table])})")
                values[SCHEMA[table][key]] = value
    values.update({k: v for k, v in (overrides or {}).items() if v is not None})
    cfg = replace(Config(), **{k: _coerce(k, v) for k, v in values.items()})
    check(cfg)
    return cfg


MAX_CONFIG_BYTES = 1 << 20


def _read_config(path: Path) -> bytes:
    """A regular file's bytes, at most MAX_CONFIG_BYTES (a FIFO or /dev/zero would hold
    the daemon, at start or on SIGHUP)."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOCTTY", 0))
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise ConfigError(f"{path}: not a regular file")
        if st.st_size > MAX_CONFIG_BYTES:
            raise ConfigError(f"{path}: {st.st_size} bytes, over {MAX_CONFIG_BYTES}")
        os.set_blocking(fd, True)
        with os.fdopen(os.dup(fd), "rb") as f:
            data = f.read(MAX_CONFIG_BYTES + 1)
    finally:
        os.close(fd)
    if len(data) > MAX_CONFIG_BYTES:
        raise ConfigError(f"{path}: grew past {MAX_CONFIG_BYTES} bytes while being read")
    return data


def _coerce(name: str, value: Any) -> Any:
    want = _TYPES[name]
    if want == "tuple[int, ...]":
        if not isinstance(value, list | tuple) or not all(isinstance(v, int) for v in value):
            raise ConfigError(f"{name}: want a list of integers, got {value!r}")
        return tuple(value)
    kinds = {"int": int, "str": str, "bool": bool}
    kind = kinds.get(str(want))
    if kind is not None and (not isinstance(value, kind) or
                             (kind is int and isinstance(value, bool))):
        raise ConfigError(f"{name}: want {kind.__name__}, got {value!r}")
    return value


def check(cfg: Config) -> None:
    bounds = {"sched": (1, 65535), "threads": (1, 64), "max_batch": (1, 1 << 16),
              "max_wait_us": (0, 1_000_000),
              "spin_us": (0, 1_000_000), "sleep_us": (1, 1_000_000),
              "max_sleep_us": (1, 1_000_000),
              "max_infer_us": (1, 10_000_000), "validate_timeout_s": (1, 3600),
              "validate_memory_mib": (256, 1 << 20),
              "seed": (0, (1 << 63) - 1),
              "watchdog_window_ms": (10, 60_000), "watchdog_windows": (1, 1000),
              "watchdog_min_states": (1, 1 << 30), "watchdog_excess_pct": (0, 100),
              "watchdog_util_floor_pct": (0, 100), "watchdog_fail_pct": (1, 100)}
    for name, (lo, hi) in bounds.items():
        value = getattr(cfg, name)
        if not lo <= value <= hi:
            raise ConfigError(f"{name}={value} out of range [{lo}, {hi}]")
    if cfg.max_sleep_us < cfg.sleep_us:
        raise ConfigError(f"max_sleep_us={cfg.max_sleep_us} below sleep_us={cfg.sleep_us}")
    if cfg.policy not in ("sample", "argmax"):
        raise ConfigError(f"policy={cfg.policy!r}: want 'sample' or 'argmax'")
    if cfg.log not in ("stderr", "syslog"):
        raise ConfigError(f"log={cfg.log!r}: want 'stderr' or 'syslog'")
    if cfg.log_level not in ("debug", "info", "warning", "error"):
        raise ConfigError(f"log_level={cfg.log_level!r}")
    if cfg.watchdog_action not in ("rollback", "pause"):
        raise ConfigError(f"watchdog.action={cfg.watchdog_action!r}: want 'rollback' or "
                          "'pause'")
    check_endpoint(cfg.control, cfg.control_allow_remote)
    if not os.path.isabs(cfg.model):
        raise ConfigError(f"model={cfg.model!r}: relative path; give an absolute one "
                          "(the daemon's working directory is / under rc.d)")
    if cfg.pidfile:
        _parent_exists("pidfile", cfg.pidfile)
    if cfg.metrics:
        check_metrics(cfg.metrics, cfg.metrics_allow_remote)


def _parent_exists(what: str, path: str) -> None:
    parent = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(parent):
        raise ConfigError(f"{what} {path}: directory {parent} does not exist")


def _is_loopback(host: str) -> bool:
    try:
        return host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_metrics(listen: str, allow_remote: bool) -> None:
    """HOST:PORT that resolves; on loopback unless explicitly allowed, as the control
    endpoint."""
    host, _, port = listen.rpartition(":")
    host = host.strip("[]")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(f"metrics={listen!r}: want HOST:PORT or ''")
    try:
        socket.getaddrinfo(host, int(port), type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as e:
        raise ConfigError(f"metrics={listen!r}: cannot resolve {host!r}") from e
    if not allow_remote and not _is_loopback(host):
        raise ConfigError(f"metrics listen {listen} is not on loopback; set "
                          "metrics.allow_remote = true to expose it")


def check_endpoint(endpoint: str, allow_remote: bool) -> None:
    """ipc:// anywhere; tcp:// only on loopback unless explicitly allowed."""
    if endpoint.startswith("ipc://") and len(endpoint) > len("ipc://"):
        path = endpoint[len("ipc://"):]
        if path.startswith("@"):
            raise ConfigError(f"control endpoint {endpoint}: abstract sockets have no "
                              "file mode to keep them private; want ipc:///PATH")
        _parent_exists("control endpoint", path)
        return
    if endpoint.startswith("tcp://"):
        host = endpoint[len("tcp://"):].rpartition(":")[0].strip("[]")
        if allow_remote or _is_loopback(host):
            return
        raise ConfigError(f"control endpoint {endpoint} is not on loopback; set "
                          "control.allow_remote = true to expose it")
    raise ConfigError(f"control endpoint {endpoint!r}: want ipc://PATH or tcp://HOST:PORT")
