"""pyoci.hooks with real tiny /bin/sh hooks: stdin state, args, env, exit
status, timeout (killing the hook's children), and run_all_warning."""
import json
import os
import time

import pytest

from conformance.harness import process_alive
from pyoci import hooks, log
from pyoci.errors import HookError
from pyoci.spec import Hook

SH = "/bin/sh"
STATE = {"ociVersion": "1.3.0", "id": "c1", "status": "created", "pid": 4242,
         "bundle": "/b", "annotations": {"k": "v"}}


def sh_hook(script, *extra_args, env=None, timeout=None):
    raw = {"path": SH, "args": ["sh", "-c", script, "sh", *extra_args]}
    if env is not None:
        raw["env"] = env
    if timeout is not None:
        raw["timeout"] = timeout
    return Hook(raw)


@pytest.fixture(autouse=True)
def reset_log():
    log.configure()
    yield
    log.configure()


def test_state_json_on_stdin(tmp_path):
    out = tmp_path / "stdin.json"
    hooks.run([sh_hook(f'cat > "{out}"')], STATE, "prestart")
    assert json.loads(out.read_text()) == STATE


def test_args_honoured(tmp_path):
    out = tmp_path / "args"
    hooks.run([sh_hook(f'printf "%s|" "$0" "$@" > "{out}"', "one", "two words", "")],
              STATE, "prestart")
    assert out.read_text() == "sh|one|two words||"


def test_argv0_is_args0_not_path(tmp_path):
    out = tmp_path / "argv0"
    hook = Hook({"path": SH, "args": ["custom-name", "-c", f'echo "$0" > "{out}"']})
    hooks.run([hook], STATE, "prestart")
    assert out.read_text() == "custom-name\n"


def test_default_args_are_the_path(tmp_path):
    # A hook without args runs as argv = [path]: a script reading stdin.
    script = tmp_path / "hook.sh"
    out = tmp_path / "out"
    script.write_text(f'#!/bin/sh\necho "$0 $#" > "{out}"\ncat >> "{out}"\n')
    script.chmod(0o755)
    hooks.run([Hook({"path": str(script)})], STATE, "poststart")
    first, rest = out.read_text().split("\n", 1)
    assert first == f"{script} 0"
    assert json.loads(rest) == STATE


def test_env_honoured_and_replaces_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("PYOCI_TEST_LEAK", "leaked")
    out = tmp_path / "env"
    hooks.run([sh_hook(f'echo "$FOO|$BAR|${{PYOCI_TEST_LEAK-unset}}" > "{out}"',
                       env=["FOO=bar", "BAR=a=b", "NOEQUALS"])], STATE, "createRuntime")
    assert out.read_text() == "bar|a=b|unset\n"


def test_without_env_the_environment_is_inherited(tmp_path, monkeypatch):
    monkeypatch.setenv("PYOCI_TEST_INHERIT", "yes")
    out = tmp_path / "env"
    hooks.run([sh_hook(f'echo "$PYOCI_TEST_INHERIT" > "{out}"')], STATE, "prestart")
    assert out.read_text() == "yes\n"


def test_nonzero_exit(tmp_path):
    with pytest.raises(HookError) as info:
        hooks.run([sh_hook("echo to-out; echo 'went wrong' >&2; echo more >&2; exit 3")],
                  STATE, "prestart")
    message = str(info.value)
    assert message.startswith("error running prestart hook #0: exit status 3, ")
    assert "exit status 3" in message
    assert "stdout: to-out" in message
    assert "stderr: went wrong more" in message
    assert "\n" not in message


def test_killed_by_signal():
    with pytest.raises(HookError) as info:
        hooks.run([sh_hook("kill -TERM $$")], STATE, "poststart")
    message = str(info.value)
    assert "signal" in message and "TERM" in message
    assert "exit status" not in message


def test_missing_executable():
    with pytest.raises(HookError) as info:
        hooks.run([Hook({"path": "/nonexistent/hook"})], STATE, "createContainer")
    assert str(info.value) == ("error running createContainer hook #0: "
                               "exec /nonexistent/hook: no such file or directory")


def test_missing_working_directory_is_named_not_the_program(tmp_path):
    """A bundle gone before a poststart or poststop hook runs there: the
    hook's chdir failed, not its exec."""
    gone = str(tmp_path / "gone")
    with pytest.raises(HookError) as info:
        hooks.run([sh_hook("exit 0")], STATE, "poststop", cwd=gone)
    assert str(info.value) == ("error running poststop hook #0: "
                               f"chdir {gone}: no such file or directory")


def test_first_failure_stops_the_rest_and_names_its_index(tmp_path):
    marks = tmp_path / "marks"
    hook_list = [sh_hook(f'echo 0 >> "{marks}"'), sh_hook(f'echo 1 >> "{marks}"; exit 1'),
                 sh_hook(f'echo 2 >> "{marks}"')]
    with pytest.raises(HookError, match=r"^error running startContainer hook #1: "):
        hooks.run(hook_list, STATE, "startContainer")
    assert marks.read_text() == "0\n1\n"


def test_empty_list_does_nothing():
    hooks.run([], STATE, "prestart")
    hooks.run_all_warning([], STATE, "poststop")


def test_hook_not_reading_stdin_is_fine():
    hooks.run([sh_hook("exit 0")], {**STATE, "annotations": {"big": "x" * 200_000}}, "prestart")


def test_timeout_kills_the_hook_and_its_children(tmp_path):
    pid_file = tmp_path / "sleep.pid"
    hook = sh_hook(f'sleep 60 & echo $! > "{pid_file}"; wait', timeout=1)
    started = time.monotonic()
    with pytest.raises(HookError) as info:
        hooks.run([hook], STATE, "prestart")
    elapsed = time.monotonic() - started
    assert elapsed < 10
    message = str(info.value)
    assert message == "error running prestart hook #0: hook ran past specified timeout of 1.0s"
    sleep_pid = int(pid_file.read_text())
    deadline = time.monotonic() + 5
    while process_alive(sleep_pid):
        assert time.monotonic() < deadline, "the hook's child survived the timeout"
        time.sleep(0.01)


def test_timeout_not_reached(tmp_path):
    out = tmp_path / "out"
    hooks.run([sh_hook(f'cat > "{out}"', timeout=5)], STATE, "prestart")
    assert json.loads(out.read_text()) == STATE


def test_run_all_warning_continues_after_a_failure(tmp_path):
    marks = tmp_path / "marks"
    log_file = tmp_path / "log.json"
    log.configure(str(log_file), "json")
    hook_list = [sh_hook(f'echo 0 >> "{marks}"; exit 2'),
                 Hook({"path": "/nonexistent"}),
                 sh_hook(f'echo 2 >> "{marks}"')]
    hooks.run_all_warning(hook_list, {**STATE, "status": "stopped"}, "poststop")
    assert marks.read_text() == "0\n2\n"
    lines = [json.loads(line) for line in log_file.read_text().splitlines()]
    assert [line["level"] for line in lines] == ["warning", "warning"]
    assert lines[0]["msg"].startswith("error running poststop hook #0: exit status 2")
    assert lines[1]["msg"] == ("error running poststop hook #1: "
                               "exec /nonexistent: no such file or directory")


def test_run_all_warning_warns_on_stderr_without_log(capsys):
    hooks.run_all_warning([sh_hook("exit 4")], STATE, "poststop")
    err = capsys.readouterr().err
    assert "level=warning" in err and "exit status 4" in err
    assert len(err.splitlines()) == 1


def test_hook_runs_in_its_own_session(tmp_path):
    out = tmp_path / "ids"
    # /proc/PID/stat: pid (comm) state ppid pgrp session; comm is "sh".
    hooks.run([sh_hook(f'echo "$$ $(cut -d" " -f6 /proc/$$/stat)" > "{out}"')],
              STATE, "prestart")
    pid, sid = out.read_text().split()[:2]
    assert pid == sid  # the hook leads its own session, so killpg reaches all it started
    assert int(sid) != os.getsid(0)
