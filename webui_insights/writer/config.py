"""The writer's timings: one frozen value, replaced as a whole by ``Writer.reconfigure``."""

from __future__ import annotations

from dataclasses import dataclass

from ..engine.budget import LIVE_BUDGET_S

__all__ = ["WriterConfig"]


@dataclass(frozen=True, slots=True)
class WriterConfig:
    """Timing of the background writer (all in seconds except ``max_pending``)."""

    debounce_s: float = 0.25
    max_pending: int = 1000
    idle_close_s: float = 30.0
    busy_retry_s: float = 0.05
    busy_retry_cap_s: float = 0.5
    error_backoff_s: float = 1.0
    error_backoff_cap_s: float = 60.0
    exit_budget_s: float = 3.0
    # Work per write transaction before it commits (why this figure: ``engine.budget``).
    transaction_budget_s: float = LIVE_BUDGET_S
