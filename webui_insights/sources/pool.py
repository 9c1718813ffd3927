"""The reader pool: session files parsed in forked processes while the caller works.

JSON decoding is most of a backfill's reading, and the CLI is a process of
its own, so it parses the folder's parts in forked reader processes and
writes each part while the next is parsed. Only ``scanning`` starts the
pool, and only when asked for workers: a host that runs threads (the
WebUI) never loads this module.

Reader k parses parts k, k + workers, ... and sends each result through
its own pipe as a length-prefixed pickle, so the parent reads the parts in
order and a full pipe makes a reader wait (memory stays bounded). The
parent only reads pipes: no thread of its own shares its GIL with the
caller's work. On any way out (Ctrl-C, an exception from the caller, the
generator closed early) readers still running are killed and every one is
reaped; none is left behind.

Never: run the parent's Ctrl-C handler in a reader, or let a reader run
the parent's exit handlers or flush its buffers.
"""

from __future__ import annotations

import os
import pickle
import signal
import struct
from collections.abc import Generator, Iterator
from contextlib import contextmanager
from typing import NoReturn, cast

from ..snapshot import UsageSnapshot
from . import session_file
from .folder import BadSessionFile

__all__ = ["read_parts_forked"]

Part = list[UsageSnapshot | BadSessionFile]

_LENGTH = struct.Struct("<Q")


@contextmanager
def _sigint_held() -> Iterator[None]:
    """Hold SIGINT back while readers are forked: a child must never run the parent's handler.

    A Ctrl-C meanwhile reaches this process as soon as the readers exist (and ignore it).
    """
    if not hasattr(signal, "pthread_sigmask"):
        yield
        return
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def _reader(fd: int, chunks: list[list[str]], keep_messages: bool) -> NoReturn:
    """A forked reader's whole life: parse its chunks, send each as a length-prefixed pickle, exit."""
    try:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C goes to the process group: the parent stops us
        if hasattr(signal, "pthread_sigmask"):
            signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
        for part in chunks:
            _send(fd, pickle.dumps(session_file.read_chunk(part, keep_messages), protocol=pickle.HIGHEST_PROTOCOL))
        code = 0
    except BrokenPipeError:
        code = 0  # the parent stopped reading: nothing more to do
    except BaseException as exc:  # a bug or MemoryError: say so, the parent raises it
        try:
            _send(fd, pickle.dumps(RuntimeError(f"reader process failed: {type(exc).__name__}: {exc}")))
        except BaseException:
            pass
        code = 1
    os._exit(code)  # no atexit handlers, no flushing of the parent's buffers


def _send(fd: int, blob: bytes) -> None:
    view = memoryview(_LENGTH.pack(len(blob)) + blob)
    while view:
        view = view[os.write(fd, view) :]


def _receive(fd: int) -> Part:
    (size,) = _LENGTH.unpack(_read_exactly(fd, _LENGTH.size))
    item = pickle.loads(_read_exactly(fd, size))
    if isinstance(item, RuntimeError):
        raise item
    return cast(Part, item)


def _read_exactly(fd: int, size: int) -> bytes:
    data = os.read(fd, size)
    if len(data) == size:
        return data
    parts, got = [data], len(data)
    while got < size:
        block = os.read(fd, size - got)
        if not block:
            raise RuntimeError("a reader process ended early")
        parts.append(block)
        got += len(block)
    return b"".join(parts)


def _fork_readers(chunks: list[list[str]], keep_messages: bool, workers: int, readers: list[tuple[int, int]]) -> None:
    """Start up to ``workers`` readers, each appended to ``readers`` as (pid, read end) once it runs.

    None at all when the system refuses the first fork (a process limit):
    the caller then reads in this process.
    """
    with _sigint_held():
        for k in range(workers):
            read_end, write_end = os.pipe()
            try:
                pid = os.fork()
            except BaseException as exc:
                os.close(read_end)
                os.close(write_end)
                if readers or not isinstance(exc, OSError):
                    raise
                return
            if pid == 0:  # pragma: no cover - runs in the child, which never returns
                os.close(read_end)
                for _, other in readers:
                    os.close(other)
                _reader(write_end, chunks[k::workers], keep_messages)
            os.close(write_end)
            readers.append((pid, read_end))


def read_parts_forked(chunks: list[list[str]], keep_messages: bool, workers: int) -> Generator[Part | None, None, None]:
    """None once the readers are started, then each chunk's results, in order (see the module's docstring)."""
    readers: list[tuple[int, int]] = []  # (pid, read end)
    try:
        _fork_readers(chunks, keep_messages, workers, readers)
        yield None
        for index in range(len(chunks)):
            if readers:
                yield _receive(readers[index % workers][1])
            else:
                yield session_file.read_chunk(chunks[index], keep_messages)
    finally:
        _stop_readers(readers)


def _stop_readers(readers: list[tuple[int, int]]) -> None:
    """Kill what still runs and reap every reader (a finished one is reaped at once)."""
    for pid, _ in readers:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    for pid, read_end in readers:
        os.close(read_end)
        while True:
            try:
                os.waitpid(pid, 0)
            except ChildProcessError:
                pass
            except InterruptedError:  # pragma: no cover - Python retries EINTR itself
                continue
            break
