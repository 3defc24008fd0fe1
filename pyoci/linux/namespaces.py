"""Entering namespaces: joined by path or created new, user namespace first."""
import os

from pyoci.errors import ConfigError, ExecError, errno_text
from pyoci.linux import caps, syscalls as sc

FLAGS = {
    "pid": sc.CLONE_NEWPID, "network": sc.CLONE_NEWNET, "mount": sc.CLONE_NEWNS,
    "ipc": sc.CLONE_NEWIPC, "uts": sc.CLONE_NEWUTS, "user": sc.CLONE_NEWUSER,
    "cgroup": sc.CLONE_NEWCGROUP, "time": sc.CLONE_NEWTIME,
}
# The /proc/<pid>/ns entry of each namespace type.
NS_FILES = {"pid": "pid", "network": "net", "mount": "mnt", "ipc": "ipc", "uts": "uts",
            "user": "user", "cgroup": "cgroup", "time": "time"}
NS_GET_NSTYPE = 0xB703  # ioctl: the CLONE_NEW* flag of a namespace file
# setns into the mount namespace changes our root, so it comes last.
JOIN_ORDER = ("user", "ipc", "uts", "network", "pid", "cgroup", "time", "mount")


def open_paths(namespaces):
    """Open every namespace given by path, before any of them is entered."""
    return {ns.type: open_path(index, ns) for index, ns in enumerate(namespaces)
            if ns.path is not None}


def open_path(index, ns):
    """An fd of the namespace to join at linux.namespaces[INDEX].path, which
    must be a namespace of its type."""
    import fcntl
    where = f"config.json: linux.namespaces[{index}].path: {ns.type} namespace {ns.path}"
    try:
        fd = os.open(ns.path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as exc:
        raise ConfigError(f"{where}: {errno_text(exc.errno)}") from None
    try:
        kind = fcntl.ioctl(fd, NS_GET_NSTYPE)
    except OSError:
        kind = None
    if kind != FLAGS[ns.type]:
        os.close(fd)
        what = next((name for name, flag in FLAGS.items() if flag == kind), None)
        raise ConfigError(f"{where}: " + (f"a {what} namespace" if what else "not a namespace"))
    return fd


def host_problems(namespaces):
    """What this host lacks for NAMESPACES (pyoci check): a kind the kernel
    does not have, user namespaces turned off, a path that is not a
    namespace of its type."""
    found = []
    for index, ns in enumerate(namespaces):
        if ns.path is not None:
            try:
                os.close(open_path(index, ns))
            except ConfigError as exc:
                found.append(exc)
            continue
        where = f"config.json: linux.namespaces[{index}]"
        if not os.path.exists(f"/proc/self/ns/{NS_FILES[ns.type]}"):
            found.append(ConfigError(f"{where}: this kernel has no {ns.type} namespaces"))
        elif ns.type == "user" and _read_sysctl("user/max_user_namespaces") == "0":
            found.append(ConfigError(f"{where}: user namespaces are turned off on this host "
                                     "(user.max_user_namespaces is 0)"))
    return found


def privilege_problems(linux):
    """Without CAP_SYS_ADMIN (a user's pyoci, not root nor root of a user
    namespace as rootless podman runs it) only a new user namespace lets
    the others be made: a refusal if the config has none."""
    if linux.namespace("user") is not None or caps.own_effective("CAP_SYS_ADMIN"):
        return []
    return [ConfigError("config.json: linux.namespaces: rootless container requires user "
                        "namespaces (pyoci runs without CAP_SYS_ADMIN)")]


def id_map_problems(linux, subid_files=("/etc/subuid", "/etc/subgid")):
    """What writing LINUX's id maps would meet without CAP_SETUID/CAP_SETGID
    (pyoci check): no newuidmap/newgidmap, or host ids that /etc/subuid and
    /etc/subgid do not give this user (newuidmap refuses those)."""
    import shutil
    found = []
    for kind, mappings, own_id, subid_file in (
            ("uid", linux.uid_mappings, os.geteuid(), subid_files[0]),
            ("gid", linux.gid_mappings, os.getegid(), subid_files[1])):
        if not mappings or caps.own_effective(f"CAP_SET{kind.upper()}") or _only(mappings, own_id):
            continue
        where = f"config.json: linux.{kind}Mappings"
        if shutil.which(f"new{kind}map") is None:
            found.append(ConfigError(f"{where}: {_needs_tool(kind)}"))
            continue
        subordinate = _subordinate_ids(subid_file)
        if subordinate is None:
            continue  # not ours to read: newuidmap asks the NSS module
        granted = [(own_id, 1)] + subordinate
        for index, m in enumerate(mappings):
            if not any(start <= m.host_id and m.host_id + m.size <= start + count
                       for start, count in granted):
                found.append(ConfigError(
                    f"{where}[{index}]: host {kind}s {m.host_id}-{m.host_id + m.size - 1} are not "
                    f"this user's: {subid_file} gives it "
                    + (", ".join(f"{start}-{start + count - 1}" for start, count in granted[1:])
                       or "none")))
    return found


def _subordinate_ids(path, nsswitch="/etc/nsswitch.conf"):
    """The (start, count) ranges PATH (/etc/subuid's format) gives us; None
    where nsswitch.conf names another source of subordinate ids."""
    try:
        with open(nsswitch) as f:
            sources = [line.split(":", 1)[1].split() for line in f
                       if line.split(":", 1)[0].strip() == "subid"]
    except OSError:
        sources = []
    if sources and sources[0] != ["files"]:
        return None
    import pwd
    names = {str(os.geteuid())}
    try:
        names.add(pwd.getpwuid(os.geteuid()).pw_name)
    except KeyError:
        pass
    ranges = []
    try:
        with open(path) as f:
            for line in f:
                fields = line.strip().split(":")
                if len(fields) == 3 and fields[0] in names and all(x.isdigit() for x in fields[1:]):
                    ranges.append((int(fields[1]), int(fields[2])))
    except OSError:
        pass
    return ranges


def _needs_tool(kind):
    return (f"mapping more than our own {kind} without CAP_SET{kind.upper()} needs new{kind}map "
            f"(Debian's uidmap) and /etc/sub{kind}")


def _read_sysctl(name):
    try:
        with open(f"/proc/sys/{name}") as f:
            return f.read().strip()
    except OSError:
        return None


def join(sys, ns_type, fd):
    try:
        sys.setns(fd, FLAGS[ns_type])
    except OSError as exc:
        raise ExecError(f"join {ns_type} namespace: {errno_text(exc.errno)}") from None
    finally:
        os.close(fd)


def new_flags(namespaces, skip=()):
    flags = 0
    for ns in namespaces:
        if ns.path is None and ns.type not in skip:
            flags |= FLAGS[ns.type]
    return flags


def unshare(sys, flags):
    try:
        sys.unshare(flags)
    except OSError as exc:
        raise ExecError(f"unshare namespaces: {errno_text(exc.errno)}") from None


def write_time_offsets(offsets):
    """Set the new time namespace's clocks; only allowed before its first process."""
    lines = [f"{clock} {value.get('secs', 0)} {value.get('nanosecs', 0)}\n"
             for clock, value in offsets.items()]
    try:
        with open("/proc/self/timens_offsets", "w") as f:
            f.write("".join(lines))
    except OSError as exc:
        raise ExecError(f"write time offsets: {errno_text(exc.errno)}") from None


def format_id_map(mappings):
    return "".join(f"{m.container_id} {m.host_id} {m.size}\n" for m in mappings)


def write_id_maps(pid, uid_mappings, gid_mappings):
    """Written by the runtime, from outside the new user namespace.

    Without CAP_SETUID/CAP_SETGID (rootless) the kernel lets us map only our
    own id, and our own gid only once setgroups is denied; any other map goes
    through the setuid newuidmap/newgidmap (Debian's uidmap), which allow
    the ranges /etc/subuid and /etc/subgid give the user, as runc and podman
    use them."""
    for kind, mappings, own_id in (("uid", uid_mappings, os.geteuid()),
                                   ("gid", gid_mappings, os.getegid())):
        if caps.own_effective(f"CAP_SET{kind.upper()}"):
            _write_proc(pid, f"{kind}_map", format_id_map(mappings))
        elif _only(mappings, own_id):
            if kind == "gid":
                _write_proc(pid, "setgroups", "deny")
            _write_proc(pid, f"{kind}_map", format_id_map(mappings))
        else:
            _run_mapping_tool(kind, pid, mappings)


def _only(mappings, host_id):
    return len(mappings) == 1 and mappings[0].host_id == host_id and mappings[0].size == 1


def _write_proc(pid, name, text):
    try:
        with open(f"/proc/{pid}/{name}", "w") as f:
            f.write(text)
    except OSError as exc:
        raise ExecError(f"write {name}: {errno_text(exc.errno)}") from None


def _run_mapping_tool(kind, pid, mappings):
    import shutil
    import subprocess
    tool = f"new{kind}map"
    path = shutil.which(tool)
    if path is None:
        raise ExecError(f"write {kind}_map: {_needs_tool(kind)}")
    argv = [path, str(pid)]
    for m in mappings:
        argv += [str(m.container_id), str(m.host_id), str(m.size)]
    result = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, check=False)
    if result.returncode != 0:
        said = result.stdout.strip().replace("\n", "; ") or f"exit status {result.returncode}"
        raise ExecError(f"{tool} {pid} {' '.join(argv[2:])}: {said}")


def mapped_user_namespace(sys, uid_mappings, gid_mappings):
    """A descriptor of a new user namespace with these mappings and no
    process left in it (for MOUNT_ATTR_IDMAP)."""
    ready_read, ready_write = os.pipe()
    done_read, done_write = os.pipe()
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            os.close(ready_read)
            os.close(done_write)
            sys.unshare(sc.CLONE_NEWUSER)
            os.write(ready_write, b"1")
            os.read(done_read, 1)  # until the runtime has the namespace open
            code = 0
        finally:
            os._exit(code)
    os.close(ready_write)
    os.close(done_read)
    try:
        if os.read(ready_read, 1) != b"1":
            raise ExecError("create a user namespace for an idmapped mount: unshare failed")
        write_id_maps(pid, uid_mappings, gid_mappings)
        return os.open(f"/proc/{pid}/ns/user", os.O_RDONLY | os.O_CLOEXEC)
    finally:
        os.close(ready_read)
        os.close(done_write)
        os.waitpid(pid, 0)
