"""A fake OpenAI-compatible LLM on 127.0.0.1, for driving real hermes-webui hosts.

Why: the real-host tests run hermes-webui's server with the real hermes-agent
``AIAgent``; the agent must talk to *something* that answers like an
OpenAI-compatible provider, deterministically and offline, and reports usage
with cached prompt tokens (that is where the WebUI's and hermes' token
conventions differ). This server is that something.

What it answers (everything else is 404, so hermes-agent's local-server probes
— ``/api/v1/models`` (LM Studio), ``/api/tags`` (Ollama), ``/props``,
``/version`` — find nothing and the endpoint stays a plain custom provider):

- ``POST /v1/chat/completions`` — plain JSON, or SSE chunks when ``stream`` is
  true; the final chunk carries ``usage`` only when
  ``stream_options.include_usage`` asks for it (like OpenAI). One reply per
  call: ``"reply N"`` where N counts the chat calls (title requests excluded).
  A title-generation request (hermes-agent's ``agent/title_generator.py`` or
  hermes-webui HEAD's own ``api/streaming.py`` prompts) gets
  ``title_for(first user message)`` = ``"About <its first line>"``: a test
  knows every title in advance, and the title differs from the WebUI's
  provisional one (the first message itself), so HEAD really replaces it.
- ``GET /v1/models`` (and ``/models``) — the one model, with ``context_length``
  and per-token ``pricing`` (prompt, completion, cache_read): hermes-agent
  prices a custom endpoint's calls from that listing
  (``agent/usage_pricing.get_pricing_entry`` → ``fetch_endpoint_model_metadata``),
  so costs come out non-zero.

``queue_tool_call()`` makes the next chat call answer with one tool call
instead of text (default the ``todo`` tool with no arguments: a harmless read
of the agent's in-memory task list that works offline); the agent runs it and
calls again, and that call gets the text reply. ``queue_tool_call(usage=...)``
reports other usage for that one call (a big prompt makes hermes-agent
compress the context right after it). ``hold_next_call()`` makes the next
chat call hang until it is released (or 30 s), then drops the connection
unanswered: a turn a test can cancel mid-stream, whose cut-off call reports
no usage to anyone. A context-compression summary request
(hermes-agent's summariser) is answered as kind ``"aux"``: it is no chat turn.
Every call keeps the usage it reported and whether it was delivered
(``Call.completed``), so a test adds up exactly what a client was told.

Use it as a context manager or ``start()``/``stop()``; every wait is bounded.
"""

from __future__ import annotations

import json
import re
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

DEFAULT_MODEL = "fake-model"
"""Not a GPT-5/codex-like name: hermes-agent would send those to the Responses API."""

# Per-token prices in USD as an OpenAI-compatible /models listing spells them.
DEFAULT_PRICING = {"prompt": "0.000002", "completion": "0.00001", "cache_read": "0.0000005"}

_TITLE_MARKERS = (
    "generate a short, descriptive title",  # hermes-agent agent/title_generator.py
    "generate a short session title",  # hermes-webui HEAD api/streaming.py, first prompt
    "concise noun-phrase title",  # hermes-webui HEAD, retry prompt
)
_WORKSPACE_PREFIX = re.compile(r"^\s*\[Workspace[^\]]*\]\s*")  # "[Workspace: p]" or "[Workspace::v1: p]"


@dataclass(frozen=True)
class Usage:
    """Usage reported for one call, OpenAI style: ``prompt`` includes ``cached``."""

    prompt: int = 1234
    cached: int = 200
    completion: int = 56

    def as_openai(self) -> dict[str, Any]:
        return {
            "prompt_tokens": self.prompt,
            "completion_tokens": self.completion,
            "total_tokens": self.prompt + self.completion,
            "prompt_tokens_details": {"cached_tokens": self.cached},
        }


@dataclass
class Call:
    """One request the fake answered (for assertions and debugging)."""

    kind: str  # "chat" | "title" | "tool_call" | "aux" (a context-compression summary)
    stream: bool
    model: str
    include_usage: bool
    reply: str
    n_messages: int
    usage: Usage = field(default_factory=lambda: Usage())
    at: float = field(default_factory=time.time)
    completed: bool = False  # the whole answer (usage included) reached the client
    held: bool = False  # hung by hold_next_call() and dropped unanswered


class FakeLLM:
    """The fake provider. ``base_url`` is what goes into hermes' config.yaml."""

    def __init__(
        self,
        model: str = DEFAULT_MODEL,
        usage: Usage | None = None,
        pricing: dict[str, str] | None = None,
        context_length: int = 200_000,
    ) -> None:
        self.model = model
        self.usage = usage or Usage()
        self.pricing = dict(pricing or DEFAULT_PRICING)
        self.context_length = context_length
        self.calls: list[Call] = []
        self.unknown_paths: list[str] = []
        self._lock = threading.Lock()
        self._chat_n = 0
        self._tool_queue: list[tuple[str, dict[str, Any], Usage | None]] = []
        self._holds: list[list[Any]] = []  # [chat calls still to let through, release event]
        self.holding = threading.Event()  # set while a held call is waiting
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # ── lifecycle ─────────────────────────────────────────────────────────
    def start(self) -> FakeLLM:
        handler = type("FakeLLMHandler", (_Handler,), {"fake": self})
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="fake-llm", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        if self._server is None:
            return
        # shutdown() waits for serve_forever to notice (poll interval 0.5 s).
        stopper = threading.Thread(target=self._server.shutdown, daemon=True)
        stopper.start()
        stopper.join(timeout)
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout)
        self._server = None

    def __enter__(self) -> FakeLLM:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        assert self._server is not None, "not started"
        return int(self._server.server_address[1])

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    # ── test controls ─────────────────────────────────────────────────────
    def queue_tool_call(
        self, name: str = "todo", arguments: dict[str, Any] | None = None, usage: Usage | None = None
    ) -> None:
        """The next chat call answers with one call of tool ``name`` (reporting ``usage`` if given)."""
        with self._lock:
            self._tool_queue.append((name, dict(arguments or {}), usage))

    def hold_next_call(self, skip: int = 0) -> threading.Event:
        """The chat call after the next ``skip`` ones hangs until the returned event is set (or
        30 s), then its connection is dropped unanswered (``Call.held``)."""
        release = threading.Event()
        with self._lock:
            self._holds.append([skip, release])
        return release

    def count(self, kind: str | None = None) -> int:
        """Calls answered so far (of one ``kind`` when given)."""
        with self._lock:
            return sum(1 for c in self.calls if kind is None or c.kind == kind)

    def snapshot(self) -> int:
        """A mark in the call log: ``calls_since(mark)`` lists what came after it."""
        with self._lock:
            return len(self.calls)

    def calls_since(self, mark: int, kinds: tuple[str, ...] = ("chat", "tool_call")) -> list[Call]:
        with self._lock:
            return [c for c in self.calls[mark:] if c.kind in kinds]

    def model_listing(self) -> dict[str, Any]:
        return {
            "object": "list",
            "data": [
                {
                    "id": self.model,
                    "object": "model",
                    "owned_by": "fake",
                    "name": self.model,
                    "context_length": self.context_length,
                    "pricing": dict(self.pricing),
                }
            ],
        }

    # ── answering ─────────────────────────────────────────────────────────
    def answer(self, body: dict[str, Any]) -> tuple[Call, dict[str, Any] | None]:
        """Decide the reply for one chat-completions request: (call, tool_call or None)."""
        messages = body.get("messages") or []
        stream = bool(body.get("stream"))
        include_usage = bool((body.get("stream_options") or {}).get("include_usage")) if stream else True
        model = str(body.get("model") or self.model)
        title_user = _title_request_user_text(messages)
        with self._lock:
            if title_user is not None:
                call = Call("title", stream, model, include_usage, title_for(title_user), len(messages), self.usage)
                tool = None
            elif _is_summary_request(messages):
                call = Call("aux", stream, model, include_usage, SUMMARY_REPLY, len(messages), self.usage)
                tool = None
            elif self._tool_queue:
                name, args, usage = self._tool_queue.pop(0)
                self._chat_n += 1
                tool = {
                    "id": f"call_fake_{self._chat_n}",
                    "type": "function",
                    "function": {"name": name, "arguments": json.dumps(args)},
                }
                call = Call("tool_call", stream, model, include_usage, "", len(messages), usage or self.usage)
            else:
                self._chat_n += 1
                call = Call("chat", stream, model, include_usage, f"reply {self._chat_n}", len(messages), self.usage)
                tool = None
            self.calls.append(call)
        return call, tool

    def take_hold(self, call: Call) -> threading.Event | None:
        """The release event if ``call`` (a chat call) is to be held."""
        if call.kind not in ("chat", "tool_call"):
            return None
        with self._lock:
            if not self._holds:
                return None
            if self._holds[0][0] > 0:
                self._holds[0][0] -= 1
                return None
            return self._holds.pop(0)[1]


def _content_text(content: Any) -> str:
    if isinstance(content, list):
        return "\n".join(str(p.get("text") or "") for p in content if isinstance(p, dict))
    return str(content or "")


def _title_request_user_text(messages: list[dict[str, Any]]) -> str | None:
    """The user's words if this is a title-generation request, else None."""
    if not messages or messages[0].get("role") != "system":
        return None
    system = _content_text(messages[0].get("content")).lower()
    if not any(marker in system for marker in _TITLE_MARKERS):
        return None
    user = next((_content_text(m.get("content")) for m in messages[1:] if m.get("role") == "user"), "")
    # hermes-agent: "User: ...\n\nAssistant: ..."; hermes-webui: "User question:\n...\n\nAssistant answer:\n..."
    match = re.search(r"User(?: question)?:\s*(.*?)\n\s*\nAssistant", user, flags=re.S)
    return match.group(1) if match else user


SUMMARY_REPLY = "## Goal\nContinue the conversation.\n## Completed Actions\n1. Answered the questions."
_SUMMARY_MARKER = "you are a summarization agent creating a context checkpoint"  # agent/context_compressor.py


def _is_summary_request(messages: list[dict[str, Any]]) -> bool:
    return any(_SUMMARY_MARKER in _content_text(m.get("content")).lower() for m in messages)


def title_for(user_text: str) -> str:
    """The title the fake generates for a chat whose first message is ``user_text``."""
    text = _WORKSPACE_PREFIX.sub("", user_text).strip()
    first = text.splitlines()[0].strip() if text else ""
    return f"About {first}"[:60] if first else "About nothing"


class _Handler(BaseHTTPRequestHandler):
    fake: FakeLLM
    timeout = 30  # an idle or half-sent request never holds a thread longer
    protocol_version = "HTTP/1.0"  # one request per connection: no keep-alive bookkeeping

    def log_message(self, fmt: str, *args: Any) -> None:  # keep test output clean
        pass

    def _json(self, status: int, payload: dict[str, Any]) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0].rstrip("/")
        if path in ("/v1/models", "/models"):
            return self._json(200, self.fake.model_listing())
        self.fake.unknown_paths.append(f"GET {path}")
        self._json(404, {"error": {"message": f"no route {path}", "type": "not_found"}})

    def do_POST(self) -> None:
        path = self.path.split("?", 1)[0].rstrip("/")
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        if path not in ("/v1/chat/completions", "/chat/completions"):
            self.fake.unknown_paths.append(f"POST {path}")
            return self._json(404, {"error": {"message": f"no route {path}", "type": "not_found"}})
        try:
            body = json.loads(raw or b"{}")
        except ValueError:
            return self._json(400, {"error": {"message": "bad json", "type": "invalid_request_error"}})
        call, tool = self.fake.answer(body)
        release = self.fake.take_hold(call)
        if release is not None:  # a turn to cancel: the call hangs, then the connection drops, unanswered
            call.held = True
            self.fake.holding.set()
            release.wait(30)
            self.fake.holding.clear()
            self.close_connection = True
            return
        usage = call.usage.as_openai()
        try:
            if call.stream:
                self._stream(call, tool, usage)
            else:
                self._plain(call, tool, usage)
        except OSError:  # the client went away (a cancelled turn): it was told nothing more
            return
        call.completed = call.include_usage

    def _plain(self, call: Call, tool: dict[str, Any] | None, usage: dict[str, Any]) -> None:
        message: dict[str, Any] = {"role": "assistant", "content": None if tool else call.reply}
        if tool:
            message["tool_calls"] = [tool]
        self._json(
            200,
            {
                "id": f"chatcmpl-fake-{len(self.fake.calls)}",
                "object": "chat.completion",
                "created": int(time.time()),
                "model": call.model,
                "choices": [{"index": 0, "message": message, "finish_reason": "tool_calls" if tool else "stop"}],
                "usage": usage,
            },
        )

    def _stream(self, call: Call, tool: dict[str, Any] | None, usage: dict[str, Any]) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.end_headers()
        base = {
            "id": f"chatcmpl-fake-{len(self.fake.calls)}",
            "object": "chat.completion.chunk",
            "created": int(time.time()),
            "model": call.model,
        }

        def chunk(payload: dict[str, Any]) -> None:
            self.wfile.write(b"data: " + json.dumps({**base, **payload}).encode() + b"\n\n")
            self.wfile.flush()

        chunk({"choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}]})
        if tool:
            delta = {"tool_calls": [{"index": 0, **tool}]}
            chunk({"choices": [{"index": 0, "delta": delta, "finish_reason": None}]})
            chunk({"choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]})
        else:
            for piece in re.findall(r"\S+\s*", call.reply):
                chunk({"choices": [{"index": 0, "delta": {"content": piece}, "finish_reason": None}]})
            chunk({"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
        if call.include_usage:
            chunk({"choices": [], "usage": usage})
        self.wfile.write(b"data: [DONE]\n\n")
        self.wfile.flush()


if __name__ == "__main__":  # a manual run: python -m tests.hosts.fake_llm
    with FakeLLM() as fake:
        print(fake.base_url, flush=True)
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass
