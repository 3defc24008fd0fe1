"""The one seam between pyoci and the kernel calls os lacks.

``Syscalls`` wraps pyoci._native (cffi); every call checks its result right
where it is made and raises OSError with the errno, so callers handle one
exception type. Tests substitute an object with the same methods.
"""
import os

# Namespace clone flags (linux/sched.h).
CLONE_NEWTIME = 0x00000080
CLONE_NEWNS = 0x00020000
CLONE_NEWCGROUP = 0x02000000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000

# prctl options (linux/prctl.h).
PR_SET_PDEATHSIG = 1
PR_SET_DUMPABLE = 4
PR_SET_KEEPCAPS = 8
PR_CAPBSET_READ = 23
PR_CAPBSET_DROP = 24
PR_SET_CHILD_SUBREAPER = 36
PR_SET_NO_NEW_PRIVS = 38
PR_CAP_AMBIENT = 47
PR_CAP_AMBIENT_RAISE = 2
PR_CAP_AMBIENT_CLEAR_ALL = 4

# The new mount API (linux/mount.h, fcntl.h).
AT_FDCWD = -100
AT_EMPTY_PATH = 0x1000
AT_RECURSIVE = 0x8000
OPEN_TREE_CLONE = 1
OPEN_TREE_CLOEXEC = 0o2000000
MOVE_MOUNT_F_EMPTY_PATH = 0x4
MOVE_MOUNT_T_SYMLINKS = 0x10
MOUNT_ATTR_RDONLY = 0x1
MOUNT_ATTR_NOSUID = 0x2
MOUNT_ATTR_NODEV = 0x4
MOUNT_ATTR_NOEXEC = 0x8
MOUNT_ATTR__ATIME = 0x70
MOUNT_ATTR_RELATIME = 0x0
MOUNT_ATTR_NOATIME = 0x10
MOUNT_ATTR_STRICTATIME = 0x20
MOUNT_ATTR_NODIRATIME = 0x80
MOUNT_ATTR_IDMAP = 0x100000
MOUNT_ATTR_NOSYMFOLLOW = 0x200000

# bpf(2) (linux/bpf.h).
BPF_PROG_LOAD = 5
BPF_PROG_ATTACH = 8
BPF_PROG_DETACH = 9
BPF_PROG_GET_FD_BY_ID = 13
BPF_OBJ_GET_INFO_BY_FD = 15
BPF_PROG_QUERY = 16
BPF_PROG_NAME_OFFSET = 64  # of name[16] in struct bpf_prog_info
DEVICE_PROGRAM_NAME = "pyoci_devices"
BPF_PROG_TYPE_CGROUP_DEVICE = 15
BPF_CGROUP_DEVICE = 6
BPF_F_ALLOW_MULTI = 2


IOPRIO_WHO_PROCESS = 1


def _check(result, what, path=None):
    if result < 0:
        from pyoci._native import ffi
        code = ffi.errno
        raise OSError(code, f"{what}: {os.strerror(code)}", path)
    return result


class Syscalls:
    """Real kernel calls through the cffi shim (loaded on first use)."""

    def __init__(self):
        from pyoci._native import ffi, lib
        self._ffi = ffi
        self._lib = lib

    def _c_str(self, value):
        return value.encode() if value is not None else self._ffi.NULL

    def unshare(self, flags):
        _check(self._lib.pyoci_unshare(flags), "unshare")

    def setns(self, fd, nstype=0):
        _check(self._lib.pyoci_setns(fd, nstype), "setns")

    def mount(self, source, target, fstype, flags, data=None):
        _check(self._lib.pyoci_mount(
            self._c_str(source), self._c_str(target), self._c_str(fstype), flags, self._c_str(data)),
            "mount", target)

    def umount2(self, target, flags):
        _check(self._lib.pyoci_umount2(target.encode(), flags), "umount", target)

    def open_tree(self, path, flags, dirfd=AT_FDCWD):
        """A file descriptor for the mount at PATH (a detached copy with OPEN_TREE_CLONE)."""
        return _check(self._lib.pyoci_open_tree(dirfd, path.encode(), flags), "open_tree", path)

    def move_mount_fd(self, mount_fd, target):
        """Attach the (detached) mount MOUNT_FD at TARGET, a link followed as
        mount(2) does (TARGET is a /proc/self/fd path: inroot.py)."""
        _check(self._lib.pyoci_move_mount(mount_fd, b"", AT_FDCWD, target.encode(),
                                          MOVE_MOUNT_F_EMPTY_PATH | MOVE_MOUNT_T_SYMLINKS),
               "move_mount", target)

    def mount_setattr(self, target, attr_set, attr_clr=0, recursive=False, userns_fd=0):
        """Set and clear MOUNT_ATTR_* on the mount TARGET (a path or a mount fd),
        and on every mount below it when RECURSIVE."""
        flags = AT_RECURSIVE if recursive else 0
        if isinstance(target, int):
            dirfd, path, flags = target, b"", flags | AT_EMPTY_PATH
        else:
            dirfd, path = AT_FDCWD, target.encode()
        _check(self._lib.pyoci_mount_setattr(dirfd, path, flags, attr_set, attr_clr, 0, userns_fd),
               "mount_setattr", None if isinstance(target, int) else target)

    def openat2(self, dirfd, path, flags, mode, resolve):
        return _check(self._lib.pyoci_openat2(dirfd, path.encode(), flags, mode, resolve),
                      "openat2", path)

    def pivot_root(self, new_root, put_old):
        _check(self._lib.pyoci_pivot_root(new_root.encode(), put_old.encode()),
               "pivot_root", new_root)

    def capset(self, effective, permitted, inheritable):
        """Each set is an int bit mask of capability numbers."""
        words = [self._ffi.new("uint32_t[2]", [mask & 0xFFFFFFFF, mask >> 32])
                 for mask in (effective, permitted, inheritable)]
        _check(self._lib.pyoci_capset(*words), "capset")

    def prctl(self, option, arg2=0, arg3=0, arg4=0, arg5=0):
        return _check(self._lib.pyoci_prctl(option, arg2, arg3, arg4, arg5), "prctl")

    def setdomainname(self, name):
        raw = name.encode()
        _check(self._lib.pyoci_setdomainname(raw, len(raw)), "setdomainname")

    def join_session_keyring(self, name):
        _check(self._lib.pyoci_join_session_keyring(self._c_str(name)), "join session keyring")

    def bpf_load_device_program(self, instructions):
        """BPF_PROG_LOAD a BPF_PROG_TYPE_CGROUP_DEVICE program; returns its fd."""
        import struct
        code = self._ffi.from_buffer(instructions)
        license_text = self._ffi.new("char[]", b"Apache-2.0")
        log = self._ffi.new("char[]", 65536)
        attr = self._ffi.new("char[]", struct.pack(
            "=IIQQIIQII16sII", BPF_PROG_TYPE_CGROUP_DEVICE, len(instructions) // 8,
            int(self._ffi.cast("uintptr_t", code)), int(self._ffi.cast("uintptr_t", license_text)),
            1, 65536, int(self._ffi.cast("uintptr_t", log)), 0, 0, DEVICE_PROGRAM_NAME.encode(), 0, 0))
        fd = self._lib.pyoci_bpf(BPF_PROG_LOAD, attr, len(attr) - 1)
        if fd < 0:
            code = self._ffi.errno
            verifier = self._ffi.string(log).decode(errors="replace").strip().splitlines()
            why = f": {' / '.join(verifier[:3])}" if verifier else ""
            raise OSError(code, f"bpf prog load: {os.strerror(code)}{why}")
        return fd

    def bpf_attach_device_program(self, cgroup_fd, program_fd):
        """BPF_PROG_ATTACH it to a cgroup v2 directory, alongside any others."""
        import struct
        attr = self._ffi.new("char[]", struct.pack(
            "=IIIII", cgroup_fd, program_fd, BPF_CGROUP_DEVICE, BPF_F_ALLOW_MULTI, 0))
        _check(self._lib.pyoci_bpf(BPF_PROG_ATTACH, attr, len(attr) - 1), "bpf prog attach")

    def bpf_device_programs(self, cgroup_fd):
        """[(id, name)] of the device programs attached to a cgroup itself."""
        import struct
        ids = self._ffi.new("uint32_t[]", 64)
        attr = self._ffi.new("char[]", struct.pack(
            "=IIIIQI4x", cgroup_fd, BPF_CGROUP_DEVICE, 0, 0,
            int(self._ffi.cast("uintptr_t", ids)), 64))
        _check(self._lib.pyoci_bpf(BPF_PROG_QUERY, attr, len(attr) - 1), "bpf prog query")
        count = struct.unpack_from("=I", self._ffi.buffer(attr), 24)[0]
        programs = []
        for program_id in ids[0:count]:
            fd = self._bpf_program_fd(program_id)
            try:
                programs.append((program_id, self._bpf_program_name(fd)))
            finally:
                os.close(fd)
        return programs

    def _bpf_program_fd(self, program_id):
        import struct
        attr = self._ffi.new("char[]", struct.pack("=III", program_id, 0, 0))
        return _check(self._lib.pyoci_bpf(BPF_PROG_GET_FD_BY_ID, attr, len(attr) - 1),
                      "bpf prog get fd by id")

    def _bpf_program_name(self, program_fd):
        import struct
        info = self._ffi.new("char[]", 256)
        attr = self._ffi.new("char[]", struct.pack(
            "=IIQ", program_fd, 256, int(self._ffi.cast("uintptr_t", info))))
        _check(self._lib.pyoci_bpf(BPF_OBJ_GET_INFO_BY_FD, attr, len(attr) - 1),
               "bpf obj get info")
        name = self._ffi.buffer(info)[BPF_PROG_NAME_OFFSET:BPF_PROG_NAME_OFFSET + 16]
        return name.split(b"\0", 1)[0].decode(errors="replace")

    def bpf_detach_device_program(self, cgroup_fd, program_id):
        import struct
        program_fd = self._bpf_program_fd(program_id)
        try:
            attr = self._ffi.new("char[]", struct.pack(
                "=IIII", cgroup_fd, program_fd, BPF_CGROUP_DEVICE, 0))
            _check(self._lib.pyoci_bpf(BPF_PROG_DETACH, attr, len(attr) - 1), "bpf prog detach")
        finally:
            os.close(program_fd)

    def reset_signals(self):
        """All signals to SIG_DFL, none blocked (glibc's reserved ones included)."""
        _check(self._lib.pyoci_reset_signals(), "reset signals")

    def seccomp_load(self, flags, program):
        """Install a seccomp filter: PROGRAM is the bytes of its sock_filter
        array. Returns seccomp()'s result: the listener fd with NEW_LISTENER."""
        return _check(self._lib.pyoci_seccomp_load(flags, program, len(program)), "seccomp")

    def personality(self, persona):
        _check(self._lib.pyoci_personality(persona), "personality")

    def sched_setattr(self, attr):
        """ATTR: the bytes of a struct sched_attr, for this process."""
        _check(self._lib.pyoci_sched_setattr(0, attr, 0), "sched_setattr")

    def ioprio_set_process(self, ioprio):
        _check(self._lib.pyoci_ioprio_set(IOPRIO_WHO_PROCESS, 0, ioprio), "ioprio_set")

    def set_mempolicy(self, mode, nodes):
        """MODE (flags included) over the memory nodes NODES, for this process."""
        words = max(1, (max(nodes, default=0) + 64) // 64)
        mask = self._ffi.new("unsigned long[]", words)
        for node in nodes:
            mask[node // 64] |= 1 << (node % 64)
        _check(self._lib.pyoci_set_mempolicy(mode, mask if nodes else self._ffi.NULL,
                                             words * 64 + 1 if nodes else 0), "set_mempolicy")


_instance = None


def syscalls():
    """The process-wide Syscalls, created on first use."""
    global _instance
    if _instance is None:
        _instance = Syscalls()
    return _instance
