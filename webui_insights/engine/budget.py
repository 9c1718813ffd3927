"""How long one write transaction may work before it commits: every budget, in one place.

hermes' own writers (the agent, the gateway) wait about 50 ms for state.db's
write lock before they count it as busy, so no transaction of ours should hold
the lock longer. The engine cannot bound the hold itself, only the *work* it
does between ``BEGIN IMMEDIATE`` and deciding to commit; what a transaction
holds beyond that work (the step under way, the ``COMMIT``, hermes' full-text
index merging its segments inside one ``INSERT``'s trigger) has to fit in the
room each budget leaves under those 50 ms. The budgets differ by how much of
that room the work around them needs; ``make bench`` checks the holds.

Never: import anything (the writer, the engine and the commands all read this).
"""

from __future__ import annotations

__all__ = ["LIVE_BUDGET_S", "BATCH_BUDGET_S", "TRANSCRIPT_BUDGET_S"]

# The live writer (``WriterConfig.transaction_budget_s``): it runs while the
# host's own writers are busy, and the messages a chat carries make a step
# long, so it leaves more room than the row-only commands (less than the
# transcript copy, whose single inserts can run far longer).
LIVE_BUDGET_S = 0.02

# The engine's default, and the commands (backfill, reconcile) writing rows only:
# short steps, little beyond the work.
BATCH_BUDGET_S = 0.025

# The commands copying messages: each insert fires hermes' full-text triggers, and
# one of them now and then merges the index's segments (tens of ms inside a
# single INSERT), which no budget can foresee; so about half the room.
TRANSCRIPT_BUDGET_S = 0.012
