"""1. What the mirror adds to the host's save (issues 12 and 15).

As the first release measured it: in each of several fresh processes,
interleaved A/B samples of a no-I/O save of one session object, wrapped
(``install(target=..., enabled=True)``) vs its unwrapped original, gc off;
the samples of all processes pooled. The saves are called the way a host
calls them, ``session.save()`` each time: wrapt's descriptor then binds a
new wrapper on every call (~0.5 µs here), which the first release's loop
(the wrapped method bound once) left out; that variant is printed too.
Two kinds of save:

- nothing new (the gate's fast path: a fingerprint and one dict lookup);
- new usage every time (a snapshot is taken, stamped and queued; the
  writer, with a 30 s debounce, stays out of the timing loop and the queue
  coalesces — what a streaming turn's saves do).

This VM runs Python at one of two speeds that alternate about every
second, so each sample also times a bare function call; the table splits
the samples by phase to show the spread.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time

from .common import (
    BENCH_TARGET,
    ROOT,
    BenchSession,
    interleaved,
    median,
    phases,
    quartiles,
    scratch_home,
    unwrapped,
    us,
)
from .common import main as bench_main
from .table import Row, Table

PROCESSES = 6
SAMPLES = 201
UNCHANGED_CALLS = 2000
QUEUED_CALLS = 500


def measure() -> dict[str, list[tuple[float, float]]]:
    """In this (fresh) process: samples of what is added, and of a trivial wrapt wrapper for scale."""
    import wrapt

    import webui_insights
    from webui_insights.writer import WriterConfig

    webui_insights.install(
        target=BENCH_TARGET,
        enabled=True,
        writer_config=WriterConfig(debounce_s=30.0),
        reconcile_interval=0,
    )
    session = BenchSession("b2b2b2b2b2b2")
    original = unwrapped(BenchSession)
    session.save()  # the first save queues: the writer starts (imports hermes-agent) and lands it
    if not webui_insights.flush(60):
        raise RuntimeError("the first save did not land")
    before = webui_insights.stats()

    # As a host calls it: `session.save()` each time (wrapt binds a new
    # wrapper on every attribute lookup, which a plain method does not).
    def plain() -> None:
        original(session)

    def save() -> None:
        session.save()

    unchanged = interleaved(plain, save, UNCHANGED_CALLS, SAMPLES)
    # As the first release timed it: the wrapped method bound once, outside the loop.
    unchanged_bound = interleaved(original.__get__(session), session.save, UNCHANGED_CALLS, SAMPLES)

    def plain_new_usage() -> None:
        session.input_tokens += 1
        original(session)

    def save_new_usage() -> None:
        session.input_tokens += 1
        session.save()

    queued = interleaved(plain_new_usage, save_new_usage, QUEUED_CALLS, SAMPLES)
    after = webui_insights.stats()
    expected = (SAMPLES + 1) * QUEUED_CALLS
    if after["snapshots_queued"] - before["snapshots_queued"] != expected:
        raise RuntimeError(f"not every save queued: {after['snapshots_queued'] - before['snapshots_queued']}")
    if after["saves_seen"] - before["saves_seen"] != expected + 2 * (SAMPLES + 1) * UNCHANGED_CALLS:
        raise RuntimeError("saves were not all seen by the hook")

    # wrapt's floor: the same original behind a wrapper that only calls it, called the host's way.
    def passthrough(wrapped, instance, args, kwargs):  # type: ignore[no-untyped-def]
        return wrapped(*args, **kwargs)

    trivial_class = type("Trivial", (), {"save": wrapt.FunctionWrapper(original, passthrough)})
    trivial = trivial_class()
    trivial.__dict__.update(vars(session))
    floor = interleaved(lambda: original(trivial), lambda: trivial.save(), UNCHANGED_CALLS, 51)
    return {"unchanged": unchanged, "unchanged_bound": unchanged_bound, "queued": queued, "wrapt": floor}


def _in_fresh_processes() -> tuple[dict[str, list[tuple[float, float]]], dict[str, list[float]]]:
    """Samples pooled over fresh processes, and each process's own median per measurement."""
    pooled: dict[str, list[tuple[float, float]]] = {}
    per_process: dict[str, list[float]] = {}
    code = "import json; from benchmarks.bench_save_path import measure; print(json.dumps(measure()))"
    for _ in range(PROCESSES):
        done = subprocess.run(
            [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120, check=True
        )
        result = json.loads(done.stdout.strip().splitlines()[-1])
        for name, samples in result.items():
            pooled.setdefault(name, []).extend((a, b) for a, b in samples)
            per_process.setdefault(name, []).append(median([a for a, _ in samples]))
    return pooled, per_process


def _rows(name: str, samples: list[tuple[float, float]], per_process: list[float], target: float) -> list[Row]:
    values = [v for v, _ in samples]
    mid = median(values)
    low, high = quartiles(values)
    rows = [
        Row(
            f"{name}, median of {len(values)} pooled samples",
            us(mid),
            f"≤ {target * 1e6:.0f} µs",
            mid <= target,
        ),
        Row("  quartiles", f"{low * 1e6:.2f}–{high * 1e6:.2f} µs"),
        Row(
            f"  medians of the {len(per_process)} processes",
            f"{min(per_process) * 1e6:.2f}–{max(per_process) * 1e6:.2f} µs",
        ),
    ]
    for phase, bare_ns, phase_values in phases(samples):
        met = median(phase_values) <= target
        rows.append(
            Row(
                f"  {phase} (bare call {bare_ns:.0f} ns): median of {len(phase_values)}"
                + ("" if met else ", over target"),
                us(median(phase_values)),
            )
        )
    return rows


def _host_save_s() -> float:
    """The demo host's real save (a JSON file, the WebUI's way), for scale."""
    from webui_insights.demo_host import DemoSession

    with scratch_home("hostsave", state_db=False) as root:
        chat = DemoSession(root / "webui", session_id="d4d4d4d4d4d4")
        chat.add_turn("question", "answer", input_tokens=10, output_tokens=2)
        times = []
        for _ in range(300):
            started = time.perf_counter()
            chat.save()
            times.append(time.perf_counter() - started)
        return median(times)


def run() -> list[Table]:
    with scratch_home("savepath"):
        started = time.perf_counter()
        samples, per_process = _in_fresh_processes()
        took = time.perf_counter() - started
    floor = median([v for v, _ in samples["wrapt"]])
    rows = [
        Row("session: BenchSession (hermes-webui Session attributes), save without I/O, called as session.save()", ""),
        Row(
            f"fresh processes × samples (calls per sample: {UNCHANGED_CALLS} / {QUEUED_CALLS})",
            f"{PROCESSES} × {SAMPLES}",
        ),
        *_rows("added to a save with nothing new", samples["unchanged"], per_process["unchanged"], 2e-6),
        *_rows(
            "added to a save with nothing new, method bound once (first release's loop)",
            samples["unchanged_bound"],
            per_process["unchanged_bound"],
            2e-6,
        ),
        *_rows("added to a save that queues a snapshot", samples["queued"], per_process["queued"], 10e-6),
        Row("wrapt's floor: a wrapper that only calls the original, median", us(floor)),
        Row("host's own save for scale (DemoSession, JSON file), median", f"{_host_save_s() * 1e3:.2f} ms"),
        Row("time for the fresh processes", f"{took:.1f} s"),
    ]
    return [Table("1", "save path: what a wrapped save adds (interleaved A/B, gc off)", rows)]


if __name__ == "__main__":
    bench_main(run)
