"""``install()`` and the lifecycle around the wrapt hooks.

Owns the one installation state of the process (target, switches, adapter,
capture, writer, sweep, patches), guarded by a lock. The save wrapper calls
the host's save first, outside any guard, so the host's result and
exceptions pass through untouched; only then, inside a guard that logs and
counts, it asks the capture for a snapshot and hands it to the writer.
The first snapshot a process queues also starts the reconcile sweep, here:
both background threads start lazily, and the writer starts nothing but
itself.

Besides the session's save, ``install()`` wraps (same line, no host edit)
hermes-agent's ``AIAgent.run_conversation`` — to learn which chats
hermes-agent writes itself and the usage the WebUI does not keep — and,
while mirroring is on, silences the host's own state.db bridge.

Never: raise into the host's save or import, stack a second wrapper,
restore over somebody else's wrapper, import heavy modules or start a
thread inside a post-import hook.
"""

from __future__ import annotations

import importlib
import inspect
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import wrapt

from .. import forksafe
from ..diagnostics import RateLimitedLog, Stats, logger, report_internal_error
from ..engine.transcripts import TranscriptWriter
from ..profiles import Homes
from ..settings import ENV_TRANSCRIPTS, TRANSCRIPTS_SETTING_KEY, Explicit, Switch
from ..snapshot import UsageSnapshot
from ..sweep import DEFAULT_INTERVAL_S, ReconcileSweep
from ..writer import Writer, WriterConfig
from . import agent_usage, host_bridge
from .adapter import webui_session_adapter
from .agent_usage import AgentUsage
from .capture import Capture
from .patching import Patch, apply_patch, restore_patch, split_target, when_imported

__all__ = [
    "DEFAULT_TARGET",
    "TargetNotFound",
    "install",
    "uninstall",
    "flush",
    "stats",
    "is_installed",
    "capture",
    "InstallState",
    "current_state",
]

DEFAULT_TARGET = "api.models:Session.save"


class TargetNotFound(LookupError):
    """The target module or attribute does not exist (raised only when strict)."""


@dataclass(eq=False)  # compared and hashed by identity (forksafe keeps it in a WeakSet)
class _Installation:
    """Everything install() sets up, in one place, behind one lock."""

    lock: threading.RLock = field(default_factory=threading.RLock)
    stats: Stats = field(default_factory=Stats)
    log: RateLimitedLog = field(default_factory=RateLimitedLog)
    generation: int = 0
    target: str | None = None
    patches: dict[str, Patch] = field(default_factory=dict)
    switch: Switch = field(default_factory=lambda: Switch(False))
    # The switch of capture() and decorators while nothing is installed: env, then settings.
    env_switch: Switch | None = None
    transcripts: Switch = field(default_factory=lambda: Switch(False))
    agent: AgentUsage = field(init=False)
    capture: Capture | None = None
    # One capture (one gate) per adapter, install()'s and the decorators' alike, by id(adapter)
    # (each capture holds its adapter, so an id is never reused while listed here).
    captures: dict[int, Capture] = field(default_factory=dict)
    homes: Homes | None = None
    writer: Writer | None = None
    sweep: ReconcileSweep | None = None
    # The process whose writer started the sweep (a forked child's differs: it starts its own).
    sweep_pid: int | None = None

    def __post_init__(self) -> None:
        self.agent = AgentUsage(self.stats, self.log)
        self.capture = self.capture_for(webui_session_adapter)
        forksafe.register(self)

    def _after_fork_in_child(self) -> None:
        # install() may have held the lock in another thread of the parent.
        self.lock = threading.RLock()

    def capture_for(self, adapter: Callable[[Any], UsageSnapshot | None]) -> Capture:
        """The capture of ``adapter``: saves read by one adapter share one gate, whoever captures them."""
        capture = self.captures.get(id(adapter))
        if capture is None:
            with self.lock:
                capture = self.captures.get(id(adapter))
                if capture is None:
                    capture = Capture(self.stats, self.log, self.agent, adapter)
                    self.captures[id(adapter)] = capture
        return capture

    def get_homes(self) -> Homes:
        homes = self.homes
        if homes is None:
            with self.lock:
                if self.homes is None:
                    self.homes = Homes.capture()
                homes = self.homes
        return homes

    def get_writer(self) -> Writer:
        """The process's one writer, created on first use (``capture()`` works without ``install()``)."""
        writer = self.writer
        if writer is None:
            with self.lock:
                if self.writer is None:
                    self.writer = Writer(
                        self.stats,
                        self.log,
                        locate=lambda profile: self.get_homes().state_db(profile),
                        transcripts=lambda: self.transcripts.enabled(),
                        on_dropped=self.forget,
                        write_transcript=TranscriptWriter(self.stats),
                    )
                writer = self.writer
        return writer

    def forget(self, snapshot: UsageSnapshot) -> None:
        """The writer gave up on ``snapshot``: every gate lets the chat's next save through."""
        for capture in list(self.captures.values()):
            capture.forget_chat(snapshot.session_id)
        self.agent.give_back(snapshot.session_id, snapshot.ledger)

    def submit(self, snapshot: UsageSnapshot) -> bool:
        """Hand ``snapshot`` to the writer; the first one a process queues also starts its sweep.

        So the sweep starts lazily, like the writer, and anew in a forked
        child (whose first save starts a new writer thread there too).
        """
        writer = self.get_writer()
        queued = writer.submit(snapshot)
        if queued and self.sweep_pid != writer.pid:
            self.start_sweep(writer.pid)
        return queued

    def start_sweep(self, pid: int) -> None:
        self.sweep_pid = pid
        sweep = self.sweep
        if sweep is not None:
            sweep.start()

    def stop_sweep(self) -> None:
        sweep, self.sweep = self.sweep, None
        if sweep is not None:
            sweep.stop(timeout=1.0)


_state = _Installation()


# ---------------------------------------------------------------- save path


def capture(session: Any) -> bool:
    """Mirror ``session`` if mirroring is on and it changed; True when queued.

    What the save wrapper runs after a successful save; frontends that do
    not want wrapt can call it themselves after saving. Works without
    ``install()``: the switch is then ``WEBUI_INSIGHTS_ENABLED``, else the
    WebUI setting ``sync_to_insights`` (off when neither says on), and the
    process's one background writer starts on the first mirrored save —
    the same writer ``install()`` uses, so ``flush()`` and ``stats()``
    cover it. Never raises.
    """
    state = _state
    try:
        return _capture(session, state, _default_switch(state))
    except Exception as exc:
        report_internal_error(state.stats, state.log, "capture", exc)
        return False


def _default_switch(state: _Installation) -> Switch:
    """install()'s switch while installed, else one built from env and settings."""
    if state.target is not None:
        return state.switch
    env_switch = state.env_switch
    if env_switch is not None:
        return env_switch
    with state.lock:
        if state.target is not None:
            return state.switch
        if state.env_switch is None:
            state.env_switch = Switch(None, log=state.log, stats=state.stats)
        return state.env_switch


def _capture(session: Any, state: _Installation, switch: Switch, chosen: Capture | None = None) -> bool:
    cap = chosen or state.capture
    assert cap is not None
    if not switch.enabled():
        next(cap.saves_seen)
        next(cap.skipped_disabled)
        cap.drop_agent_usage(session)
        return False
    snapshot = cap.take(session)
    if snapshot is None:
        return False
    return state.submit(snapshot)


def _make_save_wrapper(state: _Installation, cap: Capture) -> Callable[..., Any]:
    """The wrapt wrapper: the host's call first and unguarded, then ours, guarded.

    A save with nothing new (almost every save on a busy WebUI) is answered
    by the capture's gate before any snapshot is built.
    """
    switch_enabled = state.switch.enabled  # install() sets the switch before it wraps
    take, drop_agent_usage = cap.take, cap.drop_agent_usage
    skipped_disabled, saves_seen = cap.skipped_disabled, cap.saves_seen

    def save_wrapper(wrapped: Callable[..., Any], instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        result = wrapped(*args, **kwargs)
        try:
            # A method's session is ``self``; a static or class method's, its first argument.
            session = (
                instance if instance is not None and not isinstance(instance, type) else (args[0] if args else None)
            )
            if not switch_enabled():
                next(saves_seen)
                next(skipped_disabled)
                drop_agent_usage(session)
                return result
            snapshot = take(session)  # None for a save with nothing new: almost every save
            if snapshot is not None:
                state.submit(snapshot)
        except Exception as exc:
            report_internal_error(state.stats, state.log, "save hook", exc)
        return result

    return save_wrapper


def _make_agent_wrapper(state: _Installation) -> Callable[..., Any]:
    agent = state.agent

    def run_wrapper(wrapped: Callable[..., Any], instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        try:
            return wrapped(*args, **kwargs)
        finally:
            try:
                if instance is not None:
                    agent.observe(instance)
            except Exception as exc:
                report_internal_error(state.stats, state.log, "agent hook", exc)

    return run_wrapper


# ---------------------------------------------------------------- lifecycle


def _patch_when_imported(
    state: _Installation,
    generation: int,
    name: str,
    target: str,
    make: Callable[[], Callable[..., Any]],
    *,
    optional: bool = False,
) -> None:
    """Wrap ``target`` ("module:Class.attr") now or when its module is imported, as patch ``name``.

    ``optional``: the module may lack the attribute (a host generation
    without that function) — that is normal, logged at debug, not wrapped.
    Any other failure to wrap is still logged as one.
    """
    module_name, path = split_target(target)

    def apply(module: Any) -> None:
        with state.lock:
            if state.generation != generation or name in state.patches:
                return  # uninstalled since, or already ours
            if optional and not _has_attribute_path(module, path):
                logger.debug("webui-insights: %s has no %s; nothing to wrap", module_name, path)
                return
            patch = apply_patch(module, path, make())
            if patch is not None:
                state.patches[name] = patch
                logger.debug("webui-insights: wrapped %s", target)

    when_imported(module_name, apply, state.log, target)


def _has_attribute_path(module: Any, path: str) -> bool:
    """``module`` has ``path`` ("Class.attr" or "function"), without running any descriptor."""
    obj = module
    for part in path.split("."):
        try:
            obj = inspect.getattr_static(obj, part)
        except AttributeError:
            return False
    return True


def install(
    *,
    target: str = DEFAULT_TARGET,
    enabled: Explicit = None,
    transcripts: Explicit = None,
    adapter: Callable[[Any], UsageSnapshot | None] | None = None,
    strict: bool = False,
    settings_ttl: float = 1.0,
    writer_config: WriterConfig | None = None,
    reconcile_interval: float | None = None,
    agent_usage_hook: bool = True,
    take_over_host_bridge: bool = True,
) -> bool:
    """Wrap ``target``'s save so each successful save mirrors the chat into hermes' state.db.

    ``enabled``: True/False, or a callable asked on every save; default:
    env ``WEBUI_INSIGHTS_ENABLED``, then the WebUI setting
    ``sync_to_insights``, then off. ``transcripts`` (or env
    ``WEBUI_INSIGHTS_TRANSCRIPTS``, or the WebUI setting
    ``sync_transcripts_to_state_db``; off by default) also copies the
    chat's messages into state.db so the agent's session search finds them.

    ``reconcile_interval`` (seconds; 0 = off) paces a low-priority sweep
    that re-mirrors WebUI session files whose state.db rows fell behind, so
    an update lost to a crash or a full queue is only late; by default every
    15 minutes with the WebUI adapter, off with a custom one.

    ``agent_usage_hook`` wraps hermes-agent's ``AIAgent.run_conversation``
    to learn which chats hermes-agent writes itself and the usage the WebUI
    does not keep; ``take_over_host_bridge`` silences the host's own
    ``api.state_sync`` while mirroring is on.

    The hermes root home (where "default" chats go; other profiles under its
    ``profiles/``) is captured now, before the host switches profiles.
    Works whether the target module is imported before or after this call.
    A second call while installed logs a warning and changes nothing
    (returns False). With ``strict=True`` a missing target raises
    TargetNotFound now; otherwise it is logged and skipped.
    """
    split_target(target)  # a malformed target raises before anything changes
    state = _state
    with state.lock:
        if not _claim(state, target, strict):
            return False
        state.generation += 1
        generation = state.generation
        _configure(state, enabled, transcripts, adapter or webui_session_adapter, settings_ttl)
        writer = state.get_writer()
        if writer_config is not None:
            writer.reconfigure(writer_config)
        writer.restart()
        if reconcile_interval is None:
            reconcile_interval = DEFAULT_INTERVAL_S if adapter is None else 0.0
        _replace_sweep(state, reconcile_interval)
        cap = state.capture
    assert cap is not None
    _wrap(state, generation, target, cap, agent_usage_hook, take_over_host_bridge)
    return True


def _claim(state: _Installation, target: str, strict: bool) -> bool:
    """Take ``target`` for this installation: False when installed already (a warning, no change)."""
    if state.target is not None:
        logger.warning("webui-insights: already installed on %s; ignoring install(%r)", state.target, target)
        return False
    if strict:
        module_name, path = split_target(target)
        try:
            wrapt.resolve_path(importlib.import_module(module_name), path)
        except Exception as exc:
            raise TargetNotFound(f"webui-insights: cannot wrap {target}: {exc}") from exc
    state.target = target
    return True


def _configure(
    state: _Installation,
    enabled: Explicit,
    transcripts: Explicit,
    adapter: Callable[[Any], UsageSnapshot | None],
    settings_ttl: float,
) -> None:
    """The homes (captured now, before the host switches profiles), the switches and the capture."""
    state.homes = Homes.capture()
    state.switch = Switch(enabled, ttl=settings_ttl, log=state.log, stats=state.stats)
    state.transcripts = Switch(
        transcripts,
        env_name=ENV_TRANSCRIPTS,
        setting_key=TRANSCRIPTS_SETTING_KEY,
        ttl=settings_ttl,
        log=state.log,
        stats=state.stats,
    )
    state.capture = state.capture_for(adapter)


def _replace_sweep(state: _Installation, interval: float) -> None:
    """A new sweep for this installation, started with the writer (now, if it runs already)."""
    state.stop_sweep()
    if interval <= 0:
        return
    assert state.homes is not None
    state.sweep = ReconcileSweep(
        interval,
        enabled=state.switch.enabled,
        homes=state.homes,
        stats=state.stats,
        log=state.log,
        transcripts=state.transcripts.enabled,
    )
    writer = state.writer
    if writer is not None and writer.running:  # a re-install: the first queued save is behind us
        state.start_sweep(writer.pid)
    else:
        state.sweep_pid = None  # the next queued save starts it


def _wrap(state: _Installation, generation: int, target: str, cap: Capture, agent_hook: bool, bridge: bool) -> None:
    """Wrap the save, and hermes-agent's run and the host's bridge when asked, now or on import."""
    _patch_when_imported(state, generation, "save", target, lambda: _make_save_wrapper(state, cap))
    if agent_hook:
        _patch_when_imported(state, generation, "agent", agent_usage.TARGET, lambda: _make_agent_wrapper(state))
    if bridge:
        for function in host_bridge.BRIDGE_FUNCTIONS:
            _patch_when_imported(
                state,
                generation,
                "bridge:" + function,
                f"{host_bridge.BRIDGE_MODULE}:{function}",
                lambda: host_bridge.make_bridge_wrapper(state.switch.enabled, state.stats),
                optional=True,  # v0.50.12's bridge has no sync_session_title: normal, not an error
            )


def uninstall() -> bool:
    """Put back every original we wrapped, where the attribute is still our wrapper.

    Pending updates stay queued and are still written; ``flush()`` waits for them.
    Returns True when the session's save was restored.
    """
    state = _state
    state.stop_sweep()
    with state.lock:
        patches, state.patches = state.patches, {}
        state.target = None
        state.generation += 1
        restored = {name: restore_patch(patch) for name, patch in patches.items()}
    return restored.get("save", False)


def is_installed() -> bool:
    return "save" in _state.patches


def flush(timeout: float = 5.0) -> bool:
    """Block until every pending update landed (True) or ``timeout`` passed (False)."""
    writer = _state.writer
    return True if writer is None else writer.flush(timeout)


def stats() -> dict[str, Any]:
    """Counters since start, and the writer's view of each state.db.

    Saves seen, snapshots queued, rows written, chats by outcome, skipped
    and dropped by reason (``skipped["bad_cost"]``, ``dropped["queue_full"]``,
    ...), failures and internal errors; ``pending``; ``databases``: per
    state.db the writer has used, whether its handle is open, failures in a
    row, the last error (``"Class: message"``) and when, the next try and
    the last success (epoch seconds); ``sweep``: the reconcile sweep's
    interval, passes and whether this process leads it.
    """
    state = _state
    writer = state.writer
    result = state.stats.as_dict()
    result["pending"] = writer.pending_count() if writer is not None else 0
    result["databases"] = writer.health() if writer is not None else []
    result["installed"] = "save" in state.patches
    result["target"] = state.target
    result["hooks"] = sorted(state.patches)
    sweep = state.sweep
    result["sweep"] = sweep.describe() if sweep is not None else None
    return result


def _reset_for_tests() -> None:
    """Uninstall, stop the writer briefly, and start from a fresh state object."""
    global _state
    uninstall()
    writer = _state.writer
    if writer is not None:
        writer.shutdown(timeout=2.0)
    _state = _Installation()


# ---------------------------------------------------------------- read by status


@dataclass(frozen=True, slots=True)
class InstallState:
    """This process's installation as ``status`` reports it: a copy, so a reader changes nothing.

    Outside a process that called ``install()``, the switches are what a
    new installation would find (environment, then the WebUI's settings).
    """

    installed: bool
    enabled: bool
    enabled_source: str
    transcripts: bool
    transcripts_source: str
    stats: dict[str, Any] | None  # ``stats()``, while installed


def current_state() -> InstallState:
    """What ``status`` shows of this process's mirroring (the hook layer's one public read)."""
    state = _state
    installed = is_installed()
    switch = state.switch if installed else Switch(None)
    transcripts_switch = (
        state.transcripts if installed else Switch(None, env_name=ENV_TRANSCRIPTS, setting_key=TRANSCRIPTS_SETTING_KEY)
    )
    enabled, enabled_source = switch.describe()
    transcripts, transcripts_source = transcripts_switch.describe()
    return InstallState(
        installed=installed,
        enabled=enabled,
        enabled_source=enabled_source,
        transcripts=transcripts,
        transcripts_source=transcripts_source,
        stats=stats() if installed else None,
    )
