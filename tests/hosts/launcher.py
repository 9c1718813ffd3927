"""Start a real hermes-webui ``server.py`` with ``webui_insights.install()`` done first.

Why a launcher: the tests must run the host exactly as users do — its own
``server.py`` as ``__main__``, no host file edited — with our one line of
set-up in front of it, the way README tells users to add it. ``runpy`` gives
that: the host's module-level code and ``main()`` run unchanged.

Usage (a subprocess of the test; the host dir is already a temporary copy)::

    python launcher.py HOST_SRC_DIR

Environment (all optional, read here only):

- ``WEBUI_INSIGHTS_LAUNCH_INSTALL`` — ``1`` (default) calls ``install()``;
  ``0`` is the control run: the library is not even imported.
- ``WEBUI_INSIGHTS_LAUNCH_ENABLED`` — ``1``/``0`` passed as
  ``install(enabled=True/False)``; unset leaves the decision to the library
  (env ``WEBUI_INSIGHTS_ENABLED``, then the WebUI's ``sync_to_insights``).
- ``WEBUI_INSIGHTS_LAUNCH_DEBOUNCE`` — the writer's debounce in seconds
  (``WriterConfig(debounce_s=...)``), so tests do not wait the default.
- ``WEBUI_INSIGHTS_LAUNCH_CONTROL_FILE`` — where to write the port of the
  control server (below); without it there is no control server.
- ``WEBUI_INSIGHTS_LAUNCH_LOOPBACK_ONLY`` — ``1`` (default) refuses every
  outbound connection that is not to 127.0.0.0/8, ::1 or localhost, before
  any DNS lookup: hermes-agent looks up model metadata on openrouter.ai, and
  a test run must never leave the machine (HEAD has a similar switch of its
  own, ``HERMES_WEBUI_TEST_NETWORK_BLOCK``; v0.50.12 has none).

The control server (127.0.0.1, a daemon thread in the host process) lets the
test reach the library inside the live server: ``GET /flush?timeout=S`` →
``{"flushed": bool}`` (``webui_insights.flush``), ``GET /stats`` →
``webui_insights.stats()``, ``GET /health`` → ``{"installed": bool}``. In the
control run ``/flush`` answers ``true`` and ``/stats`` ``{}``.

Stop the process with SIGINT (v0.50.12 has no SIGTERM handler; SIGINT makes
``serve_forever`` raise KeyboardInterrupt so exit handlers run) or SIGTERM
(HEAD installs an orderly-shutdown handler).
"""

from __future__ import annotations

import ipaddress
import json
import logging
import os
import runpy
import socket
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

_installed = False


def _install_library() -> bool:
    """Call ``webui_insights.install`` with the arguments the environment asks for."""
    import webui_insights

    kwargs: dict[str, Any] = {}
    enabled = os.environ.get("WEBUI_INSIGHTS_LAUNCH_ENABLED", "").strip()
    if enabled:
        kwargs["enabled"] = enabled.lower() in ("1", "true", "yes", "on")
    debounce = os.environ.get("WEBUI_INSIGHTS_LAUNCH_DEBOUNCE", "").strip()
    writer_config_cls = getattr(webui_insights, "WriterConfig", None)
    if debounce and writer_config_cls is not None:
        try:
            kwargs["writer_config"] = writer_config_cls(debounce_s=float(debounce))
        except TypeError:  # a WriterConfig without debounce_s: keep its defaults
            print("[launcher] WriterConfig(debounce_s=...) not accepted; using defaults", file=sys.stderr)
    return bool(webui_insights.install(**kwargs))


def _is_loopback(host: Any) -> bool:
    if not isinstance(host, str):
        return False
    h = host.strip().lower().strip("[]")
    if h in ("localhost", "::1", "0:0:0:0:0:0:0:1") or h.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(h).is_loopback
    except ValueError:
        return False


def _loopback_only() -> None:
    """Refuse non-loopback TCP connections in this process (checked on the name, so no DNS either)."""
    real_create = socket.create_connection
    real_connect = socket.socket.connect
    real_connect_ex = socket.socket.connect_ex

    def refuse(address: Any) -> OSError:
        return OSError(f"test network isolation (launcher): connection to {address!r} refused")

    def create_connection(address: Any, *args: Any, **kwargs: Any) -> socket.socket:
        if not _is_loopback(address[0]):
            raise refuse(address)
        return real_create(address, *args, **kwargs)

    def connect(self: socket.socket, address: Any) -> None:
        if self.family in (socket.AF_INET, socket.AF_INET6) and not _is_loopback(address[0]):
            raise refuse(address)
        return real_connect(self, address)

    def connect_ex(self: socket.socket, address: Any) -> int:
        if self.family in (socket.AF_INET, socket.AF_INET6) and not _is_loopback(address[0]):
            raise refuse(address)
        return real_connect_ex(self, address)

    socket.create_connection = create_connection
    socket.socket.connect = connect  # type: ignore[method-assign,assignment]
    socket.socket.connect_ex = connect_ex  # type: ignore[method-assign,assignment]


def _jsonable(value: Any) -> Any:
    try:
        json.dumps(value)
        return value
    except TypeError:
        return json.loads(json.dumps(value, default=repr))


class _ControlHandler(BaseHTTPRequestHandler):
    timeout = 30
    protocol_version = "HTTP/1.0"

    def log_message(self, fmt: str, *args: Any) -> None:
        pass

    def _reply(self, payload: Any, status: int = 200) -> None:
        data = json.dumps(_jsonable(payload)).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        parsed = urlparse(self.path)
        query = parse_qs(parsed.query)
        if parsed.path == "/health":
            return self._reply({"installed": _installed, "pid": os.getpid()})
        if parsed.path == "/flush":
            timeout = min(float(query.get("timeout", ["10"])[0]), 60.0)
            if not _installed:
                return self._reply({"flushed": True})
            import webui_insights

            return self._reply({"flushed": bool(webui_insights.flush(timeout))})
        if parsed.path == "/stats":
            if not _installed:
                return self._reply({})
            import webui_insights

            return self._reply(webui_insights.stats())
        self._reply({"error": "not found"}, 404)


def _start_control_server(port_file: Path) -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _ControlHandler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="webui-insights-control", daemon=True).start()
    tmp = port_file.with_suffix(".tmp")
    tmp.write_text(str(server.server_address[1]))
    tmp.replace(port_file)  # the test never reads a half-written port


def main(argv: list[str]) -> int:
    global _installed
    if len(argv) != 2:
        print("usage: launcher.py HOST_SRC_DIR", file=sys.stderr)
        return 2
    src = Path(argv[1]).resolve()
    server_py = src / "server.py"
    if not server_py.is_file():
        print(f"[launcher] no server.py in {src}", file=sys.stderr)
        return 2
    # The host imports its `api` package relative to its checkout, and some
    # code paths resolve files from the current directory.
    sys.path.insert(0, str(src))
    os.chdir(src)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="[%(name)s] %(levelname)s %(message)s")
    if os.environ.get("WEBUI_INSIGHTS_LAUNCH_LOOPBACK_ONLY", "1").strip() != "0":
        _loopback_only()

    if os.environ.get("WEBUI_INSIGHTS_LAUNCH_INSTALL", "1").strip() != "0":
        _installed = _install_library()
        print(f"[launcher] webui_insights.install() -> {_installed}", file=sys.stderr, flush=True)
    else:
        print("[launcher] control run: webui_insights not installed", file=sys.stderr, flush=True)

    port_file = os.environ.get("WEBUI_INSIGHTS_LAUNCH_CONTROL_FILE", "").strip()
    if port_file:
        _start_control_server(Path(port_file))

    sys.argv = [str(server_py)]
    try:
        runpy.run_path(str(server_py), run_name="__main__")
    except KeyboardInterrupt:
        print("[launcher] SIGINT: server stopped", file=sys.stderr, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
