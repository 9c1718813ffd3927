"""Run a real hermes-webui host in a temporary world and drive it like a browser.

Why: the library's promises only mean something against the server users run.
This module gives tests one object per running host — a temporary copy of a
pinned snapshot (``../shared/hosts`` is read-only in CI and Python writes
``__pycache__`` beside the code), a temporary ``HERMES_HOME`` whose
``config.yaml`` points hermes-agent at the fake LLM, a temporary WebUI state
dir — and the HTTP calls the WebUI's own front end makes:

- ``POST /api/session/new`` → a chat;
- ``POST /api/chat/start`` then ``GET /api/chat/stream`` (SSE) → a streaming
  turn, read until ``done``/``stream_end``/``apperror`` (v0.50.12 has no
  ``stream_end``, and keeps an ``apperror`` stream open with heartbeats);
- ``POST /api/chat`` → a non-streaming turn;
- ``POST /api/session/rename``; ``POST /api/profile/switch`` (HEAD answers
  with a profile cookie, which this client keeps, as a browser would).

It also runs the real ``hermes`` console script (next to ``sys.executable``)
against the same home, and stops every process it starts by PID, with
bounded waits and SIGKILL only as a last resort.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import stat
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_SNAPSHOTS = REPO_ROOT.parent / "shared" / "hosts"
LAUNCHER = Path(__file__).with_name("launcher.py")
SKIP_HINT = "no hermes-webui source: point the tests at a checkout with WEBUI_SRC=/path/to/hermes-webui make test-host"

# The host copy never needs these; skipping them keeps the copy fast and clean.
_COPY_IGNORE = shutil.ignore_patterns("__pycache__", "*.pyc", ".git", "tests", "node_modules")


# ── where hosts come from ─────────────────────────────────────────────────────
def host_sources() -> list[Path]:
    """Host checkouts to test: ``WEBUI_SRC`` if set, else each snapshot found.

    ``WEBUI_SRC`` may list several directories separated by ``os.pathsep``.
    A directory counts as a host when it has ``server.py`` and ``api/models.py``.
    """
    raw = os.environ.get("WEBUI_SRC", "").strip()
    if raw:
        candidates = [Path(p).expanduser() for p in raw.split(os.pathsep) if p.strip()]
    else:
        root = Path(os.environ.get("WEBUI_HOSTS_DIR", str(DEFAULT_SNAPSHOTS)))
        candidates = sorted(p for p in root.iterdir() if p.is_dir()) if root.is_dir() else []
    return [p.resolve() for p in candidates if (p / "server.py").is_file() and (p / "api" / "models.py").is_file()]


def host_id(src: Path) -> str:
    """A short test id for a host dir (``hermes-webui-head`` → ``head``)."""
    return src.name.removeprefix("hermes-webui-") or src.name


@dataclass(frozen=True)
class HostTraits:
    """What differs between host generations, read from the source (facts, not names)."""

    has_stream_end: bool  # SSE sends `stream_end` after `done`
    handles_sigterm: bool  # server.py installs a SIGTERM handler (orderly exit)
    agent_writes_state_db: bool  # streaming chats hand a SessionDB to AIAgent
    session_has_cache_fields: bool  # Session keeps cache_read/cache_write tokens
    profile_switch_cookie: bool  # per-client profile switch via cookie (else process-wide)
    llm_titles: bool  # asks the LLM for a title after the first streaming turn
    routes: frozenset[str] = frozenset()  # every "/api/..." path the host's routes.py answers
    sends_model_provider: bool = False  # its front end sends model_provider with each chat start

    @classmethod
    def read(cls, src: Path) -> HostTraits:
        server = (src / "server.py").read_text(encoding="utf-8")
        streaming = (src / "api" / "streaming.py").read_text(encoding="utf-8")
        models = (src / "api" / "models.py").read_text(encoding="utf-8")
        routes = (src / "api" / "routes.py").read_text(encoding="utf-8")
        return cls(
            has_stream_end="stream_end" in streaming or "stream_end" in routes,
            handles_sigterm="signal.SIGTERM" in server,
            agent_writes_state_db=bool(re.search(r"session_db\s*=", streaming)),
            session_has_cache_fields="cache_read_tokens" in models,
            profile_switch_cookie="build_profile_cookie" in routes,
            llm_titles="_run_background_title_update" in streaming,
            routes=frozenset(re.findall(r"""["'](/api/[A-Za-z0-9_/-]+)["']""", routes)),
            sends_model_provider="model_provider" in _read(src / "static" / "messages.js"),
        )

    def has_route(self, path: str) -> bool:
        """The host answers ``path`` (read from its ``api/routes.py``, not from its version)."""
        return path in self.routes


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except OSError:
        return ""


def copy_host(src: Path, dest: Path) -> Path:
    """Copy a (possibly read-only) host checkout to ``dest`` and make the copy writable."""
    shutil.copytree(src, dest, ignore=_COPY_IGNORE)
    for path in [dest, *dest.rglob("*")]:
        mode = path.stat().st_mode
        path.chmod(mode | stat.S_IWUSR | (stat.S_IXUSR if path.is_dir() else 0))
    return dest


# ── a temporary hermes world ──────────────────────────────────────────────────
def init_state_db(path: Path) -> Path:
    """Create an empty state.db the way hermes does (schema by SessionDB itself)."""
    from hermes_state import SessionDB

    path.parent.mkdir(parents=True, exist_ok=True)
    SessionDB(path).close()
    return path


def hermes_config(base_url: str, model: str, toolsets: tuple[str, ...] = ("todo",), extra: str = "") -> str:
    """config.yaml text: a custom OpenAI-compatible provider (the fake LLM).

    ``platform_toolsets.cli`` limits the agent to offline, harmless tools (the
    WebUI runs the agent with the CLI toolsets); memory is off so no run
    writes memory files or varies its prompt; title generation keeps its
    default (on), so title requests reach the fake. ``extra`` is appended
    as is (more top-level sections).
    """
    lines = [
        "model:",
        f"  default: {model}",
        "  provider: custom",
        f"  base_url: {base_url}",
        "  api_key: sk-fake-test-key",
        "platform_toolsets:",
        "  cli: [" + ", ".join(toolsets) + "]",
        "memory:",
        "  memory_enabled: false",
        "  user_profile_enabled: false",
    ]
    return "\n".join(lines) + "\n" + extra


@dataclass
class HermesWorld:
    """One temporary world: HOME, HERMES_HOME (root), the WebUI state dir, a workspace."""

    base: Path
    llm_base_url: str
    model: str
    config_extra: str = ""  # more config.yaml sections (e.g. ``compression:``)

    @property
    def home(self) -> Path:  # $HOME for every process we start: nothing leaks into the real ~
        return self.base / "home"

    @property
    def hermes_home(self) -> Path:
        return self.base / "hermes"

    @property
    def webui_state(self) -> Path:
        return self.base / "webui-state"

    @property
    def workspace(self) -> Path:
        return self.base / "workspace"

    def profile_home(self, profile: str | None) -> Path:
        """hermes' rule: None/"default" → the root home, else ``<root>/profiles/<name>``."""
        if profile in (None, "", "default"):
            return self.hermes_home
        return self.hermes_home / "profiles" / profile

    def state_db(self, profile: str | None = None) -> Path:
        return self.profile_home(profile) / "state.db"

    def settings_file(self) -> Path:
        return self.webui_state / "settings.json"

    def session_file(self, session_id: str) -> Path:
        return self.webui_state / "sessions" / f"{session_id}.json"

    def create(self, settings: Mapping[str, Any] | None = None) -> HermesWorld:
        for d in (self.home, self.hermes_home, self.webui_state / "sessions", self.workspace):
            d.mkdir(parents=True, exist_ok=True)
        (self.hermes_home / "config.yaml").write_text(
            hermes_config(self.llm_base_url, self.model, extra=self.config_extra)
        )
        init_state_db(self.state_db())
        self.write_settings(settings or {})
        return self

    def write_settings(self, settings: Mapping[str, Any]) -> None:
        """The WebUI's settings.json (what its Settings page saves)."""
        base = {"onboarding_completed": True, "default_model": self.model, "default_workspace": str(self.workspace)}
        self.settings_file().write_text(json.dumps({**base, **settings}, indent=2))

    def env(self, extra: Mapping[str, str] | None = None) -> dict[str, str]:
        """Environment for the host and the hermes CLI: only this world, loopback only."""
        env = {k: v for k, v in os.environ.items() if not k.startswith(("HERMES_", "WEBUI_INSIGHTS_"))}
        # Any HTTP client that honours the proxy variables (requests, httpx, urllib) fails fast on
        # a dead loopback port for every non-loopback URL: nothing leaves the machine, not even
        # from the `hermes` CLI. The server process is also guarded by the launcher.
        dead_proxy = "http://127.0.0.1:9"
        env.update(
            {
                "http_proxy": dead_proxy,
                "https_proxy": dead_proxy,
                "HTTP_PROXY": dead_proxy,
                "HTTPS_PROXY": dead_proxy,
                "all_proxy": dead_proxy,
                "ALL_PROXY": dead_proxy,
                "HOME": str(self.home),
                "HERMES_HOME": str(self.hermes_home),
                "HERMES_WEBUI_STATE_DIR": str(self.webui_state),
                "HERMES_WEBUI_DEFAULT_WORKSPACE": str(self.workspace),
                "HERMES_WEBUI_DEFAULT_MODEL": self.model,
                "HERMES_WEBUI_HOST": "127.0.0.1",
                "HERMES_WEBUI_TEST_NETWORK_BLOCK": "1",  # HEAD's own outbound guard (loopback allowed)
                "NO_PROXY": "127.0.0.1,localhost",
                "no_proxy": "127.0.0.1,localhost",
                "PYTHONDONTWRITEBYTECODE": "1",
                "PYTHONUNBUFFERED": "1",
            }
        )
        env.update(extra or {})
        return env

    def create_profile(self, name: str) -> Path:
        """A named profile the way hermes makes one (``hermes profile create --clone``), with its state.db."""
        done = run_hermes(self, "profile", "create", name, "--clone", "--no-alias", timeout=120)
        home = self.profile_home(name)
        if done.returncode != 0 or not home.is_dir():
            # Older CLIs: the layout is all the WebUI needs (a directory under profiles/).
            home.mkdir(parents=True, exist_ok=True)
            shutil.copy2(self.hermes_home / "config.yaml", home / "config.yaml")
        init_state_db(home / "state.db")
        return home


# ── the hermes CLI ────────────────────────────────────────────────────────────
def hermes_executable() -> Path:
    """The ``hermes`` console script of the running interpreter's environment (never one from PATH:
    it must be the hermes-agent the server runs with)."""
    exe = Path(sys.executable).with_name("hermes")
    if not exe.exists():
        raise FileNotFoundError(f"no hermes console script next to {sys.executable}")
    return exe


def run_hermes(world: HermesWorld, *args: str, timeout: float = 120.0) -> subprocess.CompletedProcess[str]:
    """Run ``hermes ARGS`` against the world's root home (bounded; output captured)."""
    return subprocess.run(
        [str(hermes_executable()), *args],
        env=world.env(),
        cwd=str(world.workspace),
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )


@dataclass
class Insights:
    """Figures parsed from ``hermes insights`` output (None when a line is absent)."""

    text: str
    sessions: int | None = None
    messages: int | None = None
    tool_calls: int | None = None
    input_tokens: int | None = None
    output_tokens: int | None = None
    active_time: str | None = None  # only printed when some session has ended_at > started_at
    platforms: dict[str, dict[str, int]] = field(default_factory=dict)  # "webui" → sessions/messages/tokens


def _platforms(text: str) -> dict[str, dict[str, int]]:
    block = re.search(r"Platforms\n\s*─+\n.*?\n(.*?)(?:\n\s*\n|\Z)", text, flags=re.S)
    out: dict[str, dict[str, int]] = {}
    for line in block.group(1).splitlines() if block else []:
        parts = line.split()
        if len(parts) == 4:
            name, sessions, messages, tokens = parts
            out[name] = {
                "sessions": int(sessions.replace(",", "")),
                "messages": int(messages.replace(",", "")),
                "tokens": int(tokens.replace(",", "")),
            }
    return out


def _figure(text: str, label: str) -> str | None:
    match = re.search(rf"{label}:\s*([^\s│|]+(?: [^\s│|:]+)*?)(?=\s{{2,}}|\s*[│|]|\s*$)", text, flags=re.M)
    return match.group(1).strip() if match else None


def _int(value: str | None) -> int | None:
    if value is None:
        return None
    digits = re.sub(r"[^\d]", "", value)
    return int(digits) if digits else None


def parse_insights(text: str) -> Insights:
    """The Overview figures of the terminal report (``agent/insights.py`` ``format_terminal``)."""
    return Insights(
        text=text,
        sessions=_int(_figure(text, "Sessions")),
        messages=_int(_figure(text, "Messages")),
        tool_calls=_int(_figure(text, "Tool calls")),
        input_tokens=_int(_figure(text, "Input tokens")),
        output_tokens=_int(_figure(text, "Output tokens")),
        active_time=_figure(text, "Active time"),
        platforms=_platforms(text),
    )


def insights(world: HermesWorld, days: int = 1, source: str | None = None) -> Insights:
    """``hermes insights --days N [--source S]``, parsed (AssertionError if it failed)."""
    args = ["insights", "--days", str(days)] + (["--source", source] if source else [])
    done = run_hermes(world, *args)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Error generating insights" not in done.stdout, done.stdout
    return parse_insights(done.stdout)


def parse_sessions_list(text: str) -> list[dict[str, str]]:
    """Rows of ``hermes sessions list``: title, preview, last_active, id (columns found from the header)."""
    lines = text.splitlines()
    header_at = next(
        (i for i, line in enumerate(lines) if line.startswith("Title") and line.rstrip().endswith("ID")), None
    )
    if header_at is None:
        return []
    header = lines[header_at]
    cols = [header.index(name) for name in ("Title", "Preview", "Last Active", "ID")]
    rows = []
    for line in lines[header_at + 1 :]:
        if not line.strip() or set(line.strip()) <= {"─", "-"}:
            continue
        cells = [line[a:b].strip() for a, b in zip(cols, cols[1:] + [len(line) + 1], strict=True)]
        rows.append(dict(zip(("title", "preview", "last_active", "id"), cells, strict=True)))
    return rows


def sessions_list(world: HermesWorld, *args: str) -> list[dict[str, str]]:
    """``hermes sessions list`` for the root home, parsed."""
    done = run_hermes(world, "sessions", "list", *args)
    assert done.returncode == 0, done.stdout + done.stderr
    return parse_sessions_list(done.stdout)


def sessions_rename(world: HermesWorld, session_id: str, title: str) -> subprocess.CompletedProcess[str]:
    """``hermes sessions rename ID TITLE``. Note: it exits 0 even when it prints "not found"."""
    return run_hermes(world, "sessions", "rename", session_id, title)


def sessions_delete(world: HermesWorld, session_id: str) -> subprocess.CompletedProcess[str]:
    """``hermes sessions delete --yes ID``."""
    return run_hermes(world, "sessions", "delete", "--yes", session_id)


# ── the running server ────────────────────────────────────────────────────────
@dataclass
class StreamResult:
    """What one streaming turn produced: every SSE event, and how it ended."""

    events: list[tuple[str, Any]] = field(default_factory=list)

    @property
    def names(self) -> list[str]:
        return [name for name, _ in self.events]

    @property
    def ended_by(self) -> str | None:
        for name in reversed(self.names):
            if name in ("done", "stream_end", "apperror", "error", "cancel"):
                return name
        return None

    def data(self, name: str) -> Any:
        return next((d for n, d in self.events if n == name), None)


class HttpError(RuntimeError):
    def __init__(self, status: int, body: str, path: str) -> None:
        super().__init__(f"HTTP {status} on {path}: {body[:500]}")
        self.status = status
        self.body = body


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def spawn_logged(command: Sequence[str], env: Mapping[str, str], cwd: Path, log_path: Path) -> subprocess.Popen[bytes]:
    """Start a server process in its own session, its output appended to ``log_path``.

    Its own session: a Ctrl-C in the terminal reaches pytest, which stops the
    server by PID (and its children with it).
    """
    with open(log_path, "ab") as log:  # the child keeps its own descriptor
        return subprocess.Popen(
            list(command),
            env=dict(env),
            cwd=str(cwd),
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )


class HostServer:
    """A running host (launcher subprocess) plus a browser-like HTTP client for it."""

    def __init__(
        self,
        src: Path,
        world: HermesWorld,
        workdir: Path,
        *,
        install: bool = True,
        enabled: bool | None = None,
        debounce_s: float = 0.05,
        extra_env: Mapping[str, str] | None = None,
        python: str | None = None,
    ) -> None:
        self.src = src
        self.world = world
        self.workdir = workdir
        self.install = install
        self.enabled = enabled
        self.debounce_s = debounce_s
        self.extra_env = dict(extra_env or {})
        self.python = python or sys.executable
        self.traits = HostTraits.read(src)
        self.port = 0
        self.control_port = 0
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = workdir / "server.log"
        self.cookies: dict[str, str] = {}
        self.exit_code: int | None = None

    # ── lifecycle ─────────────────────────────────────────────────────────
    def start(self, timeout: float = 90.0) -> HostServer:
        """Start the launcher on a free port; retry once if another process took the port meanwhile."""
        try:
            return self._start(timeout)
        except RuntimeError as exc:
            if "Address already in use" not in str(exc):
                raise
            return self._start(timeout)

    def _start(self, timeout: float) -> HostServer:
        self.port = free_port()
        control_file = self.workdir / "control.port"
        control_file.unlink(missing_ok=True)
        env = self.world.env(
            {
                "HERMES_WEBUI_PORT": str(self.port),
                "WEBUI_INSIGHTS_LAUNCH_INSTALL": "1" if self.install else "0",
                "WEBUI_INSIGHTS_LAUNCH_DEBOUNCE": str(self.debounce_s),
                "WEBUI_INSIGHTS_LAUNCH_CONTROL_FILE": str(control_file),
                **({"WEBUI_INSIGHTS_LAUNCH_ENABLED": "1" if self.enabled else "0"} if self.enabled is not None else {}),
                **self.extra_env,
            }
        )
        self.proc = spawn_logged([self.python, str(LAUNCHER), str(self.src)], env, self.src, self.log_path)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"host exited with {self.proc.returncode} during start-up:\n{self.log_tail()}")
            if control_file.exists() and self._healthy():
                self.control_port = int(control_file.read_text())
                return self
            time.sleep(0.1)
        self.stop()
        raise TimeoutError(f"host not ready after {timeout:.0f} s:\n{self.log_tail()}")

    def _healthy(self) -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/health", timeout=2) as resp:
                return bool(resp.status == 200)
        except (OSError, urllib.error.URLError):
            return False

    def stop(self, timeout: float = 20.0) -> int | None:
        """Stop by PID: SIGTERM where the host handles it, else SIGINT; SIGKILL after ``timeout``."""
        proc = self.proc
        if proc is None or proc.poll() is not None:
            self.exit_code = proc.returncode if proc else None
            return self.exit_code
        sig = signal.SIGTERM if self.traits.handles_sigterm else signal.SIGINT
        try:
            os.kill(proc.pid, sig)
            self.exit_code = proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            self.exit_code = proc.wait(10)
        except ProcessLookupError:
            self.exit_code = proc.wait(10)
        return self.exit_code

    def __enter__(self) -> HostServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def log_tail(self, n: int = 60) -> str:
        try:
            lines = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return "(no log)"
        return "\n".join(lines[-n:])

    # ── HTTP ──────────────────────────────────────────────────────────────
    def request(self, method: str, path: str, body: Any = None, timeout: float = 60.0) -> Any:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(f"http://127.0.0.1:{self.port}{path}", data=data, method=method)
        req.add_header("Content-Type", "application/json")
        if self.cookies:
            req.add_header("Cookie", "; ".join(f"{k}={v}" for k, v in self.cookies.items()))
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                self._keep_cookies(resp.headers.get_all("Set-Cookie") or [])
                raw = resp.read()
        except urllib.error.HTTPError as exc:
            raise HttpError(exc.code, exc.read().decode(errors="replace"), path) from None
        return json.loads(raw) if raw else None

    def _keep_cookies(self, headers: list[str]) -> None:
        for header in headers:
            name, _, rest = header.partition("=")
            value = rest.split(";", 1)[0]
            if name.strip():
                self.cookies[name.strip()] = value

    def new_session(self, **body: Any) -> dict[str, Any]:
        payload = {"workspace": str(self.world.workspace), **body}
        return dict(self.request("POST", "/api/session/new", payload)["session"])

    def chat_stream(self, session_id: str, message: str, timeout: float = 120.0, **body: Any) -> StreamResult:
        """One streaming turn, as the browser sends it; returns when the stream ends."""
        return self.read_stream(self.start_stream(session_id, message, **body), timeout=timeout)

    def model_fields(self, provider: str = "custom") -> dict[str, str]:
        """The model fields the host's front end sends with a chat start (HEAD adds the provider)."""
        fields = {"model": self.world.model}
        if self.traits.sends_model_provider:
            fields["model_provider"] = provider
        return fields

    def start_stream(self, session_id: str, message: str | None, **body: Any) -> str:
        """``POST /api/chat/start`` alone (read it with :meth:`read_stream`); returns the stream id."""
        payload = {"session_id": session_id, "workspace": str(self.world.workspace), **body}
        if message is not None:
            payload["message"] = message
        return str(self.request("POST", "/api/chat/start", payload)["stream_id"])

    def read_stream(self, stream_id: str, timeout: float = 120.0) -> StreamResult:
        result = StreamResult()
        req = urllib.request.Request(f"http://127.0.0.1:{self.port}/api/chat/stream?stream_id={stream_id}")
        if self.cookies:
            req.add_header("Cookie", "; ".join(f"{k}={v}" for k, v in self.cookies.items()))
        deadline = time.monotonic() + timeout
        terminal = {"done", "stream_end", "apperror", "error", "cancel"}
        # The socket timeout bounds each read (the hosts send a heartbeat at least every 30 s when idle).
        with urllib.request.urlopen(req, timeout=min(timeout, 60.0)) as resp:
            event, data_lines = "message", []
            for raw in resp:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"stream {stream_id} still open after {timeout:.0f} s: {result.names}")
                line = raw.decode("utf-8", errors="replace").rstrip("\r\n")
                if line.startswith(":"):
                    continue
                if line.startswith("event:"):
                    event = line[6:].strip()
                elif line.startswith("data:"):
                    data_lines.append(line[5:].lstrip())
                elif line == "":
                    if data_lines or event != "message":
                        text = "\n".join(data_lines)
                        try:
                            payload: Any = json.loads(text) if text else None
                        except ValueError:
                            payload = text
                        result.events.append((event, payload))
                        # HEAD sends `stream_end` after `done` (title generation runs in between).
                        if event in terminal and (event != "done" or not self.traits.has_stream_end):
                            return result
                    event, data_lines = "message", []
        return result

    def chat_sync(self, session_id: str, message: str, timeout: float = 120.0) -> dict[str, Any]:
        """One non-streaming turn (``POST /api/chat``)."""
        body = {"session_id": session_id, "message": message, "workspace": str(self.world.workspace)}
        return dict(self.request("POST", "/api/chat", body, timeout=timeout))

    def rename(self, session_id: str, title: str) -> dict[str, Any]:
        return dict(self.request("POST", "/api/session/rename", {"session_id": session_id, "title": title}))

    def switch_profile(self, name: str) -> dict[str, Any]:
        return dict(self.request("POST", "/api/profile/switch", {"name": name}))

    # ── the other session actions, with the bodies each host's front end sends ──
    # (docs: tests/hosts/README.md; which host has which route: HostTraits.has_route)
    def cancel(self, stream_id: str) -> dict[str, Any]:
        """The Stop button: ``GET /api/chat/cancel?stream_id=``."""
        return dict(self.request("GET", f"/api/chat/cancel?stream_id={stream_id}"))

    def regenerate(self, session_id: str, timeout: float = 120.0) -> StreamResult:
        """HEAD's Regenerate button: ``/api/chat/start`` with ``regenerate`` and ``GET /api/session``'s revision."""
        revision = self.session_api(session_id).get("regeneration_revision")
        stream_id = self.start_stream(session_id, None, regenerate=True, regeneration_revision=revision)
        return self.read_stream(stream_id, timeout=timeout)

    def title_regenerate(self, session_id: str) -> dict[str, Any]:
        return dict(self.request("POST", "/api/session/title/regenerate", {"session_id": session_id}))

    def duplicate(self, session_id: str) -> dict[str, Any]:
        """HEAD's Duplicate (``/api/session/duplicate``) → the copy."""
        return dict(self.request("POST", "/api/session/duplicate", {"session_id": session_id})["session"])

    def duplicate_like_v0_50_12(self, session_id: str, title: str) -> dict[str, Any]:
        """v0.50.12's Duplicate is done in the browser: a new chat renamed ``"<title> (copy)"``."""
        copy = self.new_session()
        self.rename(copy["session_id"], f"{title} (copy)")
        return copy

    def branch(self, session_id: str, keep_count: int | None = None, title: str | None = None) -> dict[str, Any]:
        """HEAD's fork (``/api/session/branch``) → the response (``session_id`` of the fork, ...)."""
        body: dict[str, Any] = {"session_id": session_id}
        if keep_count is not None:
            body["keep_count"] = keep_count
        if title is not None:
            body["title"] = title
        return dict(self.request("POST", "/api/session/branch", body))

    def retry(self, session_id: str) -> dict[str, Any]:
        """HEAD's /retry command, first half: cut the last exchange (``last_user_text`` comes back)."""
        return dict(self.request("POST", "/api/session/retry", {"session_id": session_id}))

    def undo(self, session_id: str) -> dict[str, Any]:
        return dict(self.request("POST", "/api/session/undo", {"session_id": session_id}))

    def truncate(self, session_id: str, keep_count: int) -> dict[str, Any]:
        """Edit / v0.50.12's retry, first half: keep the first ``keep_count`` messages."""
        return dict(self.request("POST", "/api/session/truncate", {"session_id": session_id, "keep_count": keep_count}))

    def clear(self, session_id: str) -> dict[str, Any]:
        return dict(self.request("POST", "/api/session/clear", {"session_id": session_id}))

    def compress(self, session_id: str, timeout: float = 120.0) -> dict[str, Any]:
        """HEAD's manual compression, the synchronous route."""
        return dict(self.request("POST", "/api/session/compress", {"session_id": session_id}, timeout=timeout))

    def pin(self, session_id: str, pinned: bool = True) -> dict[str, Any]:
        return dict(self.request("POST", "/api/session/pin", {"session_id": session_id, "pinned": pinned}))

    def archive(self, session_id: str, archived: bool = True) -> dict[str, Any]:
        return dict(self.request("POST", "/api/session/archive", {"session_id": session_id, "archived": archived}))

    def create_project(self, name: str) -> str:
        answer = self.request("POST", "/api/projects/create", {"name": name})
        project = answer.get("project") or answer
        return str(project["project_id"])

    def move(self, session_id: str, project_id: str | None) -> dict[str, Any]:
        return dict(self.request("POST", "/api/session/move", {"session_id": session_id, "project_id": project_id}))

    def delete(self, session_id: str) -> dict[str, Any]:
        return dict(self.request("POST", "/api/session/delete", {"session_id": session_id}))

    def import_json(self, export: Mapping[str, Any]) -> dict[str, Any]:
        """Import a chat export (the file ``/api/session/export`` gives) → the new chat."""
        return dict(self.request("POST", "/api/session/import", dict(export))["session"])

    def import_cli(self, session_id: str) -> dict[str, Any]:
        """Open a hermes CLI session in the WebUI (``/api/session/import_cli``) → the chat."""
        return dict(self.request("POST", "/api/session/import_cli", {"session_id": session_id})["session"])

    def cleanup(self, zero_message: bool = False) -> dict[str, Any]:
        """``/api/sessions/cleanup`` (Untitled, 0 messages) or ``/api/sessions/cleanup_zero_message``."""
        path = "/api/sessions/cleanup_zero_message" if zero_message else "/api/sessions/cleanup"
        return dict(self.request("POST", path, {}))

    def session_api(self, session_id: str) -> dict[str, Any]:
        return dict(self.request("GET", f"/api/session?session_id={session_id}")["session"])

    def session_json(self, session_id: str, timeout: float = 3.0) -> dict[str, Any]:
        """The WebUI's own file for a chat (what its Session.save wrote).

        v0.50.12 writes the file in place (``write_text``, not an atomic
        replace), so a read can meet a half-written file: retry briefly.
        """
        path = self.world.session_file(session_id)
        deadline = time.monotonic() + timeout
        while True:
            try:
                return dict(json.loads(path.read_text(encoding="utf-8")))
            except ValueError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.02)

    def wait_session(self, session_id: str, predicate: Any, timeout: float = 30.0) -> dict[str, Any]:
        """Poll the chat's JSON file until ``predicate(data)`` holds (bounded)."""
        deadline = time.monotonic() + timeout
        last: dict[str, Any] = {}
        while time.monotonic() < deadline:
            try:
                last = self.session_json(session_id)
                if predicate(last):
                    return last
            except (OSError, ValueError):
                pass
            time.sleep(0.1)
        raise TimeoutError(f"session {session_id} never satisfied the condition; last: {json.dumps(last)[:2000]}")

    # ── the library inside the server ─────────────────────────────────────
    def _control(self, path: str, timeout: float = 30.0) -> Any:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.control_port}{path}", timeout=timeout) as resp:
            return json.loads(resp.read())

    def flush(self, timeout: float = 10.0) -> bool:
        return bool(self._control(f"/flush?timeout={timeout}", timeout=timeout + 5)["flushed"])

    def stats(self) -> dict[str, Any]:
        return dict(self._control("/stats"))


@contextmanager
def running_host(src: Path, world: HermesWorld, workdir: Path, **kwargs: Any) -> Iterator[HostServer]:
    """Start a host and always stop it (by PID), whatever the test did."""
    server = HostServer(src, world, workdir, **kwargs)
    try:
        server.start()
        yield server
    finally:
        server.stop()


# ── reading state.db without hermes' writer ───────────────────────────────────
def db_rows(db_path: Path, sql: str, params: tuple[Any, ...] = ()) -> list[dict[str, Any]]:
    """Rows as dicts through a short-lived read-only connection."""
    import sqlite3

    if not db_path.exists():
        return []
    conn = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True, timeout=10)
    conn.row_factory = sqlite3.Row
    try:
        return [dict(r) for r in conn.execute(sql, params).fetchall()]
    finally:
        conn.close()


def session_row(db_path: Path, session_id: str) -> dict[str, Any] | None:
    rows = db_rows(db_path, "SELECT * FROM sessions WHERE id = ?", (session_id,))
    return rows[0] if rows else None


def message_rows(db_path: Path, session_id: str) -> list[dict[str, Any]]:
    return db_rows(db_path, "SELECT * FROM messages WHERE session_id = ? ORDER BY id", (session_id,))
