"""A chat deleted in hermes stays deleted — through a restart, an unchanged save and the sweep — until a new turn.

On each host's real ``api.models.Session`` (each step in a fresh interpreter:
a WebUI process, then the same WebUI restarted) and the real ``hermes
sessions delete``.
"""

from __future__ import annotations

import subprocess

import pytest
from hosts.fixtures import host_copy, host_import, host_src, host_world  # noqa: F401  (fixtures, by name)
from hosts.host import session_row
from hosts.importer import HostImport

from webui_insights.commands.demo import hermes_command

pytestmark = pytest.mark.real_host

TURN = '[{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]'


def test_a_deletion_in_hermes_survives_restart_save_and_sweep_and_a_new_turn_brings_it_back(
    host_import: HostImport,  # noqa: F811
) -> None:
    first = host_import.run(
        f"""
        import json, webui_insights
        webui_insights.install(enabled=True)
        s = Session(title="Doomed chat", model="fake-model", messages=json.loads({TURN!r}))
        s.input_tokens = 100
        s.save()
        emit({{"id": s.session_id, "flushed": webui_insights.flush(10)}})
        """
    )
    db = host_import.world.state_db()
    assert first["flushed"] and session_row(db, first["id"]) is not None

    command = hermes_command()
    assert command is not None
    subprocess.run(
        [*command, "sessions", "delete", first["id"], "--yes"],
        env=host_import.world.env(),
        capture_output=True,
        timeout=120,
        check=True,
    )
    assert session_row(db, first["id"]) is None

    restarted = host_import.run(  # the WebUI restarted: the same chat loaded and saved, nothing new in it
        f"""
        import webui_insights
        from webui_insights.commands.reconcile import reconcile_pass
        from webui_insights.profiles import Homes
        webui_insights.install(enabled=True)
        s = Session.load({first["id"]!r})
        s.title = "Doomed chat, renamed"
        s.save()
        flushed = webui_insights.flush(10)
        swept = reconcile_pass(Homes.capture(), STATE_DIR / "sessions")
        emit({{"flushed": flushed, "stats": webui_insights.stats()["chats"], "repaired": swept.repaired}})
        """
    )
    assert restarted["flushed"] and restarted["repaired"] == 0
    assert restarted["stats"]["deleted"] >= 1
    assert session_row(db, first["id"]) is None

    again = host_import.run(  # the user keeps chatting in the WebUI
        f"""
        import json, webui_insights
        webui_insights.install(enabled=True)
        s = Session.load({first["id"]!r})
        s.messages = s.messages + json.loads({TURN!r})
        s.input_tokens = 200
        s.save()
        emit({{"flushed": webui_insights.flush(10)}})
        """
    )
    assert again["flushed"]
    row = session_row(db, first["id"])
    assert row is not None and (row["message_count"], row["title"]) == (4, "Doomed chat, renamed")
