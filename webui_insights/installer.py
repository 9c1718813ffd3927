"""The wrapt hook on the host's save, and the lifecycle around it.

Owns the one installation state (target, switch, adapter, save gate, writer),
guarded by a lock. The wrapper calls the host's save first, outside any
guard, so the host's result and exceptions pass through untouched; only then,
inside a guard that logs and counts, it reads a snapshot, compares it with
the last one queued for that chat, and hands a changed one to the writer.

Never: raise into the host's save or import, stack a second wrapper, restore
over somebody else's wrapper, import heavy modules or start a thread inside
the post-import hook.
"""

from __future__ import annotations

import importlib
import logging
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import wrapt

from .diagnostics import RateLimitedLog, Stats, logger, report_internal_error
from .reconcile import DEFAULT_INTERVAL_S, ReconcileSweep
from .settings import ENV_TRANSCRIPTS, TRANSCRIPTS_SETTING_KEY, Explicit, Switch
from .snapshot import (
    InvalidSnapshot,
    UsageSnapshot,
    WebUISessionAdapter,
    checked,
    next_sequence,
    webui_session_adapter,
)
from .transcript import TranscriptTracker
from .writer import Writer, WriterConfig

__all__ = [
    "DEFAULT_TARGET",
    "TargetNotFound",
    "install",
    "uninstall",
    "flush",
    "stats",
    "is_installed",
    "capture",
]

DEFAULT_TARGET = "api.models:Session.save"
# How many chats the save gate remembers; past it the oldest is forgotten,
# which only means its next save is compared against nothing and written.
_GATE_LIMIT = 10_000


class TargetNotFound(LookupError):
    """The target module or attribute does not exist (raised only when strict)."""


@dataclass(slots=True)
class _Patch:
    parent: Any
    attribute: str
    original: Any
    wrapper: Any


@dataclass
class _Installation:
    """Everything install() sets up, in one place, behind one lock."""

    lock: threading.RLock = field(default_factory=threading.RLock)
    stats: Stats = field(default_factory=Stats)
    log: RateLimitedLog = field(default_factory=RateLimitedLog)
    generation: int = 0
    target: str | None = None
    patch: _Patch | None = None
    switch: Switch = field(default_factory=lambda: Switch(False))
    transcripts: Switch = field(default_factory=lambda: Switch(False))
    tracker: TranscriptTracker = field(default_factory=TranscriptTracker)
    adapter: Callable[[Any], UsageSnapshot | None] = webui_session_adapter
    # (profile, session_id) -> fingerprint of the last snapshot queued.
    gate: dict[tuple[Any, Any], tuple[Any, ...]] = field(default_factory=dict)
    writer: Writer | None = None
    # Writers replaced by a later install(writer_config=...): still landing their work.
    retired: list[Writer] = field(default_factory=list)
    sweep: ReconcileSweep | None = None

    def __post_init__(self) -> None:
        # Counters bumped on every save, fetched once (see Stats.counter).
        self.saves_seen = self.stats.counter("saves_seen")
        self.skipped_disabled = self.stats.counter("skipped.disabled")
        self.skipped_unchanged = self.stats.counter("skipped.unchanged")

    def get_writer(self) -> Writer:
        writer = self.writer
        if writer is None:
            with self.lock:
                if self.writer is None:
                    self.writer = self.new_writer(None)
                writer = self.writer
        return writer

    def new_writer(self, config: WriterConfig | None) -> Writer:
        return Writer(self.stats, self.log, config, on_dropped=self.forget, on_start=self.start_sweep)

    def start_sweep(self) -> None:
        """Runs in the writer thread as it starts (so also in a forked child)."""
        sweep = self.sweep
        if sweep is not None:
            sweep.start()

    def stop_sweep(self) -> None:
        sweep, self.sweep = self.sweep, None
        if sweep is not None:
            sweep.stop(timeout=1.0)

    def forget(self, key: tuple[Any, Any]) -> None:
        """The writer gave up on ``key``: let its next save through the gate.

        Its transcript is sent whole next time, since what state.db holds of
        it is no longer known.
        """
        self.gate.pop(key, None)
        self.tracker.forget(key)


_state = _Installation()


# ---------------------------------------------------------------- save path


def capture(session: Any, state: _Installation | None = None) -> bool:
    """Mirror ``session`` if mirroring is on and it changed; True when queued.

    This is what the wrapper runs after a successful save; frontends that do
    not want wrapt can call it themselves after saving. Never raises.
    """
    state = state or _state
    try:
        return _capture(session, state, state.adapter)
    except Exception as exc:
        report_internal_error(state.stats, state.log, "capture", exc)
        return False


def _capture(
    session: Any,
    state: _Installation,
    adapter: Callable[[Any], UsageSnapshot | None],
    fingerprint: tuple[Any, ...] | None = None,
) -> bool:
    """The save hook's work; ``fingerprint``, when the caller already read it."""
    next(state.saves_seen)
    if not state.switch.enabled():
        next(state.skipped_disabled)
        return False
    fingerprint_of = getattr(adapter, "fingerprint", None)
    if fingerprint is None and fingerprint_of is not None:
        fingerprint = fingerprint_of(session)
    key = _gate_key(fingerprint)
    if key is not None and state.gate.get(key) == fingerprint:
        next(state.skipped_unchanged)
        return False
    try:
        snapshot = _read_snapshot(session, adapter, fingerprint)
    except InvalidSnapshot as exc:
        state.stats.skip(exc.reason)
        state.log.warning("invalid:" + exc.reason, "webui-insights: not mirroring a chat (%s): %s", exc.reason, exc)
        if key is not None:
            _remember(state, key, fingerprint)  # count a bad session once per change
        return False
    if snapshot is not None and fingerprint is None:
        # An adapter without a cheap fingerprint: compare whole snapshots.
        fingerprint, key = snapshot.fingerprint(), snapshot.key
        if state.gate.get(key) == fingerprint:
            next(state.skipped_unchanged)
            return False
    if key is not None:
        _remember(state, key, fingerprint)
    if snapshot is None or snapshot.is_blank:
        state.stats.skip("blank")
        return False
    if state.transcripts.enabled():
        messages = getattr(session, "messages", None)
        if isinstance(messages, (list, tuple)):
            tracker = state.tracker
            with tracker.lock:
                # Deltas are built one on the other: number them in that order.
                delta = tracker.delta(snapshot.key, messages)
                snapshot = snapshot._replace(transcript=delta, seq=next_sequence())
    return state.get_writer().submit(snapshot)


def _gate_key(fingerprint: tuple[Any, ...] | None) -> tuple[str | None, str] | None:
    """(profile, session_id) from a fingerprint, if both can be dict keys."""
    if fingerprint is None:
        return None
    sid, profile = fingerprint[0], fingerprint[1]
    if type(sid) is str and (profile is None or type(profile) is str):
        return (profile or None, sid)
    return None


def _read_snapshot(
    session: Any, adapter: Callable[[Any], UsageSnapshot | None], fingerprint: tuple[Any, ...] | None
) -> UsageSnapshot | None:
    """A validated snapshot (None: nothing to mirror); raises InvalidSnapshot."""
    if fingerprint is not None and type(adapter) is WebUISessionAdapter:
        # The default adapter validates while it builds, from what it already read.
        return adapter.snapshot(session, fingerprint)
    raw = adapter(session)
    return None if raw is None else checked(raw)


def _remember(state: _Installation, key: tuple[str | None, str], fingerprint: Any) -> None:
    """What was last queued (or refused) for ``key``; the oldest is forgotten past the limit."""
    gate = state.gate
    gate.pop(key, None)
    gate[key] = fingerprint
    if len(gate) > _GATE_LIMIT:
        try:
            forgotten = next(iter(gate))
            del gate[forgotten]
            state.tracker.forget(forgotten)
        except (StopIteration, KeyError, RuntimeError):
            pass


def _make_save_wrapper(state: _Installation, adapter: Callable[[Any], UsageSnapshot | None]) -> Callable[..., Any]:
    """The wrapt wrapper: the host's call first and unguarded, then ours, guarded.

    A save with nothing new is answered here, without a further call: on a
    busy WebUI that is almost every save, and every call costs ~0.1 µs.
    """
    fingerprint_of = getattr(adapter, "fingerprint", None)
    gate, saves_seen, unchanged = state.gate, state.saves_seen, state.skipped_unchanged
    switch_enabled = state.switch.enabled  # install() sets the switch before it wraps

    def save_wrapper(wrapped: Callable[..., Any], instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        result = wrapped(*args, **kwargs)
        try:
            session = instance if instance is not None else (args[0] if args else None)
            fingerprint = None
            if fingerprint_of is not None and switch_enabled():
                fingerprint = fingerprint_of(session)
                sid, profile = fingerprint[0], fingerprint[1]
                # Inline _gate_key: only str keys are looked up; a bad id or
                # profile goes on to _capture, to be refused and counted.
                if (
                    type(sid) is str
                    and (profile is None or type(profile) is str)
                    and gate.get((profile or None, sid)) == fingerprint
                ):
                    next(saves_seen)
                    next(unchanged)
                    return result
            _capture(session, state, adapter, fingerprint)
        except Exception as exc:
            report_internal_error(state.stats, state.log, "save hook", exc)
        return result

    return save_wrapper


# ---------------------------------------------------------------- lifecycle


def _split_target(target: str) -> tuple[str, str]:
    module, sep, path = target.partition(":")
    if not sep or not module or not path:
        raise ValueError(f"target must look like 'package.module:Class.method', got {target!r}")
    return module, path


def _apply(module: Any, path: str, state: _Installation, generation: int) -> None:
    """Patch ``path`` on ``module`` unless it is ours already or we were uninstalled."""
    with state.lock:
        if state.generation != generation or state.patch is not None:
            return  # post-import hooks cannot be unregistered: check "still wanted?"
        parent, attribute, original = wrapt.resolve_path(module, path)
        if isinstance(original, wrapt.FunctionWrapper) and getattr(original, "_self_wrapper", None) is not None:
            if getattr(original._self_wrapper, "__webui_insights__", False):
                return
        wrapper_fn = _make_save_wrapper(state, state.adapter)
        wrapper_fn.__webui_insights__ = True  # type: ignore[attr-defined]
        wrapper = wrapt.FunctionWrapper(original, wrapper_fn)
        wrapt.apply_patch(parent, attribute, wrapper)
        state.patch = _Patch(parent, attribute, original, wrapper)
        logger.debug("webui-insights: wrapped %s.%s", getattr(module, "__name__", module), path)


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
) -> bool:
    """Wrap ``target``'s save so each successful save mirrors its usage.

    ``transcripts`` (or env ``WEBUI_INSIGHTS_TRANSCRIPTS``, or the WebUI
    setting ``sync_transcripts_to_state_db``; off by default) also copies the
    chat's messages, content included, into state.db so the agent's session
    search finds them; it only acts while mirroring itself is on.

    ``reconcile_interval`` (seconds; 0 = off) paces a low-priority sweep that
    re-mirrors WebUI session files whose totals are ahead of state.db, so an
    update lost to a crash or a full queue is only late. It runs in its own
    thread, started with the writer, first pass 30 s later; by default every
    15 minutes with the WebUI adapter, off with a custom one (it reads the
    WebUI's session files).

    Works whether the target module is imported before or after this call.
    A second call while installed logs a warning and changes nothing
    (returns False). With ``strict=True`` a missing target module or
    attribute raises TargetNotFound now; otherwise it is logged and skipped.
    """
    module_name, path = _split_target(target)
    state = _state
    with state.lock:
        if state.target is not None:
            logger.warning("webui-insights: already installed on %s; ignoring install(%r)", state.target, target)
            return False
        state.generation += 1
        generation = state.generation
        state.target = target
        state.adapter = adapter or webui_session_adapter
        state.switch = Switch(enabled, ttl=settings_ttl, log=state.log)
        state.transcripts = Switch(
            transcripts, env_name=ENV_TRANSCRIPTS, setting_key=TRANSCRIPTS_SETTING_KEY, ttl=settings_ttl, log=state.log
        )
        state.gate.clear()
        state.tracker = TranscriptTracker()
        if reconcile_interval is None:
            reconcile_interval = DEFAULT_INTERVAL_S if adapter is None else 0.0
        state.stop_sweep()
        if reconcile_interval > 0:
            state.sweep = ReconcileSweep(
                reconcile_interval, enabled=state.switch.enabled, stats=state.stats, log=state.log
            )
        if writer_config is not None or state.writer is None:
            if state.writer is not None:
                state.writer.retire()
                state.retired.append(state.writer)
            state.writer = state.new_writer(writer_config)
        else:
            state.writer.restart()

    def on_import(module: Any) -> None:
        try:
            _apply(module, path, state, generation)
        except Exception as exc:  # never break the host's import
            state.log.emit(logging.ERROR, "target", "webui-insights: cannot wrap %s: %s", target, exc)

    if strict:
        try:
            module = importlib.import_module(module_name)
            wrapt.resolve_path(module, path)
        except Exception as exc:
            with state.lock:
                state.target = None
                state.generation += 1
            raise TargetNotFound(f"webui-insights: cannot wrap {target}: {exc}") from exc
    wrapt.register_post_import_hook(on_import, module_name)
    if module_name not in sys.modules:
        logger.debug("webui-insights: will wrap %s when %s is imported", target, module_name)
    return True


def uninstall() -> bool:
    """Put back the original save, if the attribute is still our wrapper.

    Pending updates stay queued and are still written; ``flush()`` waits for them.
    """
    state = _state
    state.stop_sweep()
    with state.lock:
        patch, state.patch = state.patch, None
        state.target = None
        state.generation += 1
        if patch is None:
            return False
        current = (
            vars(patch.parent).get(patch.attribute)
            if isinstance(patch.parent, type)
            else getattr(patch.parent, patch.attribute, None)
        )
        if current is not patch.wrapper:
            logger.warning(
                "webui-insights: %s.%s was wrapped again after us; leaving it in place",
                getattr(patch.parent, "__name__", patch.parent),
                patch.attribute,
            )
            return False
        setattr(patch.parent, patch.attribute, patch.original)
        return True


def is_installed() -> bool:
    return _state.patch is not None


def _writers() -> list[Writer]:
    state = _state
    state.retired[:] = [w for w in state.retired if w.pending_count()]
    return [*state.retired, *([state.writer] if state.writer is not None else [])]


def flush(timeout: float = 5.0) -> bool:
    """Block until every pending update landed (True) or ``timeout`` passed (False)."""
    deadline = time.monotonic() + max(0.0, timeout)
    landed = True
    for writer in _writers():
        landed = writer.flush(max(0.0, deadline - time.monotonic())) and landed
    return landed


def stats() -> dict[str, Any]:
    """Counters since start (saves seen, queued, written, skipped and dropped by reason, ...)."""
    pending = sum(writer.pending_count() for writer in _writers())
    result = _state.stats.as_dict(pending)
    result["installed"] = _state.patch is not None
    result["target"] = _state.target
    return result


def _reset_for_tests() -> None:
    """Uninstall, stop the writer briefly, and start from a fresh state object."""
    global _state
    uninstall()
    for writer in _writers():
        writer.shutdown(timeout=2.0)
    _state = _Installation()
