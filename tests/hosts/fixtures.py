"""pytest fixtures for real-host tests; import the ones a module needs into it.

Why not a conftest: ``tests/conftest.py`` belongs to the unit suite; real-host
fixtures are opt-in per module::

    from hosts.fixtures import host_import, host_src  # noqa: F401  (pytest finds them by name)

- ``host_src`` — parametrised over :func:`hosts.host.host_sources` (``WEBUI_SRC``
  or each snapshot under ``../shared/hosts``); with none found, the test is
  skipped with a line that says how to point the tests at a checkout.
- ``host_copy`` — a writable temporary copy of that host (the snapshots are
  read-only in CI).
- ``host_world`` — a temporary HOME / HERMES_HOME (config.yaml, initialised
  state.db) / WebUI state dir, for a provider nobody answers (no LLM needed).
- ``host_import`` — :class:`hosts.importer.HostImport`: run code against the
  host's real ``api.models.Session`` in a clean interpreter.
- ``start_host`` — a factory: ``start_host(settings=..., enabled=..., install=...)``
  starts a fake LLM and the host's real server in a fresh world and returns
  ``(server, fake)``; everything it started is stopped (by PID) at teardown,
  whatever the test did.

:func:`hosts.scenario.run_scenario` drives the whole issue #11 script; it
stops what it starts too.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from .fake_llm import DEFAULT_MODEL, FakeLLM
from .host import SKIP_HINT, HermesWorld, HostServer, copy_host, host_id, host_sources
from .importer import HostImport

HOSTS = host_sources()


def _host_params() -> list[object]:
    if not HOSTS:
        return [pytest.param(None, id="no-host", marks=pytest.mark.skip(reason=SKIP_HINT))]
    return [pytest.param(src, id=host_id(src)) for src in HOSTS]


@pytest.fixture(params=_host_params())
def host_src(request: pytest.FixtureRequest) -> Path:
    return Path(request.param)


@pytest.fixture
def host_copy(host_src: Path, tmp_path: Path) -> Path:
    return copy_host(host_src, tmp_path / "host")


@pytest.fixture
def host_world(tmp_path: Path) -> HermesWorld:
    # Port 9 (discard) on loopback: nothing answers, nothing leaves the machine.
    return HermesWorld(tmp_path / "world", "http://127.0.0.1:9/v1", "fake-model").create()


@pytest.fixture
def host_import(host_copy: Path, host_world: HermesWorld) -> HostImport:
    return HostImport(host_copy, host_world)


StartHost = Callable[..., tuple[HostServer, FakeLLM]]


@pytest.fixture
def start_host(host_copy: Path, tmp_path: Path) -> Iterator[StartHost]:
    """Factory for live servers of the parametrised host; all stopped at teardown."""
    started: list[tuple[HostServer, FakeLLM]] = []

    def start(settings: Mapping[str, Any] | None = None, **server_kwargs: Any) -> tuple[HostServer, FakeLLM]:
        n = len(started)
        fake = FakeLLM(model=DEFAULT_MODEL).start()
        server: HostServer | None = None
        try:
            world = HermesWorld(tmp_path / f"live{n}", fake.base_url, DEFAULT_MODEL).create(settings)
            workdir = tmp_path / f"live{n}"
            server = HostServer(host_copy, world, workdir, **server_kwargs)
            started.append((server, fake))
            server.start()
        except BaseException:
            if server is None:
                fake.stop()
            raise
        return server, fake

    yield start
    for server, fake in reversed(started):
        try:
            server.stop()
        finally:
            fake.stop()
