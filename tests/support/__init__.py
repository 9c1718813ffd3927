"""Helpers the tests share: functions, builders and small classes (fixtures live in the conftest files).

Import the module you need, ``from support.db import read_row``; this file
imports nothing, so a test's subprocess can take one helper without the rest.
``tests`` is on ``sys.path`` through ``pythonpath`` in pyproject.toml's
``[tool.pytest.ini_options]`` (a subprocess puts it there itself).

- ``db``: read state.db rows without hermes-agent (``read_row``, ``count_rows``)
  and change them behind the mirror's back (``tamper``).
- ``chats``: demo-host chats (``make_session``, ``save_turn``).
- ``checks``: ``wait_for`` (a bounded wait), ``same_time`` (timestamps),
  ``log_lines`` (caplog's lines with given words).
- ``forks``: ``in_forked_child`` and the installed mirror's locks by name
  (``INTERNAL_LOCK_NAMES``, ``internal_locks``), for fork-safety tests.
- ``lockholder``: ``LockHolder``, a second process holding state.db's write
  lock; the file is also that process's script (``python lockholder.py DB SECONDS``).
- ``run_hermes``: the real ``hermes`` command line (``hermes``, ``run_insights``).
- ``engine``: builders for the sync engine's values (``desired``, ``row``,
  ``record``, ``run``, ``Applied``).
- ``messy_home``: a generated, messy hermes home (``make_messy_home``,
  ``write_chat``, ``child_pids``).

The real-host helpers are a package of their own, ``tests/hosts`` (see its README).
"""
