"""The demo's own small host: a session class shaped like hermes-webui's ``api.models.Session``.

Used by ``webui-insights demo`` (which must run from a fresh clone, without
a hermes-webui checkout) and by unit tests of the library's own mechanics.
Behaviour users see is tested on the real hosts (``tests/hosts``). It keeps
the same attribute names and saves JSON the way the WebUI does
(``<state dir>/sessions/<id>.json``, written to a temporary file and renamed
into place). It is not a mock: it writes real files.
"""

from __future__ import annotations

import json
import os
import re
import threading
import time
import uuid
from pathlib import Path
from typing import Any

__all__ = ["DemoSession", "TARGET"]

TARGET = "webui_insights.demo_host:DemoSession.save"
_SAFE_ID = re.compile(r"[0-9a-f]{12}")


class DemoSession:
    """A chat with the WebUI's usage fields; ``save()`` writes its JSON file."""

    def __init__(
        self,
        state_dir: Path,
        *,
        session_id: str | None = None,
        profile: str | None = None,
        model: str = "demo/model-1",
        title: str = "Untitled",
        created_at: float | None = None,
    ) -> None:
        self.state_dir = Path(state_dir)
        self.session_id = session_id or uuid.uuid4().hex[:12]
        self.profile = profile
        self.model = model
        self.model_provider: str | None = None
        self.title = title
        self.messages: list[dict[str, Any]] = []
        self.created_at = time.time() if created_at is None else created_at
        self.updated_at = self.created_at
        self.input_tokens = 0
        self.output_tokens = 0
        self.cache_read_tokens = 0
        self.cache_write_tokens = 0
        self.estimated_cost: float | None = None

    @property
    def path(self) -> Path:
        return self.state_dir / "sessions" / f"{self.session_id}.json"

    def save(self, touch_updated_at: bool = True, skip_index: bool = False) -> None:
        if not isinstance(self.session_id, str) or not _SAFE_ID.fullmatch(self.session_id):
            raise ValueError(f"unsafe session id: {self.session_id!r}")
        if touch_updated_at:
            self.updated_at = time.time()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f"{self.path.name}.tmp.{os.getpid()}.{threading.get_ident()}")
        tmp.write_text(json.dumps(self.to_dict()), encoding="utf-8")
        os.replace(tmp, self.path)

    def to_dict(self) -> dict[str, Any]:
        return {
            "session_id": self.session_id,
            "title": self.title,
            "model": self.model,
            "model_provider": self.model_provider,
            "profile": self.profile,
            "messages": self.messages,
            "created_at": self.created_at,
            "updated_at": self.updated_at,
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "cache_read_tokens": self.cache_read_tokens,
            "cache_write_tokens": self.cache_write_tokens,
            "estimated_cost": self.estimated_cost,
        }

    def add_turn(
        self, user: str, assistant: str, *, input_tokens: int, output_tokens: int, cost: float = 0.0, cached: int = 0
    ) -> None:
        """One chat turn the way the WebUI records it: two messages, cumulative usage.

        ``input_tokens`` are the turn's prompt tokens *including* the
        ``cached`` ones, as hermes-webui counts them.
        """
        now = time.time()
        self.messages.append({"role": "user", "content": user, "timestamp": now})
        self.messages.append({"role": "assistant", "content": assistant, "timestamp": now})
        self.input_tokens += input_tokens
        self.cache_read_tokens += cached
        self.output_tokens += output_tokens
        self.estimated_cost = (self.estimated_cost or 0.0) + cost
