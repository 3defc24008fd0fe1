"""AppArmor and SELinux: a profile or label is entered by the program's exec,
as runc enters it; one the host does not run is refused at create.

This machine runs neither LSM, so the refusals run here. The AppArmor tests
run where AppArmor is enabled and apparmor_parser is installed: the v2 VM
boots with apparmor=1 security=apparmor (tests/vm/run_in_v2_vm.sh). The
SELinux tests run in a second boot with selinux=1 security=selinux and
Debian's policy loaded permissive (make test-v2). Both runtimes run the
same bundles.
"""
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from conformance.bundle import update_section
from conformance.harness import (PYOCI, RUNC, WAIT_FOR_STOP, CommandFailed, LeakCheck, Probe,
                                 private_runtime)
from pyoci.linux import lsm
from pyoci.sections import section_of

pytestmark = pytest.mark.root

PROFILE = "pyoci-test-deny"
# Everything but the secret; attach_disconnected as Docker's profile has,
# for paths outside the container's mount namespace.
PROFILE_TEXT = f"""
abi <abi/3.0>,
profile {PROFILE} flags=(attach_disconnected,mediate_deleted) {{
  file,
  capability,
  network,
  signal,
  unix,
  ptrace,
  deny /secret/** rw,
}}
"""

needs_apparmor = pytest.mark.skipif(
    not lsm.apparmor_enabled() or shutil.which("apparmor_parser") is None,
    reason="AppArmor is not enabled here (the v2 VM boots with it)")


@pytest.fixture(params=["pyoci", "runc"])
def runtime(request):
    with private_runtime(PYOCI if request.param == "pyoci" else RUNC) as runtime:
        yield runtime


@pytest.fixture(scope="module")
def apparmor_profile(tmp_path_factory):
    source = tmp_path_factory.mktemp("apparmor") / PROFILE
    source.write_text(PROFILE_TEXT)
    subprocess.run(["apparmor_parser", "--replace", "--skip-cache", source], check=True,
                   capture_output=True)
    yield PROFILE
    subprocess.run(["apparmor_parser", "--remove", "--skip-cache", source], check=False,
                   capture_output=True)


@needs_apparmor
def test_apparmor_profile_confines_the_program(runtime, apparmor_profile, tmp_path):
    probe = Probe(runtime, tmp_path)
    script = ("cat /proc/self/attr/current; cat /secret/data || echo denied; cat /open/data\n"
              f"echo ran\n{WAIT_FOR_STOP}")
    bundle = probe.bundle(script, update_section("process", apparmorProfile=apparmor_profile))
    for name in ("secret", "open"):
        (bundle / "rootfs" / name).mkdir()
        (bundle / "rootfs" / name / "data").write_text(f"{name} data\n")
    container_id = runtime.new_id()
    runtime.create(container_id, bundle)
    runtime.start(container_id)
    lines = probe.wait_for_output(bundle, "ran").splitlines()
    assert lines[0] == f"{apparmor_profile} (enforce)"
    assert "Permission denied" in lines[1] and lines[2] == "denied"
    assert lines[3] == "open data"
    pid = runtime.state(container_id)["pid"]
    assert Path(f"/proc/{pid}/attr/current").read_text().strip() == \
        f"{apparmor_profile} (enforce)"
    # exec enters the container's profile, or the one --apparmor names.
    execed = runtime.run("exec", container_id, "cat", "/proc/self/attr/current").stdout
    assert execed.strip() == f"{apparmor_profile} (enforce)"
    execed = runtime.run("exec", "--apparmor", "unconfined", container_id,
                         "cat", "/proc/self/attr/current").stdout
    assert execed.strip() == "unconfined"
    probe.stop_program(bundle)
    runtime.wait_for_status(container_id, "stopped")
    runtime.delete(container_id)


# Labels of Debian's reference policy (selinux-policy-default), whose
# container module is not built: its svirt types stand in for container_t.
PROCESS_LABEL = "system_u:system_r:svirt_t:s0:c1,c2"
MOUNT_LABEL = "system_u:object_r:svirt_image_t:s0:c1,c2"

needs_selinux = pytest.mark.skipif(
    not lsm.selinux_enabled(),
    reason="SELinux is not enabled here (a second v2 VM boot runs it: make test-v2)")


def mount_options(mountinfo_lines, point):
    """The superblock options of the mount at POINT, from mountinfo lines."""
    for line in mountinfo_lines:
        fields = line.split()
        if fields[4] == point:
            return fields[fields.index("-") + 3]
    raise AssertionError(f"{point} is not mounted")


@needs_selinux
def test_selinux_labels_the_program_its_exec_and_its_mounts(runtime, tmp_path):
    """Enforcing needs a labelled root filesystem, which the VM's 9p root is
    not: the policy is loaded permissive, so what is tested is what the
    kernel records, which is what it would enforce."""
    probe = Probe(runtime, tmp_path)

    def labelled(config):
        config["process"]["selinuxLabel"] = PROCESS_LABEL
        config["linux"]["mountLabel"] = MOUNT_LABEL
        config["mounts"].append({"destination": "/scratch", "type": "tmpfs", "source": "tmpfs",
                                 "options": ["size=1m"]})
    script = ("cat /proc/self/attr/current; echo; cat /proc/self/mountinfo\n"
              f"echo ran\n{WAIT_FOR_STOP}")
    bundle = probe.bundle(script, labelled)
    container_id = runtime.new_id()
    runtime.create(container_id, bundle)
    runtime.start(container_id)
    lines = probe.wait_for_output(bundle, "ran").splitlines()
    assert lines[0].rstrip("\0") == PROCESS_LABEL
    context = f'context="{MOUNT_LABEL}"'
    for point in ("/dev", "/dev/shm", "/dev/pts", "/scratch"):
        assert context in mount_options(lines[1:], point), point
    for point in ("/proc", "/sys", "/out"):
        assert "context=" not in mount_options(lines[1:], point), point
    pid = runtime.state(container_id)["pid"]
    mqueue = os.getxattr(f"/proc/{pid}/root/dev/mqueue", "security.selinux")
    assert mqueue.rstrip(b"\0").decode() == MOUNT_LABEL
    execed = runtime.run("exec", container_id, "cat", "/proc/self/attr/current").stdout
    assert execed.rstrip("\0\n") == PROCESS_LABEL
    other = "system_u:system_r:svirt_t:s0:c3,c4"
    execed = runtime.run("exec", "--process-label", other, container_id,
                         "cat", "/proc/self/attr/current").stdout
    assert execed.rstrip("\0\n") == other
    probe.stop_program(bundle)
    runtime.wait_for_status(container_id, "stopped")
    runtime.delete(container_id)


REFUSED_BY_THE_KERNEL = {
    "apparmor": (lsm.apparmor_enabled,
                 update_section("process", apparmorProfile="pyoci-no-such-profile"),
                 "apparmor"),
    "selinux": (lsm.selinux_enabled,
                update_section("process", selinuxLabel="system_u:system_r:no_such_t:s0"),
                "invalid argument"),
}


@pytest.mark.parametrize("lsm_name", sorted(REFUSED_BY_THE_KERNEL))
def test_a_profile_or_label_the_kernel_refuses_fails_create(lsm_name, runtime, tmp_path):
    enabled, mutate, words = REFUSED_BY_THE_KERNEL[lsm_name]
    if not enabled():
        pytest.skip(f"{lsm_name} is not enabled here")
    bundle = Probe(runtime, tmp_path).bundle("true", mutate)
    container_id = runtime.new_id()
    with pytest.raises(CommandFailed) as failed:
        runtime.create(container_id, bundle)
    assert words in str(failed.value).lower()
    assert not runtime.exists(container_id)


LSM_FIELDS = {
    "process.apparmorProfile": (update_section("process", apparmorProfile="docker-default"),
                                lsm.apparmor_enabled,
                                "AppArmor is not enabled on this host (profile 'docker-default')"),
    "process.selinuxLabel": (update_section("process",
                                            selinuxLabel="system_u:system_r:container_t:s0:c1,c2"),
                             lsm.selinux_enabled, lsm.SELINUX_DISABLED),
    "linux.mountLabel": (update_section("linux",
                                        mountLabel="system_u:object_r:container_file_t:s0:c1,c2"),
                         lsm.selinux_enabled, lsm.SELINUX_DISABLED),
}


@pytest.mark.parametrize("field", sorted(LSM_FIELDS))
def test_an_lsm_the_host_does_not_run_is_refused_in_one_line(field, tmp_path):
    mutate, enabled, words = LSM_FIELDS[field]
    if enabled():
        pytest.skip("this host runs that LSM")
    with private_runtime(RUNC) as runc:
        bundle = Probe(runc, tmp_path / "runc").bundle("true", mutate)
        # runc fails too, though some of it only once init writes or mounts.
        assert runc.run("run", runc.new_id(), cwd=bundle, check=False).returncode != 0
    with private_runtime(PYOCI) as pyoci:
        leaks = LeakCheck(pyoci, tmp_path)
        try:
            bundle = Probe(pyoci, tmp_path / "pyoci").bundle("true", mutate)
            result = pyoci.run("create", "--bundle", bundle, pyoci.new_id(), check=False)
            assert result.returncode == 1
            assert result.stderr.strip().splitlines() == [
                f"config.json: {field}: {words} ({section_of(field)})"]
            assert leaks.leftovers() == {}
        finally:
            leaks.close()


@pytest.mark.parametrize("flag, words", [
    ("--apparmor=docker-default", "process: process.apparmorProfile: AppArmor is not enabled"),
    ("--process-label=system_u:system_r:container_t:s0",
     f"process: process.selinuxLabel: {lsm.SELINUX_DISABLED}")])
def test_exec_with_an_lsm_the_host_does_not_run_is_refused(flag, words, tmp_path):
    if lsm.apparmor_enabled() if "apparmor" in flag else lsm.selinux_enabled():
        pytest.skip("this host runs that LSM")
    with private_runtime(PYOCI) as pyoci:
        probe = Probe(pyoci, tmp_path)
        container_id, _ = probe.container("running")
        result = pyoci.run("exec", flag, container_id, "true", check=False)
        # runc's exit status and prefix for a failed exec
        assert result.returncode == 255
        assert len(result.stderr.strip().splitlines()) == 1
        assert result.stderr.startswith(f"exec failed: {words}")
