"""The control plane: ZeroMQ on ipc:// (mode 0600) or loopback TCP, msgpack messages.

A request is a msgpack map {"cmd": str, "args": map}; a reply is {"ok": true, "result":
...} or {"ok": false, "error": str}. Anything malformed gets an error reply and the
daemon keeps serving: random bytes, oversized or deeply nested messages, wrong types,
unknown commands.

The socket is a ROUTER speaking to REQ clients (aqmllmctl): every reply goes back to
the peer that asked, by its identity, so a peer that sends garbage (or never reads its
reply) cannot wedge the socket's state for the next client, as it could a REP socket.
Commands that validate a model (`set_model`, `reload`) run on a worker thread: the
control thread keeps answering `status`, `pause` and the rest meanwhile, and a second
validation while one runs is refused.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
from collections.abc import Callable
from typing import Any

import msgpack
import zmq

from aqm_bridge.channel import ChannelError

from .model import ModelError
from .server import Server

log = logging.getLogger("aqmllmd.control")

MAX_REQUEST_BYTES = 64 << 10
#: Transport cap: larger frames are dropped by ZeroMQ before we ever see them.
MAX_FRAME_BYTES = 1 << 20
POLL_MS = 100

# Each command: the argument names it takes and their types.
SCHEMA: dict[str, dict[str, type]] = {
    "status": {}, "stats": {}, "rollback": {}, "pause": {}, "resume": {}, "params_get": {},
    "reload": {},
    "set_model": {"path": str},
    "params_set": {"params": dict},
}


SLOW_COMMANDS = frozenset({"set_model", "reload"})


class RequestError(Exception):
    pass


class ControlError(Exception):
    """The control endpoint cannot be opened, and why."""


def decode(frame: bytes) -> tuple[str, dict[str, Any]]:
    if len(frame) > MAX_REQUEST_BYTES:
        raise RequestError(f"request of {len(frame)} bytes exceeds {MAX_REQUEST_BYTES}")
    try:
        msg = msgpack.unpackb(frame, raw=False, strict_map_key=True, max_str_len=4096,
                              max_bin_len=0, max_array_len=64, max_map_len=64,
                              max_ext_len=0)
    except Exception as e:  # noqa: BLE001 - whatever msgpack says, it is malformed
        raise RequestError(f"malformed msgpack: {type(e).__name__}") from e
    if not isinstance(msg, dict) or set(msg) - {"cmd", "args"}:
        raise RequestError("want a map with keys 'cmd' and optional 'args'")
    cmd, args = msg.get("cmd"), msg.get("args", {})
    if not isinstance(cmd, str) or cmd not in SCHEMA:
        raise RequestError(f"unknown command {cmd!r} (known: {', '.join(sorted(SCHEMA))})")
    if not isinstance(args, dict):
        raise RequestError("'args' must be a map")
    want = SCHEMA[cmd]
    if set(args) != set(want):
        raise RequestError(f"{cmd} takes arguments {sorted(want)}, got {sorted(args)}")
    for name, kind in want.items():
        if not isinstance(args[name], kind):
            raise RequestError(f"{cmd}: argument {name} must be {kind.__name__}")
    return cmd, args


class ControlPlane:
    def __init__(self, server: Server, endpoint: str,
                 reload: Callable[[], str] | None = None) -> None:
        self.server = server
        self.endpoint = endpoint
        self.reload = reload
        self._ctx = zmq.Context.instance()
        self._sock = self._ctx.socket(zmq.ROUTER)
        self._sock.setsockopt(zmq.MAXMSGSIZE, MAX_FRAME_BYTES)
        self._sock.setsockopt(zmq.LINGER, 0)
        old = os.umask(0o077)  # the ipc socket file is born 0600
        try:
            self._sock.bind(endpoint)
            if endpoint.startswith("ipc://"):
                os.chmod(endpoint[len("ipc://"):], 0o600)
        except (zmq.ZMQError, OSError) as e:
            self._sock.close(linger=0)
            raise ControlError(f"control endpoint {endpoint}: cannot bind: "
                               f"{e.strerror or e}") from e
        finally:
            os.umask(old)
        self._thread = threading.Thread(target=self._loop, name="control", daemon=True)
        # Replies of slow commands, finished on the worker thread: (envelope, reply).
        self._done: queue.SimpleQueue[tuple[list[bytes], dict[str, Any]]] = \
            queue.SimpleQueue()
        self._busy = threading.Lock()

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        if self._thread.ident is not None:
            self._thread.join(timeout=2)
        self._sock.close(linger=0)
        if self.endpoint.startswith("ipc://"):
            try:
                os.unlink(self.endpoint[len("ipc://"):])
            except FileNotFoundError:
                pass

    def _loop(self) -> None:
        poller = zmq.Poller()
        poller.register(self._sock, zmq.POLLIN)
        while not self.server.stop_event.is_set():
            while not self._done.empty():
                self._reply(*self._done.get())
            if not dict(poller.poll(POLL_MS)):
                continue
            try:
                frames = self._sock.recv_multipart(zmq.NOBLOCK)
            except zmq.ZMQError:
                continue
            # ROUTER: [identity, b"", body] from a REQ peer; [identity, body] otherwise.
            if len(frames) >= 2 and frames[1] == b"":
                envelope, body = frames[:2], frames[2:]
            else:
                envelope, body = frames[:1], frames[1:]
            frame = body[0] if len(body) == 1 else b"\xc1"
            try:
                cmd, _ = decode(frame)
            except RequestError:
                cmd = ""
            if cmd in SLOW_COMMANDS:
                self._start_slow(envelope, frame)
            else:
                self._reply(envelope, self.handle(frame))

    def _reply(self, envelope: list[bytes], reply: dict[str, Any]) -> None:
        try:
            self._sock.send_multipart([*envelope, msgpack.packb(reply, use_bin_type=True)],
                                      zmq.NOBLOCK)
        except zmq.ZMQError as e:  # the peer is gone or not reading: drop its reply
            log.debug("control reply dropped: %s", e)

    def _start_slow(self, envelope: list[bytes], frame: bytes) -> None:
        if not self._busy.acquire(blocking=False):
            self._reply(envelope, {"ok": False, "error": "another model is being validated; "
                                   "try again when it is done"})
            return

        def work() -> None:
            try:
                self._done.put((envelope, self.handle(frame)))
            finally:
                self._busy.release()

        threading.Thread(target=work, name="control-validate", daemon=True).start()

    def handle(self, frame: bytes) -> dict[str, Any]:
        try:
            cmd, args = decode(frame)
            return {"ok": True, "result": self.dispatch(cmd, args)}
        except (RequestError, ModelError, ValueError, TimeoutError, ChannelError) as e:
            return {"ok": False, "error": str(e)}
        except Exception as e:  # noqa: BLE001 - a control bug must not kill serving
            log.exception("control command failed")
            return {"ok": False, "error": f"internal error: {type(e).__name__}: {e}"}

    def dispatch(self, cmd: str, args: dict[str, Any]) -> Any:
        srv = self.server
        if cmd == "status":
            return srv.status()
        if cmd == "stats":
            return {"daemon": srv.metrics.snapshot(), "data_path": srv.datapath}
        if cmd == "set_model":
            if not os.path.isabs(args["path"]):
                raise RequestError(f"{args['path'][:200]!r}: relative model path; the "
                                   "daemon's working directory is not yours: give an "
                                   "absolute one (aqmllmctl set-model does)")
            model = srv.load_model(args["path"])  # validated here; the loop swaps it in
            old, new = srv.slot.offer(model)
            log.info("model %s validated, replacing %s", new, old)
            return {"old": old, "new": new}
        if cmd == "rollback":
            old, new = srv.slot.rollback()
            return {"old": old, "new": new}
        if cmd in ("pause", "resume"):
            srv.set_paused(cmd == "pause")
            return {"paused": srv.paused}
        if cmd == "params_get":
            with srv.region_lock:
                return self._region().current_params()
        if cmd == "params_set":
            params = args["params"]
            if not all(isinstance(k, str) and isinstance(v, int) and not isinstance(v, bool)
                       for k, v in params.items()):
                raise RequestError("params must map names to integers")
            with srv.region_lock:  # the loop's detach waits up to request_params' 1 s
                return self._region().request_params(**params)
        if cmd == "reload":
            if self.reload is None:
                raise RequestError("reload is not available")
            return {"model": self.reload()}
        raise RequestError(f"unhandled command {cmd}")

    def _region(self) -> Any:
        region = self.server.region
        if region is None:
            raise RequestError("not attached to a data path")
        return region
