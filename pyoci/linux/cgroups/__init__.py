"""Placing a container in its cgroups, behind one interface for v1 and v2.

``manager_for(cgroups_path, container_id)`` detects the host's mode and
returns a manager with ``create()``, ``add(pid)``, ``paths``, ``pids()``,
``frozen()`` and ``destroy()``. A manager is rebuilt from what create
recorded with ``from_record`` by later commands (kill --all, delete).

Where the cgroup goes (as runc's cgroupfs drivers): an absolute cgroupsPath
is taken from each hierarchy's root; a relative one, or the container id
when cgroupsPath is absent, from our own cgroup on v1, and on v2 from its
parent (our own cgroup holds processes, so no controller could be enabled
below it).

``create()`` returns the directories it made: ``destroy(owned)`` removes only
those, since a cgroup the container did not create is not its to delete.
"""
import errno
import os
import sys

CGROUP_ROOT = "/sys/fs/cgroup"
CGROUP2_SUPER_MAGIC = 0x63677270

LEGACY = "legacy"
HYBRID = "hybrid"
UNIFIED = "unified"

# The key for the v2 hierarchy in a paths mapping; v1 keys are controller names.
UNIFIED_KEY = ""


def detect_mode(root=CGROUP_ROOT, mountinfo="/proc/self/mountinfo"):
    """LEGACY, HYBRID or UNIFIED, from what is mounted at ROOT."""
    from pyoci.linux.procfs import mount_table
    types = {point: fs_type for point, fs_type, _ in mount_table(mountinfo)}
    if types.get(root) == "cgroup2":
        return UNIFIED
    if types.get(os.path.join(root, "unified")) == "cgroup2":
        return HYBRID
    return LEGACY


def own_cgroups(pid="self"):
    """{controller-or-'': path} from /proc/PID/cgroup."""
    result = {}
    with open(f"/proc/{pid}/cgroup") as f:
        for line in f:
            _, controllers, path = line.rstrip("\n").split(":", 2)
            if not controllers:
                result[UNIFIED_KEY] = path
            for controller in controllers.split(","):
                result[controller] = path
    return result


def start_migrations_early():
    """Let the kernel's wait for the first cgroup migration pass while the
    runtime does other work. The first write to a cgroup.procs in a while
    waits for an RCU grace period (6-25 ms here, as long as all the rest
    of a create) before it takes the rwsem every migration takes; later ones
    soon after do not. So a thread migrates this process into the cgroup it
    is already in, a no-op, while create or exec go on to their own
    migrations. Where it may not (rootless), they just wait as before.

    The write holds the kernel's cgroup mutex while it waits, so making a
    cgroup waits too: create makes its cgroups as late as it can. The
    thread writes as soon as it can (every ms sooner is one less to wait):
    the files are found here, and we yield the CPU, where the scheduler
    may have queued the new thread behind us; until it is done, the
    interpreter hands it the GIL after 10 us instead of 5 ms."""
    import _thread
    switch_interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-5)
    _thread.start_new_thread(_migrate_into_own_cgroup,
                             (_own_cgroup_procs_files(), switch_interval))
    os.sched_yield()


def _migrate_into_own_cgroup(procs_files, switch_interval):
    try:
        for path in procs_files:
            try:
                fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
            except OSError:
                continue
            try:
                os.write(fd, b"0")  # the writer's own process
                return
            except OSError:
                pass
            finally:
                os.close(fd)
    finally:
        sys.setswitchinterval(switch_interval)


def _own_cgroup_procs_files():
    """The cgroup.procs files of the cgroups this process is in, by hierarchy
    (v2 at both places a hybrid or a unified host mounts it)."""
    files = []
    for key, path in own_cgroups().items():
        roots = ((CGROUP_ROOT + "/" + UNIFIED, CGROUP_ROOT) if key == UNIFIED_KEY
                 else (CGROUP_ROOT + "/" + key.removeprefix("name="),))
        files += [f"{root}{path.rstrip('/')}/cgroup.procs" for root in roots]
    return files


def container_cgroup(cgroups_path, container_id, base):
    """The cgroup path (from a hierarchy's root) for a container."""
    path = cgroups_path or container_id
    if path.startswith("/"):
        return os.path.normpath(path)
    return os.path.normpath(os.path.join(base, path))


def manager_for(cgroups_path, container_id, root=CGROUP_ROOT, systemd=False, annotations=None,
                rootless=False):
    """The manager create uses; with SYSTEMD, systemd's driver in front of
    the cgroupfs manager of the unit's directory.

    ROOTLESS (as runc's rootless cgroup manager): with no cgroupsPath, a
    cgroup the runtime may not make or join is left out rather than fatal,
    and only a limit that needed it fails; device rules are not enforced
    when refused. A delegated cgroup (one the user owns) is used as any."""
    if not systemd:
        manager = _cgroupfs_manager(cgroups_path, container_id, root)
        manager.rootless = rootless
        manager.may_skip = rootless and not cgroups_path
        return manager
    from pyoci.linux.cgroups import systemd as driver
    slice_name, unit = driver.parse_cgroups_path(cgroups_path, container_id)
    fs = _cgroupfs_manager(driver.unit_cgroup(slice_name, unit), container_id, root)
    return driver.Manager(unit, slice_name, fs, container_id,
                          driver.unit_property_annotations(annotations or {}))


def _cgroupfs_manager(cgroups_path, container_id, root):
    mode = detect_mode(root)
    if mode == UNIFIED:
        from pyoci.linux.cgroups.v2 import Manager
        base = os.path.dirname(own_cgroups().get(UNIFIED_KEY, "/"))
        return Manager.for_path(root, container_cgroup(cgroups_path, container_id, base))
    from pyoci.linux.cgroups.v1 import Manager
    return Manager.for_path(root, cgroups_path, container_id, hybrid=(mode == HYBRID))


def from_paths(paths):
    """The cgroupfs manager of directories {key: directory}, able to set and
    read limits."""
    from pyoci.linux.cgroups import v1, v2
    if list(paths) == [UNIFIED_KEY]:
        return v2.Manager(paths[UNIFIED_KEY])
    return v1.Manager(paths)


def frozen(paths):
    """Whether the cgroups of PATHS ({key: directory}) are frozen, read
    without a manager (`state` asks for every running container): v2's
    cgroup.freeze, v1's freezer.state; no freezer, never."""
    if list(paths) == [UNIFIED_KEY]:
        file, frozen_text = os.path.join(paths[UNIFIED_KEY], "cgroup.freeze"), "1"
    elif paths.get("freezer"):
        file, frozen_text = os.path.join(paths["freezer"], "freezer.state"), "FROZEN"
    else:
        return False
    try:
        with open(file) as f:
            return f.read().strip() == frozen_text
    except OSError:
        return False


class Cgroups:
    """A container's cgroup directories ({key: directory}, v1 or v2) and
    what every command after create does with them: add a process, list,
    freeze, remove. v1's and v2's managers add making them and their
    limits; exec, pause, ps, kill --all and delete need neither, nor
    those modules' imports."""

    def __init__(self, paths):
        self.paths = dict(paths)

    def _leave_out(self, directory, exc):
        """Whether a refusal to join DIRECTORY is fine: a rootless manager's call."""
        return False

    def add(self, pid):
        for directory in directories(self.paths):
            add_process(directory, pid, self._leave_out)

    def pids(self):
        """Every process in the container's cgroup."""
        key = "pids" if "pids" in self.paths else next(iter(self.paths), None)
        return pids_below(self.paths[key]) if key is not None else []

    def freeze(self, frozen):
        """Freeze or thaw, and wait until the kernel has got there: v2's
        cgroup.events says so, v1's freezer.state reads FROZEN or THAWED."""
        if list(self.paths) == [UNIFIED_KEY]:
            directory = self.paths[UNIFIED_KEY]
            write_file(directory, "cgroup.freeze", "1" if frozen else "0")
            wanted = f"frozen {int(frozen)}"
            wait_for(lambda: wanted in _read(os.path.join(directory, "cgroup.events")).splitlines(),
                     wanted)
            return
        freezer = self.paths.get("freezer")
        if freezer is None:
            from pyoci.errors import ExecError
            raise ExecError("the freezer cgroup controller is not available on this host")
        wanted = "FROZEN" if frozen else "THAWED"
        write_file(freezer, "freezer.state", wanted)
        wait_for(lambda: _read(os.path.join(freezer, "freezer.state")).strip() == wanted,
                 f"freezer.state {wanted}")

    def frozen(self):
        return frozen(self.paths)

    def destroy(self, owned=None):
        """Remove the directories, only those in OWNED if given (what create made)."""
        for directory in directories(self.paths):
            if owned is None or directory in owned:
                remove_dir(directory)


def from_record(record, limits=False):
    """The cgroups of a container, from what create recorded:
    'cgroup_paths' ({key: directory}) and, with systemd, 'systemd_unit'.
    LIMITS: also set and read limits (update, events)."""
    paths = record["cgroup_paths"]
    fs = from_paths(paths) if limits else Cgroups(paths)
    unit = record.get("systemd_unit")
    if unit is None:
        return fs
    from pyoci.linux.cgroups.systemd import Manager
    return Manager(unit, None, fs, record["id"], started=True)


def directories(paths):
    """{directory: its first key}: one entry per hierarchy, however many
    controllers share it (cpu,cpuacct)."""
    result = {}
    for key, directory in paths.items():
        result.setdefault(directory, key)
    return result


def pids_below(directory):
    """Every process in the cgroup DIRECTORY and its sub-cgroups (exec
    --cgroup puts processes there), as runc's GetAllPids; none if it is gone."""
    pids = []
    for below, _, _ in os.walk(directory):
        try:
            with open(os.path.join(below, "cgroup.procs")) as f:
                pids.extend(int(line) for line in f if line.strip())
        except OSError as exc:
            if exc.errno not in (errno.ENOENT, errno.ENODEV):
                raise  # ENODEV: removed between open and read
    return pids


def add_process(directory, pid, forgive=None):
    """Move PID into the cgroup DIRECTORY, saying which one refused, unless
    FORGIVE(directory, exc) says the refusal is fine (rootless)."""
    try:
        write_file(directory, "cgroup.procs", str(pid))
    except OSError as exc:
        if forgive is not None and forgive(directory, exc):
            return
        from pyoci.errors import ExecError, errno_text
        raise ExecError(f"add pid {pid} to cgroup {directory}: {errno_text(exc.errno)}") from None


def unavailable_controller(controller, file=None):
    """The refusal of a limit whose controller this host lacks (create and
    pyoci check word it alike)."""
    from pyoci.errors import ConfigError
    return ConfigError(f"config.json: linux.resources: the {controller} cgroup controller is "
                       "not available on this host" + (f" ({file})" if file else ""))


def missing_controllers(resources, root=CGROUP_ROOT):
    """A refusal for each controller linux.resources needs that this host's
    cgroups lack (pyoci check; create finds them as it writes)."""
    if not resources:
        return []
    from pyoci.linux.cgroups import resources as fields
    if detect_mode(root) == UNIFIED:
        with open(os.path.join(root, "cgroup.controllers")) as f:
            available = set(f.read().split())
        return [unavailable_controller(controller)
                for controller in fields.v2_controllers(fields.v2_writes(resources))
                if controller not in available]
    from pyoci.linux.cgroups.v1 import hierarchies
    present = hierarchies(root)
    missing = {}
    for controller, name, _ in fields.v1_writes(resources):
        if controller not in present and name not in fields.V1_OPTIONAL:
            missing.setdefault(controller, name)
    return [unavailable_controller(controller, name) for controller, name in missing.items()]


def manager_problems(config, container_id, systemd, rootless):
    """What create's cgroup manager refuses before anything is made (pyoci
    check), in its words: a cgroupsPath, unit annotations or host without
    systemd for --systemd-cgroup; rootless, a cgroup this user may not
    write where it needs one (a cgroupsPath, or limits)."""
    from pyoci.errors import ConfigError, PyociError
    problems = []
    if systemd:
        from pyoci.linux.cgroups import systemd as driver
        try:
            driver.check_running()
        except ConfigError as exc:
            problems.append(exc)
    try:
        manager = manager_for(config.linux.cgroups_path, container_id, systemd=systemd,
                              annotations=config.annotations, rootless=rootless)
    except PyociError as exc:
        return problems + [exc]
    if problems or not rootless:
        return problems
    refused = {key: directory for key, directory in manager.paths.items()
               if not os.access(_nearest_existing(directory), os.W_OK)}
    if not refused:
        return []
    if config.linux.cgroups_path:
        return [ConfigError(f"config.json: linux.cgroupsPath: {next(iter(refused.values()))}: "
                            "permission denied")]
    where = "config.json: linux.resources"
    from pyoci.linux.cgroups import resources as fields
    # Limits other than device rules, which rootless does without (as runc).
    limits = {key: value for key, value in (config.linux.resources or {}).items()
              if key != "devices"}
    if not limits:
        return []
    if UNIFIED_KEY in refused and list(manager.paths) == [UNIFIED_KEY]:
        return [ConfigError(f"{where}: rootless needs no limits + no cgrouppath when no "
                            f"permission is granted for cgroups: {refused[UNIFIED_KEY]}: "
                            "permission denied")
                ] if fields.v2_writes(limits) else []
    controllers = [controller for controller, _, _ in fields.v1_writes(limits)
                   if controller in refused]
    return [ConfigError(f"{where}: cannot set {controllers[0]} limit: container could not "
                        "join or create cgroup")] if controllers else []


def _nearest_existing(directory):
    while not os.path.exists(directory):
        directory = os.path.dirname(directory)
    return directory


# How a cgroup tree the runtime does not own refuses it.
NOT_OURS = (errno.EACCES, errno.EPERM, errno.EROFS)


def write_file(directory, name, value):
    with open(os.path.join(directory, name), "w") as f:
        f.write(value)


def _read(path):
    with open(path) as f:
        return f.read()


def wait_for(condition, what, timeout=10.0):
    """Poll CONDITION: the freezer has no notification that v1 and v2 share.
    Used only by pause/resume, which wait on the kernel's own progress."""
    import time
    deadline = time.monotonic() + timeout
    delay = 0.0005
    while not condition():
        if time.monotonic() > deadline:
            from pyoci.errors import ExecError
            raise ExecError(f"timed out waiting for {what}")
        time.sleep(delay)
        delay = min(delay * 2, 0.05)


def make_dir(directory):
    """mkdir -p; True if the leaf is new."""
    if os.path.isdir(directory):
        return False
    os.makedirs(directory, exist_ok=True)
    return True


def remove_dir(directory):
    """rmdir a cgroup and the sub-cgroups made below it (as runc does);
    already gone is fine, still in use (by processes that are not the
    container's) is left with a warning."""
    try:
        try:
            os.rmdir(directory)  # most have no sub-cgroups: no walk to pay for
        except OSError as exc:
            if exc.errno not in (errno.EBUSY, errno.ENOTEMPTY):
                raise
            for below, subdirectories, _ in os.walk(directory, topdown=False):
                for name in subdirectories:
                    os.rmdir(os.path.join(below, name))
            os.rmdir(directory)
    except FileNotFoundError:
        pass
    except OSError as exc:
        if exc.errno != errno.EBUSY:
            raise
        from pyoci import log
        log.warning(f"cgroup {directory} still has processes that are not the container's: left in place")


def mount_cgroupfs(sys, attach, flags, paths, own_namespace):
    """A `cgroup` mount entry: the container's own cgroups, mounted by
    ATTACH (mounts.Entry.attacher: it gives the place to mount on and
    returns the new mount's path).

    In a cgroup namespace the kernel shows the namespace's root, so the
    filesystem is mounted for real; without one, the container's
    directories are bind-mounted so it sees only its own cgroups. A
    hierarchy of several controllers gets a link for each, as on the host
    (cpu -> cpu,cpuacct).
    """
    from pyoci.linux.mounts import MS_RDONLY, MS_REMOUNT
    if list(paths) == [UNIFIED_KEY]:
        _mount_hierarchy(sys, attach, flags, paths[UNIFIED_KEY], "cgroup2", None, own_namespace)
        return
    target = attach(lambda place: sys.mount("tmpfs", place, "tmpfs", flags & ~MS_RDONLY,
                                            "mode=755"))
    mount_names = {directory: hierarchy_name(directory) for directory in paths.values()}
    for directory, key in directories(paths).items():
        mount_name = mount_names[directory]
        # Below a tmpfs of our own, which no other process can reach: paths are safe.
        sub = os.path.join(target, mount_name)
        attach_below = _attach_at(sub)
        if key == UNIFIED_KEY:
            _mount_hierarchy(sys, attach_below, flags, directory, "cgroup2", None, own_namespace)
        else:
            data = key if key.startswith("name=") else mount_name
            _mount_hierarchy(sys, attach_below, flags, directory, "cgroup", data, own_namespace)
    for key, directory in paths.items():
        mount_name = mount_names[directory]
        if key != mount_name and key in mount_name.split(","):
            os.symlink(mount_name, os.path.join(target, key))
    if flags & MS_RDONLY:
        sys.mount(None, target, None, flags | MS_REMOUNT | MS_RDONLY)


def hierarchy_name(directory):
    """The name of the v1 hierarchy DIRECTORY is in, as the host mounts it
    under /sys/fs/cgroup (cpu,cpuacct): a container without a cgroup
    namespace sees its directory there, and checkpoint names that mount so."""
    return os.path.relpath(directory, CGROUP_ROOT).split("/", 1)[0]


def _attach_at(path):
    def attach(do_mount):
        os.makedirs(path, exist_ok=True)
        do_mount(path)
        return path
    return attach


def _mount_hierarchy(sys, attach, flags, directory, fs_type, data, own_namespace):
    from pyoci.linux.mounts import MS_BIND, MS_REC, remount_bind
    if own_namespace:
        attach(lambda place: sys.mount(fs_type, place, fs_type, flags, data))
    else:
        target = attach(lambda place: sys.mount(directory, place, "bind", MS_BIND | MS_REC))
        remount_bind(sys, target, flags | MS_REC)
