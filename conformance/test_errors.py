"""Operations that must fail, and must leave nothing behind when they do (runtime.md "Errors").

"Unless otherwise stated, generating an error MUST leave the state of the
environment as if the operation were never attempted."
"""
import os
import shutil

import pytest

from conformance.bundle import bind_mount, join_namespace, tmpfs_mount, update_section
from conformance.harness import skip_module_unless_runnable

pytestmark = pytest.mark.root
skip_module_unless_runnable()


def assert_create_fails_cleanly(runtime, leak_check, container_id, bundle):
    """create must fail and leave no container, state, cgroup, mount or process."""
    assert runtime.create(container_id, bundle, check=False).returncode != 0
    assert not runtime.exists(container_id)
    assert runtime.listed_ids() == []
    assert leak_check.leftovers() == {}


def add_namespace(ns_type):
    return lambda config: config["linux"]["namespaces"].append({"type": ns_type})


def add_mount(mount):
    return lambda config: config["mounts"].append(mount)


def test_missing_rootfs_fails(runtime, probe, leak_check, container_id):
    """A directory MUST exist at the path declared by the field (root.path)."""
    bundle = probe.bundle("true")
    shutil.rmtree(bundle / "rootfs")
    assert_create_fails_cleanly(runtime, leak_check, container_id, bundle)


def test_unparsable_config_fails(runtime, probe, leak_check, container_id):
    """If the runtime is unable to create the environment specified in the config.json,
    it MUST generate an error."""
    bundle = probe.bundle("true")
    (bundle / "config.json").write_text('{"ociVersion": "1.0.2", "process": ')
    assert_create_fails_cleanly(runtime, leak_check, container_id, bundle)


def test_duplicate_namespace_types_fail(runtime, probe, leak_check, container_id):
    """If a namespaces field contains duplicated namespaces with same type, the runtime
    MUST generate an error."""
    bundle = probe.bundle("true", add_namespace("ipc"))
    assert_create_fails_cleanly(runtime, leak_check, container_id, bundle)


def test_namespace_path_of_another_type_fails(runtime, probe, leak_check, container_id):
    """The runtime MUST generate an error if path is not associated with a namespace of
    type type."""
    bundle = probe.bundle("true", join_namespace("ipc", f"/proc/{os.getpid()}/ns/net"))
    assert_create_fails_cleanly(runtime, leak_check, container_id, bundle)


def test_duplicate_rlimit_types_fail(runtime, probe, leak_check, container_id, deviates):
    """If rlimits contains duplicated entries with same type, the runtime MUST generate
    an error."""
    deviates("runc", "runc accepts duplicated rlimits")
    nofile = {"type": "RLIMIT_NOFILE", "soft": 512, "hard": 512}
    rlimits = [nofile, dict(nofile, soft=256)]
    bundle = probe.bundle("true", update_section("process", rlimits=rlimits))
    assert_create_fails_cleanly(runtime, leak_check, container_id, bundle)


def test_unmappable_rlimit_type_fails(runtime, probe, leak_check, container_id):
    """The runtime MUST generate an error for any values which cannot be mapped to a
    relevant kernel interface (rlimits type)."""
    bogus = {"type": "RLIMIT_BOGUS", "soft": 1, "hard": 1}
    bundle = probe.bundle("true", update_section("process", rlimits=[bogus]))
    assert_create_fails_cleanly(runtime, leak_check, container_id, bundle)


@pytest.mark.parametrize("mutate", [
    pytest.param(update_section("process", cwd="tmp"), id="relative-cwd"),
    pytest.param(add_namespace("bogus"), id="unknown-namespace-type"),
    pytest.param(add_mount(dict(tmpfs_mount("/data"), type="bogusfs")), id="unknown-fs-type"),
])
def test_invalid_value_fails(runtime, probe, leak_check, container_id, mutate):
    """Runtimes MUST generate an error when invalid or unsupported values are encountered."""
    bundle = probe.bundle("true", mutate)
    assert_create_fails_cleanly(runtime, leak_check, container_id, bundle)


@pytest.mark.parametrize("mutate", [
    pytest.param(add_mount(bind_mount("no-such-directory", "/data")), id="missing-bind-source"),
    pytest.param(update_section("linux", sysctl={"net.bogus.setting": "1"}), id="unknown-sysctl"),
])
def test_unappliable_property_fails(runtime, probe, leak_check, container_id, mutate):
    """If the runtime cannot apply a property as specified in the configuration, it MUST
    generate an error and a new container MUST NOT be created."""
    bundle = probe.bundle("true", mutate)
    assert_create_fails_cleanly(runtime, leak_check, container_id, bundle)


@pytest.mark.parametrize("bad_id", ["../escape", "", "has/slash"])
def test_invalid_container_id_fails(runtime, probe, leak_check, bad_id):
    """If the ID provided is not unique across all containers within the scope of the
    runtime, or is not valid in any other way, the implementation MUST generate an error
    and a new container MUST NOT be created."""
    bundle = probe.bundle("true")
    assert_create_fails_cleanly(runtime, leak_check, bad_id, bundle)
    # Nothing was written beside the state directory either.
    assert os.listdir(runtime.root.parent) in ([], [runtime.root.name])


@pytest.mark.parametrize("bad_signal", ["SIGBOGUS", "999"])
def test_unknown_signal_fails(runtime, probe, bad_signal):
    """This operation MUST send the specified signal to the container process (and a
    signal that does not exist is an invalid value: MUST generate an error)."""
    container_id, _ = probe.container("running")
    state_before = runtime.state(container_id)
    assert runtime.kill(container_id, bad_signal, check=False).returncode != 0
    assert runtime.state(container_id) == state_before


def test_start_without_process_fails(runtime, probe, container_id):
    """This operation (start) MUST generate an error if process was not set."""
    bundle = probe.bundle("echo ran", lambda config: config.pop("process"))
    runtime.create(container_id, bundle, check=False)  # a runtime may refuse already here
    assert runtime.start(container_id, check=False).returncode != 0
    assert not probe.output_path(bundle).exists()
