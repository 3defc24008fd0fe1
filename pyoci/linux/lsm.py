"""AppArmor profiles and SELinux labels, applied as runc applies them.

Both are asked of the kernel for the next exec, the container's program:
the AppArmor profile by writing "exec PROFILE" to the thread's
attr/apparmor/exec (attr/exec before Linux 5.8), the SELinux label to
attr/exec. The SELinux process label also labels the session keyring
(attr/keycreate, while it is made); the mount label becomes the context=
option of the container's filesystem mounts (not proc, sysfs, cgroup or
bind mounts, which keep their own; an mqueue mount point gets it as its
file label). A config that asks for an LSM the host does not run is refused
at create, in one line: the kernel would refuse it later in any case.
"""
import os

from pyoci.errors import ConfigError, ExecError, errno_text
from pyoci.linux import procfs

# The filesystems whose mounts take no context= (they label themselves), as runc.
_UNLABELLED_MOUNTS = frozenset({"proc", "sysfs", "mqueue", "cgroup", "cgroup2", "bind"})
SELINUX_DISABLED = "selinux label is specified in config, but selinux is disabled or not supported"


def apparmor_enabled():
    if not os.path.isdir("/sys/kernel/security/apparmor"):
        return False
    try:
        with open("/sys/module/apparmor/parameters/enabled") as f:
            return f.read().startswith("Y")
    except OSError:
        return False


def selinux_enabled():
    """selinuxfs is mounted and we are labelled (not the kernel's initial SID)."""
    if not os.path.exists("/sys/fs/selinux/enforce"):
        return False
    try:
        with open("/proc/thread-self/attr/current") as f:
            return f.read().rstrip("\0\n") != "kernel"
    except OSError:
        return False


def check(apparmor_profile, selinux_label, mount_label, where="config.json: "):
    """Refuse what the host cannot apply; WHERE names the document."""
    if apparmor_profile and not apparmor_enabled():
        raise ConfigError(f"{where}process.apparmorProfile: AppArmor is not enabled on this host "
                          f"(profile {apparmor_profile!r})")
    if selinux_label and not selinux_enabled():
        raise ConfigError(f"{where}process.selinuxLabel: {SELINUX_DISABLED}")
    if mount_label and not selinux_enabled():
        raise ConfigError(f"{where}linux.mountLabel: {SELINUX_DISABLED}")


def set_for_exec(apparmor_profile, selinux_label):
    """What the next execve of this thread transitions to."""
    if apparmor_profile:
        _write_attr(("apparmor/exec", "exec"), f"exec {apparmor_profile}",
                    f"apply AppArmor profile {apparmor_profile!r}")
    if selinux_label:
        _write_attr(("exec",), selinux_label, f"set SELinux label {selinux_label!r}")


def set_keyring_label(selinux_label):
    """The label of keyrings this thread creates ('' resets it)."""
    _write_attr(("keycreate",), selinux_label, "set SELinux keyring label")


def mount_data(data, fs_type, is_bind, mount_label):
    """DATA with the mount label as context=, where it belongs."""
    if not mount_label or is_bind or fs_type in _UNLABELLED_MOUNTS:
        return data
    context = f'context="{mount_label}"'
    return f"{data},{context}" if data else context


def label_mount_point(path, fs_type, mount_label):
    """An mqueue mount takes no context=: its mount point gets the label."""
    if mount_label and fs_type == "mqueue":
        try:
            os.setxattr(path, "security.selinux", mount_label.encode())
        except OSError as exc:
            raise ExecError(f"label {path} {mount_label!r}: {errno_text(exc.errno)}") from None


def _write_attr(names, value, what):
    for index, name in enumerate(names):
        path = f"/proc/thread-self/attr/{name}"
        try:
            procfs.write_in_procfs(path, value)
            return
        except FileNotFoundError:
            if index + 1 < len(names):
                continue  # an older kernel: the next, shared, file
            raise ExecError(f"{what}: {path}: no such file") from None
        except OSError as exc:
            raise ExecError(f"{what}: write {path}: {errno_text(exc.errno)}") from None
