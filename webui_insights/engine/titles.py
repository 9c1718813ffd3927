"""Titles in hermes' namespace: the pure rules, no database.

A chat's title can change in three places: the WebUI (auto-title, rename),
hermes (``hermes sessions rename``, its own lineage names "X #2" for
continuations) and, on a collision, this layer. The rules, all in
``decide_title``:

- the WebUI's title fills a row that has none;
- a WebUI rename propagates while the row still holds the title this layer
  last wrote for that chat (its memory, kept in state.db beside the row);
- any other title in the row was set in hermes and is kept;
- placeholders ("Untitled", "New Chat") are never written;
- everything is compared in the form hermes would store (its sanitiser,
  length limit included), so a title hermes changes or refuses reaches a
  fixed point instead of being rewritten on every pass.

A title another session already holds becomes "X (WebUI)", then
"X (WebUI 2)", ...: never hermes' lineage form "X #N", which
``resolve_session_by_title`` reads as a continuation of "X" (so
``hermes --resume X`` would open the WebUI chat). Names of that form that an
earlier release of this layer chose are renamed once, only where the memory
shows this layer chose them.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Literal, NamedTuple

from ..snapshot import PLACEHOLDER_TITLES

__all__ = [
    "PLACEHOLDER_TITLES",
    "TitleDecision",
    "decide_title",
    "candidate",
    "is_candidate_of",
    "hermes_form",
]

_MARK = "WebUI"
_LINEAGE = re.compile(r" #\d+")

Sanitize = Callable[[str], "str | None"]
Action = Literal["none", "write", "adopt", "kept", "refused"]


class TitleDecision(NamedTuple):
    """What to do with a chat's title.

    ``write``: give the chat ``base`` (or its first free collision name);
    ``adopt``: the row already shows ``base`` (in some form): only remember
    it; ``kept``: the row carries a title set in hermes; ``refused``: hermes
    would not store the WebUI's title (``reason`` says why). A NamedTuple:
    one is made per chat planned (a frozen dataclass costs five times as much).
    """

    action: Action
    base: str | None = None
    reason: str | None = None


NOTHING = TitleDecision("none")
KEPT = TitleDecision("kept")


def _unchanged_by_hermes(title: str, max_length: int) -> bool:
    """True when hermes' sanitiser would return ``title`` as is (checked without running it).

    No control, zero-width or direction characters (all non-printable or
    non-ASCII), no runs of spaces, nothing to strip, not too long. Most
    titles are like this, and the sanitiser's regexes cost more than the
    rest of a backfill's planning of a chat.
    """
    return (
        len(title) <= max_length
        and title.isascii()
        and title.isprintable()
        and title[0] != " "
        and title[-1] != " "
        and "  " not in title
    )


def hermes_form(title: str | None, sanitize: Sanitize, max_length: int = 0) -> tuple[str | None, str | None]:
    """(the title as hermes would store it, or None; why hermes refuses it, or None)."""
    if not title or title.strip() in PLACEHOLDER_TITLES:
        return None, None
    if max_length and _unchanged_by_hermes(title, max_length):
        return title, None
    try:
        clean = sanitize(title)
    except ValueError as exc:
        text = str(exc)
        return None, "too long" if "too long" in text.lower() else f"refused by hermes: {text[:80]}"
    if not clean or clean in PLACEHOLDER_TITLES:
        return None, None
    return clean, None


def candidate(base: str, n: int, max_length: int) -> str:
    """The n-th name for ``base``: itself, "base (WebUI)", "base (WebUI n)" (n ≥ 2), within ``max_length``."""
    if n == 0:
        return base[:max_length]
    suffix = f" ({_MARK})" if n == 1 else f" ({_MARK} {n})"
    room = max_length - len(suffix)
    return (base if len(base) <= room else base[:room].rstrip()) + suffix


def is_candidate_of(title: str, base: str, max_length: int) -> bool:
    """True when ``title`` is ``base`` or one of its collision names."""
    if title == base[:max_length]:
        return True
    if not title.endswith(")") or f" ({_MARK}" not in title:
        return False
    head, _, tail = title.rpartition(f" ({_MARK}")
    number = tail[:-1].strip()
    if number and not number.isdigit():
        return False
    n = int(number) if number else 1
    return n >= 1 and candidate(base, n, max_length) == title and bool(head)


def _is_legacy_lineage(title: str, base: str) -> bool:
    """An "X #N" name chosen by an earlier release of this layer."""
    return title.startswith(base) and _LINEAGE.fullmatch(title[len(base) :]) is not None


def decide_title(
    webui_title: str | None,
    row_title: str | None,
    memory: tuple[str | None, str | None] | None,
    sanitize: Sanitize,
    max_length: int,
) -> TitleDecision:
    """The title rule. ``memory`` is (base, written) of what this layer last wrote for the chat.

    Or (None, title): a title set in hermes that this layer met on the row
    and kept — remembered so that clearing it there reads as a clear, not
    as a row never titled.
    """
    clean, problem = hermes_form(webui_title, sanitize, max_length)
    if problem is not None:
        return TitleDecision("refused", reason=problem)
    if clean is None:
        return NOTHING
    base, written = memory if memory is not None else (None, None)
    if row_title is None or not row_title.strip():
        # Empty: never titled, or cleared in hermes (``hermes sessions rename ID ""``)
        # after this layer wrote or met one — a rename made in hermes like any other.
        return KEPT if written is not None else TitleDecision("write", clean)
    if base is not None and written is not None and row_title == written:
        if base == clean and not _is_legacy_lineage(written, clean):
            return NOTHING
        return TitleDecision("write", clean)  # a WebUI rename, or a lineage name to retire
    if is_candidate_of(row_title, clean, max_length):
        # Already there (a rename to the same text, the host's own bridge,
        # or a memory lost): remember it as ours from now on.
        return TitleDecision("adopt", clean)
    return KEPT
