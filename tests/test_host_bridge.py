"""Taking over the host's own state.db bridge: silent while mirroring is on, untouched otherwise.

A small ``api.state_sync`` module (the shape both hermes-webui generations
ship) is written to a temp dir on ``sys.path``; the real one is exercised
by the real-host harness (tests/hosts).
"""

from __future__ import annotations

import importlib
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import wrapt

import webui_insights
from webui_insights.demo_host import TARGET
from webui_insights.hook import host_bridge, installer

BRIDGE = """
calls = []

def sync_session_start(session_id, model=None):
    calls.append(("start", session_id, model))
    return "started"

def sync_session_usage(session_id, input_tokens=0, output_tokens=0, **kw):
    calls.append(("usage", session_id, input_tokens, output_tokens))
    return "usage synced"

def sync_session_title(session_id, title):
    calls.append(("title", session_id, title))
    return "title synced"
"""


@pytest.fixture
def bridge_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    package = tmp_path / "api"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "state_sync.py").write_text(textwrap.dedent(BRIDGE))
    saved: dict[str, Any] = {name: sys.modules.pop(name) for name in ("api", "api.state_sync") if name in sys.modules}
    monkeypatch.syspath_prepend(str(tmp_path))
    yield tmp_path
    installer.uninstall()
    for name in ("api", "api.state_sync"):
        sys.modules.pop(name, None)
    sys.modules.update(saved)


def call_all(bridge: Any) -> list[Any]:
    return [
        bridge.sync_session_start("abcdefabcdef", model="m"),
        bridge.sync_session_usage("abcdefabcdef", input_tokens=5, output_tokens=1),
        bridge.sync_session_title("abcdefabcdef", "A title"),
    ]


def test_the_bridge_does_nothing_while_mirroring_is_on(bridge_dir: Path, hermes_home: Path) -> None:
    bridge = importlib.import_module("api.state_sync")
    installer.install(target=TARGET, enabled=True)
    assert call_all(bridge) == [None, None, None]
    assert bridge.calls == []
    assert webui_insights.stats()["host_bridge_suppressed"] == 3
    assert {"bridge:" + f for f in host_bridge.BRIDGE_FUNCTIONS} <= set(webui_insights.stats()["hooks"])


def test_the_bridge_works_as_before_while_mirroring_is_off(bridge_dir: Path, hermes_home: Path) -> None:
    bridge = importlib.import_module("api.state_sync")
    answers = iter([False, False, False, True])
    installer.install(target=TARGET, enabled=lambda: next(answers))
    assert call_all(bridge) == ["started", "usage synced", "title synced"]
    assert bridge.calls == [
        ("start", "abcdefabcdef", "m"),
        ("usage", "abcdefabcdef", 5, 1),
        ("title", "abcdefabcdef", "A title"),
    ]
    assert bridge.sync_session_title("abcdefabcdef", "Again") is None  # switched on: silent
    assert webui_insights.stats()["host_bridge_suppressed"] == 1


def test_a_switch_that_fails_leaves_the_bridge_working(
    bridge_dir: Path, hermes_home: Path, caplog: pytest.LogCaptureFixture
) -> None:
    bridge = importlib.import_module("api.state_sync")

    def broken() -> bool:
        raise RuntimeError("flag store down")

    installer.install(target=TARGET, enabled=broken)
    assert bridge.sync_session_title("abcdefabcdef", "T") == "title synced"
    assert webui_insights.stats()["switch_errors"] == 1
    assert "the enabled() switch raised RuntimeError: flag store down" in caplog.text


def test_the_bridge_imported_after_install_is_taken_over_too(bridge_dir: Path, hermes_home: Path) -> None:
    installer.install(target=TARGET, enabled=True)
    assert "api.state_sync" not in sys.modules
    bridge = importlib.import_module("api.state_sync")
    assert isinstance(vars(bridge)["sync_session_usage"], wrapt.FunctionWrapper)
    assert call_all(bridge) == [None, None, None]


def test_uninstall_gives_the_bridge_back(bridge_dir: Path, hermes_home: Path) -> None:
    bridge = importlib.import_module("api.state_sync")
    originals = {name: vars(bridge)[name] for name in host_bridge.BRIDGE_FUNCTIONS}
    installer.install(target=TARGET, enabled=True)
    installer.uninstall()
    assert {name: vars(bridge)[name] for name in host_bridge.BRIDGE_FUNCTIONS} == originals
    assert call_all(bridge) == ["started", "usage synced", "title synced"]


def test_the_takeover_can_be_declined(bridge_dir: Path, hermes_home: Path) -> None:
    bridge = importlib.import_module("api.state_sync")
    installer.install(target=TARGET, enabled=True, take_over_host_bridge=False)
    assert call_all(bridge) == ["started", "usage synced", "title synced"]
    assert webui_insights.stats()["host_bridge_suppressed"] == 0


def test_a_host_without_the_bridge_is_fine(hermes_home: Path) -> None:
    assert installer.install(target=TARGET, enabled=True) is True
    assert not any(h.startswith("bridge:") for h in webui_insights.stats()["hooks"])


OLD_BRIDGE = BRIDGE.split("def sync_session_title")[0]  # v0.50.12's bridge: no title function


def test_a_bridge_function_the_host_does_not_have_is_normal_and_logs_nothing(
    bridge_dir: Path, hermes_home: Path, caplog: pytest.LogCaptureFixture
) -> None:
    (bridge_dir / "api" / "state_sync.py").write_text(textwrap.dedent(OLD_BRIDGE))
    caplog.set_level("DEBUG", logger="webui_insights")
    bridge = importlib.import_module("api.state_sync")
    installer.install(target=TARGET, enabled=True)
    assert [r.getMessage() for r in caplog.records if r.levelno >= 30] == []
    assert any("no sync_session_title" in r.getMessage() for r in caplog.records)  # said, at debug
    hooks = set(webui_insights.stats()["hooks"])
    assert {"bridge:sync_session_start", "bridge:sync_session_usage"} <= hooks
    assert "bridge:sync_session_title" not in hooks
    assert (bridge.sync_session_start("abcdefabcdef"), bridge.sync_session_usage("abcdefabcdef")) == (None, None)


def test_a_real_failure_to_wrap_a_bridge_function_is_still_reported(
    bridge_dir: Path, hermes_home: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    importlib.import_module("api.state_sync")

    def broken(module: Any, path: str, wrapper_fn: Any) -> Any:
        if path == "sync_session_title":
            raise RuntimeError("wrapt refused")
        return real_apply(module, path, wrapper_fn)

    real_apply = installer.apply_patch
    monkeypatch.setattr(installer, "apply_patch", broken)
    installer.install(target=TARGET, enabled=True)
    reported = [r.getMessage() for r in caplog.records if r.levelno >= 30]
    assert any("cannot wrap api.state_sync:sync_session_title" in m and "wrapt refused" in m for m in reported)
