"""Run the test suite against several hermes-agent releases and wrapt majors.

One virtual environment per combination, under ``.venv-compat/<name>``, with
the package installed editable plus its ``[hermes,test]`` extras and the two
pins; the suite runs in each, and ``compat/RESULTS.md`` is (re)written from
what actually happened — the versions pip really installed, the pytest
counts, what the sink reports as degraded. The README's compatibility table
is that file's table.

    python compat/run_matrix.py                     # the default matrix
    python compat/run_matrix.py --hermes 0.13.0 --wrapt 1   # one corner
    python compat/run_matrix.py -- -k titles        # extra pytest arguments

In each environment the library suite runs first (everything but the
real-host tests), then the real-host tests once per hermes-webui host found
(``WEBUI_SRC``, else each snapshot in ``../shared/hosts``; see
``tests/hosts``), each as a row of its own: host × hermes-agent × wrapt.

``--hermes`` takes versions or ``oldest`` / ``newest``; ``--wrapt`` takes
versions or a major (``1``, ``2``) meaning the newest release of it, both
resolved with ``pip index versions``. Exit status is 1 if any combination
failed. Environments are reused while their pins and pyproject.toml are
unchanged (``--fresh`` rebuilds them).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VENVS = ROOT / ".venv-compat"
RESULTS = ROOT / "compat" / "RESULTS.md"
DEFAULT_HERMES = ("oldest", "newest")
DEFAULT_WRAPT = ("1", "2")
# The oldest hermes-agent release this package supports (pyproject's [hermes] floor).
OLDEST_HERMES = "0.13.0"

# Run inside each environment: what capabilities the engine detects in the installed SessionDB.
PROBE = r"""
import json, sys
from importlib.metadata import version
out = {"hermes-agent": version("hermes-agent"), "wrapt": version("wrapt"),
       "python": sys.version.split()[0], "degraded": None}
try:
    from webui_insights.engine.hermes import Capabilities
    out["degraded"] = list(Capabilities.of_installed().degraded)
except Exception as exc:
    out["degraded"] = ["probe failed: %s: %s" % (type(exc).__name__, exc)]
print(json.dumps(out))
"""
# Tests that need a state.db made by the oldest release find its python here.
OLD_PYTHON_ENV = "WEBUI_INSIGHTS_OLD_HERMES_PYTHON"
# The schema-level tests against upstream main's state.db (tests/data/upstream_schema/SOURCE.md):
# upstream needs Python 3.14, so they run in every library suite here and get a row of their own.
UPSTREAM_SCHEMA_TESTS = "test_upstream_schema"
UPSTREAM_COMMIT = "00704d087b7ca25039be87baf11706d01f4da355"


@dataclass
class Outcome:
    name: str
    hermes_pin: str
    wrapt_pin: str
    host: str = "library suite"
    installed: dict[str, object] = field(default_factory=dict)
    passed: int = 0
    failed: int = 0
    errors: int = 0
    skipped: int = 0
    seconds: float = 0.0
    setup_error: str | None = None
    failures: list[str] = field(default_factory=list)
    # Of the counts above, the upstream schema-level tests': passed, failed (errors included), skipped.
    upstream: list[int] = field(default_factory=lambda: [0, 0, 0])

    @property
    def ok(self) -> bool:
        return self.setup_error is None and self.failed == 0 and self.errors == 0 and self.passed > 0


def run(
    cmd: list[str], *, cwd: Path = ROOT, env: dict[str, str] | None = None, timeout: float = 1800
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def available_versions(package: str) -> list[str]:
    """Versions the configured index offers, newest first (pip's own answer)."""
    done = run([sys.executable, "-m", "pip", "index", "versions", package], timeout=300)
    match = re.search(r"Available versions:\s*(.+)", done.stdout)
    if done.returncode != 0 or not match:
        raise SystemExit(f"cannot list versions of {package}: {done.stderr.strip() or done.stdout.strip()}")
    versions = [v.strip() for v in match.group(1).split(",") if v.strip()]
    return [v for v in versions if re.fullmatch(r"\d+(\.\d+)*", v)]  # releases only


def resolve_hermes(wanted: list[str]) -> list[str]:
    versions: list[str] | None = None
    resolved = []
    for item in wanted:
        if item in ("oldest", "newest"):
            versions = versions or available_versions("hermes-agent")
            if item == "newest":
                resolved.append(versions[0])
            else:
                resolved.append(OLDEST_HERMES if OLDEST_HERMES in versions else versions[-1])
        else:
            resolved.append(item)
    return list(dict.fromkeys(resolved))


def resolve_wrapt(wanted: list[str]) -> list[str]:
    versions: list[str] | None = None
    resolved = []
    for item in wanted:
        if re.fullmatch(r"\d+", item):
            versions = versions or available_versions("wrapt")
            newest = next((v for v in versions if v.split(".")[0] == item), None)
            if newest is None:
                raise SystemExit(f"no wrapt {item}.x release on the index")
            resolved.append(newest)
        else:
            resolved.append(item)
    return list(dict.fromkeys(resolved))


def venv_python(venv: Path) -> Path:
    return venv / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


def prepare(name: str, hermes: str, wrapt: str, *, fresh: bool, extra_pip: list[str]) -> Path:
    """Create (or reuse) the environment for one combination; return its python."""
    venv = VENVS / name
    stamp = venv / ".compat-stamp"
    key = json.dumps(
        {
            "hermes": hermes,
            "wrapt": wrapt,
            "extra": extra_pip,
            "pyproject": hashlib.sha256((ROOT / "pyproject.toml").read_bytes()).hexdigest(),
        }
    )
    if fresh and venv.exists():
        shutil.rmtree(venv)
    if stamp.exists() and stamp.read_text() == key and venv_python(venv).exists():
        return venv_python(venv)
    if venv.exists():
        shutil.rmtree(venv)
    done = run([sys.executable, "-m", "venv", str(venv)])
    if done.returncode != 0:
        raise RuntimeError(f"venv failed: {done.stderr.strip()}")
    python = venv_python(venv)
    # One resolver run with both pins, so pip either honours them or says why.
    done = run(
        [
            str(python),
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "-e",
            f"{ROOT}[hermes,test]",
            f"hermes-agent=={hermes}",
            f"wrapt=={wrapt}",
            *extra_pip,
        ],
        timeout=3600,
    )
    if done.returncode != 0:
        tail = "\n".join((done.stderr or done.stdout).strip().splitlines()[-15:])
        raise RuntimeError(f"pip install failed:\n{tail}")
    stamp.write_text(key)
    return python


def probe(python: Path) -> dict[str, object]:
    done = run([str(python), "-c", PROBE], timeout=300)
    try:
        return json.loads(done.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        return {"probe_error": (done.stderr or done.stdout).strip()[-500:]}


def host_sources() -> list[Path]:
    """The hermes-webui checkouts the real-host tests run on (the rule of tests/hosts/host.py)."""
    raw = os.environ.get("WEBUI_SRC", "").strip()
    if raw:
        candidates = [Path(p).expanduser() for p in raw.split(os.pathsep) if p.strip()]
    else:
        root = Path(os.environ.get("WEBUI_HOSTS_DIR", str(ROOT.parent / "shared" / "hosts")))
        candidates = sorted(p for p in root.iterdir() if p.is_dir()) if root.is_dir() else []
    return [p.resolve() for p in candidates if (p / "server.py").is_file() and (p / "api" / "models.py").is_file()]


def run_suite(
    python: Path,
    outcome: Outcome,
    pytest_args: list[str],
    old_python: Path | None = None,
    host: Path | None = None,
) -> None:
    with tempfile.TemporaryDirectory(prefix="compat-junit-") as tmp:
        junit = Path(tmp) / "junit.xml"
        env = {k: v for k, v in os.environ.items() if not k.startswith(("HERMES_", "WEBUI_INSIGHTS_", "WEBUI_SRC"))}
        if old_python is not None and old_python != python:
            env[OLD_PYTHON_ENV] = str(old_python)
        if host is not None:
            env["WEBUI_SRC"] = str(host)
        started = time.monotonic()
        done = run(
            [str(python), "-m", "pytest", "-q", "-p", "no:cacheprovider", f"--junitxml={junit}", *pytest_args],
            env=env,
            timeout=3600,
        )
        outcome.seconds = time.monotonic() - started
        # The full output stays beside the environment for reading failures.
        log = python.parent.parent / ("pytest.log" if host is None else f"pytest-{host.name}.log")
        log.write_text(done.stdout + done.stderr, encoding="utf-8")
        if not junit.exists():
            outcome.setup_error = "pytest did not run: " + (done.stderr or done.stdout).strip()[-800:]
            return
        root = ET.parse(junit).getroot()
        for case in root.iter("testcase"):
            label = f"{case.get('classname', '')}::{case.get('name', '')}"
            upstream = case.get("classname", "").endswith(UPSTREAM_SCHEMA_TESTS)
            if case.find("failure") is not None:
                outcome.failed += 1
                outcome.failures.append(label)
                outcome.upstream[1] += upstream
            elif case.find("error") is not None:
                outcome.errors += 1
                outcome.failures.append(label)
                outcome.upstream[1] += upstream
            elif case.find("skipped") is not None:
                outcome.skipped += 1
                outcome.upstream[2] += upstream
            else:
                outcome.passed += 1
                outcome.upstream[0] += upstream


def write_results(outcomes: list[Outcome], command: str) -> None:
    lines = [
        "# Compatibility results",
        "",
        "Generated by `compat/run_matrix.py`; do not edit by hand.",
        "",
        f"- Run: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, "
        f"{platform.system()} {platform.machine()}, commit `{git_commit()}`",
        f"- Command: `{command}`",
        "",
        "| host | hermes-agent | wrapt | Python | result | passed | failed | skipped | degraded capabilities |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for o in outcomes:
        inst = o.installed
        degraded = inst.get("degraded")
        degraded_text = "none" if degraded == [] else ("; ".join(degraded) if isinstance(degraded, list) else "?")
        result = "pass" if o.ok else "FAIL"
        lines.append(
            f"| {o.host} | {inst.get('hermes-agent', o.hermes_pin)} | {inst.get('wrapt', o.wrapt_pin)} "
            f"| {inst.get('python', '?')} | {result} | {o.passed} | {o.failed + o.errors} | {o.skipped} "
            f"| {degraded_text} |"
        )
    rows = len(outcomes)
    suites = [o for o in outcomes if o.host == "library suite" and sum(o.upstream)]
    if suites:
        passed, failed, skipped = (sum(o.upstream[i] for o in suites) for i in range(3))
        lines.append(
            f"| hermes-agent upstream main, schema only | main @ `{UPSTREAM_COMMIT[:8]}` (schema v30) "
            f"| each library suite above | not run (needs 3.14) | {'pass' if not failed and passed else 'FAIL'} "
            f"| {passed} | {failed} | {skipped} | no upstream code run: its DDL, our writes, its readers as SQL |"
        )
        rows += 1
        lines += ["", *UPSTREAM_NOTE]
    problems = [o for o in outcomes if not o.ok]
    if problems:
        lines += ["", "## Failures", ""]
        for o in problems:
            lines.append(f"### {o.name} ({o.host})")
            lines.append("")
            if o.setup_error:
                lines += ["```", o.setup_error, "```"]
            lines += [f"- `{label}`" for label in o.failures]
            if o.failures:
                log = "pytest.log" if o.host == "library suite" else f"pytest-{o.host}.log"
                lines += ["", f"Full output: `.venv-compat/{o.name}/{log}`"]
            lines.append("")
    RESULTS.write_text("\n".join(lines).rstrip() + "\n", encoding="utf-8")
    table_end = lines.index("|---|---|---|---|---|---|---|---|---|") + 1 + rows
    update_readme(lines[2:table_end])


UPSTREAM_NOTE = [
    "The schema-only row: `tests/test_upstream_schema.py` in every library suite, summed. It builds a state.db",
    f"from upstream main's DDL at `{UPSTREAM_COMMIT}` (`tests/data/upstream_schema`), writes to it",
    "with the engine through that row's SessionDB, and checks upstream's readers reproduced as SQL. **Proven:** the",
    "writes are valid on that schema (NOT NULL, foreign keys, unique titles), hermes' other tables stay as they were,",
    "and the reproduced readers (insights' usage rows and residual, `sessions list`, the pickers' and sweeps' last",
    "activity, the archived/hidden filters) see each mirrored chat right. **Not proven:** anything upstream's own code",
    "does (it needs Python 3.14; none of it ran), schema states after that commit, the FTS-backed search.",
]


def update_readme(block: list[str]) -> None:
    """Put the summary table between the compat-table markers of README.md."""
    readme = ROOT / "README.md"
    text = readme.read_text(encoding="utf-8")
    start, end = "<!-- compat-table:start -->", "<!-- compat-table:end -->"
    if start not in text or end not in text:
        return
    head, rest = text.split(start, 1)
    _, tail = rest.split(end, 1)
    readme.write_text(head + start + "\n" + "\n".join(block) + "\n" + end + tail, encoding="utf-8")


def git_commit() -> str:
    done = run(["git", "rev-parse", "--short", "HEAD"])
    commit = done.stdout.strip() or "unknown"
    dirty = run(["git", "status", "--porcelain", "--untracked-files=no"]).stdout.strip()
    return commit + ("+dirty" if dirty else "")


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    extra: list[str] = []
    if "--" in argv:
        cut = argv.index("--")
        argv, extra = argv[:cut], argv[cut + 1 :]
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hermes", nargs="+", default=list(DEFAULT_HERMES), help="versions, or oldest/newest")
    parser.add_argument("--wrapt", nargs="+", default=list(DEFAULT_WRAPT), help="versions, or a major for its newest")
    parser.add_argument("--fresh", action="store_true", help="rebuild the environments")
    parser.add_argument("--pip", nargs="+", default=[], metavar="REQ", help="more requirements for every environment")
    parser.add_argument("--no-results", action="store_true", help="do not rewrite compat/RESULTS.md")
    args = parser.parse_args(argv)
    pytest_args = extra or ["-m", "not real_host and not real_host_hint", "tests"]
    hosts = [] if extra else host_sources()

    hermes_versions = resolve_hermes(args.hermes)
    wrapt_versions = resolve_wrapt(args.wrapt)
    outcomes: list[Outcome] = []
    # The first environment of the oldest release made: later runs open its state.dbs.
    old_python: Path | None = None
    for hermes in hermes_versions:
        for wrapt in wrapt_versions:
            name = f"hermes-{hermes}-wrapt-{wrapt}"
            outcome = Outcome(name, hermes, wrapt)
            print(f"== {name}: preparing .venv-compat/{name}", flush=True)
            try:
                python = prepare(name, hermes, wrapt, fresh=args.fresh, extra_pip=args.pip)
            except (RuntimeError, subprocess.TimeoutExpired) as exc:
                outcome.setup_error = str(exc)
            else:
                if old_python is None and hermes == hermes_versions[0]:
                    old_python = python
                outcome.installed = probe(python)
                print(f"   installed {outcome.installed}; running pytest {' '.join(pytest_args)}", flush=True)
                try:
                    run_suite(python, outcome, pytest_args, old_python)
                except subprocess.TimeoutExpired as exc:
                    outcome.setup_error = f"pytest timed out after {exc.timeout} s"
            status = "pass" if outcome.ok else "FAIL"
            print(
                f"   {status}: {outcome.passed} passed, {outcome.failed + outcome.errors} failed, "
                f"{outcome.skipped} skipped in {outcome.seconds:.0f} s"
                + (f"\n   {outcome.setup_error}" if outcome.setup_error else "")
                + "".join(f"\n   failed: {label}" for label in outcome.failures),
                flush=True,
            )
            outcomes.append(outcome)
            if outcome.setup_error and not outcome.installed:
                continue
            for host in hosts:
                row = Outcome(name, hermes, wrapt, host=host.name, installed=outcome.installed)
                print(f"   real host {host.name}: running pytest -m real_host", flush=True)
                try:
                    run_suite(python, row, ["-m", "real_host", "tests"], old_python, host)
                except subprocess.TimeoutExpired as exc:
                    row.setup_error = f"pytest timed out after {exc.timeout} s"
                print(
                    f"   {'pass' if row.ok else 'FAIL'}: {row.passed} passed, {row.failed + row.errors} failed, "
                    f"{row.skipped} skipped in {row.seconds:.0f} s"
                    + (f"\n   {row.setup_error}" if row.setup_error else "")
                    + "".join(f"\n   failed: {label}" for label in row.failures),
                    flush=True,
                )
                outcomes.append(row)
    if not args.no_results:
        shown = ["python", "compat/run_matrix.py", *(argv or [])] + (["--", *extra] if extra else [])
        write_results(outcomes, " ".join(shown))
        print(f"wrote {RESULTS.relative_to(ROOT)}")
    passed = sum(o.passed for o in outcomes)
    failed = sum(o.failed + o.errors for o in outcomes)
    skipped = sum(o.skipped for o in outcomes)
    print(f"compat: {passed} passed, {failed} failed, {skipped} skipped")  # the CI's closing line
    return 0 if all(o.ok for o in outcomes) else 1


if __name__ == "__main__":
    sys.exit(main())
