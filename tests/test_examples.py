"""Every file in examples/ runs headless and gets a row into a temporary state.db.

Each example is imported from its file (as a user would copy it), driven
through its framework's own test client, and checked in state.db; if an
example breaks, its test fails.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest
from hosts.fixtures import host_copy, host_import, host_src, host_world  # noqa: F401  (fixtures, by name)
from hosts.host import session_row
from hosts.importer import HostImport
from support.checks import same_time
from support.db import read_row

import webui_insights

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def load_example(name: str) -> ModuleType:
    """Import ``examples/<name>.py`` under its own name (install() targets resolve by it)."""
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, EXAMPLES / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
    return module


@pytest.fixture
def enabled_env(hermes_home: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A temporary HERMES_HOME with mirroring switched on the way a deployment would."""
    monkeypatch.setenv("WEBUI_INSIGHTS_ENABLED", "1")
    return hermes_home


# ------------------------------------------------------------- plain Python


def test_plain_python_example_mirrors_its_own_field_names(enabled_env: Path, tmp_path: Path) -> None:
    example = load_example("plain_python")
    conv = example.run_chat(tmp_path / "conversations", ["one", "two", "three"], name="Own names")
    assert (tmp_path / "conversations" / f"{conv.conv_id}.json").is_file()  # the host's save ran
    assert webui_insights.flush(10)
    row = read_row(enabled_env / "state.db", conv.conv_id)
    assert row is not None
    assert row["source"] == "webui" and row["title"] == "Own names"
    # hermes' convention: input without the cached prompt tokens, which get their own column.
    assert (row["input_tokens"], row["output_tokens"]) == (
        conv.prompt_tokens - conv.cached_tokens,
        conv.completion_tokens,
    )
    assert (row["cache_read_tokens"], row["api_call_count"]) == (conv.cached_tokens, 3)
    assert row["message_count"] == 6
    assert row["started_at"] == same_time(conv.started)


def test_plain_python_example_conversation_without_turns_is_not_mirrored(enabled_env: Path, tmp_path: Path) -> None:
    example = load_example("plain_python")
    conv = example.Conversation(tmp_path / "conversations")
    conv.persist()
    assert webui_insights.flush(5)
    assert read_row(enabled_env / "state.db", conv.conv_id) is None


def test_plain_python_example_runs_as_a_script(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HERMES_", "WEBUI_INSIGHTS_"))}
    env["TMPDIR"] = str(tmp_path)  # its throw-away HERMES_HOME lands here
    done = subprocess.run(
        [sys.executable, str(EXAMPLES / "plain_python.py")],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert "'source': 'webui'" in done.stdout and "'message_count': 4" in done.stdout, done.stdout


# ------------------------------------------------------------------ Flask


def test_flask_example_chat_endpoint_reaches_state_db(enabled_env: Path, tmp_path: Path) -> None:
    example = load_example("flask_app")
    client = example.create_app(tmp_path / "store").test_client()

    first = client.post("/chat", json={"message": "hello flask"})
    assert first.status_code == 200, first.data
    chat_id = first.get_json()["chat_id"]
    second = client.post("/chat", json={"message": "again", "chat_id": chat_id})
    assert second.status_code == 200
    body = second.get_json()
    assert (tmp_path / "store" / f"{chat_id}.json").is_file()
    assert webui_insights.flush(10)

    row = read_row(enabled_env / "state.db", chat_id)
    assert row is not None
    assert (row["input_tokens"], row["output_tokens"]) == (body["tokens_in"], body["tokens_out"])
    assert (row["title"], row["message_count"], row["api_call_count"]) == ("hello flask", 4, 2)
    assert client.get("/insights-status").get_json()["rows_written"] >= 1


def test_flask_example_rejects_a_bad_request_and_mirrors_nothing(enabled_env: Path, tmp_path: Path) -> None:
    example = load_example("flask_app")
    client = example.create_app(tmp_path / "store").test_client()
    assert client.post("/chat", json={}).status_code == 400
    assert webui_insights.stats()["saves_seen"] == 0


# ---------------------------------------------------------------- FastAPI


def test_fastapi_example_installs_in_lifespan_and_reaches_state_db(enabled_env: Path, tmp_path: Path) -> None:
    from fastapi.testclient import TestClient

    example = load_example("fastapi_app")
    original_save = example.Transcript.__dict__["save"]
    with TestClient(example.create_app(tmp_path / "store")) as client:
        assert webui_insights.is_installed()
        first = client.post("/chat", json={"message": "hello fastapi"})
        assert first.status_code == 200, first.text
        chat_id = first.json()["chat_id"]
        second = client.post("/chat", json={"message": "again", "chat_id": chat_id})
        assert second.status_code == 200
        body = second.json()
    # Shutdown flushed and put the original save back.
    assert not webui_insights.is_installed()
    assert example.Transcript.__dict__["save"] is original_save
    assert webui_insights.stats()["pending"] == 0

    row = read_row(enabled_env / "state.db", chat_id)
    assert row is not None
    assert (row["input_tokens"], row["output_tokens"]) == (body["input_tokens"] - 32, body["output_tokens"])
    assert (row["title"], row["message_count"], row["api_call_count"]) == ("hello fastapi", 4, 2)
    assert row["cache_read_tokens"] == 32


def test_fastapi_example_routes_a_profile_to_its_own_state_db(enabled_env: Path, tmp_path: Path) -> None:
    from fastapi.testclient import TestClient

    from webui_insights.engine.store import create_state_db

    work = enabled_env / "profiles" / "work"
    work.mkdir(parents=True)
    create_state_db(work / "state.db")
    example = load_example("fastapi_app")
    with TestClient(example.create_app(tmp_path / "store")) as client:
        reply = client.post("/chat", json={"message": "in work", "profile": "work"})
        assert reply.status_code == 200
        chat_id = reply.json()["chat_id"]
    assert read_row(work / "state.db", chat_id) is not None
    assert read_row(enabled_env / "state.db", chat_id) is None


# ----------------------------------------------------- hermes-webui snippet


@pytest.mark.real_host
def test_hermes_webui_snippet_follows_the_settings_checkbox(host_import: HostImport) -> None:  # noqa: F811
    """The snippet in the real host's process: the WebUI's checkbox turns mirroring on and off, live."""
    out = host_import.run(
        f"""
        import json, sys, time
        sys.path.insert(0, {str(EXAMPLES)!r})
        from hermes_webui_snippet import enable_insights
        import webui_insights
        settings = STATE_DIR / "settings.json"
        settings.write_text(json.dumps({{"sync_to_insights": False}}))
        installed = enable_insights()
        turn = [{{"role": "user", "content": "q"}}, {{"role": "assistant", "content": "a"}}]
        off = Session(title="Checkbox off", model="fake-model", messages=list(turn))
        off.input_tokens = 10
        off.save()
        flushed_off = webui_insights.flush(5)
        settings.write_text(json.dumps({{"sync_to_insights": True}}))  # the user ticks the box
        time.sleep(1.1)  # the setting is re-read at most once a second
        on = Session(title="Checkbox on", model="fake-model", messages=list(turn))
        on.input_tokens = 20
        on.save()
        emit({{"installed": installed, "off": off.session_id, "on": on.session_id,
              "flushed": flushed_off and webui_insights.flush(5)}})
        """
    )
    assert out["installed"] and out["flushed"]
    db = host_import.world.state_db()
    assert session_row(db, out["off"]) is None
    row = session_row(db, out["on"])
    assert row is not None and (row["title"], row["input_tokens"]) == ("Checkbox on", 20)
