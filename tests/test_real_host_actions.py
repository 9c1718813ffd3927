"""Every WebUI session action, on the real servers, judged against the oracle.

The oracle (README "What each WebUI action does in hermes"): a chat's row
shows what hermes-agent would have recorded had it run that chat itself with
a SessionDB — spend once, on the day it happened; a copy spent nothing; a
removed turn was still spent.

One server per host (:func:`hosts.actions.run_actions`, mirroring on through
the WebUI's checkbox) drives every action; each test below reads the steps
it kept and compares the chat's row in state.db with the oracle computed
from the LLM calls the fake answered for that chat (1234 prompt tokens of
which 200 cached, 56 completion per call, unless a test queued other usage)
— never from the library's own output. Actions a host does not have are
skipped with the reason. At the end, once per host: ``webui-insights
backfill`` over the WebUI's folder, then ``hermes insights --days 1`` and
``hermes sessions list``.

The profile switch (a chat's row lands in its own profile's state.db) is
covered by ``tests/test_real_hosts.py`` (``test_one_row_per_chat_in_its_profile_db``,
chat D), not repeated here.
"""

from __future__ import annotations

import math
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hosts.actions import CLI_SESSION_TITLE, RENAMED, ActionsResult, run_actions, webui_insights_warnings
from hosts.fake_llm import Call
from hosts.host import SKIP_HINT, host_id, host_sources

HOSTS = host_sources()
pytestmark = pytest.mark.real_host if HOSTS else pytest.mark.real_host_hint

SPEND = (
    "input_tokens",
    "cache_read_tokens",
    "cache_write_tokens",
    "output_tokens",
    "estimated_cost_usd",
    "api_call_count",
)


# ── the one run per host ──────────────────────────────────────────────────────
@pytest.fixture(scope="module", params=[pytest.param(src, id=host_id(src)) for src in HOSTS])
def run(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ActionsResult]:
    src = Path(request.param)
    try:
        result = run_actions(src, tmp_path_factory.mktemp(f"actions-{host_id(src)}"))
    except Exception as exc:  # every test of this host reports it
        pytest.fail(f"{host_id(src)}: the action script did not run: {exc!r}", pytrace=False)
    yield result


def need(r: ActionsResult, *actions: str) -> None:
    for action in actions:
        if action in r.skipped:
            pytest.skip(f"{r.host}: {r.skipped[action]}")


# ── the oracle, from the fake's calls ─────────────────────────────────────────
def spend(r: ActionsResult, calls: list[Call]) -> dict[str, Any]:
    """What hermes-agent records for these calls: input without cached tokens, cost at the listed prices."""
    price = {k: float(v) for k, v in r.pricing.items()}
    return {
        "input_tokens": sum(c.usage.prompt - c.usage.cached for c in calls),
        "cache_read_tokens": sum(c.usage.cached for c in calls),
        "cache_write_tokens": 0,
        "output_tokens": sum(c.usage.completion for c in calls),
        "estimated_cost_usd": sum(
            (c.usage.prompt - c.usage.cached) * price["prompt"]
            + c.usage.cached * price["cache_read"]
            + c.usage.completion * price["completion"]
            for c in calls
        ),
        "api_call_count": len(calls),
    }


def calls_at(r: ActionsResult, chat: str, action: str, start_action: str | None = None) -> list[Call]:
    """The chat's answered calls up to ``action`` (from ``start_action`` on, when given)."""
    first = r.step(start_action).n_calls[chat] if start_action else 0
    return r.chats[chat].calls[first : r.step(action).n_calls[chat]]


def usage_rows(r: ActionsResult) -> bool:
    """hermes-agent records calls in ``session_model_usage`` (0.19.0 on: the compressor's summary among them)."""
    if not hermes_writes(r):
        return False
    conn = sqlite3.connect(r.world.state_db())
    try:
        return conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'session_model_usage'").fetchone() is not None
    finally:
        conn.close()


def hermes_writes(r: ActionsResult) -> bool:
    """Streaming chats' rows are hermes-agent's own on this host (HEAD)."""
    return r.traits.agent_writes_state_db


class Check:
    """Collects every mismatch of a test, then fails once with all of them."""

    def __init__(self, r: ActionsResult, what: str) -> None:
        self.r, self.what, self.lines = r, what, []

    def eq(self, label: str, actual: Any, expected: Any) -> None:
        if isinstance(expected, float) or isinstance(actual, float):
            ok = (not actual and not expected) or (
                actual is not None
                and expected is not None
                and math.isclose(actual, expected, rel_tol=1e-6, abs_tol=1e-9)
            )
        else:
            ok = actual == expected
        if not ok:
            self.lines.append(f"{label} = {actual!r}, expected {expected!r}")

    def ok(self, condition: bool, message: str) -> None:
        if not condition:
            self.lines.append(message)

    def spend(self, label: str, row: dict[str, Any] | None, expected: dict[str, Any]) -> None:
        if row is None:
            self.lines.append(f"{label}: no row")
            return
        for column in SPEND:
            self.eq(f"{label}.{column}", row.get(column), expected[column])

    def done(self) -> None:
        if self.lines:
            pytest.fail("\n  ".join([f"[{self.r.host}] {self.what}:", *self.lines]), pytrace=False)


def row_at(r: ActionsResult, action: str, chat: str, index: int = 0) -> dict[str, Any] | None:
    return r.step(action).row(r.chats[chat].ids[index])


def file_at(r: ActionsResult, action: str, chat: str, index: int = 0) -> dict[str, Any] | None:
    return r.step(action).files.get(r.chats[chat].ids[index])


def check_removed_turns_counted(c: Check, r: ActionsResult, action: str, chat: str = "edits") -> None:
    """Tokens never go down (every call made is in the row); message_count = messages ever added."""
    row, before = row_at(r, action, chat), r.before(action).row(r.sid(chat))
    c.spend(f"{action}: row", row, spend(r, calls_at(r, chat, action)))
    if row is None:
        return
    if before is not None:
        for column in ("input_tokens", "output_tokens", "api_call_count", "message_count"):
            c.ok(
                (row[column] or 0) >= (before[column] or 0),
                f"{action}: {column} went down {before[column]} → {row[column]}",
            )
    if hermes_writes(r) and "stream" in r.chats[chat].turns:
        # hermes-agent's own row, untouched: its count is the messages it appended (its messages rows)
        c.eq(
            f"{action}: message_count (hermes-agent's, = its messages rows)",
            row["message_count"],
            r.step(action).message_rows.get(r.sid(chat), 0),
        )
    else:
        c.eq(f"{action}: message_count (messages ever added)", row["message_count"], r.step(action).n_added[chat])


# ── the script itself ran ─────────────────────────────────────────────────────
def test_the_action_script_ran_on_the_real_server(run: ActionsResult) -> None:
    r = run
    c = Check(r, "the scripted actions")
    c.ok(not r.errors, f"steps failed: {r.errors}")
    c.ok(r.timings.get("total", 999) < 90, f"the run took {r.timings}")
    c.done()


# ── quiet start (issue 23 item 4) ─────────────────────────────────────────────
def test_a_normal_start_and_chat_log_no_webui_insights_warning(run: ActionsResult) -> None:
    """A bridge function the host lacks (v0.50.12: sync_session_title) is normal, not an ERROR at every start."""
    found = webui_insights_warnings(run.quiet_log)
    assert not found, f"[{run.host}] webui_insights logged at WARNING or above on a normal start and chat: {found}"


# ── 1. new chat ───────────────────────────────────────────────────────────────
def test_a_new_chat_has_no_row_until_it_has_a_turn(run: ActionsResult) -> None:
    r = run
    c = Check(r, "a new chat (/api/session/new) and nothing else")
    c.eq("row after /api/session/new", row_at(r, "new", "new"), None)
    c.eq("row at the end (after a backfill)", r.rows_final.get(r.sid("new")), None)
    c.done()


# ── 2. streaming turn ─────────────────────────────────────────────────────────
def test_a_streaming_turn_is_counted_once_in_hermes_terms(run: ActionsResult) -> None:
    r = run
    c = Check(r, "two streaming turns")
    row, data = row_at(r, "stream", "stream"), file_at(r, "stream", "stream") or {}
    c.spend("row", row, spend(r, calls_at(r, "stream", "stream")))
    if row is not None:
        c.eq("source", row["source"], "webui")
        c.eq("title (the WebUI's)", row["title"], data.get("title"))
        c.eq("started_at (the chat's created_at)", row["started_at"], data.get("created_at"))
        if hermes_writes(r):
            c.eq(
                "message_count (hermes-agent's, = its messages rows)",
                row["message_count"],
                r.step("stream").message_rows.get(r.sid("stream")),
            )
            c.eq("ended_at (hermes-agent's: not closed yet)", row["ended_at"], None)
        else:
            c.eq("message_count", row["message_count"], r.step("stream").n_added["stream"])
            last_turn = r.chats["stream"].turn_started[-1]
            ended = row["ended_at"] or 0.0
            c.ok(
                last_turn - 1.0 <= ended <= r.step("stream").at,
                f"ended_at {ended} is not the last activity (last turn began {last_turn})",
            )
    c.done()


# ── 3. non-streaming /api/chat ────────────────────────────────────────────────
def test_a_non_streaming_turn_is_counted_though_no_webui_file_records_it(run: ActionsResult) -> None:
    r = run
    c = Check(r, "a chat with /api/chat turns only (the JSON records no tokens for them)")
    row = row_at(r, "sync", "sync")
    c.spend("row", row, spend(r, calls_at(r, "sync", "sync")))
    if row is not None:
        c.eq("source", row["source"], "webui")
        c.eq("message_count", row["message_count"], r.step("sync").n_added["sync"])
    c.done()


def test_a_non_streaming_turn_is_added_to_a_row_hermes_agent_writes(run: ActionsResult) -> None:
    """HEAD: hermes-agent wrote the streaming turn; the /api/chat turn's tokens, cost and calls are added."""
    r = run
    c = Check(r, "a streaming turn, then an /api/chat turn")
    c.spend(
        "row after the streaming turn",
        row_at(r, "mixed_stream", "mixed"),
        spend(r, calls_at(r, "mixed", "mixed_stream")),
    )
    c.spend("row after the /api/chat turn", row_at(r, "mixed", "mixed"), spend(r, calls_at(r, "mixed", "mixed")))
    c.spend("row at the end", r.rows_final.get(r.sid("mixed")), spend(r, r.chats["mixed"].calls))
    c.done()


# ── 4. cancel ─────────────────────────────────────────────────────────────────
def test_a_cancelled_turn_counts_the_calls_made_and_nothing_twice(run: ActionsResult) -> None:
    r = run
    k = r.chats["cancel"]
    c = Check(r, "a turn cancelled mid-stream (its tool call answered, its next call cut off)")
    c.ok(r.step("cancel").note.get("cancel", {}).get("cancelled") is True, f"the cancel: {r.step('cancel').note}")
    c.eq("calls cut off by the cancel (no usage delivered)", len(k.cut_calls), 1)
    c.spend("row after the cancel", row_at(r, "cancel", "cancel"), spend(r, calls_at(r, "cancel", "cancel")))
    c.spend(
        "row after the next turn", row_at(r, "cancel_after", "cancel"), spend(r, calls_at(r, "cancel", "cancel_after"))
    )
    c.spend("row at the end", r.rows_final.get(k.session_id), spend(r, k.calls))
    c.done()


# ── 5. rename, title regenerate ───────────────────────────────────────────────
def test_a_webui_rename_retitles_the_row_and_is_not_activity(run: ActionsResult) -> None:
    r = run
    c = Check(r, "a WebUI rename")
    row, before = row_at(r, "rename", "stream"), r.before("rename").row(r.sid("stream"))
    if row is None or before is None:
        pytest.fail(f"[{r.host}] no row before/after the rename", pytrace=False)
    c.eq("title", row["title"], RENAMED)
    c.eq("ended_at (a rename is not activity)", row["ended_at"], before["ended_at"])
    for column in (*SPEND, "message_count", "started_at"):
        c.eq(column, row[column], before[column])
    c.done()


def test_a_regenerated_title_retitles_the_row_and_is_not_activity(run: ActionsResult) -> None:
    r = run
    need(r, "title_regenerate")
    c = Check(r, "title regenerate (/api/session/title/regenerate)")
    row, before = row_at(r, "title_regenerate", "stream"), r.before("title_regenerate").row(r.sid("stream"))
    data = file_at(r, "title_regenerate", "stream") or {}
    if row is None or before is None:
        pytest.fail(f"[{r.host}] no row before/after the title regenerate", pytrace=False)
    c.ok(data.get("title") not in (None, RENAMED), f"the host gave no new title: {data.get('title')!r}")
    c.eq("title (the regenerated one, a WebUI title the row follows)", row["title"], data.get("title"))
    c.eq("ended_at (not activity)", row["ended_at"], before["ended_at"])
    for column in (*SPEND, "message_count", "started_at"):
        c.eq(column, row[column], before[column])
    c.done()


# ── 12. archive / pin / move ──────────────────────────────────────────────────
@pytest.mark.parametrize("action", ["pin", "archive", "move"])
def test_pin_archive_and_move_leave_the_row_as_it_was(run: ActionsResult, action: str) -> None:
    r = run
    c = Check(r, f"{action} (the file's updated_at may move; the chat did nothing)")
    row, before = row_at(r, action, "stream"), r.before(action).row(r.sid("stream"))
    c.ok(row is not None and before is not None, "no row")
    if row is not None and before is not None:
        for column in sorted(set(row) | set(before)):
            c.eq(column, row.get(column), before.get(column))
    c.done()


# ── 6. duplicate ──────────────────────────────────────────────────────────────
def test_a_duplicate_is_not_counted_twice_in_hermes_insights(run: ActionsResult) -> None:
    """HEAD copies the token totals and cost into the copy: the copy spent nothing until its own turn."""
    r = run
    c = Check(r, "duplicate (HEAD: /api/session/duplicate; v0.50.12: new + rename 'X (copy)')")
    copy = r.sid("duplicate")
    c.eq("the copy's row right after the duplicate", r.step("duplicate").row(copy), None)
    source_before = r.before("duplicate").row(r.sid("stream"))
    c.eq("the source's row (unchanged by the duplicate)", r.step("duplicate").row(r.sid("stream")), source_before)
    if "duplicate_turn" in r.skipped:  # v0.50.12: an empty chat
        c.eq("the copy's row at the end (after a backfill)", r.rows_final.get(copy), None)
    else:
        own = spend(r, r.chats["duplicate"].calls)
        c.spend("the copy's row after its own turn (its own spend only)", r.step("duplicate_turn").row(copy), own)
        c.spend("the copy's row at the end (after a backfill)", r.rows_final.get(copy), own)
        source_calls = calls_at(r, "stream", "stream")
        family = [r.rows_final.get(copy), r.rows_final.get(r.sid("stream"))]
        c.eq(
            "input tokens of the source and the copy together (each call once)",
            sum((x or {}).get("input_tokens") or 0 for x in family),
            spend(r, source_calls)["input_tokens"] + own["input_tokens"],
        )
    c.done()


# ── 7. branch / fork ──────────────────────────────────────────────────────────
def test_a_fork_starts_with_no_spend_and_leaves_its_source_alone(run: ActionsResult) -> None:
    r = run
    need(r, "branch")
    c = Check(r, "branch (/api/session/branch, keep_count=2)")
    fork = r.sid("branch")
    c.eq("the fork's row right after the branch", r.step("branch").row(fork), None)
    c.eq(
        "the source's row (the route touches the source's updated_at: not activity)",
        r.step("branch").row(r.sid("stream")),
        r.before("branch").row(r.sid("stream")),
    )
    own = spend(r, r.chats["branch"].calls)
    c.spend("the fork's row after its own turn (0 inherited)", r.step("branch_turn").row(fork), own)
    c.spend("the fork's row at the end (after a backfill)", r.rows_final.get(fork), own)
    c.done()


# ── 8. retry / undo / truncate / edit / regenerate ────────────────────────────
def test_a_retried_reply_stays_counted(run: ActionsResult) -> None:
    r = run
    c = Check(r, "retry (HEAD: /api/session/retry + resend; v0.50.12: truncate to the last reply + resend)")
    check_removed_turns_counted(c, r, "retry_cut")
    check_removed_turns_counted(c, r, "retry")
    c.done()


def test_an_undone_turn_stays_counted(run: ActionsResult) -> None:
    r = run
    need(r, "undo")
    c = Check(r, "undo (/api/session/undo), then a turn")
    check_removed_turns_counted(c, r, "undo")
    check_removed_turns_counted(c, r, "undo_turn")
    c.done()


def test_truncated_and_edited_turns_stay_counted(run: ActionsResult) -> None:
    r = run
    c = Check(r, "truncate (/api/session/truncate keep_count=2), then edit-and-resend")
    check_removed_turns_counted(c, r, "truncate")
    check_removed_turns_counted(c, r, "edit")
    c.done()


def test_a_regenerated_reply_stays_counted(run: ActionsResult) -> None:
    r = run
    need(r, "regenerate")
    c = Check(r, "regenerate (/api/chat/start regenerate=true)")
    check_removed_turns_counted(c, r, "regenerate")
    c.spend("row at the end", r.rows_final.get(r.sid("edits")), spend(r, r.chats["edits"].calls))
    c.done()


# ── 9. clear ──────────────────────────────────────────────────────────────────
def test_a_cleared_chat_keeps_its_spend_its_message_count_and_its_title(run: ActionsResult) -> None:
    r = run
    c = Check(r, "clear (/api/session/clear: the WebUI's title becomes 'Untitled', a placeholder)")
    row, before = row_at(r, "clear", "clear"), r.before("clear").row(r.sid("clear"))
    data = file_at(r, "clear", "clear") or {}
    c.eq("WebUI title after clear (host)", data.get("title"), "Untitled")
    if row is None or before is None:
        pytest.fail(f"[{r.host}] no row before/after the clear", pytrace=False)
    c.spend("row", row, spend(r, calls_at(r, "clear", "clear")))
    c.eq("message_count (kept)", row["message_count"], before["message_count"])
    c.eq("title (kept: 'Untitled' is never written)", row["title"], before["title"])
    c.done()


# ── 15. sessions cleanup ──────────────────────────────────────────────────────
def test_sessions_cleanup_removes_files_but_not_rows(run: ActionsResult) -> None:
    r = run
    c = Check(r, "/api/sessions/cleanup and /api/sessions/cleanup_zero_message")
    cleaned = r.step("cleanup").note or {}
    c.ok(sum(int((cleaned.get(k) or {}).get("cleaned") or 0) for k in cleaned) >= 1, f"nothing cleaned: {cleaned}")
    c.eq("the cleared chat's file after cleanup", file_at(r, "cleanup", "clear"), None)
    before = r.before("cleanup").rows
    after = r.step("cleanup").rows
    c.eq("rows after cleanup (all kept, unchanged)", after, before)
    c.ok(r.sid("clear") in r.rows_final, "the cleared chat's row is gone at the end (after a backfill)")
    c.done()


# ── 10. compress ──────────────────────────────────────────────────────────────
def test_automatic_compression_counts_the_spend_once(run: ActionsResult) -> None:
    r = run
    z = r.chats["compress"]
    c = Check(r, "automatic compression inside a turn (a call reported a prompt over the threshold)")
    note = r.step("compress").note or {}
    c.ok(bool(note.get("compressed_event")), f"the host reported no compression: {note}")
    every = spend(r, calls_at(r, "compress", "compress_after"))
    if not hermes_writes(r):  # v0.50.12: no SessionDB, no rotation: the transcript is replaced, the spend kept
        c.eq("ids", z.ids, z.ids[:1])
        row, before = row_at(r, "compress", "compress"), r.before("compress").row(z.ids[0])
        c.spend("row after the compressing turn", row, spend(r, calls_at(r, "compress", "compress")))
        if row is not None and before is not None:
            c.ok(row["message_count"] >= before["message_count"], "message_count went down")
        c.spend("row after the next turn", row_at(r, "compress_after", "compress"), every)
        c.spend("row at the end", r.rows_final.get(z.ids[0]), every)
        c.done()
        return
    # HEAD: hermes-agent rotated the session: a parent (ended, 'compression') and a child row, both its own
    if len(z.ids) != 2:
        pytest.fail(f"[{r.host}] no continuation id after the compression: {z.ids}, {note}", pytrace=False)
    parent_id, child_id = z.ids
    split = r.step("compress_base").n_calls["compress"] + 1  # the compressing call is the parent's last
    parent_calls, child_calls = z.calls[:split], calls_at(r, "compress", "compress_after")[split:]
    for when, rows in (("after the next turn", r.step("compress_after").rows), ("at the end", r.rows_final)):
        parent, child = rows.get(parent_id), rows.get(child_id)
        c.spend(f"parent row {when}", parent, spend(r, parent_calls))
        c.spend(f"child row {when}", child, spend(r, child_calls))
        c.eq(f"parent end_reason {when}", (parent or {}).get("end_reason"), "compression")
        c.eq(f"child parent_session_id {when}", (child or {}).get("parent_session_id"), parent_id)
        created = (file_at(r, "compress", "compress") or {}).get("created_at")
        c.ok(
            (child or {}).get("started_at", 0) >= z.turn_started[3] - 1e-3,
            f"child started_at {when} {(child or {}).get('started_at')} moved back before the compression "
            f"(the compressing turn began {z.turn_started[3]}, the chat was created {created})",
        )
        lineage = [x for x in rows.values() if x["id"] in (parent_id, child_id) or x.get("parent_session_id") in z.ids]
        c.eq(
            f"input tokens of the whole lineage {when} (each call once)",
            sum(x["input_tokens"] or 0 for x in lineage),
            every["input_tokens"],
        )
    c.done()


def test_manual_compression_changes_nothing_in_state_db(run: ActionsResult) -> None:
    r = run
    need(r, "manual_compress")
    c = Check(r, "manual compress (/api/session/compress: its summary call is recorded nowhere)")
    c.eq("rows", r.step("manual_compress").rows, r.before("manual_compress").rows)
    c.done()


# ── 11. delete ────────────────────────────────────────────────────────────────
def test_a_deleted_chat_stays_deleted(run: ActionsResult) -> None:
    r = run
    c = Check(r, "delete (/api/session/delete: the host deletes the row itself)")
    sid = r.sid("deleted")
    c.ok(r.before("delete").row(sid) is not None, "no row before the delete")
    c.eq("row after the delete", r.step("delete").row(sid), None)
    c.eq("backfill exit code", r.backfill.returncode if r.backfill else None, 0)
    c.eq("row at the end (after a backfill over the WebUI's folder)", r.rows_final.get(sid), None)
    c.done()


# ── 13. import JSON ───────────────────────────────────────────────────────────
def test_an_imported_chat_counts_only_its_own_turns(run: ActionsResult) -> None:
    r = run
    c = Check(r, "import (/api/session/import of an export carrying token totals)")
    sid = r.sid("imported")
    c.eq("row right after the import", r.step("import").row(sid), None)
    own = spend(r, r.chats["imported"].calls)
    c.spend("row after its own turn", r.step("import_turn").row(sid), own)
    c.spend("row at the end (after a backfill)", r.rows_final.get(sid), own)
    c.done()


# ── 14. import_cli ────────────────────────────────────────────────────────────
def test_a_cli_session_opened_in_the_webui_stays_the_clis(run: ActionsResult) -> None:
    r = run
    c = Check(r, "import_cli (/api/session/import_cli): the chat has the CLI session's id")
    sid = r.cli_session_id
    c.eq("the chat's id", r.sid("cli"), sid)
    seed = r.cli_seed
    at_import = r.step("import_cli").row(sid)
    c.eq("source after the import", (at_import or {}).get("source"), "cli")
    c.eq("title after the import", (at_import or {}).get("title"), CLI_SESSION_TITLE)
    for column, value in seed.items():
        c.eq(f"{column} after the import", (at_import or {}).get(column), value)
    after_turn = r.step("import_cli_turn").row(sid)
    c.eq("source after a WebUI turn", (after_turn or {}).get("source"), "cli")
    c.eq("title after a WebUI turn", (after_turn or {}).get("title"), CLI_SESSION_TITLE)
    turn = spend(r, calls_at(r, "cli", "import_cli_turn", "import_cli"))
    for column, value in seed.items():
        # HEAD: hermes-agent adds the turn to the CLI row itself; v0.50.12: nobody writes it
        want = value + turn[column] if hermes_writes(r) else value
        c.eq(f"{column} after a WebUI turn", (after_turn or {}).get(column), want)
    c.done()


def test_a_cli_session_deleted_in_hermes_comes_back_as_a_webui_row_with_its_next_turn(run: ActionsResult) -> None:
    r = run
    c = Check(r, "import_cli, a turn, `hermes sessions delete`, a turn")
    sid = r.cli_session_id
    code, out = r.step("import_cli_deleted").note
    c.eq("`hermes sessions delete` exit code", code, 0)
    c.eq("row after the delete", r.step("import_cli_deleted").row(sid), None)
    data = file_at(r, "import_cli_after_delete", "cli") or {}
    want, what = cli_row_after_delete(r)
    for when, row in (
        ("after the next turn", r.step("import_cli_after_delete").row(sid)),
        ("at the end", r.rows_final.get(sid)),
    ):
        c.eq(f"source {when}", (row or {}).get("source"), "webui")
        c.eq(f"title {when} (the WebUI's)", (row or {}).get("title"), data.get("title"))
        c.spend(f"row {when} ({what})", row, want)
    c.done()


def cli_row_after_delete(r: ActionsResult) -> tuple[dict[str, Any], str]:
    """The imported CLI chat's row once it is back after the deletion, and why.

    HEAD: hermes-agent makes the row anew with the new turn (what it would
    record had it run the chat since). v0.50.12: this layer brings the chat
    back whole, like any chat deleted in hermes that has a new turn — every
    turn the WebUI made since the import (the CLI's own spend went with the
    deleted row; it was never the WebUI's).
    """
    if hermes_writes(r):
        return spend(r, calls_at(r, "cli", "import_cli_after_delete", "import_cli_deleted")), "hermes-agent's new row"
    return spend(r, calls_at(r, "cli", "import_cli_after_delete", "import_cli")), "every WebUI turn since the import"


# ── once per host, at the end: a sweep, hermes insights, hermes sessions list ──
def expected_rows(r: ActionsResult) -> dict[str, dict[str, Any]]:
    """Every row the oracle wants at the end, by id, with its spend (and title where the oracle fixes it)."""
    want: dict[str, dict[str, Any]] = {}

    def add(key: str, calls: list[Call], index: int = 0) -> None:
        chat = r.chats[key]
        want[chat.ids[index]] = {"spend": spend(r, calls), "key": key}

    for key in ("stream", "sync", "mixed", "edits", "clear", "cancel", "imported"):
        add(key, r.chats[key].calls)
    if "duplicate_turn" not in r.skipped:
        add("duplicate", r.chats["duplicate"].calls)
    if "branch_turn" not in r.skipped:
        add("branch", r.chats["branch"].calls)
    z = r.chats["compress"]
    if len(z.ids) == 2:
        split = r.step("compress_base").n_calls["compress"] + 1
        add("compress", z.calls[:split], 0)
        add("compress", z.calls[split:], 1)
    else:
        add("compress", z.calls)
    want[r.chats["cli"].ids[0]] = {"spend": cli_row_after_delete(r)[0], "key": "cli"}
    return want


def test_a_backfill_after_every_action_changes_no_row(run: ActionsResult) -> None:
    """A sweep over the WebUI's files (copies, snapshots, cleared and deleted chats among them) brings the same rows."""
    r = run
    c = Check(r, "`webui-insights backfill` after the run")
    c.eq("exit code", r.backfill.returncode if r.backfill else None, 0)
    for sid in sorted(set(r.rows_before_backfill) | set(r.rows_final)):
        c.eq(f"row {sid}", r.rows_final.get(sid), r.rows_before_backfill.get(sid))
    c.done()


def test_hermes_insights_counts_every_chat_once(run: ActionsResult) -> None:
    r = run
    ins = r.insights
    if ins is None:
        pytest.fail(f"[{r.host}] hermes insights failed: {r.errors}", pytrace=False)
    want = expected_rows(r)
    rows = list(r.rows_final.values())
    c = Check(r, "`hermes insights --days 1` after every action")
    c.eq("ids of the rows in state.db", sorted(x["id"] for x in rows), sorted(want))
    c.eq("Sessions", ins.sessions, len(want))
    for sid, w in sorted(want.items()):
        c.spend(f"{w['key']} ({sid})", r.rows_final.get(sid), w["spend"])
    # The compressor's summary call (HEAD): hermes-agent records it as a usage row of its own
    # (task 'compression'), not in the session's totals; insights counts it, once.
    aux = spend(r, (r.step("compress").note or {}).get("aux_calls", [])) if usage_rows(r) else None
    for column, name in (("input_tokens", "Input tokens"), ("output_tokens", "Output tokens")):
        chats = sum(w["spend"][column] for w in want.values())
        c.eq(name, getattr(ins, column), chats + (aux[column] if aux else 0))
        # and hermes adds up exactly the rows and the summary (nothing hidden elsewhere)
        c.eq(f"{name} = the rows' sum", getattr(ins, column), sum(x[column] or 0 for x in rows) + (aux[column] if aux else 0))
    c.eq("Messages = the rows' sum", ins.messages, sum(x["message_count"] or 0 for x in rows))
    c.done()


def test_hermes_sessions_list_shows_every_chat_once_with_its_title(run: ActionsResult) -> None:
    r = run
    listed: dict[str, list[str]] = {}
    for line in r.sessions_list:
        listed.setdefault(line["id"], []).append(line["title"])
    c = Check(r, "`hermes sessions list` after every action")
    titles = {
        "stream": (r.steps[-1].files.get(r.sid("stream")) or {}).get("title"),
        "sync": "Check my todo list",
        "imported": "Imported chat",
        "clear": (r.before("clear").row(r.sid("clear")) or {}).get("title"),
        "cli": (r.steps[-1].files.get(r.sid("cli")) or {}).get("title"),
    }
    for key, title in titles.items():
        sid = r.sid(key)
        shown = listed.get(sid, [])
        c.eq(f"{key}: times listed", len(shown), 1)
        if shown and title:
            c.ok(
                shown[0] == title or (len(shown[0]) >= 25 and title.startswith(shown[0])),
                f"{key}: listed as {shown[0]!r}, expected {title!r}",
            )
    for key in ("new", "deleted"):
        c.ok(r.sid(key) not in listed, f"{key}: listed although it has no row")
    if "duplicate_turn" in r.skipped:
        c.ok(r.sid("duplicate") not in listed, "the empty copy is listed")
    c.done()


# ── without any host: one visible line ───────────────────────────────────────
if not HOSTS:
    for _name in [n for n in list(globals()) if n.startswith("test_")]:
        del globals()[_name]

    def test_real_host_actions_need_a_checkout() -> None:
        pytest.skip(SKIP_HINT)
