"""The agent hook: what hermes-agent counted in this process reaches the chat's row; the agent is never affected.

A small ``run_agent`` module with an ``AIAgent`` that has hermes-agent's
counters stands in for the real one (imported from a temp dir ahead of the
installed hermes-agent); behaviour with the real agent inside a real WebUI
is the real-host harness's (tests/hosts).
"""

from __future__ import annotations

import gc
import importlib
import sys
import textwrap
import weakref
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import wrapt
from support.db import read_row

import webui_insights
from webui_insights.engine.states import Ledger
from webui_insights.hook import installer
from webui_insights.hook.agent_usage import AgentUsage
from webui_insights.writer import WriterConfig

FAKE_AGENT = """
class AIAgent:
    def __init__(self, session_id, session_db=None):
        self.session_id = session_id
        self._session_db = session_db
        self.session_cache_read_tokens = 0
        self.session_cache_write_tokens = 0
        self.session_reasoning_tokens = 0
        self.session_api_calls = 0

    def run_conversation(self, message, conversation_history=None, *, fail=None):
        self.session_api_calls += 1
        self.session_cache_read_tokens += 30
        self.session_cache_write_tokens += 10
        self.session_reasoning_tokens += 5
        if fail is not None:
            raise fail
        return {"final_response": "answer to " + message, "history": conversation_history}
"""

# A v0.50.12-style session: no cache fields (the agent hook supplies them).
OLD_SESSION = """
import json, os, time, uuid

class Session:
    def __init__(self, state_dir):
        self.state_dir = state_dir
        self.session_id = uuid.uuid4().hex[:12]
        self.profile = None
        self.title = "Old WebUI chat"
        self.model = "old/model"
        self.messages = []
        self.created_at = self.updated_at = time.time()
        self.input_tokens = 0
        self.output_tokens = 0
        self.estimated_cost = None

    def save(self, touch_updated_at=True, skip_index=False):
        if touch_updated_at:
            self.updated_at = time.time()
        return None
"""


@pytest.fixture
def fake_host(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[str, str]]:
    """``run_agent`` (fake, ahead of hermes-agent's) and ``oldwebui``, importable; the real ones back afterwards."""
    (tmp_path / "run_agent.py").write_text(textwrap.dedent(FAKE_AGENT))
    (tmp_path / "oldwebui.py").write_text(textwrap.dedent(OLD_SESSION))
    saved: dict[str, Any] = {name: sys.modules.pop(name) for name in ("run_agent", "oldwebui") if name in sys.modules}
    monkeypatch.syspath_prepend(str(tmp_path))
    yield "run_agent", "oldwebui"
    installer.uninstall()
    for name in ("run_agent", "oldwebui"):
        sys.modules.pop(name, None)
    sys.modules.update(saved)


def install_old_webui(**kwargs: Any) -> None:
    installer.install(
        target="oldwebui:Session.save",
        enabled=True,
        writer_config=WriterConfig(debounce_s=0.01),
        reconcile_interval=0,
        **kwargs,
    )


def test_usage_the_agent_counted_reaches_the_row_of_a_chat_whose_session_lacks_it(
    fake_host: Any, hermes_home: Path
) -> None:
    install_old_webui()
    run_agent = importlib.import_module("run_agent")  # imported after install(): the post-import hook wraps it
    assert isinstance(vars(run_agent.AIAgent)["run_conversation"], wrapt.FunctionWrapper)
    chat = importlib.import_module("oldwebui").Session(hermes_home / "webui")
    agent = run_agent.AIAgent(chat.session_id)
    for turn in range(2):
        agent.run_conversation(f"question {turn}")
        chat.messages += [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]
        chat.input_tokens += 100
        chat.output_tokens += 10
        chat.save()
    assert webui_insights.flush(5)
    row = read_row(hermes_home / "state.db", chat.session_id)
    assert row is not None
    assert (row["cache_read_tokens"], row["cache_write_tokens"], row["reasoning_tokens"]) == (60, 20, 10)
    assert row["api_call_count"] == 2
    assert row["input_tokens"] == 200 - 60 - 20  # hermes' convention: input without the cached tokens


def test_the_run_result_and_exceptions_pass_through_and_the_usage_still_counts(fake_host: Any) -> None:
    install_old_webui()
    run_agent = importlib.import_module("run_agent")
    agent = run_agent.AIAgent("abcdefabcdef")
    assert agent.run_conversation("hi", [1]) == {"final_response": "answer to hi", "history": [1]}
    failure = ConnectionError("provider down")
    with pytest.raises(ConnectionError) as raised:
        agent.run_conversation("again", fail=failure)
    assert raised.value is failure
    ledger, writes = installer._state.agent.take("abcdefabcdef")
    assert ledger == Ledger(60, 20, 10, 2) and writes is False


def test_a_chat_hermes_agent_writes_itself_is_marked_and_gets_no_increments(fake_host: Any) -> None:
    install_old_webui()
    run_agent = importlib.import_module("run_agent")
    run_agent.AIAgent("abcdefabcdef", session_db=object()).run_conversation("hi")
    assert installer._state.agent.take("abcdefabcdef") == (None, True)


def test_the_agent_is_not_kept_alive(fake_host: Any) -> None:
    install_old_webui()
    run_agent = importlib.import_module("run_agent")
    agent = run_agent.AIAgent("abcdefabcdef")
    agent.run_conversation("hi")
    ref = weakref.ref(agent)
    del agent
    gc.collect()
    assert ref() is None


def test_counters_are_read_as_increments_per_agent_object() -> None:
    usage = AgentUsage()
    agent: Any = type("A", (), {})()
    agent.session_id, agent._session_db = "abcdefabcdef", None
    for calls in (1, 2, 2, 5):
        agent.session_api_calls, agent.session_cache_read_tokens = calls, calls * 10
        usage.observe(agent)
    assert usage.take("abcdefabcdef") == (Ledger(50, 0, 0, 5), False)
    agent.session_api_calls = "seven"  # a value of the wrong type counts as nothing, never raises
    usage.observe(agent)
    assert usage.take("abcdefabcdef") == (None, False)


def test_increments_of_a_dropped_snapshot_wait_for_the_next_one() -> None:
    usage = AgentUsage()
    usage.give_back("abcdefabcdef", Ledger(1, 2, 3, 4))
    usage.give_back("abcdefabcdef", Ledger(1, 0, 0, 1))
    usage.give_back("abcdefabcdef", None)
    assert usage.take("abcdefabcdef") == (Ledger(2, 2, 3, 5), False)


@pytest.mark.swallowed_errors_expected
def test_a_failing_agent_hook_is_reported_and_the_run_is_unaffected(
    fake_host: Any, monkeypatch: pytest.MonkeyPatch, fail_on_swallowed_errors: list[Any]
) -> None:
    install_old_webui()
    monkeypatch.setattr(AgentUsage, "observe", lambda self, agent: 1 / 0)
    run_agent = importlib.import_module("run_agent")
    assert run_agent.AIAgent("abcdefabcdef").run_conversation("hi")["final_response"] == "answer to hi"
    assert [where for where, _ in fail_on_swallowed_errors] == ["agent hook"]
    assert webui_insights.stats()["internal_errors"] == 1


def test_uninstall_restores_run_conversation_and_install_can_skip_it(fake_host: Any) -> None:
    run_agent = importlib.import_module("run_agent")  # imported before install(): wrapped at once
    original = vars(run_agent.AIAgent)["run_conversation"]
    install_old_webui()
    assert vars(run_agent.AIAgent)["run_conversation"] is not original
    assert "agent" in webui_insights.stats()["hooks"]
    installer.uninstall()
    assert vars(run_agent.AIAgent)["run_conversation"] is original
    install_old_webui(agent_usage_hook=False)
    assert vars(run_agent.AIAgent)["run_conversation"] is original


def test_the_real_hermes_agent_has_the_counters_the_hook_reads() -> None:
    # The fake above mirrors these names: if hermes-agent renames one, this fails first.
    import importlib.util

    spec = importlib.util.find_spec("run_agent")  # hermes-agent's module, read (importing it is heavy)
    assert spec is not None and spec.origin is not None
    source = Path(spec.origin).read_text(encoding="utf-8")
    for name in (
        "session_cache_read_tokens",
        "session_cache_write_tokens",
        "session_reasoning_tokens",
        "session_api_calls",
        "_session_db",
        "def run_conversation",
    ):
        assert name in source, name
