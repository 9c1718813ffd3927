from pathlib import Path

from conftest import make_session, read_row

import webui_insights


def test_enabled_mirror_writes_a_webui_row(mirror, webui_dir: Path, hermes_home: Path) -> None:
    chat = make_session(webui_dir, title="Hello")
    chat.add_turn("hi", "hello", input_tokens=10, output_tokens=5)
    chat.save()
    assert webui_insights.flush(5)
    row = read_row(hermes_home / "state.db", chat.session_id)
    assert row is not None and row["source"] == "webui" and row["input_tokens"] == 10
