"""`aqmllmctl`: talk to a running aqmllmd over its control socket."""

from __future__ import annotations

import json
import time
from typing import Any

import click
import msgpack
import zmq

from .config import DEFAULT_CONTROL

TIMEOUT_MS = 5000
#: Every field of struct aqm_params is a uint32_t.
U32_MAX = 0xFFFFFFFF


class Client:
    def __init__(self, endpoint: str, timeout_ms: int = TIMEOUT_MS) -> None:
        self._ctx = zmq.Context.instance()
        self._sock = self._ctx.socket(zmq.REQ)
        self._sock.setsockopt(zmq.LINGER, 0)
        self._sock.setsockopt(zmq.RCVTIMEO, timeout_ms)
        self._sock.setsockopt(zmq.SNDTIMEO, timeout_ms)
        self.endpoint = endpoint
        try:
            self._sock.connect(endpoint)
        except zmq.ZMQError as e:
            self._sock.close(linger=0)
            raise click.ClickException(f"endpoint {endpoint!r}: {e.strerror}; want "
                                       "ipc://PATH or tcp://HOST:PORT") from e

    def raw(self, frame: bytes) -> dict[str, Any]:
        try:
            self._sock.send(frame)
            return msgpack.unpackb(self._sock.recv(), raw=False)
        except zmq.Again as e:
            raise click.ClickException(f"no answer from aqmllmd at {self.endpoint}") from e

    def call(self, cmd: str, **args: Any) -> Any:
        reply = self.raw(msgpack.packb({"cmd": cmd, "args": args}, use_bin_type=True))
        if not reply.get("ok"):
            raise click.ClickException(reply.get("error", "unknown error"))
        return reply["result"]

    def close(self) -> None:
        self._sock.close(linger=0)


def status_or_none(endpoint: str, timeout_ms: int = 5000) -> dict[str, Any] | None:
    """The daemon's status, or None when it does not answer (the main jobs' summaries)."""
    client = Client(endpoint, timeout_ms=timeout_ms)
    try:
        return client.call("status")
    except click.ClickException:
        return None
    finally:
        client.close()


def _emit(obj: Any, as_json: bool, prefix: str = "") -> None:
    if as_json:
        click.echo(json.dumps(obj, indent=2, sort_keys=True))
    elif isinstance(obj, dict):
        for k, v in obj.items():
            if isinstance(v, dict) and v:
                _emit(v, False, f"{prefix}{k}.")
            else:
                click.echo(f"{prefix}{k}: {v}")
    else:
        click.echo(obj)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-e", "--endpoint", default=DEFAULT_CONTROL, show_default=True,
              envvar="AQMLLMD_CONTROL", help="aqmllmd's control endpoint")
@click.option("--timeout", default=TIMEOUT_MS, show_default=True,
              type=click.IntRange(1, 3_600_000), help="milliseconds")
@click.pass_context
def cli(ctx: click.Context, endpoint: str, timeout: int) -> None:
    """Control a running aqmllmd."""
    ctx.obj = Client(endpoint, timeout)
    ctx.call_on_close(ctx.obj.close)


@cli.command()
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def status(client: Client, as_json: bool) -> None:
    """Model, channel and loop status."""
    _emit(client.call("status"), as_json)


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="machine-readable output")
@click.pass_obj
def stats(client: Client, as_json: bool) -> None:
    """The daemon's metrics and the data path's counters."""
    result = client.call("stats")
    if as_json:
        _emit(result, True)
        return
    for name, value in sorted(result["daemon"].items()):
        click.echo(f"{name} {value:g}")
    for name, value in (result["data_path"] or {}).items():
        click.echo(f"datapath.{name} {value}")


@cli.command("set-model")
@click.argument("path", type=click.Path(exists=True, dir_okay=False))
@click.pass_obj
def set_model(client: Client, path: str) -> None:
    """Validate PATH, then serve it from the next batch on."""
    import os

    r = client.call("set_model", path=os.path.abspath(path))
    click.echo(f"model: {r['old']} -> {r['new']}")


@cli.command()
@click.pass_obj
def rollback(client: Client) -> None:
    """Serve the previous model again."""
    r = client.call("rollback")
    click.echo(f"model: {r['old']} -> {r['new']}")


@cli.group()
def params() -> None:
    """DualPI2 parameters of the data path."""


@params.command("get")
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def params_get(client: Client, as_json: bool) -> None:
    _emit(client.call("params_get"), as_json)


@params.command("set")
@click.argument("assignments", nargs=-1, required=True)
@click.pass_obj
def params_set(client: Client, assignments: tuple[str, ...]) -> None:
    """NAME=VALUE ... (units of struct aqm_params: target_ns=15000000, alpha_mhz=160)."""
    values: dict[str, int] = {}
    for a in assignments:
        name, sep, value = a.partition("=")
        if not sep or not name or not value.isascii() or not value.isdigit():
            raise click.BadParameter(f"{a!r}: want NAME=INTEGER (0 or more)")
        if len(value.lstrip("0")) > 10 or int(value) > U32_MAX:
            raise click.BadParameter(f"{a!r}: {name} must fit 32 bits unsigned "
                                     f"(at most {U32_MAX})")
        values[name] = int(value)
    _emit(client.call("params_set", params=values), False)


@cli.command()
@click.pass_obj
def pause(client: Client) -> None:
    """Fallback only: the data path ignores verdicts until resume."""
    client.call("pause")
    click.echo("paused: DualPI2 decides every packet")


@cli.command()
@click.pass_obj
def resume(client: Client) -> None:
    client.call("resume")
    click.echo("resumed: verdicts applied again")


@cli.command()
@click.pass_obj
def reload(client: Client) -> None:
    """Re-read the configuration and the model (as SIGHUP)."""
    click.echo(f"model: {client.call('reload')['model']}")


@cli.command()
@click.option("--interval", default=1.0, show_default=True,
              type=click.FloatRange(0.0, 3600.0), help="seconds")
@click.option("--count", default=0, type=click.IntRange(0, None),
              help="stop after this many screens (0: never)")
@click.pass_obj
def watch(client: Client, interval: float, count: int) -> None:
    """A live view: rates, verdict share, fallback share, latency."""
    prev: dict[str, Any] | None = None
    prev_t = 0.0
    shown = 0
    while True:
        s = client.call("status")
        dp = client.call("stats")["data_path"] or {}
        click.clear()
        click.echo(f"aqmllmd  model {s['model']['version']}  "
                   f"{'PAUSED  ' if s['paused'] else ''}data path "
                   f"{'up' if s['data_path_up'] else 'down'}")
        now = time.monotonic()
        if prev is not None:
            dt = max(now - prev_t, 1e-3)
            click.echo(f"states/s   {(s['states'] - prev['states']) / dt:12.0f}")
            click.echo(f"verdicts/s {(s['verdicts'] - prev['verdicts']) / dt:12.0f}")
        decided = dp.get("decisions_model", 0) + dp.get("decisions_fallback", 0)
        if decided:
            click.echo(f"verdict share {100 * dp['decisions_model'] / decided:6.2f} %   "
                       f"late {dp['verdicts_late']}   bad {dp['verdicts_bad']}")
        click.echo(f"skipped (deadline) {s['skipped_deadline']}   failures "
                   f"{s['model_failures']}")
        wd = s.get("watchdog") or {}
        last = wd.get("last_window") or {}
        if last:
            click.echo(f"watchdog: model signals {100 * last['model_signal_share']:.2f} % vs "
                       f"DualPI2 {100 * last['dualpi2_signal_share']:.2f} %, trips "
                       f"{sum(wd['trips'].values())}"
                       + (f"   PAUSED: {s['pause_reason']}" if s.get("pause_reason") else ""))
        prev, prev_t = s, now
        shown += 1
        if count and shown >= count:
            return
        time.sleep(interval)
