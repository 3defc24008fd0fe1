"""pyoci/linux/lsm.py without an LSM: the mount label's place in mount data,
the refusals, and which attr file a profile or label is written to."""
import pytest

from pyoci.errors import ConfigError, ExecError
from pyoci.linux import lsm

LABEL = "system_u:object_r:container_file_t:s0:c1,c2"


@pytest.mark.parametrize("data, fs_type, is_bind, expected", [
    ("mode=755", "tmpfs", False, f'mode=755,context="{LABEL}"'),
    ("", "devpts", False, f'context="{LABEL}"'),
    ("", "proc", False, ""), ("ro", "sysfs", False, "ro"), ("", "mqueue", False, ""),
    ("", "cgroup2", False, ""), ("", "none", True, "")])
def test_mount_label_is_the_context_of_filesystem_mounts(data, fs_type, is_bind, expected):
    assert lsm.mount_data(data, fs_type, is_bind, LABEL) == expected
    assert lsm.mount_data(data, fs_type, is_bind, None) == data


def test_refusals_name_the_field(monkeypatch):
    monkeypatch.setattr(lsm, "apparmor_enabled", lambda: False)
    monkeypatch.setattr(lsm, "selinux_enabled", lambda: False)
    lsm.check(None, None, None)
    with pytest.raises(ConfigError, match=r"^config.json: process.apparmorProfile: AppArmor is "
                                          r"not enabled on this host \(profile 'p'\) \(config.md#linux-process\)$"):
        lsm.check("p", None, None)
    with pytest.raises(ConfigError, match=r"^process: process.selinuxLabel: selinux label is "
                                          r"specified in config"):
        lsm.check(None, "l", None, where="process: ")
    with pytest.raises(ConfigError, match=r"^config.json: linux.mountLabel: "):
        lsm.check(None, None, LABEL)
    monkeypatch.setattr(lsm, "apparmor_enabled", lambda: True)
    monkeypatch.setattr(lsm, "selinux_enabled", lambda: True)
    lsm.check("p", "l", LABEL)


def test_profile_and_label_go_to_the_thread_attr_files(monkeypatch):
    """attr/apparmor/exec where the kernel has it (5.8+), else attr/exec."""
    written = []
    present = {"apparmor/exec", "exec", "keycreate"}

    def fake_write(path, value):
        name = path.removeprefix("/proc/thread-self/attr/")
        if name not in present:
            raise FileNotFoundError(path)
        written.append((name, value))
    monkeypatch.setattr(lsm.procfs, "write_in_procfs", fake_write)
    lsm.set_for_exec("docker-default", None)
    present.discard("apparmor/exec")
    lsm.set_for_exec("docker-default", "system_u:system_r:container_t:s0")
    lsm.set_keyring_label("system_u:system_r:container_t:s0")
    assert written == [("apparmor/exec", "exec docker-default"), ("exec", "exec docker-default"),
                       ("exec", "system_u:system_r:container_t:s0"),
                       ("keycreate", "system_u:system_r:container_t:s0")]
    present.clear()
    with pytest.raises(ExecError, match="^apply AppArmor profile 'p': "):
        lsm.set_for_exec("p", None)
