"""A frontend of your own: a session class with its own field names, and an adapter.

Your chat code keeps a ``Conversation`` that knows nothing about hermes-webui:
``conv_id`` instead of ``session_id``, ``prompt_tokens`` / ``completion_tokens``
instead of input / output, ``turns`` instead of ``messages``. An adapter maps
it to a ``UsageSnapshot``; ``@webui_insights.mirror_usage`` on ``persist()``
does the rest (after each successful ``persist()``, in the background).

Run it: ``python examples/plain_python.py`` — it works in a temporary
HERMES_HOME with a fresh state.db and prints the row it wrote, so it never
touches your real ``~/.hermes``. Needs ``pip install 'webui-insights[hermes]'``.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import webui_insights
from webui_insights import UsageSnapshot


def conversation_usage(conv: Conversation) -> UsageSnapshot | None:
    """The adapter: your field names in, a UsageSnapshot out (None: nothing to mirror)."""
    if not conv.turns:
        return None  # opened and never used
    return UsageSnapshot(
        session_id=conv.conv_id,
        profile=conv.hermes_profile,  # None → the default profile's state.db
        model=conv.llm,
        title=conv.name,
        input_tokens=conv.prompt_tokens,  # every prompt token, cached ones included
        cache_read_tokens=conv.cached_tokens,  # hermes stores input without these
        output_tokens=conv.completion_tokens,
        estimated_cost_usd=conv.cost_usd,
        message_count=len(conv.turns),
        api_call_count=conv.llm_calls,
        created_at=conv.started,  # the chat counts on the day it started
        billing_provider="example-provider",
    )


@dataclass
class Conversation:
    """Your own session object; saved as JSON in ``store_dir``."""

    store_dir: Path
    conv_id: str = field(default_factory=lambda: "conv-" + uuid.uuid4().hex[:10])
    name: str = "New conversation"
    llm: str = "example/llm-small"
    hermes_profile: str | None = None
    started: float = field(default_factory=time.time)
    turns: list[dict[str, str]] = field(default_factory=list)
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0
    llm_calls: int = 0
    cost_usd: float = 0.0

    def ask(self, question: str) -> str:
        """One turn with a fake LLM: fixed answer, made-up but cumulative usage."""
        answer = f"(fake answer to {question!r})"
        self.turns += [{"role": "user", "text": question}, {"role": "assistant", "text": answer}]
        self.prompt_tokens += 40 * len(self.turns)
        self.completion_tokens += 25
        self.cached_tokens += 10 * (len(self.turns) // 2 - 1)
        self.llm_calls += 1
        self.cost_usd = round(self.cost_usd + 0.0007, 6)
        return answer

    @webui_insights.mirror_usage(adapter=conversation_usage)
    def persist(self) -> Path:
        """Your save; mirroring happens after it returns, never inside it."""
        path = Path(self.store_dir) / f"{self.conv_id}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        data: dict[str, Any] = asdict(self)
        data["store_dir"] = str(self.store_dir)
        path.write_text(json.dumps(data), encoding="utf-8")
        return path


def run_chat(store_dir: Path, questions: list[str], *, name: str = "Plain Python example") -> Conversation:
    """A scripted chat: ask, rename after the first answer, persist after every turn."""
    conv = Conversation(store_dir)
    for number, question in enumerate(questions, start=1):
        conv.ask(question)
        if number == 1:
            conv.name = name
        conv.persist()
    return conv


def main() -> int:
    """Demo in a throw-away HERMES_HOME; prints the state.db row."""
    from hermes_state import SessionDB

    home = Path(tempfile.mkdtemp(prefix="webui-insights-example-"))
    os.environ["HERMES_HOME"] = str(home)
    os.environ.setdefault("WEBUI_INSIGHTS_ENABLED", "1")  # in your app: the setting or env
    SessionDB(home / "state.db").close()  # a real hermes run creates it; we never do
    conv = run_chat(home / "conversations", ["What is a session?", "And a profile?"])
    if not webui_insights.flush(10.0):
        print("state.db write still pending", file=sys.stderr)
        return 1
    db = SessionDB(home / "state.db")
    try:
        row = db.get_session(conv.conv_id)
    finally:
        db.close()
    print(f"HERMES_HOME={home}")
    print(
        {k: row[k] for k in ("id", "source", "title", "input_tokens", "output_tokens", "message_count")} if row else row
    )
    return 0 if row else 1


if __name__ == "__main__":
    sys.exit(main())
