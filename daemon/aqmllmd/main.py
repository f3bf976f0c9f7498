"""`aqmllmd`: the daemon's entry point (configuration, logging, pidfile, signals)."""

from __future__ import annotations

import fcntl
import logging
import logging.handlers
import os
import signal
import sys
import threading
from pathlib import Path
from types import FrameType

import click

from . import __version__
from .config import Config, ConfigError, load
from .control import ControlError, ControlPlane
from .default_model import DEFAULT_MODEL
from .metrics import Metrics
from .model import ModelError
from .server import Server

log = logging.getLogger("aqmllmd")


def wake_on_time() -> None:
    """Linux: sleep as long as asked, not 50 us more (the default timer slack)."""
    if not sys.platform.startswith("linux"):
        return
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(29, ctypes.c_ulong(1), 0, 0, 0)  # PR_SET_TIMERSLACK, 1 ns
    except (OSError, AttributeError):
        log.debug("timer slack unchanged")


def setup_logging(cfg: Config) -> None:
    root = logging.getLogger()
    for h in list(root.handlers):
        root.removeHandler(h)
    if cfg.log == "syslog":
        address = "/var/run/log" if sys.platform.startswith("freebsd") else "/dev/log"
        handler: logging.Handler = logging.handlers.SysLogHandler(
            address=address, facility=logging.handlers.SysLogHandler.LOG_DAEMON)
        handler.setFormatter(logging.Formatter("aqmllmd[%(process)d]: %(message)s"))
    else:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s aqmllmd %(levelname)s %(message)s"))
    root.addHandler(handler)
    root.setLevel(cfg.log_level.upper())


class Pidfile:
    def __init__(self, path: str) -> None:
        self.path = Path(path) if path else None

    def __enter__(self) -> Pidfile:
        if self.path is not None:
            try:
                fd = self._create()
            except OSError as e:
                raise click.ClickException(f"pidfile {self.path}: {e.strerror}") from e
            with os.fdopen(fd, "w") as f:
                f.write(f"{os.getpid()}\n")
        return self

    def _create(self) -> int:
        assert self.path is not None
        try:
            return os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            pid = self.path.read_bytes().decode("ascii", "replace").strip()
            if pid.isdigit() and _alive(int(pid)):
                raise click.ClickException(
                    f"already running as pid {pid} ({self.path})") from None
            self.path.unlink()
            return os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)

    def __exit__(self, *exc: object) -> None:
        if self.path is not None:
            self.path.unlink(missing_ok=True)


class ControlLock:
    """ipc://PATH: an exclusive lock on PATH.lock held for the daemon's life.

    ZeroMQ's bind replaces an existing socket file, so without it a second aqmllmd on
    the same endpoint would take the socket over and delete it when it exits. The
    second one refuses instead; a daemon killed leaves the lock free (flock dies with
    it). The lock file is removed on exit, by its holder only. tcp:// endpoints need
    none: a second bind fails.
    """

    def __init__(self, endpoint: str) -> None:
        self.endpoint = endpoint
        self.path = Path(endpoint[len("ipc://"):] + ".lock") \
            if endpoint.startswith("ipc://") else None
        self.fd: int | None = None

    def __enter__(self) -> ControlLock:
        if self.path is None:
            return self
        while True:
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW
                             | os.O_CLOEXEC, 0o600)
            except OSError as e:
                raise click.ClickException(f"control lock {self.path}: {e.strerror}") \
                    from e
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                holder = os.read(fd, 32).decode("ascii", "replace").strip()
                os.close(fd)
                raise click.ClickException(
                    f"control endpoint {self.endpoint} is another aqmllmd's (pid "
                    f"{holder or '?'}, lock {self.path}): refusing to take it over") from None
            try:  # the file locked must still be the one there (a holder exiting removes it)
                same = os.stat(self.path, follow_symlinks=False).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self.fd = fd
        return self

    def __exit__(self, *exc: object) -> None:
        if self.fd is not None and self.path is not None:
            self.path.unlink(missing_ok=True)
            os.close(self.fd)
            self.fd = None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-c", "--config", "config_path", type=click.Path(dir_okay=False),
              help="TOML configuration file")
@click.option("--channel", help="region to attach: /dev/aqm_llm, or /dev/shm/NAME on Linux")
@click.option("--model", help="ONNX model file (default: the packaged default model)")
@click.option("--control", help="control endpoint, ipc://PATH or tcp://127.0.0.1:PORT")
@click.option("--metrics", help="HOST:PORT of the Prometheus exporter, '' to disable")
@click.option("--pidfile", help="write the pid here")
@click.option("--log", type=click.Choice(["stderr", "syslog"]), help="where to log")
@click.option("--max-batch", type=int, help="states per inference batch at most")
@click.option("--max-wait-us", type=int, help="oldest state waits this long at most")
@click.option("--seed", type=int, help="seed of the action sampler (0: random)")
@click.version_option(__version__)
def main(config_path: str | None, **flags: object) -> None:
    """Serve verdicts to an AQM-LLM data path from an ONNX model."""
    overrides = {k: v for k, v in flags.items() if v is not None}
    if isinstance(overrides.get("model"), str) and overrides["model"]:
        # The operator's working directory, not the daemon's: absolute from here on.
        overrides["model"] = os.path.abspath(str(overrides["model"]))
    try:
        cfg = load(config_path, overrides)
    except ConfigError as e:
        raise click.ClickException(str(e)) from e
    setup_logging(cfg)
    wake_on_time()
    metrics = Metrics(lambda: server.datapath)
    try:
        model = Server.trusted_load(cfg, cfg.model)
    except ModelError as e:
        raise click.ClickException(f"model refused: {e}") from e
    server = Server(cfg, model, metrics)
    if cfg.watchdog and cfg.watchdog_action == "rollback" and \
            model.sha256 != _packaged_default_sha256():
        try:  # what the watchdog rolls back to when there is no previous model
            server.safe_model = Server.trusted_load(cfg, str(DEFAULT_MODEL))
        except ModelError as e:
            log.warning("packaged default model unusable as the watchdog's fallback: %s", e)

    def reload() -> str:
        """SIGHUP and `aqmllmctl reload`: configuration and model, or nothing."""
        nonlocal cfg
        try:
            new_cfg = load(config_path, overrides)
            new_model = server.load_model(new_cfg.model)
        except (ConfigError, ModelError) as e:
            log.error("reload refused, keeping what runs: %s", e)
            raise ModelError(str(e)) from e
        unchanged = ("channel", "control", "metrics", "pidfile")
        changed = [k for k in unchanged if getattr(new_cfg, k) != getattr(cfg, k)]
        if changed:
            log.warning("reload: %s need a restart to change", ", ".join(changed))
        cfg = server.cfg = new_cfg
        old, new = server.slot.offer(new_model)
        log.info("reloaded: model %s (was %s)", new, old)
        return new

    def on_signal(sig: int, _frame: FrameType | None) -> None:
        if sig == signal.SIGHUP:
            threading.Thread(target=_quiet(reload), daemon=True).start()
        else:
            log.info("signal %d: stopping", sig)
            server.stop_event.set()

    with Pidfile(cfg.pidfile), ControlLock(cfg.control):
        if cfg.metrics:
            try:
                metrics.serve(cfg.metrics)
            except OSError as e:
                raise click.ClickException(f"metrics {cfg.metrics}: {e.strerror or e}") from e
        try:
            control = ControlPlane(server, cfg.control, reload)
        except ControlError as e:
            raise click.ClickException(str(e)) from e
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(sig, on_signal)
        control.start()
        log.info("aqmllmd %s: model %s, channel %s, control %s", __version__, model.version,
                 cfg.channel, cfg.control)
        try:
            server.run()
        finally:
            control.stop()
            log.info("stopped")
        if server.fatal:
            raise click.ClickException(server.fatal)


def _quiet(fn):  # noqa: ANN001, ANN202 - run fn, its failure already logged
    def run() -> None:
        try:
            fn()
        except ModelError:
            pass
        except Exception:  # noqa: BLE001 - a reload bug must not end the daemon's reloads
            log.exception("reload failed, keeping what runs")
    return run


def _packaged_default_sha256() -> str:
    import hashlib

    try:
        return hashlib.sha256(DEFAULT_MODEL.read_bytes()).hexdigest()
    except OSError:
        return ""


if __name__ == "__main__":
    main()
