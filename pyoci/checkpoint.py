"""checkpoint and restore: a running container saved by CRIU and brought
back, as runc does it (docs/research/criu-checkpoint.md §3-§5).

checkpoint dumps init's process tree into the image directory, with
runc's descriptors.json (init's stdio as create found it) beside CRIU's
images, so pyoci and runc restore each other's checkpoints. Without
--leave-running or --pre-dump, CRIU ends the tree and the container is
deleted as `delete --force` does. restore makes the container as create
does (state directory, cgroups, config kept for exec), has CRIU rebuild the
tree inside it, and runs the prestart and createRuntime hooks once its
namespaces exist.
"""
import os
import stat

from pyoci import jsontext, lifecycle, log, state
from pyoci.errors import ConfigError, ContainerError, ExecError, errno_text
from pyoci.linux import cgroups, criu, procfs
from pyoci.state import Container

DESCRIPTORS = "descriptors.json"
CONFIG_ANNOTATION = "org.criu.config"
DEFAULT_CONFIG_FILE = "/etc/criu/runc.conf"  # runc's: a host's CRIU settings for containers
# Namespaces a config joins by path that CRIU takes as external (the rest it joins).
EXTERNAL_NAMESPACES = {"network": ("net", "extRootNetNS"), "pid": ("pid", "extRootPidNS")}
JOINED_NAMESPACES = {"mount": "mnt", "uts": "uts", "ipc": "ipc", "user": "user"}


class CriuOptions:
    """checkpoint's and restore's flags (runc's names and defaults)."""
    __slots__ = ("criu", "image_path", "work_path", "parent_path", "leave_running",
                 "tcp_established", "ext_unix_sk", "shell_job", "lazy_pages", "status_fd",
                 "page_server", "file_locks", "pre_dump", "manage_cgroups_mode", "empty_ns",
                 "auto_dedup", "lsm_profile", "lsm_mount_context")

    def __init__(self, **flags):
        for name in self.__slots__:
            setattr(self, name, flags.get(name))
        self.image_path = os.path.abspath(self.image_path or "checkpoint")
        self.empty_ns = self.empty_ns or []
        if self.manage_cgroups_mode and self.manage_cgroups_mode not in criu.CGROUP_MODES:
            raise ConfigError("Invalid manage cgroups mode")
        for namespace in self.empty_ns:
            if namespace != "network":
                raise ConfigError(f'namespace "{namespace}" is not supported')

    def log_path(self, name):
        return os.path.join(self.work_path or self.image_path, name)

    def common(self, config, log_name, fds):
        """The criu_opts fields dump and restore share. The image and work
        directories are opened here (CRIU opens them again through
        /proc/<our pid>/fd), their fds added to FDS for the caller to close."""
        images_fd = _open_dir(self.image_path, "image path")
        fds.append(images_fd)
        work_fd = None
        if self.work_path:
            work_fd = _open_dir(self.work_path, "work path")
            fds.append(work_fd)
        opts = {"images_dir_fd": images_fd, "log_level": 4, "log_file": log_name,
                "manage_cgroups": True, "notify_scripts": True, "orphan_pts_master": True,
                # runc's: the network's devices are the engine's, made again on restore.
                "empty_ns": criu.CLONE_NEWNET}
        for flag in ("shell_job", "tcp_established", "ext_unix_sk", "file_locks",
                     "auto_dedup", "lazy_pages"):
            if getattr(self, flag):
                opts[flag] = True
        if work_fd is not None:
            opts["work_dir_fd"] = work_fd
        if self.manage_cgroups_mode:
            opts["manage_cgroups_mode"] = criu.CGROUP_MODES[self.manage_cgroups_mode]
        config_file = (config.annotations or {}).get(CONFIG_ANNOTATION, DEFAULT_CONFIG_FILE)
        if config_file:
            opts["config_file"] = config_file
        return opts


def _open_dir(path, what):
    """PATH made if missing (0700, as runc) and open."""
    try:
        os.makedirs(path, 0o700, exist_ok=True)
        return os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as exc:
        raise ExecError(f"{what} {path}: {errno_text(exc.errno)}") from None


# ---------------------------------------------------------------- checkpoint

def checkpoint(root, container_id, options):
    container = Container(root, container_id).lock_existing()
    status = container.status()
    if status not in (state.RUNNING, state.PAUSED):
        raise ContainerError(f"Container cannot be checkpointed in {status} state")
    config, _ = container.load_config()
    pre_dump = bool(options.pre_dump)
    _check_parent_path(options)
    page_server = _page_server(options)
    criu.version(options.criu)
    fds = []
    try:
        log_name = "dump.log"
        opts = options.common(config, log_name, fds)
        record = container.record
        opts.update(pid=record["pid"], root=record["rootfs"])
        if options.leave_running:
            opts["leave_running"] = True
        external = _external_namespaces_at_dump(config)
        if external:
            opts["external"] = external
        freezer = _freezer(record)
        if freezer:
            opts["freeze_cgroup"] = freezer
        if page_server:
            opts["ps"] = page_server
        if options.parent_path:
            opts.update(parent_img=options.parent_path, track_mem=True)
        if options.lazy_pages and options.status_fd is not None and options.status_fd >= 0:
            _check_status_fd(options.status_fd)
        if pre_dump:
            criu.check_features(options.criu, opts, mem_track=True)
        if options.lazy_pages:
            criu.check_features(options.criu, opts, lazy_pages=True)
        if not pre_dump:
            opts["ext_mnt"] = [{"key": key, "val": value}
                               for key, value in _external_mounts_at_dump(config, record)]
            state.write_atomic(os.path.join(options.image_path, DESCRIPTORS),
                               jsontext.dumps(record.get("stdio") or
                                              procfs.stdio_targets(record["pid"])).encode(),
                               0o600)
        log.debug(f"checkpoint {container_id}: into {options.image_path}")

        def on_notify(script, _pid, received):
            for fd in received:
                os.close(fd)
            if script == "status-ready" and options.status_fd is not None \
                    and options.status_fd >= 0:
                os.write(options.status_fd, b"\0")
                os.close(options.status_fd)
                options.status_fd = None

        conversation = criu.Conversation(options.criu, log_path=options.log_path(log_name))
        conversation.request(criu.PRE_DUMP if pre_dump else criu.DUMP, opts, on_notify)
    finally:
        for fd in fds:
            os.close(fd)
    if not (options.leave_running or pre_dump):
        # CRIU has ended the tree: what is left of the container goes, as delete -f.
        lifecycle.destroy(container)


def _check_parent_path(options):
    if not options.parent_path:
        return
    if os.path.isabs(options.parent_path):
        raise ConfigError("--parent-path must be relative")
    os.makedirs(options.image_path, 0o700, exist_ok=True)  # runc's order: the parent is beside it
    parent = os.path.join(options.image_path, options.parent_path)
    if not os.path.isdir(parent):
        why = "not a directory" if os.path.exists(parent) else "no such file or directory"
        raise ConfigError(f"invalid --parent-path: {parent}: {why}")


def _page_server(options):
    """--page-server ADDRESS:PORT as criu_page_server_info; None without one."""
    if not options.page_server:
        return None
    address, _, port = options.page_server.rpartition(":")
    if not address or not port:
        raise ConfigError("Use --page-server ADDRESS:PORT to specify page server")
    if not port.isdigit():
        raise ConfigError("Invalid port number")
    return {"address": address, "port": int(port)}


def _check_status_fd(fd):
    import fcntl
    try:
        flags = fcntl.fcntl(fd, fcntl.F_GETFL)
    except OSError as exc:
        raise ConfigError(f"invalid --status-fd argument {fd}: {errno_text(exc.errno)}") \
            from None
    if not flags & (os.O_WRONLY | os.O_RDWR):
        raise ConfigError(f"invalid --status-fd argument {fd}: not writable")


def _freezer(record):
    """The cgroup CRIU freezes the tree in (instead of stopping each task)."""
    paths = record.get("cgroup_paths") or {}
    return paths.get(cgroups.UNIFIED_KEY) if list(paths) == [cgroups.UNIFIED_KEY] \
        else paths.get("freezer")


def _external_namespaces_at_dump(config):
    """Namespaces joined by path that CRIU must leave alone: by inode, under
    the name restore gives the one to put back."""
    found = []
    for kind, (name, key) in EXTERNAL_NAMESPACES.items():
        namespace = config.linux.namespace(kind)
        if namespace is not None and namespace.path:
            try:
                inode = os.stat(namespace.path).st_ino
            except OSError as exc:
                raise ExecError(f"{kind} namespace {namespace.path}: {errno_text(exc.errno)}") \
                    from None
            found.append(f"{name}[{inode}]:{key}")
    return found


def _in_rootfs(rootfs, destination):
    """DESTINATION as seen inside the container: links resolved in ROOTFS."""
    from pyoci.linux.inroot import secure_join
    return "/" + os.path.relpath(secure_join(rootfs, destination), rootfs).lstrip(".")


def _bind_mounts(config):
    from pyoci.linux.mounts import is_bind_mount
    return [mount for mount in config.mounts if is_bind_mount(mount)]


def _cgroup_binds(config, paths):
    """Without a cgroup namespace, a `cgroup` mount binds the container's own
    cgroup directories from the host: (destination, directory) each."""
    if config.linux.namespace("cgroup") is not None:
        return []
    found = []
    for mount in config.mounts:
        if mount.type != "cgroup":
            continue
        if list(paths) == [cgroups.UNIFIED_KEY]:
            found.append((mount.destination, paths[cgroups.UNIFIED_KEY]))
            continue
        for directory in cgroups.directories(paths):
            found.append((os.path.join(mount.destination, cgroups.hierarchy_name(directory)),
                          directory))
    return found


def _external_mounts_at_dump(config, record):
    """(mountpoint, name in the image) of what the container has from outside:
    bind mounts and cgroup binds by their destination; masked files, which
    are /dev/null bound over them, under /dev/null (runc's names, so each
    runtime restores the other's images)."""
    rootfs = record["rootfs"]
    found = [(_in_rootfs(rootfs, m.destination),) * 2 for m in _bind_mounts(config)]
    found += [(_in_rootfs(rootfs, destination),) * 2
              for destination, _ in _cgroup_binds(config, record["cgroup_paths"])]
    proc_root = f"/proc/{record['pid']}/root"
    for path in config.linux.masked_paths:
        try:
            if not stat.S_ISDIR(os.stat(proc_root + path).st_mode):
                found.append((path, "/dev/null"))
        except OSError:
            continue
    return found


# ---------------------------------------------------------------- restore

def restore(root, container_id, create_options, options, detach):
    """Make the container and have CRIU rebuild its tree from the image.
    Detached, return 0 once it runs; else wait, as run does, and return its
    exit status."""
    from pyoci import spec
    container = Container(root, container_id)
    config, raw_config = spec.load(create_options.bundle)
    lifecycle.refuse_a_tty_without_console(config, create_options)
    descriptors = _read_descriptors(options.image_path)
    criu_version = criu.version(options.criu)
    for flag in ("lsm_profile", "lsm_mount_context"):
        if getattr(options, flag) and criu_version < criu.LSM_VERSION:
            raise ConfigError(f"--{flag.replace('_', '-')} requires at least CRIU 3.16")
    namespace_fds, join_ns, inherit = _namespaces_at_restore(config)
    container.make_dir()
    manager = None
    criu_root = os.path.join(container.dir, "criu-root")
    fds = list(namespace_fds)
    master = None
    try:
        manager = lifecycle.new_cgroups(config, container_id, create_options)
        container.record = lifecycle.new_record(container_id, config, create_options, manager)
        container.save()
        state.write_atomic(container.config_file, jsontext.dumps(raw_config).encode(), 0o600)
        log_name = "restore.log"
        opts = options.common(config, log_name, fds)
        _make_mountpoints(config, create_options.bundle)
        opts.update(root=os.path.realpath(criu_root), rst_sibling=True, evasive_devices=True)
        for flag in ("lsm_profile", "lsm_mount_context"):
            if getattr(options, flag):
                opts[flag] = getattr(options, flag)
        if join_ns:
            opts["join_ns"] = join_ns
        console_fd = None
        if create_options.console_socket:
            from pyoci.linux import unix
            console_fd = unix.connect_unix(create_options.console_socket, "console socket")
            fds.append(console_fd)
        stdio = create_options.stdio or (0, 1, 2)
        inherit += [{"key": name, "fd": fd} for fd, name in enumerate(descriptors)
                    if "pipe:" in name]
        if inherit:
            opts["inherit_fd"] = inherit
        _bind_rootfs(config.root_path, criu_root)
        conversation = criu.Conversation(options.criu, stdio=stdio, pass_fds=namespace_fds,
                                         log_path=options.log_path(log_name))
        criu_pid = conversation.start()
        container.record["cgroup_owned"] = manager.create()
        container.save()
        manager.add(criu_pid)
        manager.apply(config.linux.resources)
        opts["ext_mnt"] = [{"key": key, "val": value} for key, value in
                           _external_mounts_at_restore(config, create_options.bundle, manager)]
        cgroup_roots = _cgroup_roots(criu_pid)
        if cgroup_roots:
            opts["cg_root"] = cgroup_roots
        # runc records the worker's stdio: the restored process has it (inherit_fd).
        container.record["stdio"] = procfs.stdio_targets(criu_pid)

        def on_notify(script, pid, received):
            nonlocal master
            if script == "setup-namespaces":
                container.record["pid"] = pid
                lifecycle.run_create_hooks(config, container, create_options.bundle)
            elif script == "post-restore":
                lifecycle.record_pid(container, pid)
            elif script == "orphan-pts-master":
                if console_fd is not None:
                    from pyoci.linux import terminal
                    terminal.send_master(os.dup(console_fd), received[0])
                    os.close(received.pop(0))
                elif not detach:
                    master = received.pop(0)
            for fd in received:
                os.close(fd)

        log.debug(f"restore {container_id}: from {options.image_path}")
        response = conversation.request(criu.RESTORE, opts, on_notify)
        if not container.record["pid"]:
            lifecycle.record_pid(container, response["restore"]["pid"])
        del container.record["creating"]
        container.save()
        if create_options.pid_file:
            state.write_atomic(os.path.abspath(create_options.pid_file),
                               str(container.record["pid"]).encode())
    except BaseException:
        if master is not None:
            os.close(master)
        _unbind(criu_root)
        lifecycle.undo_create(container, manager)
        raise
    finally:
        for fd in fds:
            os.close(fd)
    _unbind(criu_root)
    if detach:
        return 0
    import _signal
    lifecycle.forward_signals(container.record["pid"],
                              (_signal.SIGWINCH,) if master is not None else ())
    return lifecycle.wait_and_delete(container, master, create_options.bundle)


def _read_descriptors(image_path):
    path = os.path.join(image_path, DESCRIPTORS)
    try:
        with open(path, "rb") as f:
            found = jsontext.loads(f.read())
    except OSError as exc:
        raise ExecError(f"open {path}: {errno_text(exc.errno)}") from None
    except ValueError as exc:
        raise ExecError(f"{path}: not JSON ({exc})") from None
    if not isinstance(found, list) or not all(isinstance(item, str) for item in found):
        raise ExecError(f"{path}: not a list of strings")
    return found


def _namespaces_at_restore(config):
    """(fds to pass CRIU, join_ns entries, inherit_fd entries) for the
    namespaces the config joins by path."""
    fds, join_ns, inherit = [], [], []
    for namespace in config.linux.namespaces:
        if not namespace.path:
            continue
        if namespace.type in EXTERNAL_NAMESPACES:
            try:
                fd = os.open(namespace.path, os.O_RDONLY | os.O_CLOEXEC)
            except OSError:
                for opened in fds:
                    os.close(opened)
                raise ExecError(f"Requested {namespace.type} namespace {namespace.path} "
                                "does not exist") from None
            fds.append(fd)
            inherit.append({"key": EXTERNAL_NAMESPACES[namespace.type][1], "fd": fd})
        elif namespace.type in JOINED_NAMESPACES:
            join_ns.append({"ns": JOINED_NAMESPACES[namespace.type], "ns_file": namespace.path})
        else:
            raise ConfigError(f"config.json: linux.namespaces: restore cannot join the "
                              f"{namespace.type} namespace at {namespace.path}")
    return fds, join_ns, inherit


def _bind_rootfs(rootfs, criu_root):
    """CRIU's root must be a mount whose parent is not mounted over: a bind
    of the rootfs in the state directory (in our mount namespace: CRIU
    mounts in its work directory, which must be a mount of its own
    namespace). Container.remove_dir never walks into it."""
    from pyoci.linux import syscalls
    from pyoci.linux.mounts import MS_BIND, MS_REC
    try:
        os.mkdir(criu_root, 0o755)
        syscalls.syscalls().mount(rootfs, criu_root, None, MS_BIND | MS_REC)
    except OSError as exc:
        raise ExecError(f"bind {rootfs} on {criu_root}: {errno_text(exc.errno)}") from None


def _unbind(criu_root):
    if os.path.isdir(criu_root):
        state.detach(criu_root)
        os.rmdir(criu_root)


def _make_mountpoints(config, bundle):
    """Each mount's destination, as create makes it: CRIU mounts on them but
    does not make them. One inside an earlier bind mount is made in that
    mount's source, where CRIU will find it once it has bound the source
    (runc binds the sources for a moment to get there); one inside a tmpfs
    CRIU restores with the tmpfs, one inside a kernel filesystem exists."""
    from pyoci.linux import inroot, syscalls
    from pyoci.linux.mounts import is_bind_mount, source_path
    from pyoci.linux.rootfs import is_below
    sys = syscalls.syscalls()
    earlier = []  # (destination, the directory its contents are in, or None)
    for mount in config.mounts:
        bind = is_bind_mount(mount)
        source = source_path(mount, bundle) if bind else None
        # A mount over an earlier one at the same place is not inside it.
        outer = max((entry for entry in earlier if mount.destination != entry[0]
                     and is_below(mount.destination, entry[0])),
                    key=lambda entry: len(entry[0]), default=("/", config.root_path))
        destination, directory = outer
        if mount.type not in ("cgroup", "cgroup2") and directory is not None:
            kind = "file" if bind and not os.path.isdir(source) else "dir"
            root_fd = inroot.open_root(directory)
            try:
                os.close(inroot.make_in(sys, root_fd,
                                        "/" + os.path.relpath(mount.destination, destination),
                                        kind))
            except OSError as exc:
                raise ExecError(f"create criu restore mount for {mount.destination} mount: "
                                f"{errno_text(exc.errno)}") from None
            finally:
                os.close(root_fd)
        earlier.append((mount.destination, source if bind and os.path.isdir(source) else None))


def _external_mounts_at_restore(config, bundle, manager):
    """(name in the image, host path) for what _external_mounts_at_dump named."""
    from pyoci.linux.mounts import source_path
    rootfs = config.root_path
    found = [(_in_rootfs(rootfs, m.destination), source_path(m, bundle))
             for m in _bind_mounts(config)]
    found += [(_in_rootfs(rootfs, destination), directory)
              for destination, directory in _cgroup_binds(config, manager.paths)]
    if config.linux.masked_paths:
        found.append(("/dev/null", "/dev/null"))
    return found


def _cgroup_roots(pid):
    """Where CRIU puts the restored tree's cgroups: where it was itself put,
    the container's cgroups (a controller list each on v1; on v2 one, for
    every controller)."""
    unified = cgroups.detect_mode() == cgroups.UNIFIED
    found = []
    with open(f"/proc/{pid}/cgroup") as f:
        for line in f:
            _, controllers, path = line.rstrip("\n").split(":", 2)
            if controllers.startswith("name=") or (not controllers and not unified):
                continue
            entry = {"path": path}
            if controllers:
                entry["ctrl"] = controllers
            found.append(entry)
    return found

