"""The host side: the wrapt hooks ``install()`` sets up, and reading a session on its save.

``installer`` (lifecycle and the save wrapper), ``capture`` (the save path's
gate and clock), ``adapter`` (hermes-webui's Session), ``decorator``
(``@mirror_usage`` for code you own), ``agent_usage`` (what hermes-agent
reports in-process), ``host_bridge`` (silencing the host's own bridge),
``patching`` (wrapt, and putting things back).
"""
