"""A Flask chat frontend whose ``/chat`` endpoint updates and saves a session.

The session class is the app's own code, so its ``save()`` carries
``@webui_insights.mirror_usage``; the endpoint does not know mirroring exists.
The "LLM" is fake: a canned reply with made-up token numbers.

Run it: ``WEBUI_INSIGHTS_ENABLED=1 HERMES_HOME=/tmp/h flask --app examples/flask_app.py run``
(HERMES_HOME must hold a state.db — any ``hermes`` run creates one), then
``curl -X POST localhost:5000/chat -H 'content-type: application/json' -d '{"message": "hi"}'``.
"""

from __future__ import annotations

import json
import os
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

from flask import Flask, abort, jsonify, request

import webui_insights
from webui_insights import UsageSnapshot


def chat_usage(chat: ChatSession) -> UsageSnapshot:
    """Adapter from this app's field names to a UsageSnapshot."""
    return UsageSnapshot(
        session_id=chat.id,
        profile=chat.profile,
        model=chat.model,
        title=chat.subject,
        input_tokens=chat.tokens_in,
        output_tokens=chat.tokens_out,
        estimated_cost_usd=chat.cost,
        message_count=len(chat.history),
        api_call_count=chat.calls,
        created_at=chat.created,
    )


class ChatSession:
    """The app's session: JSON on disk, one file per chat."""

    def __init__(self, store: Path, chat_id: str | None = None, profile: str | None = None) -> None:
        self.store = store
        self.id = chat_id or uuid.uuid4().hex[:16]
        self.profile = profile
        self.model = "fake/echo-1"
        self.subject = "Untitled"
        self.history: list[dict[str, str]] = []
        self.tokens_in = 0
        self.tokens_out = 0
        self.calls = 0
        self.cost = 0.0
        self.created = time.time()

    @webui_insights.mirror_usage(adapter=chat_usage)
    def save(self) -> None:
        self.store.mkdir(parents=True, exist_ok=True)
        data = {k: v for k, v in vars(self).items() if k != "store"}
        tmp = self.store / f"{self.id}.json.tmp"
        tmp.write_text(json.dumps(data), encoding="utf-8")
        os.replace(tmp, self.store / f"{self.id}.json")


def fake_llm(history: list[dict[str, str]], message: str) -> tuple[str, int, int]:
    """No real model: a canned reply, prompt tokens growing with the history."""
    prompt_tokens = 30 + 12 * len(history) + len(message.split())
    return f"echo: {message}", prompt_tokens, 18


def create_app(store: Path | None = None) -> Flask:
    app = Flask(__name__)
    store = store or Path(os.environ.get("CHAT_STORE") or Path(tempfile.gettempdir()) / "flask-chats")
    chats: dict[str, ChatSession] = {}
    lock = threading.Lock()

    @app.post("/chat")
    def chat() -> Any:
        body = request.get_json(force=True, silent=True) or {}
        message = body.get("message")
        if not isinstance(message, str) or not message.strip():
            abort(400, "message required")
        with lock:
            session = chats.get(body.get("chat_id") or "")
            if session is None:
                session = ChatSession(store, profile=body.get("profile"))
                chats[session.id] = session
            reply, tokens_in, tokens_out = fake_llm(session.history, message)
            session.history += [{"role": "user", "content": message}, {"role": "assistant", "content": reply}]
            session.tokens_in += tokens_in
            session.tokens_out += tokens_out
            session.calls += 1
            session.cost = round(session.cost + 0.000002 * (tokens_in + 4 * tokens_out), 8)
            if session.subject == "Untitled":
                session.subject = message[:40]
            session.save()
        return jsonify(chat_id=session.id, reply=reply, tokens_in=session.tokens_in, tokens_out=session.tokens_out)

    @app.get("/insights-status")
    def insights_status() -> Any:
        return jsonify(webui_insights.stats())

    return app


if __name__ == "__main__":
    create_app().run(debug=False)
