"""The lifecycle operations and the state they report (runtime.md)."""
import os
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest

from conformance.bundle import read_config, write_config
from conformance.harness import (COMMAND_TIMEOUT, OUT, WAIT_FOR_STOP,
                                 skip_module_unless_runnable)

pytestmark = pytest.mark.root
skip_module_unless_runnable()

# SemVer 2.0.0, as the state schema's ociVersion requires.
SEMVER = re.compile(r"^\d+\.\d+\.\d+(-[0-9A-Za-z.-]+)?(\+[0-9A-Za-z.-]+)?$")

# How long a program that wrongly runs gets to show itself.
GRACE = 0.3


def test_create_does_not_run_user_program(runtime, probe):
    """While the resources requested in the config.json MUST be created, the
    user-specified program (from process) MUST NOT be run at this time."""
    container_id, bundle = probe.container("created")
    time.sleep(GRACE)
    assert runtime.state(container_id)["status"] == "created"
    assert not probe.output_path(bundle).exists()


def test_start_runs_user_program(runtime, probe, container_id):
    """This operation MUST run the user-specified program as specified by process."""
    bundle = probe.bundle("echo ran")
    runtime.create(container_id, bundle)
    runtime.start(container_id)
    assert probe.wait_for_output(bundle, "ran") == "ran\n"


def test_state_has_required_properties(runtime, probe):
    """This operation MUST return the state of a container as specified in the State section."""
    container_id, bundle = probe.container("created")
    state = runtime.state(container_id)
    assert SEMVER.match(state["ociVersion"]), state
    assert state["id"] == container_id
    assert state["status"] == "created"
    assert isinstance(state["pid"], int) and state["pid"] > 0, state
    assert os.path.isabs(state["bundle"]), state
    assert os.path.samefile(state["bundle"], bundle)


def test_state_bundle_is_absolute_for_relative_bundle(runtime, probe, container_id):
    """bundle (string, REQUIRED) is the absolute path to the container's bundle directory."""
    bundle = probe.bundle("true")
    runtime.create(container_id, bundle.name, cwd=bundle.parent)
    state_bundle = runtime.state(container_id)["bundle"]
    assert os.path.isabs(state_bundle), state_bundle
    assert os.path.samefile(state_bundle, bundle)


def test_state_pid_is_container_process(runtime, probe):
    """pid (int, REQUIRED when status is created or running on Linux) is the ID of
    the container process."""
    container_id, bundle = probe.container("running")
    pid = runtime.state(container_id)["pid"]
    cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    assert cmdline[:2] == [b"sh", b"-c"]
    assert os.path.samefile(f"/proc/{pid}/root", bundle / "rootfs")


def test_status_follows_the_container_process(runtime, probe):
    """created: the container process has neither exited nor executed the
    user-specified program; running: executed but not exited; stopped: exited."""
    container_id, bundle = probe.container("created")
    assert runtime.state(container_id)["status"] == "created"
    runtime.start(container_id)
    runtime.wait_for_status(container_id, "running")
    probe.stop_program(bundle)
    runtime.wait_for_status(container_id, "stopped")


@pytest.mark.parametrize("signal_name", [str(int(signal.SIGUSR1)), "SIGUSR1"],
                         ids=["number", "name"])
def test_kill_sends_signal_to_container_process(runtime, probe, container_id, signal_name):
    """This operation MUST send the specified signal to the container process."""
    bundle = probe.bundle("trap 'echo got USR1; exit 0' USR1\n"
                          "echo ready\n"
                          "while true; do sleep 0.05; done")
    runtime.create(container_id, bundle)
    runtime.start(container_id)
    probe.wait_for_output(bundle, "ready")
    runtime.kill(container_id, signal_name)
    assert probe.wait_for_output(bundle, "got USR1") == "ready\ngot USR1\n"


def test_kill_reaches_created_container(runtime, probe):
    """This operation MUST send the specified signal to the container process
    (a created container has one too)."""
    container_id, _ = probe.container("created")
    runtime.kill(container_id, "SIGKILL")
    runtime.wait_for_status(container_id, "stopped")


def test_delete_removes_container_and_its_resources(runtime, probe, leak_check):
    """Deleting a container MUST delete the resources that were created during the create step."""
    container_id, _ = probe.container("stopped")
    runtime.delete(container_id)
    assert not runtime.exists(container_id)
    assert leak_check.leftovers() == {}


def test_create_with_existing_id_fails(runtime, probe):
    """If the ID provided is not unique across all containers within the scope of the
    runtime ... the implementation MUST generate an error and a new container MUST NOT
    be created."""
    container_id, _ = probe.container("running")
    state_before = runtime.state(container_id)
    assert runtime.create(container_id, probe.bundle("true"), check=False).returncode != 0
    assert runtime.state(container_id) == state_before
    assert runtime.listed_ids() == [container_id]


@pytest.mark.parametrize("status", ["running", "stopped"])
def test_start_of_non_created_container_fails(runtime, probe, status):
    """Attempting to start a container that is not created MUST have no effect on the
    container and MUST generate an error."""
    container_id, bundle = probe.container(status)
    state_before = runtime.state(container_id)
    assert runtime.start(container_id, check=False).returncode != 0
    time.sleep(GRACE)
    assert runtime.state(container_id) == state_before
    assert probe.output(bundle) == "ran\n"


def test_kill_of_stopped_container_fails(runtime, probe):
    """Attempting to send a signal to a container that is neither created nor running
    MUST have no effect on the container and MUST generate an error."""
    container_id, _ = probe.container("stopped")
    state_before = runtime.state(container_id)
    assert runtime.kill(container_id, "SIGKILL", check=False).returncode != 0
    assert runtime.state(container_id) == state_before


@pytest.mark.parametrize("status", ["created", "running"])
def test_delete_of_non_stopped_container_fails(runtime, probe, deviates, status):
    """Attempting to delete a container that is not stopped MUST have no effect on the
    container and MUST generate an error."""
    if status == "created":
        deviates("runc", "runc delete kills and removes a created container")
    container_id, _ = probe.container(status)
    state_before = runtime.state(container_id)
    assert runtime.delete(container_id, check=False).returncode != 0
    assert runtime.state(container_id) == state_before
    os.kill(state_before["pid"], 0)  # the process is still there


@pytest.mark.parametrize("operation", [
    ("state",), ("start",), ("kill", "SIGKILL"), ("delete",),
], ids=lambda operation: operation[0])
def test_operation_on_unknown_container_fails(runtime, container_id, operation):
    """Attempting to query a container that does not exist MUST generate an error
    (and start, kill and delete need a created, running or stopped container)."""
    command, *args = operation
    assert runtime.run(command, container_id, *args, check=False).returncode != 0


@pytest.mark.parametrize("operation", ["state", "start", "kill", "delete"])
def test_operation_without_container_id_fails(runtime, operation):
    """This operation MUST generate an error if it is not provided the container ID."""
    assert runtime.run(operation, check=False).returncode != 0


def test_create_without_container_id_fails(runtime, probe, leak_check):
    """This operation MUST generate an error if it is not provided a path to the bundle
    and the container ID to associate with the container."""
    bundle = probe.bundle("true")
    assert runtime.run("create", "--bundle", bundle, check=False).returncode != 0
    assert leak_check.leftovers() == {}


def test_config_changes_after_create_have_no_effect(runtime, probe, container_id):
    """Any updates to config.json after this step MUST NOT affect the container."""
    bundle = probe.bundle("echo original")
    runtime.create(container_id, bundle)
    config = read_config(bundle)
    config["process"]["args"] = ["sh", "-c", f"echo changed >{OUT}/output"]
    write_config(bundle, config)
    runtime.start(container_id)
    runtime.wait_for_status(container_id, "stopped")
    assert probe.output(bundle) == "original\n"


def test_delete_force_ends_a_container_run_in_the_foreground(runtime, probe, leak_check):
    """`run` waiting for its container holds nothing another command needs:
    delete --force ends the container (as runc: whose program ignores
    SIGTERM, as a pid namespace's init does) and `run` exits 128+9."""
    container_id = runtime.new_id()
    bundle = probe.bundle(f"echo ran\n{WAIT_FOR_STOP}")
    foreground = subprocess.Popen(runtime.argv + ["run", "--bundle", str(bundle), container_id],
                                  stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                  stderr=subprocess.DEVNULL)
    try:
        probe.wait_for_output(bundle, "ran")
        runtime.run("delete", "--force", container_id)
        assert foreground.wait(timeout=COMMAND_TIMEOUT) == 128 + signal.SIGKILL
    finally:
        foreground.kill()
        foreground.wait()
    assert not runtime.exists(container_id)
    assert leak_check.leftovers() == {}
