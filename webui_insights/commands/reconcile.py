"""One reconcile pass: kept here for the import path; the pass lives with the sweep (``..sweep``).

The sweep runs inside the WebUI's process, which must not load the command
layer, so ``reconcile_pass`` is defined in ``sweep`` and only re-exported here.
"""

from __future__ import annotations

from ..sweep import ReconcileResult, reconcile_pass

__all__ = ["ReconcileResult", "reconcile_pass"]
