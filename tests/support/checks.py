"""Small checks: a bounded wait, a timestamp comparison, log lines by their words."""

from __future__ import annotations

import time
from typing import Any

import pytest

__all__ = ["wait_for", "same_time", "log_lines"]


def wait_for(condition: Any, timeout: float, interval: float = 0.02) -> bool:
    """Poll ``condition()`` until it is true or ``timeout`` passed (a bounded wait, not a timing check)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(interval)
    return bool(condition())


def same_time(seconds: float, within: float = 1e-3) -> Any:
    """``pytest.approx`` for a Unix timestamp: an absolute tolerance only.

    approx's default relative tolerance (1e-6) is half an hour at today's
    epoch, and ``math.isclose``'s (1e-9) almost two seconds: either would pass
    a timestamp that is simply wrong.
    """
    return pytest.approx(seconds, rel=0, abs=within)


def log_lines(caplog: pytest.LogCaptureFixture, *words: str) -> list[str]:
    """The log lines that contain every one of ``words``."""
    return [r.getMessage() for r in caplog.records if all(w in r.getMessage() for w in words)]
