"""What every benchmark shares: a session without I/O, a scratch hermes home, sampling, statistics.

Each area runs in a process of its own (``benchmarks.__main__``), so a
benchmark may install the mirror, set ``HERMES_HOME`` and leave threads
behind without touching the next one.
"""

from __future__ import annotations

import gc
import json
import os
import shutil
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import wrapt

from .table import Table, render, to_json

ROOT = Path(__file__).resolve().parent.parent
LOCK_HOLDER = ROOT / "tests" / "support" / "lockholder.py"
BENCH_TARGET = "benchmarks.common:BenchSession.save"


class BenchSession:
    """hermes-webui's ``api.models.Session`` usage attributes, with a save that does no I/O.

    The real save writes a JSON file (~1 ms, with jitter that would drown a
    microsecond); this one only moves ``updated_at`` as the real one does,
    so what a wrapped save adds is all that differs.
    """

    def __init__(self, session_id: str, *, title: str = "Bench chat", messages: list[Any] | None = None) -> None:
        now = time.time()
        self.session_id = session_id
        self.title = title
        self.model = "bench/model-1"
        self.model_provider = "bench"
        self.profile: str | None = None
        self.messages: list[Any] = messages if messages is not None else [{"role": "user", "content": "hi"}]
        # A chat is created before its first message (messages older than the chat mark a copy).
        stamps = [m["timestamp"] for m in self.messages if isinstance(m, dict) and isinstance(m.get("timestamp"), float)]
        self.created_at = min([now, *stamps])
        self.updated_at = now
        self.input_tokens = 1
        self.output_tokens = 1
        self.cache_read_tokens = 0
        self.cache_write_tokens = 0
        self.estimated_cost: float | None = None

    def save(self, touch_updated_at: bool = True, skip_index: bool = False) -> None:
        if touch_updated_at:
            self.updated_at = time.time()


def chat_id(n: int) -> str:
    """A WebUI-style session id (12 hex digits); made here so tracemalloc can tell ids from other host objects."""
    return f"{n:012x}"


def unwrapped(cls: type, name: str = "save") -> Callable[..., Any]:
    """The class's original method under our wrapper (or the method itself when not wrapped)."""
    method = vars(cls)[name]
    return method.__wrapped__ if isinstance(method, wrapt.FunctionWrapper) else method


def memory_owner(filename: str, host_files: dict[str, str]) -> str:
    """Who holds memory allocated in ``filename``: one of our modules, the host (by file suffix), or other."""
    path = Path(filename).as_posix()
    if "/webui_insights/" in path:
        return "webui_insights/" + path.split("/webui_insights/", 1)[1]
    for suffix, label in host_files.items():
        if path.endswith(suffix):
            return label
    return "other: " + Path(filename).name


def time_pair(k: int, wrapped: Callable[[], Any], plain: Callable[[], Any]) -> tuple[float, float]:
    """Seconds for one wrapped and one plain save, run back to back in alternating order.

    Alternating by ``k`` spreads cache warm-up and clock drift evenly over both
    sides, so their difference is the hook's own cost.
    """
    if k % 2:
        t0 = time.perf_counter()
        plain()
        t1 = time.perf_counter()
        wrapped()
        t2 = time.perf_counter()
        return t2 - t1, t1 - t0
    t0 = time.perf_counter()
    wrapped()
    t1 = time.perf_counter()
    plain()
    t2 = time.perf_counter()
    return t1 - t0, t2 - t1


# ------------------------------------------------------------------ homes


def _clear_env() -> None:
    for name in list(os.environ):
        if name.startswith("WEBUI_INSIGHTS_") or name == "HERMES_WEBUI_SETTINGS_FILE":
            del os.environ[name]


@contextmanager
def scratch_home(prefix: str, *, state_db: bool = True) -> Iterator[Path]:
    """A temporary HERMES_HOME (with an initialised state.db) and WebUI state dir, removed afterwards."""
    from webui_insights.engine.store import create_state_db

    root = Path(tempfile.mkdtemp(prefix=f"webui-insights-bench-{prefix}-"))
    saved = {k: os.environ.get(k) for k in ("HERMES_HOME", "HERMES_WEBUI_STATE_DIR")}
    os.environ["HERMES_HOME"] = str(root)
    os.environ["HERMES_WEBUI_STATE_DIR"] = str(root / "webui")
    _clear_env()
    try:
        if state_db:
            create_state_db(root / "state.db")
        yield root
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        shutil.rmtree(root, ignore_errors=True)


def fresh_state_db(root: Path) -> Path:
    from webui_insights.engine.store import create_state_db

    path = root / "state.db"
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    create_state_db(path)
    return path


def read_only(db: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
    conn.row_factory = sqlite3.Row
    return conn


def read_sessions(db: Path, where: str = "1", params: tuple[Any, ...] = ()) -> dict[str, dict[str, Any]]:
    """Rows of state.db's ``sessions`` by id, read with a read-only connection."""
    conn = read_only(db)
    try:
        return {r["id"]: dict(r) for r in conn.execute(f"SELECT * FROM sessions WHERE {where}", params)}
    finally:
        conn.close()


def count(db: Path, sql: str, params: tuple[Any, ...] = ()) -> int:
    conn = read_only(db)
    try:
        return int(conn.execute(sql, params).fetchone()[0])
    finally:
        conn.close()


# ------------------------------------------------------------ lock holds


class LockHolds:
    """Times every write transaction of hermes' ``SessionDB`` in this process, as other writers wait for it.

    From the moment the transaction's work starts (``BEGIN IMMEDIATE`` has
    just taken the write lock) until its ``COMMIT`` returned: the engine's
    own ``max_lock_hold`` stops before the commit. What hermes' handle does
    after a commit on its own schedule (a WAL checkpoint every 50th write,
    an FTS ``optimize`` every 1000th) is timed apart, in ``maintenance``:
    it is hermes' upkeep, whoever's write came 1000th. Measurement only —
    the methods are restored on exit.
    """

    _UPKEEP = ("_try_wal_checkpoint", "_try_optimize_fts")

    def __init__(self) -> None:
        self.holds: list[float] = []
        self.maintenance: list[float] = []

    def __enter__(self) -> LockHolds:
        from webui_insights.engine.hermes import hermes_state

        cls = hermes_state().SessionDB
        originals = {name: vars(cls)[name] for name in ("_execute_write", *self._UPKEEP) if name in vars(cls)}
        holds, maintenance = self.holds, self.maintenance
        committed: list[float | None] = [None]  # set when hermes' upkeep starts: the COMMIT has returned

        def timed(db: Any, fn: Callable[[sqlite3.Connection], Any]) -> Any:
            started = [0.0]

            def work(conn: sqlite3.Connection) -> Any:
                started[0] = time.perf_counter()
                return fn(conn)

            committed[0] = None
            result = originals["_execute_write"](db, work)
            holds.append((committed[0] or time.perf_counter()) - started[0])
            return result

        def upkeep(original: Callable[..., Any]) -> Callable[..., Any]:
            def timed_upkeep(db: Any, *args: Any, **kwargs: Any) -> Any:
                began = time.perf_counter()
                if committed[0] is None:
                    committed[0] = began
                try:
                    return original(db, *args, **kwargs)
                finally:
                    maintenance.append(time.perf_counter() - began)

            return timed_upkeep

        self._restore = (cls, originals)
        cls._execute_write = timed
        for name in self._UPKEEP:
            if name in originals:
                setattr(cls, name, upkeep(originals[name]))
        return self

    def __exit__(self, *exc: object) -> None:
        cls, originals = self._restore
        for name, original in originals.items():
            setattr(cls, name, original)

    @property
    def longest(self) -> float:
        return max(self.holds, default=0.0)

    @property
    def p99(self) -> float:
        """The hold 99 transactions in 100 stay under (the longest, for fewer than 100)."""
        ordered = sorted(self.holds)
        return ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] if ordered else 0.0

    def over(self, limit: float) -> int:
        return sum(1 for hold in self.holds if hold > limit)


# --------------------------------------------------------------- sampling


def _nothing() -> None:
    return None


def bare_call_ns(calls: int = 2000) -> float:
    """How long a call to an empty function takes right now: tells this VM's two speed phases apart."""
    started = time.perf_counter()
    for _ in range(calls):
        _nothing()
    return (time.perf_counter() - started) / calls * 1e9


def interleaved(
    base: Callable[[], object], wrapped: Callable[[], object], calls: int, samples: int
) -> list[tuple[float, float]]:
    """Per sample: ((wrapped − base) seconds per call, bare-call ns at the time).

    The two loops run back to back in every sample (their order alternating,
    so neither always gets the warmer cache), which keeps this machine's
    speed phases out of the difference; the garbage collector is off while
    timing, as in timeit, and one warm-up sample is discarded.
    """
    out: list[tuple[float, float]] = []
    gc_was_on = gc.isenabled()
    gc.disable()
    try:
        for sample in range(samples + 1):
            first, second = (base, wrapped) if sample % 2 else (wrapped, base)
            t0 = time.perf_counter()
            for _ in range(calls):
                first()
            t1 = time.perf_counter()
            for _ in range(calls):
                second()
            t2 = time.perf_counter()
            phase = bare_call_ns()
            wrapped_s, base_s = (t2 - t1, t1 - t0) if sample % 2 else (t1 - t0, t2 - t1)
            if sample:
                out.append(((wrapped_s - base_s) / calls, phase))
    finally:
        if gc_was_on:
            gc.enable()
    return out


# ------------------------------------------------------------- statistics


def median(values: list[float]) -> float:
    return statistics.median(values)


def quartiles(values: list[float]) -> tuple[float, float]:
    q = statistics.quantiles(values, n=4, method="inclusive")
    return q[0], q[2]


def p99(values: list[float]) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[98]


def phases(samples: list[tuple[float, float]]) -> list[tuple[str, float, list[float]]]:
    """Split samples by the bare-call time seen with them: [(name, typical bare ns, values)].

    One entry when the run stayed in one phase (slowest tenth < 1.25 × fastest tenth).
    """
    ns = sorted(p for _, p in samples)
    low, high = ns[len(ns) // 10], ns[(len(ns) * 9) // 10]
    if high < 1.25 * low:
        return [("one phase", median(ns), [v for v, _ in samples])]
    cut = (low + high) / 2
    fast = [(v, p) for v, p in samples if p <= cut]
    slow = [(v, p) for v, p in samples if p > cut]
    return [
        ("fast phase", median([p for _, p in fast]), [v for v, _ in fast]),
        ("slow phase", median([p for _, p in slow]), [v for v, _ in slow]),
    ]


def us(seconds: float, digits: int = 2) -> str:
    return f"{seconds * 1e6:.{digits}f} µs"


def ms(seconds: float, digits: int = 1) -> str:
    return f"{seconds * 1e3:.{digits}f} ms"


def mb(n: float) -> str:
    return f"{n / 1e6:.2f} MB"


# ------------------------------------------------------------ entry point


def main(run: Callable[[], list[Table]]) -> None:
    """``python -m benchmarks.bench_x``: print the tables; with ``--json``, one JSON line for the runner."""
    tables = run()
    if "--json" in sys.argv[1:]:
        sys.stdout.flush()
        print(json.dumps(to_json(tables)))
    else:
        print("\n\n".join(render(t) for t in tables))
