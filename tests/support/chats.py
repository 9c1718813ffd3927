"""Chats of the demo host (``webui_insights.demo_host``), made and saved as the WebUI would."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import webui_insights
from webui_insights.demo_host import DemoSession

__all__ = ["make_session", "save_turn"]


def make_session(webui_dir: Path, **kwargs: Any) -> DemoSession:
    return DemoSession(webui_dir, **kwargs)


def save_turn(chat: DemoSession, input_tokens: int = 1, output_tokens: int = 1) -> None:
    """One chat turn, saved through the (wrapped) save, and wait until it is mirrored."""
    chat.add_turn("q", "a", input_tokens=input_tokens, output_tokens=output_tokens)
    chat.save()
    assert webui_insights.flush(5)
