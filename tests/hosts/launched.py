"""A real hermes-webui host started through ``webui-insights run``, the way its users start it.

Why separate from ``host.py``'s launcher: here nothing of the test harness
runs inside the host — no ``install()`` line, no runpy, no control server.
The command is the WebUI's own (``python server.py``, ``python bootstrap.py
--foreground`` which execs ``server.py``, ``python bootstrap.py`` which
spawns it detached and exits), behind ``webui-insights run``; whatever
mirrors the chat got there through the launcher's ``PYTHONPATH`` alone.

``LaunchedServer`` reuses :class:`hosts.host.HostServer`'s browser-like HTTP
client and replaces how it starts and stops:

- the launcher's command line and the environment a user would have: the
  world's variables, this interpreter's ``bin`` first on ``PATH`` (the
  ``hermes`` and ``webui-insights`` commands), ``HERMES_WEBUI_PYTHON`` (the
  interpreter bootstrap.py must pick) and ``HERMES_WEBUI_SERVER_CWD`` (HEAD's
  bootstrap would run the server from the agent's folder, here the venv's
  site-packages); ``PYTHONPATH`` holds ``guard_site`` (a sitecustomize of
  the test's own, which the bootstrap must chain to: loopback-only network,
  and a log of each Python process's PID);
- the server is found by PID (a process whose command line names this
  copy's ``server.py``), stopped by PID with the signal the host handles,
  and every wait is bounded.

Without the flush control of ``launcher.py``, state.db is read after the
server stopped (the writer flushes at exit) or polled, bounded.
"""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from .host import HermesWorld, HostServer, free_port, spawn_logged

GUARD_SITE = Path(__file__).with_name("guard_site")
_SCRIPT = Path(sys.executable).with_name("webui-insights")
CLI = [str(_SCRIPT)] if _SCRIPT.exists() else [sys.executable, "-m", "webui_insights"]

# How each start path is spelled; PORT is filled in at start.
START_PATHS: dict[str, tuple[str, ...]] = {
    "server.py": ("server.py",),
    "bootstrap-foreground": ("bootstrap.py", "--foreground", "--no-browser", "--skip-agent-install", "PORT"),
    "bootstrap-spawn": ("bootstrap.py", "--no-browser", "--skip-agent-install", "PORT"),
}
EXECS = frozenset({"server.py", "bootstrap-foreground"})  # the launcher's PID becomes the server's


def tree_digest(root: Path) -> dict[str, str]:
    """sha256 of every file under ``root`` (``__pycache__`` aside), by relative path."""
    out: dict[str, str] = {}
    for path in sorted(root.rglob("*")):
        if path.is_file() and "__pycache__" not in path.parts:
            out[str(path.relative_to(root))] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


def _is_gone(pid: int) -> bool:
    """No such process, or only its zombie (a detached server's parent is whoever adopted it)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rsplit(")", 1)[-1].split()[0] == "Z"


def processes_running(script: Path) -> list[int]:
    """PIDs of live processes whose command line runs ``script`` (resolved against their own cwd)."""
    found: list[int] = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
            cwd = Path(os.readlink(entry / "cwd"))
        except OSError:
            continue
        for raw in argv[1:3]:  # python [-flags] script: the script is among the first arguments
            arg = raw.decode(errors="replace")
            if arg.endswith(script.name) and (cwd / arg).resolve() == script and not _is_gone(int(entry.name)):
                found.append(int(entry.name))
                break
    return found


def wait_gone(pids: Sequence[int], timeout: float) -> list[int]:
    """Wait (bounded) for ``pids`` to end; the ones still alive."""
    deadline = time.monotonic() + timeout
    alive = [p for p in pids if not _is_gone(p)]
    while alive and time.monotonic() < deadline:
        time.sleep(0.05)
        alive = [p for p in alive if not _is_gone(p)]
    return alive


class LaunchedServer(HostServer):
    """``webui-insights run OPTIONS -- python <start path>`` on a host copy, plus the HTTP client."""

    def __init__(
        self,
        src: Path,
        world: HermesWorld,
        workdir: Path,
        *,
        path: str,
        options: Sequence[str] = ("--enabled",),
        extra_env: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(src, world, workdir, install=False, extra_env=extra_env)
        assert path in START_PATHS, path
        self.path = path
        self.options = tuple(options)
        self.site_log = workdir / "sitecustomize.log"
        self.server_py = (src / "server.py").resolve()
        self.server_pid: int | None = None
        self.launcher_exit: int | None = None  # bootstrap-spawn: the launcher ends by itself

    def command(self) -> list[str]:
        args = [a.replace("PORT", str(self.port)) for a in START_PATHS[self.path]]
        return [*CLI, "run", *self.options, "--", sys.executable, *args]

    def env(self) -> dict[str, str]:
        bin_dir = str(Path(sys.executable).parent)
        return self.world.env(
            {
                "HERMES_WEBUI_PORT": str(self.port),
                "PATH": os.pathsep.join([bin_dir, os.environ.get("PATH", "")]),
                "HERMES_WEBUI_PYTHON": sys.executable,
                "HERMES_WEBUI_SERVER_CWD": str(self.src),
                "PYTHONPATH": str(GUARD_SITE),
                "WEBUI_INSIGHTS_TEST_SITE_LOG": str(self.site_log),
                **self.extra_env,
            }
        )

    def _start(self, timeout: float) -> LaunchedServer:
        self.port = free_port()
        self.proc = spawn_logged(self.command(), self.env(), self.src, self.log_path)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            code = self.proc.poll()
            if code is not None and (code != 0 or self.path in EXECS):
                raise RuntimeError(f"launcher exited with {code} during start-up:\n{self.log_tail()}")
            if self._healthy():
                pids = processes_running(self.server_py)
                if pids:
                    self.server_pid = pids[0]
                    if self.path == "bootstrap-spawn":  # bootstrap returns once the server answers /health
                        self.launcher_exit = self.proc.wait(max(1.0, deadline - time.monotonic()))
                    return self
            time.sleep(0.1)
        self.stop()
        raise TimeoutError(f"host not ready after {timeout:.0f} s:\n{self.log_tail()}")

    @property
    def stop_signal(self) -> signal.Signals:
        return signal.SIGTERM if self.traits.handles_sigterm else signal.SIGINT

    def stop_launcher(self, timeout: float = 20.0) -> int | None:
        """Stop the launcher's process by PID as a supervisor would; its exit status (None: not ours to stop)."""
        proc = self.proc
        if proc is None or proc.poll() is not None:
            return None
        os.kill(proc.pid, self.stop_signal)
        try:
            self.exit_code = proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            self.exit_code = proc.wait(10)
        return self.exit_code

    def stop(self, timeout: float = 20.0) -> int | None:
        """Everything this run started ends: the launcher, then any server left (by PID), SIGKILL last."""
        code = self.stop_launcher(timeout)
        left = processes_running(self.server_py)
        for pid in left:
            try:
                os.kill(pid, self.stop_signal)
            except ProcessLookupError:
                pass
        for pid in wait_gone(left, timeout):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        wait_gone(left, 10)
        return code

    def log_tail(self, n: int = 60) -> str:
        """The launcher's output, then (bootstrap-spawn) the detached server's log that bootstrap.py keeps."""
        text = super().log_tail(n)
        for spawned in sorted(self.world.webui_state.glob("bootstrap-*.log")):
            lines = spawned.read_text(errors="replace").splitlines()
            text += f"\n--- {spawned.name}\n" + "\n".join(lines[-n:])
        return text

    def site_log_processes(self) -> list[tuple[int, str]]:
        """(PID, command line) of each Python process in which the test's own, hidden, sitecustomize ran.

        One PID may show several times: exec keeps it (launcher → bootstrap.py → server.py).
        """
        try:
            lines = self.site_log.read_text().splitlines()
        except OSError:
            return []
        out = []
        for line in lines:
            pid, _, cmdline = line.partition("\t")
            if pid.isdigit():
                out.append((int(pid), cmdline))
        return out
