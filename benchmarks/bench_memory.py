"""5. Bookkeeping bytes per chat at 100,000 chats (issue 15).

100,000 distinct chats, each run once by an agent and saved once through
the installed hook, with mirroring on. Half the agents were handed a
``SessionDB`` (current WebUIs' streaming chats: hermes-agent writes the
row), half report cache tokens the session does not keep (v0.50.12); the
agent is a stand-in class in a module named ``run_agent``, so ``install()``
wraps it with the real agent hook. The writer runs and its queue is
drained (a flush every 1,000 saves and at the end), so what stays is what
the process keeps per chat, not work in flight. The host drops each session
and agent after its save.

tracemalloc runs throughout; after a ``gc.collect()`` the memory still
held is grouped by the file that allocated it. The save path's bookkeeping
is what ``hook/capture.py`` (the gate) and ``hook/agent_usage.py`` (the
agent maps) allocated, plus the host's session-id strings those maps keep
alive (allocated here, and alive only because a map holds them).
"""

from __future__ import annotations

import gc
import sys
import time
import tracemalloc
import types
from collections import Counter
from typing import Any

from .common import BENCH_TARGET, BenchSession, chat_id, count, memory_owner, scratch_home
from .common import main as bench_main
from .table import Row, Table

CHATS = 100_000
FLUSH_EVERY = 1000
TARGET_BYTES = 200


class _Agent:
    """hermes-agent's AIAgent as the hook sees it: a session id, the session counters, maybe a SessionDB."""

    def __init__(self, session_id: str, n: int) -> None:
        self.session_id = session_id
        self._session_db = object() if n % 2 else None
        self.session_cache_read_tokens = 0
        self.session_cache_write_tokens = 0
        self.session_reasoning_tokens = 0
        self.session_api_calls = 0

    def run_conversation(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
        self.session_cache_read_tokens += 200
        self.session_cache_write_tokens += 10
        self.session_api_calls += 1
        return {}


def _install_agent_module() -> type:
    module = types.ModuleType("run_agent")
    module.AIAgent = _Agent  # type: ignore[attr-defined]
    sys.modules["run_agent"] = module
    return _Agent


_HOST_FILES = {
    "benchmarks/common.py": "host objects kept alive (session ids)",
    "benchmarks/bench_memory.py": "host objects kept alive (other)",
}


def run() -> list[Table]:
    import webui_insights
    from webui_insights.writer import WriterConfig

    agent_class = _install_agent_module()
    with scratch_home("memory") as home:
        webui_insights.install(
            target=BENCH_TARGET,
            enabled=True,
            writer_config=WriterConfig(debounce_s=0.05, max_pending=2 * FLUSH_EVERY),
            reconcile_interval=0,
        )
        warm = BenchSession("ffffffffffff")
        warm.save()
        webui_insights.flush(30)
        gc.collect()
        tracemalloc.start(1)
        baseline = tracemalloc.take_snapshot()
        started = time.perf_counter()
        flushed = True
        for n in range(CHATS):
            session_id = chat_id(n)
            agent = agent_class(session_id, n)
            agent.run_conversation("hello")
            chat = BenchSession(session_id, title=f"chat {n}")
            chat.input_tokens = 100 + n
            chat.save()
            del chat, agent, session_id
            if n % FLUSH_EVERY == FLUSH_EVERY - 1:
                flushed = webui_insights.flush(60) and flushed
        flushed = webui_insights.flush(60) and flushed
        took = time.perf_counter() - started
        gc.collect()
        snapshot = tracemalloc.take_snapshot()
        tracemalloc.stop()
        stats = webui_insights.stats()
        rows_in_db = count(home / "state.db", "SELECT COUNT(*) FROM sessions WHERE source = 'webui'")
        webui_insights.uninstall()

    held: Counter[str] = Counter()
    for diff in snapshot.compare_to(baseline, "filename"):
        held[memory_owner(diff.traceback[0].filename, _HOST_FILES)] += diff.size_diff
    gate = held["webui_insights/hook/capture.py"]
    agent_maps = held["webui_insights/hook/agent_usage.py"]
    ids = held["host objects kept alive (session ids)"]
    save_path = gate + agent_maps + ids
    per_chat = save_path / CHATS
    listed = (
        "webui_insights/hook/capture.py",
        "webui_insights/hook/agent_usage.py",
        "host objects kept alive (session ids)",
        "host objects kept alive (other)",
    )
    others = sorted(
        ((name, size) for name, size in held.items() if name not in listed and abs(size) >= 1000),
        key=lambda item: -item[1],
    )
    other_host = held["host objects kept alive (other)"]
    rest = sum(held.values()) - save_path - other_host
    rows = [
        Row(
            f"{CHATS:,} chats saved once each; writer running, queue drained; saves+writes took",
            f"{took:.1f} s",
            "",
            flushed,
        ),
        Row(
            "  rows in state.db (the mirror's chats; hermes-agent's own wait for hermes) / awaiting hermes",
            f"{rows_in_db - 1:,} / {stats['chats'].get('awaiting_hermes', 0):,}",
            f"{CHATS // 2:,} / {CHATS // 2:,}",
            rows_in_db - 1 == CHATS // 2 and stats["chats"].get("awaiting_hermes", 0) == CHATS // 2,
        ),
        Row(
            "save path's bookkeeping per chat (gate + agent maps + the ids they keep)",
            f"{per_chat:,.0f} B",
            f"≤ {TARGET_BYTES} B",
            per_chat <= TARGET_BYTES,
        ),
        Row("  hook/capture.py (the gate), per chat", f"{gate / CHATS:,.1f} B"),
        Row("  hook/agent_usage.py (pending ledgers, agent-written chats), per chat", f"{agent_maps / CHATS:,.1f} B"),
        Row("  session-id strings kept alive by those maps, per chat", f"{ids / CHATS:,.1f} B"),
        Row("other host objects still alive (titles, sessions, agents), per chat", f"{other_host / CHATS:,.1f} B"),
        Row("everything else still held after the run, per chat", f"{rest / CHATS:,.1f} B"),
    ]
    rows += [Row(f"  {name}", f"{size / CHATS:,.1f} B") for name, size in others[:6]]
    rows.append(
        Row(
            "  agent usage dropped for lack of room / internal errors",
            f"{stats['dropped'].get('agent_usage', 0)} / {stats['internal_errors']}",
        )
    )
    return [Table("5", f"bookkeeping memory at {CHATS:,} chats (tracemalloc)", rows)]


if __name__ == "__main__":
    bench_main(run)
