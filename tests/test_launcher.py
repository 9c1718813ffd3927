"""``webui-insights run -- COMMAND``: the exec, the environment, and the bootstrap ``sitecustomize``.

The launcher and COMMAND are real processes here (the installed console
script, ``sh``, this interpreter); the WebUI is a small ``api`` package
written into a temporary folder, so each test takes a fraction of a second.
The real hermes-webui servers started through the launcher are in
``test_real_host_launcher.py``.
"""

from __future__ import annotations

import ast
import json
import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
from support.db import read_row

import webui_insights
from webui_insights import launcher, settings
from webui_insights.engine.store import create_state_db
from webui_insights.hook import installer

SCRIPT = Path(sys.executable).with_name("webui-insights")
CLI = [str(SCRIPT)] if SCRIPT.exists() else [sys.executable, "-m", "webui_insights"]
SITECUSTOMIZE = launcher.BOOTSTRAP_DIR / "sitecustomize.py"

# A stand-in for hermes-webui's api/models.py: its Session has the WebUI's fields and save().
WEBUI_MODELS = """
    from webui_insights.demo_host import DemoSession


    class Session(DemoSession):
        pass
"""
# The same shape without webui_insights: a WebUI in a Python where the package may be missing.
PLAIN_WEBUI_MODELS = """
    class Session:
        def save(self):
            return "saved"
"""
# Another application's api.models (Django, Flask projects often have one).
OTHER_APP_MODELS = """
    class Order:
        def save(self):
            return "saved"
"""


def clean_env(**extra: str) -> dict[str, str]:
    """This process's environment without any webui-insights or PYTHONPATH setting, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("WEBUI_INSIGHTS_") and k != "PYTHONPATH"}
    env.update(extra)
    return env


def launch(
    *args: str, env: Mapping[str, str] | None = None, cwd: Path | None = None, timeout: float = 60.0
) -> subprocess.CompletedProcess[str]:
    """``webui-insights ARGS`` to completion (bounded), output captured."""
    return subprocess.run(
        [*CLI, *args],
        env=dict(env if env is not None else clean_env()),
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )


def python_under_launcher(
    code: str, *options: str, env: Mapping[str, str] | None = None, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    """``webui-insights run OPTIONS -- python -c CODE``; CODE prints one JSON line last."""
    return launch("run", *options, "--", sys.executable, "-c", textwrap.dedent(code), env=env, cwd=cwd)


def last_json(done: subprocess.CompletedProcess[str]) -> Any:
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.fixture
def webui(tmp_path: Path) -> Any:
    """``webui(models_source)`` writes ``api/models.py`` into a folder and returns it (the command's cwd)."""

    def write(source: str) -> Path:
        root = tmp_path / "webui"
        (root / "api").mkdir(parents=True, exist_ok=True)
        (root / "api" / "__init__.py").write_text("")
        (root / "api" / "models.py").write_text(textwrap.dedent(source))
        return root

    return write


# ------------------------------------------------------------- COMMAND is the process


def test_a_command_that_fails_makes_the_launcher_exit_one() -> None:
    assert launch("run", "--", "false").returncode == 1


def test_the_launcher_exits_with_the_commands_own_status() -> None:
    assert launch("run", "--", "sh", "-c", "exit 7").returncode == 7
    assert launch("run", "--", "true").returncode == 0
    assert launch("run", "true").returncode == 0  # the -- is optional when COMMAND starts with no dash


def _started(code: str) -> tuple[subprocess.Popen[str], dict[str, Any]]:
    """The launcher running ``python -c CODE`` in a session of its own; CODE's first JSON line."""
    proc = subprocess.Popen(
        [*CLI, "run", "--", sys.executable, "-c", textwrap.dedent(code)],
        env=clean_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
        start_new_session=True,  # its own process group: a "terminal" of its own for the Ctrl-C below
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()  # bounded: the child prints at once, and the test times out otherwise
    if not line:
        proc.kill()
        pytest.fail(f"the command printed nothing: {proc.communicate(timeout=10)}")
    return proc, json.loads(line)


_WAITS_FOR_A_SIGNAL = """
    import json, os, signal, sys, time
    def on_int(signum, frame):
        print("SIGINT reached the command", flush=True)
        sys.exit(42)
    signal.signal(signal.SIGINT, on_int)
    print(json.dumps({"pid": os.getpid()}), flush=True)
    time.sleep(60)
"""


def test_ctrl_c_reaches_the_command_which_is_the_launchers_own_process() -> None:
    proc, hello = _started(_WAITS_FOR_A_SIGNAL)
    try:
        assert hello["pid"] == proc.pid  # exec: nothing in between to forward, nothing left behind
        os.killpg(proc.pid, signal.SIGINT)  # what a terminal does on Ctrl-C: the whole foreground group
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate(timeout=10)
    assert proc.returncode == 42, err
    assert "SIGINT reached the command" in out


def test_sigterm_reaches_the_command_and_its_death_by_signal_is_the_exit_status() -> None:
    proc, hello = _started(_WAITS_FOR_A_SIGNAL)
    try:
        os.kill(hello["pid"], signal.SIGTERM)  # a supervisor stopping the unit's main PID
        proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate(timeout=10)
    assert proc.returncode == -signal.SIGTERM


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads signal dispositions from /proc")
def test_the_command_starts_with_sigpipe_at_its_default_as_from_a_shell() -> None:
    # Python ignores SIGPIPE and an exec keeps it ignored: `yes | head -1` would never end by SIGPIPE.
    done = launch("run", "--", "sh", "-c", "grep SigIgn /proc/$$/status")
    assert done.returncode == 0, done.stderr
    ignored = int(done.stdout.split()[-1], 16)
    assert not ignored & (1 << (signal.SIGPIPE - 1)), done.stdout
    assert not ignored & (1 << (signal.SIGXFSZ - 1)), done.stdout


# ------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["run"], "no command to run"),
        (["run", "--"], "no command to run"),
        (["run", "--", "no-such-command-for-webui-insights"], "not found on PATH"),
        (["run", "--", "./no/such/file"], "no such file"),
        (["run", "--bogus", "--", "true"], "unknown option '--bogus'"),
        (["run", "--print-env", "--", "true"], "--print-env takes no COMMAND"),
    ],
)
def test_bad_input_is_one_line_and_exit_two_and_one_json_object_with_json(args: list[str], words: str) -> None:
    done = launch(*args)
    assert done.returncode == 2
    assert done.stdout == ""
    assert done.stderr.count("\n") == 1 and words in done.stderr, done.stderr
    assert done.stderr.startswith("webui-insights run: ")

    done = launch(*args, "--json") if "--" not in args else launch(args[0], "--json", *args[1:])
    assert done.returncode == 2
    assert json.loads(done.stdout) == {"command": "run", "error": done.stderr.strip().split(": ", 1)[1], "exit_code": 2}


@pytest.mark.parametrize(
    ("args", "error"),
    [
        (["--json", "run", "--", "true"], "unknown option '--json'; options go before --, COMMAND after it (see run -h)"),
        (["run", "--enabled=yes", "--json", "--", "true"], "argument --enabled/--no-enabled: ignored explicit argument 'yes'"),
    ],
)
def test_misplaced_or_malformed_options_still_print_the_json_error_object(args: list[str], error: str) -> None:
    done = launch(*args)
    assert done.returncode == 2
    assert json.loads(done.stdout) == {"command": "run", "error": error, "exit_code": 2}


def test_a_file_that_is_not_executable_is_a_usage_error(tmp_path: Path) -> None:
    script = tmp_path / "start.sh"
    script.write_text("#!/bin/sh\nexit 0\n")
    script.chmod(0o644)
    done = launch("run", "--", str(script))
    assert done.returncode == 2
    assert "permission denied" in done.stderr and done.stderr.count("\n") == 1


# ------------------------------------------------------------------ environment


def test_options_map_to_the_documented_variables_and_pythonpath_keeps_the_users(tmp_path: Path) -> None:
    code = """
        import json, os
        print(json.dumps({k: v for k, v in os.environ.items() if k.startswith(("WEBUI_INSIGHTS_", "PYTHONPATH"))}))
    """
    env = clean_env(PYTHONPATH=str(tmp_path))
    seen = last_json(python_under_launcher(code, "--enabled", "--no-transcripts", env=env))
    assert seen == {
        "PYTHONPATH": os.pathsep.join([str(launcher.BOOTSTRAP_DIR), str(tmp_path)]),
        launcher.ENV_AUTOINSTALL: "1",
        settings.ENV_ENABLED: "1",
        settings.ENV_TRANSCRIPTS: "0",
    }
    seen = last_json(python_under_launcher(code, "--no-enabled", "--transcripts"))
    assert seen[settings.ENV_ENABLED] == "0" and seen[settings.ENV_TRANSCRIPTS] == "1"
    assert seen["PYTHONPATH"] == str(launcher.BOOTSTRAP_DIR)  # nothing else, not even an empty entry

    # Without the options, COMMAND gets whatever the caller's environment says.
    seen = last_json(python_under_launcher(code, env=clean_env(WEBUI_INSIGHTS_ENABLED="1")))
    assert seen[settings.ENV_ENABLED] == "1" and settings.ENV_TRANSCRIPTS not in seen


def test_a_launcher_inside_a_launcher_lists_the_bootstrap_once(tmp_path: Path) -> None:
    env = launcher.launch_env({"PYTHONPATH": str(tmp_path)})
    again = launcher.launch_env(env)
    assert again["PYTHONPATH"].split(os.pathsep) == [str(launcher.BOOTSTRAP_DIR), str(tmp_path)]
    assert launcher.launch_env({"PYTHONPATH": ""})["PYTHONPATH"] == str(launcher.BOOTSTRAP_DIR)


def test_print_env_is_what_run_sets(tmp_path: Path) -> None:
    done = launch("run", "--print-env", "--enabled")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines == [
        f"PYTHONPATH={launcher.BOOTSTRAP_DIR}",
        f"{launcher.ENV_AUTOINSTALL}=1",
        f"{settings.ENV_ENABLED}=1",
    ]
    done = launch("run", "--print-env", "--json")
    assert json.loads(done.stdout) == {
        "command": "run",
        "env": {"PYTHONPATH": str(launcher.BOOTSTRAP_DIR), launcher.ENV_AUTOINSTALL: "1"},
        "exit_code": 0,
    }


def test_the_bootstrap_and_the_launcher_agree_on_names_and_flag_words() -> None:
    tree = ast.parse(SITECUSTOMIZE.read_text(encoding="utf-8"))
    names = ("_ACTIVATION_ENV", "_TRIGGER", "_ON")
    constants = {
        node.targets[0].id: ast.literal_eval(node.value)
        for node in tree.body
        if isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name) and node.targets[0].id in names
    }
    assert constants["_ACTIVATION_ENV"] == launcher.ENV_AUTOINSTALL
    assert constants["_TRIGGER"] == launcher.TRIGGER_MODULE
    assert constants["_TRIGGER"] == installer.DEFAULT_TARGET.split(":")[0]
    assert all(settings.parse_env_flag(word) is True for word in constants["_ON"])
    assert set(constants["_ON"]) == settings._TRUE


# ------------------------------------------------------------- the bootstrap


_WHAT_THIS_PROCESS_LOADED = """
    import json, os, sys
    ours = sorted(m for m in sys.modules if m.split(".")[0] in ("webui_insights", "wrapt"))
    fds = sorted(os.listdir("/proc/self/fd")) if os.path.isdir("/proc/self/fd") else []
    import threading
    print(json.dumps({"modules": ours, "threads": threading.active_count(), "fds": len(fds),
                      "finders": [type(f).__name__ for f in sys.meta_path]}))
"""


def test_a_process_that_never_imports_the_webui_pays_only_the_bootstrap() -> None:
    plain = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(_WHAT_THIS_PROCESS_LOADED)],
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    launched = python_under_launcher(_WHAT_THIS_PROCESS_LOADED, "--enabled")
    without, with_ = last_json(plain), last_json(launched)
    assert with_["modules"] == [] and with_["threads"] == 1
    assert with_["fds"] == without["fds"]
    assert with_["finders"] == ["_Finder", *without["finders"]]  # one finder, watching for api.models only
    assert launched.stderr == ""


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="lists open files in /proc")
def test_install_in_a_process_without_the_webui_starts_no_thread_and_keeps_no_file_open(tmp_path: Path) -> None:
    """What activation costs where api.models turns out not to be the WebUI's: hooks waiting, nothing running."""
    code = """
        import json, os, threading
        before = set(os.listdir("/proc/self/fd"))
        import webui_insights
        installed = webui_insights.install(enabled=True)
        after = set(os.listdir("/proc/self/fd"))
        print(json.dumps({"installed": installed, "threads": threading.active_count(),
                          "new_fds": sorted(after - before), "hooked": webui_insights.is_installed()}))
    """
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        env=clean_env(HERMES_HOME=str(tmp_path)),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert last_json(done) == {"installed": True, "threads": 1, "new_fds": [], "hooked": False}
    assert done.stderr == ""


def test_the_webuis_import_installs_the_mirror_and_a_save_lands_in_state_db(tmp_path: Path, webui: Any) -> None:
    home = tmp_path / "hermes"
    home.mkdir()
    create_state_db(home / "state.db")
    cwd = webui(WEBUI_MODELS)
    code = """
        import json, sys
        import api.models
        import webui_insights
        chat = api.models.Session(state_dir=sys.argv[1], title="Started by the launcher")
        chat.add_turn("q", "a", input_tokens=120, output_tokens=7, cached=20)
        chat.save()
        print(json.dumps({
            "flushed": webui_insights.flush(10),
            "installed": webui_insights.is_installed(),
            "target": webui_insights.stats()["target"],
            "loader": type(api.models.__loader__).__name__,
            "spec_loader": type(api.models.__spec__.loader).__name__,
            "finders": [type(f).__name__ for f in sys.meta_path],
            "id": chat.session_id,
        }))
    """
    env = clean_env(HERMES_HOME=str(home), HERMES_WEBUI_STATE_DIR=str(home / "webui"))
    done = launch(
        "run", "--enabled", "--", sys.executable, "-c", textwrap.dedent(code), str(home / "webui"), env=env, cwd=cwd
    )
    out = last_json(done)
    assert out["flushed"] and out["installed"] and out["target"] == "api.models:Session.save"
    # The WebUI's module looks as it would without us, and the finder is gone once it fired.
    assert out["loader"] == out["spec_loader"] == "SourceFileLoader"
    assert "_Finder" not in out["finders"]
    row = read_row(home / "state.db", out["id"])
    assert row is not None and row["title"] == "Started by the launcher"
    assert (row["input_tokens"], row["cache_read_tokens"], row["output_tokens"]) == (100, 20, 7)
    assert "WARNING" not in done.stderr and "ERROR" not in done.stderr, done.stderr


def test_a_webui_import_that_failed_once_still_installs_when_it_succeeds(tmp_path: Path, webui: Any) -> None:
    flag = tmp_path / "ready"
    cwd = webui(
        f"""
        import os
        if not os.path.exists({str(flag)!r}):
            raise ImportError("not configured yet")
        from webui_insights.demo_host import DemoSession

        class Session(DemoSession):
            pass
        """
    )
    code = f"""
        import json, pathlib
        try:
            import api.models
        except ImportError:
            pass
        pathlib.Path({str(flag)!r}).touch()
        import api.models
        import webui_insights
        print(json.dumps({{"target": webui_insights.stats()["target"]}}))
    """
    assert last_json(python_under_launcher(code, cwd=cwd))["target"] == "api.models:Session.save"


def test_another_applications_api_models_is_left_alone(webui: Any) -> None:
    cwd = webui(OTHER_APP_MODELS)
    code = """
        import json, sys
        import api.models
        print(json.dumps({"modules": sorted(m for m in sys.modules if m.startswith("webui_insights")),
                          "saved": api.models.Order().save()}))
    """
    done = python_under_launcher(code, "--enabled", cwd=cwd)
    assert last_json(done) == {"modules": [], "saved": "saved"}
    assert done.stderr == ""


def test_a_pythonpath_that_leaked_without_the_activation_variable_does_nothing(webui: Any) -> None:
    cwd = webui(WEBUI_MODELS)
    code = """
        import json, sys
        import api.models
        import webui_insights
        print(json.dumps({"installed": webui_insights.stats()["target"],
                          "finders": [type(f).__name__ for f in sys.meta_path]}))
    """
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        env=clean_env(PYTHONPATH=str(launcher.BOOTSTRAP_DIR), WEBUI_INSIGHTS_ENABLED="1"),
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
    )
    out = last_json(done)
    assert out["installed"] is None and "_Finder" not in out["finders"]


def test_the_environment_recipe_alone_does_what_run_does(tmp_path: Path, webui: Any) -> None:
    """What systemd's Environment= or a Dockerfile's ENV would set: the --print-env lines, no launcher."""
    printed = launch("run", "--print-env", "--json", "--enabled")
    recipe = json.loads(printed.stdout)["env"]
    cwd = webui(WEBUI_MODELS)
    code = """
        import json
        import api.models
        import webui_insights
        print(json.dumps({"target": webui_insights.stats()["target"]}))
    """
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        env=clean_env(**recipe),
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert last_json(done)["target"] == "api.models:Session.save"


def test_a_webui_whose_python_cannot_import_webui_insights_says_so_once_and_runs(webui: Any) -> None:
    cwd = webui(PLAIN_WEBUI_MODELS)
    code = """
        import json, sys
        sys.modules["webui_insights"] = None  # as in a Python where the package is not installed
        import api.models
        print(json.dumps({"saved": api.models.Session().save()}))
    """
    done = python_under_launcher(code, cwd=cwd)
    assert last_json(done) == {"saved": "saved"}
    lines = done.stderr.splitlines()
    assert len(lines) == 1 and "not mirroring this WebUI" in lines[0] and "install webui-insights" in lines[0]


def test_a_webui_that_calls_install_itself_keeps_its_installation_quietly(webui: Any) -> None:
    cwd = webui(WEBUI_MODELS)
    code = """
        import json, logging
        logging.basicConfig(level=logging.DEBUG)
        import webui_insights
        webui_insights.install(enabled=False, reconcile_interval=0)  # the README's one line, in the WebUI's code
        import api.models
        print(json.dumps({"installed": webui_insights.is_installed()}))
    """
    done = python_under_launcher(code, "--enabled", cwd=cwd)
    assert last_json(done) == {"installed": True}
    assert "the launcher leaves it" in done.stderr
    assert "WARNING" not in done.stderr and "ERROR" not in done.stderr, done.stderr


# -------------------------------------------------- a sitecustomize we hide


@pytest.fixture
def user_site(tmp_path: Path) -> Any:
    """``user_site(body)``: a folder holding a user's ``sitecustomize.py`` with ``body``."""

    def write(body: str) -> Path:
        folder = tmp_path / "user-site"
        folder.mkdir(exist_ok=True)
        (folder / "sitecustomize.py").write_text(textwrap.dedent(body))
        return folder

    return write


def test_an_existing_sitecustomize_still_runs_and_is_the_sitecustomize_module(user_site: Any) -> None:
    folder = user_site(
        """
        import os
        os.environ["USER_SITECUSTOMIZE_PID"] = str(os.getpid())
        """
    )
    code = """
        import json, os, sys
        import sitecustomize
        print(json.dumps({"ran_here": os.environ.get("USER_SITECUSTOMIZE_PID") == str(os.getpid()),
                          "module": sitecustomize.__file__,
                          "finders": [type(f).__name__ for f in sys.meta_path]}))
    """
    out = last_json(python_under_launcher(code, env=clean_env(PYTHONPATH=str(folder))))
    assert out["ran_here"]
    assert out["module"] == str(folder / "sitecustomize.py")
    assert out["finders"][0] == "_Finder"  # and ours ran too


def test_an_existing_sitecustomize_that_fails_fails_as_it_would_without_us(user_site: Any) -> None:
    folder = user_site('raise RuntimeError("boom in the user\'s sitecustomize")\n')
    code = """
        import json, sys
        print(json.dumps({"finders": [type(f).__name__ for f in sys.meta_path]}))
    """
    plain = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        env=clean_env(PYTHONPATH=str(folder)),
        capture_output=True,
        text=True,
        timeout=60,
    )
    launched = launch("run", "--", sys.executable, "-c", textwrap.dedent(code), env=clean_env(PYTHONPATH=str(folder)))
    assert "Error in sitecustomize" in plain.stderr
    # site's own report, nothing of ours: once in the launcher's own Python (it runs with the
    # caller's PYTHONPATH too), once in COMMAND's.
    assert launched.stderr == plain.stderr * 2
    assert last_json(launched)["finders"][0] == "_Finder"


# ------------------------------------------------------------- in-process


def test_activate_installs_once_and_leaves_an_installation_it_did_not_make(hermes_home: Path) -> None:
    assert launcher.activate() is True
    assert webui_insights.stats()["target"] == "api.models:Session.save"
    assert launcher.activate() is False  # no second install, no warning


@pytest.mark.swallowed_errors_expected
def test_activate_never_raises_into_the_hosts_import(
    mocker: Any, fail_on_swallowed_errors: list[tuple[str, BaseException]]
) -> None:
    mocker.patch.object(installer, "install", side_effect=RuntimeError("broken on purpose"))
    assert launcher.activate() is False
    assert [where for where, _ in fail_on_swallowed_errors] == ["launcher activation"]
