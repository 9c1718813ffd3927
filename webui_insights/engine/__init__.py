"""The sync engine: what a chat's row in hermes' state.db should become, and making it so.

``plan`` holds the rule (pure), ``apply`` the only code that writes hermes'
tables, ``sync`` the entry points every writer calls, ``batch`` a batch of
one state.db's chats through them, counted; ``records`` is this
layer's memory in state.db, ``rows`` what it reads of hermes' rows,
``titles`` the title rules, ``store`` the guarded state.db handle,
``hermes`` what the installed hermes-agent offers, ``chats`` the conversion
from a frontend's snapshot, ``transcripts`` the plan of a chat's messages.
"""
