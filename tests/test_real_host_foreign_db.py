"""A state.db hermes never initialised stays exactly as it is, whoever comes along.

On each host's real ``api.models.Session``: the file at the profile's
state.db path holds only another application's table. The WebUI's saves (with
mirroring on), the sweep and every CLI command meet it; afterwards its
``sqlite_master`` is byte for byte what it was, and ``status`` says why.
"""

from __future__ import annotations

import sqlite3
import subprocess
import sys

import pytest
from hosts.fixtures import host_copy, host_import, host_src, host_world  # noqa: F401  (fixtures, by name)
from hosts.importer import HostImport

pytestmark = pytest.mark.real_host


def _schema(db: object) -> list[tuple[object, ...]]:
    conn = sqlite3.connect(str(db))
    try:
        return conn.execute("SELECT * FROM sqlite_master ORDER BY name").fetchall()
    finally:
        conn.close()


def test_a_foreign_state_db_keeps_its_schema_through_saves_sweep_backfill_and_verify(
    host_import: HostImport,  # noqa: F811
) -> None:
    db = host_import.world.state_db()
    db.unlink()
    for suffix in ("-wal", "-shm"):
        db.with_name(db.name + suffix).unlink(missing_ok=True)
    conn = sqlite3.connect(db)
    conn.execute("CREATE TABLE other_app (x INTEGER)")
    conn.execute("INSERT INTO other_app VALUES (1)")
    conn.commit()
    conn.close()
    before = _schema(db)

    out = host_import.run(
        """
        import webui_insights
        from webui_insights.commands.reconcile import reconcile_pass
        from webui_insights.profiles import Homes
        webui_insights.install(enabled=True)
        s = Session(title="Lands nowhere", model="fake-model",
                    messages=[{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}])
        s.input_tokens, s.output_tokens = 100, 10
        s.save()
        flushed = webui_insights.flush(10)
        reconcile_pass(Homes.capture(), STATE_DIR / "sessions")
        emit({"flushed": flushed, "skipped": webui_insights.stats()["skipped"]})
        """
    )
    assert out["flushed"], out
    assert out["skipped"].get("uninitialised", 0) >= 1, out

    env = host_import.world.env()
    for command in (["backfill"], ["verify"], ["verify", "--fix"], ["status"]):
        done = subprocess.run(
            [sys.executable, "-m", "webui_insights", *command],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert "Traceback" not in done.stderr, (command, done.stderr)
        assert "not a hermes state.db" in done.stdout + done.stderr, (command, done.stdout, done.stderr)
    assert _schema(db) == before
    conn = sqlite3.connect(db)
    try:
        assert conn.execute("SELECT x FROM other_app").fetchall() == [(1,)]
    finally:
        conn.close()
