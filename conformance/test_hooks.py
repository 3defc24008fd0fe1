"""Lifecycle hooks (config.md "POSIX-platform Hooks", runtime.md "Lifecycle").

A recording hook appends its name to out/hooks.log and saves the state it
got on stdin as out/NAME.json.  Hooks whose path resolves in the runtime
namespace use the host's /bin/sh and the host path of out/; startContainer
hooks resolve in the container, so they use its busybox sh and /out.
"""
import json
import os
import time

import pytest

from conformance.bundle import read_config, write_config
from conformance.harness import (OUT, WAIT_FOR_STOP, assert_no_runner_environment,
                                 skip_module_unless_runnable)

pytestmark = pytest.mark.root
skip_module_unless_runnable()

CREATE_HOOKS = ["prestart", "createRuntime", "createContainer"]
CONTAINER_NAMESPACE_HOOKS = ["createContainer", "startContainer"]
ALL_HOOKS = CREATE_HOOKS + ["startContainer", "poststart", "poststop"]

# Seconds within which a hook with a 1 s timeout must have been aborted.
HOOK_TIMEOUT_LIMIT = 10

# The container program logs itself too, then waits for the test to stop it.
PROGRAM = f"echo program >>{OUT}/hooks.log\n{WAIT_FOR_STOP}"


def out_dir(bundle, kind):
    """Where a hook of ``kind`` finds the bundle's out/ directory."""
    return OUT if kind == "startContainer" else str(bundle / "out")


def shell_hook(script, **fields):
    return {"path": "/bin/sh", "args": ["sh", "-c", script], **fields}


def recording_hook(bundle, kind, name=None, then="", **fields):
    """A hook that logs ``name`` (default: its kind), saves its stdin, then runs ``then``
    with $OUT set to its view of out/."""
    name = name or kind
    return shell_hook(f"OUT={out_dir(bundle, kind)}\n"
                      f"echo {name} >>$OUT/hooks.log\n"
                      f"cat >$OUT/{name}.json\n{then}", **fields)


def failing_hook():
    return shell_hook("exit 1")


def set_hooks(bundle, hooks):
    """Give the bundle's config ``hooks``: {kind: [hook, ...]}."""
    config = read_config(bundle)
    config["hooks"] = hooks
    write_config(bundle, config)


def hooked_bundle(probe, kinds):
    """A bundle running PROGRAM with one recording hook of each of ``kinds``."""
    bundle = probe.bundle(PROGRAM)
    set_hooks(bundle, {kind: [recording_hook(bundle, kind)] for kind in kinds})
    return bundle


def hook_log(bundle):
    log = bundle / "out" / "hooks.log"
    return log.read_text().split() if log.exists() else []


def hook_file(bundle, name):
    return (bundle / "out" / name).read_text()


def run_until_stopped(probe, container_id, bundle):
    """Create and start, then let the program exit; returns the state seen while it ran."""
    runtime = probe.runtime
    runtime.create(container_id, bundle)
    runtime.start(container_id)
    state = runtime.wait_for_status(container_id, "running")
    probe.stop_program(bundle)
    runtime.wait_for_status(container_id, "stopped")
    return state


def run_through_lifecycle(probe, container_id, bundle):
    """Create, start, let the program exit, delete; returns the state seen while it ran."""
    state = run_until_stopped(probe, container_id, bundle)
    probe.runtime.delete(container_id)
    return state


def test_create_hooks_run_during_create_in_order(runtime, probe, container_id):
    """The prestart hooks MUST be called before the createRuntime hooks. The
    createContainer hooks MUST be called after the createRuntime hooks (all as part
    of the create operation)."""
    bundle = hooked_bundle(probe, CREATE_HOOKS)
    runtime.create(container_id, bundle)
    assert hook_log(bundle) == CREATE_HOOKS


def test_start_container_hooks_run_before_user_program(runtime, probe, container_id):
    """The startContainer hooks MUST be called before the user-specified process is
    executed as part of the start operation."""
    bundle = hooked_bundle(probe, ["startContainer"])
    runtime.create(container_id, bundle)
    assert hook_log(bundle) == []
    runtime.start(container_id)
    probe.stop_program(bundle)
    runtime.wait_for_status(container_id, "stopped")
    assert hook_log(bundle) == ["startContainer", "program"]


def test_poststart_hooks_run_after_program_starts_before_start_returns(
        runtime, probe, container_id, deviates):
    """The poststart hooks MUST be called after the user-specified process is executed
    but before the start operation returns."""
    deviates("runc", "runc 1.1 runs poststart hooks during create")
    bundle = probe.bundle(PROGRAM)
    # Record what the container process is running when the hook runs.
    record_cmdline = ('pid=$(sed -n \'s/.*"pid": *\\([0-9]*\\).*/\\1/p\' $OUT/poststart.json)\n'
                      'tr "\\0" " " </proc/$pid/cmdline >$OUT/poststart.cmdline')
    set_hooks(bundle, {"poststart": [recording_hook(bundle, "poststart", then=record_cmdline)]})
    runtime.create(container_id, bundle)
    assert hook_log(bundle) == []
    runtime.start(container_id)
    assert "poststart" in hook_log(bundle)
    assert hook_file(bundle, "poststart.cmdline").startswith("sh -c ")


def test_poststop_hooks_run_before_delete_returns(runtime, probe, container_id):
    """The poststop hooks MUST be called after the container is deleted but before the
    delete operation returns."""
    bundle = hooked_bundle(probe, ["poststop"])
    run_until_stopped(probe, container_id, bundle)
    assert "poststop" not in hook_log(bundle)
    runtime.delete(container_id)
    assert hook_log(bundle)[-1] == "poststop"


def test_hooks_of_a_kind_run_in_listed_order(runtime, probe, container_id):
    """Hooks MUST be called in the listed order."""
    bundle = probe.bundle(PROGRAM)
    names = ["first", "second", "third"]
    set_hooks(bundle, {"createRuntime": [recording_hook(bundle, "createRuntime", name)
                                         for name in names]})
    runtime.create(container_id, bundle)
    assert hook_log(bundle) == names


@pytest.mark.parametrize("kind", ALL_HOOKS)
def test_hooks_get_state_on_stdin(runtime, probe, container_id, kind):
    """The state of the container MUST be passed to hooks over stdin."""
    bundle = hooked_bundle(probe, [kind])
    running_state = run_through_lifecycle(probe, container_id, bundle)
    state = json.loads(hook_file(bundle, f"{kind}.json"))
    assert state["id"] == container_id
    assert os.path.samefile(state["bundle"], bundle)
    assert state["ociVersion"]
    if kind in CONTAINER_NAMESPACE_HOOKS:
        # "For hooks executed in the container namespace, it is the pid as seen by the container."
        assert state["pid"] == 1
    elif kind != "poststop":
        assert state["pid"] == running_state["pid"]


@pytest.mark.parametrize("kind", ALL_HOOKS)
def test_hooks_run_in_their_namespaces(runtime, probe, container_id, kind):
    """The createRuntime (prestart, poststart, poststop) hooks MUST be executed in the
    runtime namespace. The createContainer (startContainer) hooks MUST be executed in
    the container namespace."""
    read_namespaces = "readlink /proc/self/ns/mnt; readlink /proc/self/ns/net"
    bundle = probe.bundle(f"({read_namespaces}) >{OUT}/program.ns\n{PROGRAM}")
    set_hooks(bundle, {kind: [recording_hook(bundle, kind,
                                             then=f"({read_namespaces}) >$OUT/hook.ns")]})
    run_through_lifecycle(probe, container_id, bundle)
    if kind in CONTAINER_NAMESPACE_HOOKS:
        expected = hook_file(bundle, "program.ns").split()
    else:
        expected = [os.readlink("/proc/self/ns/mnt"), os.readlink("/proc/self/ns/net")]
    assert hook_file(bundle, "hook.ns").split() == expected


@pytest.mark.parametrize("kind", CREATE_HOOKS)
def test_failing_create_hook_fails_create_and_leaves_nothing(
        runtime, probe, container_id, leak_check, kind):
    """If any prestart (createRuntime, createContainer) hook fails, the runtime MUST
    generate an error, stop the container, and continue the lifecycle at step 12
    (destroy, then poststop hooks)."""
    bundle = probe.bundle(PROGRAM)
    set_hooks(bundle, {kind: [failing_hook()],
                       "poststop": [recording_hook(bundle, "poststop")]})
    assert runtime.create(container_id, bundle, check=False).returncode != 0
    assert not runtime.exists(container_id)
    assert leak_check.leftovers() == {}
    assert "poststop" in hook_log(bundle)


def test_failing_start_container_hook_fails_start(runtime, probe, container_id, deviates):
    """If any startContainer hook fails, the runtime MUST generate an error, stop the
    container, and continue the lifecycle at step 12 (destroy, then poststop hooks)."""
    deviates("runc", "runc start returns 0 when a startContainer hook fails")
    bundle = probe.bundle(PROGRAM)
    set_hooks(bundle, {"startContainer": [failing_hook()],
                       "poststop": [recording_hook(bundle, "poststop")]})
    runtime.create(container_id, bundle)
    assert runtime.start(container_id, check=False).returncode != 0
    assert not probe.output_path(bundle).exists()
    assert "poststop" in hook_log(bundle)


def test_failing_poststop_hook_is_only_a_warning(runtime, probe, container_id, deviates):
    """If any poststop hook fails, the runtime MUST log a warning, but the remaining
    hooks and lifecycle continue as if the hook had succeeded."""
    deviates("runc", "runc skips the poststop hooks after a failing one")
    bundle = probe.bundle(PROGRAM)
    set_hooks(bundle, {"poststop": [failing_hook(), recording_hook(bundle, "poststop")]})
    run_through_lifecycle(probe, container_id, bundle)
    assert hook_log(bundle) == ["program", "poststop"]
    assert not runtime.exists(container_id)


def test_hook_timeout_aborts_hook(runtime, probe, container_id, leak_check):
    """timeout (int, OPTIONAL) is the number of seconds before aborting the hook
    (and a failing createRuntime hook MUST generate an error)."""
    bundle = probe.bundle(PROGRAM)
    set_hooks(bundle, {"createRuntime": [shell_hook("exec sleep 60", timeout=1)]})
    started = time.monotonic()
    assert runtime.create(container_id, bundle, check=False).returncode != 0
    assert time.monotonic() - started < HOOK_TIMEOUT_LIMIT
    assert not runtime.exists(container_id)
    assert leak_check.leftovers() == {}


def test_hook_args_and_env_are_used(runtime, probe, container_id):
    """args (array of strings, OPTIONAL) with the same semantics as execv's argv;
    env (array of strings, OPTIONAL) with the same semantics as environ."""
    bundle = probe.bundle(PROGRAM)
    out = out_dir(bundle, "createRuntime")
    hook = {"path": "/bin/sh",
            "args": ["sh", "-c", f'printf "[%s]\\n" "$0" "$@" >{out}/args; env >{out}/env',
                     "zero", "one two"],
            "env": ["HOOK_VAR=hook value"]}
    set_hooks(bundle, {"createRuntime": [hook]})
    runtime.create(container_id, bundle)
    assert hook_file(bundle, "args") == "[zero]\n[one two]\n"
    env = hook_file(bundle, "env").splitlines()
    assert "HOOK_VAR=hook value" in env
    assert_no_runner_environment(env)
