"""A FastAPI chat frontend, mirrored with ``install(target=...)`` instead of a decorator.

``install(target="package.module:Class.method", adapter=...)`` is for a save
method you cannot (or would rather not) edit — a class from another package.
Here the class happens to live in this file, so the target is built from
``__name__``; for a third-party store it would read e.g.
``"chatstore.models:Transcript.save"``. ``install()`` runs in the app's
lifespan; shutdown waits briefly for pending writes and puts the original back.
The "LLM" is fake: a canned reply with made-up token numbers.

Run it: ``WEBUI_INSIGHTS_ENABLED=1 HERMES_HOME=/tmp/h uvicorn --app-dir examples fastapi_app:app``
(HERMES_HOME must hold a state.db — any ``hermes`` run creates one).
"""

from __future__ import annotations

import json
import os
import tempfile
import threading
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import FastAPI, HTTPException
from pydantic import BaseModel

import webui_insights
from webui_insights import UsageSnapshot

TARGET = f"{__name__}:Transcript.save"


class Transcript:
    """Stands in for a chat store you do not own: plain attributes, a save()."""

    def __init__(self, store: Path, profile: str | None = None) -> None:
        self.store = store
        self.uid = uuid.uuid4().hex
        self.profile = profile
        self.engine = "fake/echo-1"
        self.heading: str | None = None
        self.lines: list[dict[str, str]] = []
        self.usage = {"prompt": 0, "completion": 0, "cached": 0}
        self.requests = 0
        self.opened_at = time.time()

    def save(self) -> None:
        self.store.mkdir(parents=True, exist_ok=True)
        data = {k: v for k, v in vars(self).items() if k != "store"}
        tmp = self.store / f"{self.uid}.json.tmp"
        tmp.write_text(json.dumps(data), encoding="utf-8")
        os.replace(tmp, self.store / f"{self.uid}.json")


def transcript_usage(t: Transcript) -> UsageSnapshot:
    """Adapter: this store's names (nested usage dict included) to a UsageSnapshot."""
    return UsageSnapshot(
        session_id=t.uid,
        profile=t.profile,
        model=t.engine,
        title=t.heading,
        input_tokens=t.usage["prompt"],
        output_tokens=t.usage["completion"],
        cache_read_tokens=t.usage["cached"],
        message_count=len(t.lines),
        api_call_count=t.requests,
        created_at=t.opened_at,
    )


class ChatIn(BaseModel):
    message: str
    chat_id: str | None = None
    profile: str | None = None


class ChatOut(BaseModel):
    chat_id: str
    reply: str
    input_tokens: int
    output_tokens: int


def create_app(store: Path | None = None) -> FastAPI:
    store = store or Path(os.environ.get("CHAT_STORE") or Path(tempfile.gettempdir()) / "fastapi-chats")
    chats: dict[str, Transcript] = {}
    lock = threading.Lock()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        webui_insights.install(target=TARGET, adapter=transcript_usage)
        try:
            yield
        finally:
            webui_insights.flush(5.0)
            webui_insights.uninstall()

    app = FastAPI(lifespan=lifespan)

    @app.post("/chat", response_model=ChatOut)
    async def chat(body: ChatIn) -> Any:
        if not body.message.strip():
            raise HTTPException(400, "message required")
        with lock:
            t = chats.get(body.chat_id or "")
            if t is None:
                t = Transcript(store, profile=body.profile)
                chats[t.uid] = t
            reply = f"echo: {body.message}"
            t.lines += [{"role": "user", "content": body.message}, {"role": "assistant", "content": reply}]
            t.usage["prompt"] += 50 + 10 * len(t.lines)
            t.usage["completion"] += 20
            t.usage["cached"] += 32 if len(t.lines) > 2 else 0
            t.requests += 1
            t.heading = t.heading or body.message[:40]
            t.save()
        return ChatOut(chat_id=t.uid, reply=reply, input_tokens=t.usage["prompt"], output_tokens=t.usage["completion"])

    return app


app = create_app()
