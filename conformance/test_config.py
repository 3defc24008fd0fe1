"""config.json properties, observed from inside the container (config.md, config-linux.md)."""
import os
from contextlib import contextmanager

import pytest

from conformance.bundle import (bind_mount, join_namespace, read_config, tmpfs_mount,
                                update_section, write_config)
from conformance.harness import OUT, assert_no_runner_environment, skip_module_unless_runnable

pytestmark = pytest.mark.root
skip_module_unless_runnable()

# A shell function printing "PATH writable" or "PATH readonly".
WRITE_TEST = ('can_write() { if touch "$1" 2>/dev/null; then echo "$1 writable"; '
              'else echo "$1 readonly"; fi; }\n')

# The namespace types of config.json and their names under /proc/PID/ns.
NS_FILES = {"pid": "pid", "network": "net", "ipc": "ipc", "uts": "uts", "mount": "mnt"}

# Bit numbers from linux/capability.h for the capabilities the tests use.
CAP_BITS = {"CAP_CHOWN": 0, "CAP_KILL": 5, "CAP_NET_BIND_SERVICE": 10, "CAP_AUDIT_WRITE": 29}


def add_to_rootfs(bundle, relative_path, content):
    path = bundle / "rootfs" / relative_path
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(content)


def test_process_args_follow_execvp(probe):
    """The runtime MUST run the user-specified program, as specified by process:
    args has execvp semantics, args[0] being looked up in PATH."""
    # These args replace the probe's script, so they write out/output themselves.
    args = ["sh", "-c", f'printf "[%s]\\n" "$0" "$@" >{OUT}/output', "zero", "one two", ""]
    output = probe.run("", update_section("process", args=args))
    assert output == "[zero]\n[one two]\n[]\n"


def test_process_env_is_the_environment(probe):
    """The runtime MUST run the user-specified program, as specified by process:
    env has the semantics of environ."""
    env = ["PATH=/bin", "GREETING=hello world", "EMPTY="]
    variables = probe.run("env", update_section("process", env=env)).splitlines()
    assert set(env) <= set(variables)
    assert_no_runner_environment(variables)


def test_process_cwd_is_the_working_directory(probe):
    """The runtime MUST run the user-specified program, as specified by process:
    cwd is the working directory that will be set for the executable."""
    assert probe.run("pwd", update_section("process", cwd="/tmp")) == "/tmp\n"


def test_process_user_sets_ids_and_groups(probe):
    """The runtime MUST run the user-specified program, as specified by process:
    user.uid, user.gid and user.additionalGids."""
    user = {"uid": 65534, "gid": 65534, "additionalGids": [10, 20]}
    output = probe.run("id -u; id -g; id -G", update_section("process", user=user))
    uid, gid, groups = output.splitlines()
    assert (uid, gid) == ("65534", "65534")
    assert set(groups.split()) == {"65534", "10", "20"}


def test_process_user_umask(probe):
    """The runtime MUST run the user-specified program, as specified by process:
    user.umask is the umask of the user."""
    user = {"uid": 0, "gid": 0, "umask": 0o027}
    assert probe.run("umask", update_section("process", user=user)) == "0027\n"


def test_stdin_from_the_hosts_dev_null_is_the_containers(probe):
    """As runc: stdio that is the host's /dev/null (here the runtime's stdin)
    is reopened from the container's own /dev/null, whose mount is the
    container's (CRIU refuses to dump an fd of a mount it cannot see)."""
    output = probe.run("exec 3</dev/null; grep -h mnt_id /proc/self/fdinfo/0 /proc/self/fdinfo/3")
    stdin_mount, own_mount = output.split()[1::2]
    assert stdin_mount == own_mount, output


def test_hostname_is_set(probe):
    """All of the properties configured in config.json except for process MUST be applied:
    hostname is the container's hostname as seen by processes inside it."""
    output = probe.run("hostname", lambda config: config.update(hostname="probe-host"))
    assert output == "probe-host\n"


def test_domainname_is_set(probe, deviates):
    """All of the properties configured in config.json except for process MUST be applied:
    domainname is the container's domainname as seen by processes inside it."""
    deviates("runc", "runc 1.1 ignores domainname (support came in runc 1.2)")
    output = probe.run("cat /proc/sys/kernel/domainname",
                       lambda config: config.update(domainname="probe.test"))
    assert output == "probe.test\n"


@pytest.mark.parametrize("readonly, expected", [(True, "readonly"), (False, "writable"),
                                                (None, "writable")])
def test_root_readonly(probe, readonly, expected):
    """If true then the root filesystem MUST be read-only inside the container,
    defaults to false."""
    def set_readonly(config):
        config["root"].pop("readonly")
        if readonly is not None:
            config["root"]["readonly"] = readonly
    assert probe.run(WRITE_TEST + "can_write /probe", set_readonly) == f"/probe {expected}\n"


def test_root_path_may_be_absolute(probe):
    """On POSIX platforms, path is either an absolute path or a relative path to the bundle."""
    bundle = probe.bundle("echo ran")
    config = read_config(bundle)
    config["root"]["path"] = str(bundle / "rootfs")
    write_config(bundle, config)
    assert probe.run_bundle(bundle) == "ran\n"


def test_mounts_are_mounted_in_listed_order(probe, tmp_path):
    """The runtime MUST mount entries in the listed order."""
    host_dir = tmp_path / "host"
    host_dir.mkdir()
    (host_dir / "marker").write_text("from host\n")

    def nested_mounts(config):
        # The bind is only visible if the tmpfs under it was mounted first.
        config["mounts"] += [tmpfs_mount("/data"), bind_mount(host_dir, "/data/host")]
    assert probe.run("cat /data/host/marker", nested_mounts) == "from host\n"


def test_mount_options_are_applied(probe, tmp_path):
    """Runtimes MUST implement the following option strings for Linux: ...
    bind, nodev, noexec, nosuid, ro, noatime ..."""
    host_dir = tmp_path / "host"
    host_dir.mkdir()
    mounts = [tmpfs_mount(f"/opt/{option}", option)
              for option in ("ro", "nosuid", "nodev", "noexec", "noatime")]
    mounts.append(bind_mount(host_dir, "/opt/bind-ro", "ro"))
    # The option each mount must show in mountinfo: the last one it was given.
    expected = {mount["destination"]: mount["options"][-1] for mount in mounts}

    def option_mounts(config):
        config["mounts"] += mounts
    mountinfo = probe.run("cat /proc/self/mountinfo", option_mounts)
    options_by_mount_point = {fields[4]: fields[5].split(",")
                              for fields in map(str.split, mountinfo.splitlines())}
    missing = {destination: option for destination, option in expected.items()
               if option not in options_by_mount_point.get(destination, [])}
    assert missing == {}, mountinfo


def test_bind_mount_source_relative_to_bundle(probe):
    """Path values for bind mounts are either absolute or relative to the bundle."""
    def relative_bind(config):
        config["mounts"].append(bind_mount("hostdata", "/data"))
    bundle = probe.bundle("cat /data/marker", relative_bind)
    (bundle / "hostdata").mkdir()
    (bundle / "hostdata" / "marker").write_text("relative\n")
    assert probe.run_bundle(bundle) == "relative\n"


def test_relative_mount_destination_is_relative_to_root(probe):
    """It MAY be a relative path, in which case it MUST be interpreted as relative to "/"."""
    def relative_destination(config):
        config["mounts"].append(tmpfs_mount("reldata"))
    mountinfo = probe.run("cat /proc/self/mountinfo", relative_destination)
    assert " /reldata " in mountinfo


def test_new_namespaces_are_created(probe):
    """If path is not specified, the runtime MUST create a new container namespace of type type."""
    script = "".join(f"readlink /proc/self/ns/{name}\n" for name in NS_FILES.values())
    inside = probe.run(script).splitlines()
    host = [os.readlink(f"/proc/self/ns/{name}") for name in NS_FILES.values()]
    shared = [ns for ns in inside if ns in host]
    assert shared == []


@pytest.mark.parametrize("ns_type", ["network", "ipc", "pid"])
def test_unlisted_namespace_is_inherited(probe, ns_type):
    """If a namespace type is not specified in the namespaces array, the container MUST
    inherit the runtime namespace of that type."""
    def drop_namespace(config):
        config["linux"]["namespaces"].remove({"type": ns_type})
    inside = probe.run(f"readlink /proc/self/ns/{NS_FILES[ns_type]}", drop_namespace)
    assert inside == os.readlink(f"/proc/self/ns/{NS_FILES[ns_type]}") + "\n"


def test_namespace_path_is_joined(probe):
    """The runtime MUST place the container process in the namespace associated with that path."""
    first_id, _ = probe.container("running")
    first_pid = probe.runtime.state(first_id)["pid"]
    ns_path = f"/proc/{first_pid}/ns/net"
    output = probe.run("readlink /proc/self/ns/net", join_namespace("network", ns_path))
    assert output == os.readlink(ns_path) + "\n"


def test_rlimits_are_set(probe):
    """rlim.rlim_cur MUST match the configured value. rlim.rlim_max MUST match the
    configured value."""
    rlimits = [{"type": "RLIMIT_NOFILE", "soft": 100, "hard": 200},
               {"type": "RLIMIT_CPU", "soft": 1000, "hard": 2000}]
    limits = probe.run("cat /proc/self/limits", update_section("process", rlimits=rlimits))
    rows = {line[:26].strip(): line[26:].split()[:2] for line in limits.splitlines()[1:]}
    assert rows["Max open files"] == ["100", "200"]
    assert rows["Max cpu time"] == ["1000", "2000"]


@pytest.mark.parametrize("enabled", [True, False])
def test_no_new_privileges(probe, enabled):
    """noNewPrivileges set to true prevents the process from gaining additional privileges
    (All of the properties configured in config.json ... MUST be applied)."""
    output = probe.run("grep NoNewPrivs /proc/self/status",
                       update_section("process", noNewPrivileges=enabled))
    assert output.split() == ["NoNewPrivs:", str(int(enabled))]


def test_capabilities_are_kept(probe):
    """capabilities ... specifies the sets of capabilities for the process: each array
    lists the capabilities that are kept for the process."""
    capabilities = {
        "bounding": ["CAP_CHOWN", "CAP_KILL", "CAP_NET_BIND_SERVICE", "CAP_AUDIT_WRITE"],
        "permitted": ["CAP_KILL", "CAP_NET_BIND_SERVICE", "CAP_AUDIT_WRITE"],
        # execve as uid 0 makes effective equal permitted, and noNewPrivileges
        # (on by default) keeps permitted from growing to the bounding set.
        "effective": ["CAP_KILL", "CAP_NET_BIND_SERVICE", "CAP_AUDIT_WRITE"],
        "inheritable": ["CAP_KILL", "CAP_NET_BIND_SERVICE"],
        "ambient": ["CAP_NET_BIND_SERVICE"],
    }
    status_fields = {"CapBnd": "bounding", "CapPrm": "permitted", "CapEff": "effective",
                     "CapInh": "inheritable", "CapAmb": "ambient"}
    status = probe.run("grep ^Cap /proc/self/status",
                       update_section("process", capabilities=capabilities))
    observed = {status_fields[name.rstrip(":")]: int(mask, 16)
                for name, mask in map(str.split, status.splitlines())}
    expected = {kind: sum(1 << CAP_BITS[cap] for cap in caps)
                for kind, caps in capabilities.items()}
    assert observed == expected


def test_masked_paths_cannot_be_read(probe):
    """maskedPaths will mask over the provided paths inside the container so that
    they cannot be read."""
    def mask(config):
        config["linux"]["maskedPaths"] += ["/masked-file", "/masked-dir"]
    bundle = probe.bundle("cat /masked-file /masked-dir/file /visible", mask)
    add_to_rootfs(bundle, "masked-file", "classified\n")
    add_to_rootfs(bundle, "masked-dir/file", "classified\n")
    add_to_rootfs(bundle, "visible", "public\n")
    output = probe.run_bundle(bundle)
    assert "classified" not in output
    assert "public" in output


def test_readonly_paths_cannot_be_written(probe):
    """readonlyPaths will set the provided paths as readonly inside the container."""
    def protect(config):
        config["linux"]["readonlyPaths"].append("/protected")
    bundle = probe.bundle(WRITE_TEST + "can_write /protected/file\ncan_write /open/file", protect)
    (bundle / "rootfs" / "protected").mkdir()
    (bundle / "rootfs" / "open").mkdir()
    assert probe.run_bundle(bundle) == "/protected/file readonly\n/open/file writable\n"


def test_sysctl_is_applied(probe):
    """All of the properties configured in config.json except for process MUST be applied:
    sysctl modifies kernel parameters for the container."""
    output = probe.run("cat /proc/sys/net/ipv4/ip_default_ttl",
                       update_section("linux", sysctl={"net.ipv4.ip_default_ttl": "42"}))
    assert output == "42\n"


def test_default_devices_are_supplied(probe):
    """In addition to any devices configured with this setting, the runtime MUST also
    supply: /dev/null, /dev/zero, /dev/full, /dev/random, /dev/urandom, /dev/tty, /dev/ptmx."""
    devices = {"null": "1:3", "zero": "1:5", "full": "1:7", "random": "1:8",
               "urandom": "1:9", "tty": "5:0"}
    script = "".join(f"stat -c '%n %F %t:%T' /dev/{name}\n" for name in devices)
    script += "stat -L -c '%d:%i' /dev/ptmx /dev/pts/ptmx\n"
    *device_lines, ptmx, pts_ptmx = probe.run(script).splitlines()
    assert device_lines == [f"/dev/{name} character special file {number}"
                            for name, number in devices.items()]
    assert ptmx == pts_ptmx  # /dev/ptmx is a bind mount or symlink of /dev/pts/ptmx


def test_dev_symlinks_are_created(probe):
    """Runtimes MUST create the following symlinks if the source file exists after
    processing mounts: /dev/fd, /dev/stdin, /dev/stdout, /dev/stderr."""
    links = {"fd": "/proc/self/fd", "stdin": "/proc/self/fd/0",
             "stdout": "/proc/self/fd/1", "stderr": "/proc/self/fd/2"}
    script = "".join(f"readlink /dev/{name}\n" for name in links)
    assert probe.run(script).splitlines() == list(links.values())


def test_configured_device_is_available(probe):
    """devices (array of objects, OPTIONAL) lists devices that MUST be available in the
    container."""
    fuse = {"path": "/dev/fuse", "type": "c", "major": 10, "minor": 229,
            "fileMode": 0o640, "uid": 0, "gid": 0}
    output = probe.run("stat -c '%F %t:%T %a %u:%g' /dev/fuse",
                       update_section("linux", devices=[fuse]))
    assert output == "character special file a:e5 640 0:0\n"


def test_oom_score_adj_is_set(probe):
    """If oomScoreAdj is set, the runtime MUST set oom_score_adj to the given value."""
    output = probe.run("cat /proc/self/oom_score_adj", update_section("process", oomScoreAdj=500))
    assert output == "500\n"


@contextmanager
def own_oom_score_adj(value):
    """Raise this process's oom_score_adj, which children inherit; lowering it back
    to the old value needs no privilege."""
    path = "/proc/self/oom_score_adj"
    with open(path) as current:
        old = current.read()
    with open(path, "w") as adj:
        adj.write(str(value))
    try:
        yield
    finally:
        with open(path, "w") as adj:
            adj.write(old)


def test_oom_score_adj_unset_is_unchanged(probe):
    """If oomScoreAdj is not set, the runtime MUST NOT change the value of oom_score_adj."""
    with own_oom_score_adj(123):
        output = probe.run("cat /proc/self/oom_score_adj")
    assert output == "123\n"


def test_annotations_appear_in_state(runtime, probe, container_id):
    """annotations (map, OPTIONAL) contains the list of annotations associated with the
    container (state); the state MUST adhere to the state schema."""
    annotations = {"org.example.key": "value", "org.example.empty": ""}
    bundle = probe.bundle("true", lambda config: config.update(annotations=annotations))
    runtime.create(container_id, bundle)
    assert runtime.state(container_id)["annotations"] == annotations


def test_unknown_properties_are_ignored(probe):
    """Runtimes MAY log unknown properties but MUST otherwise ignore them."""
    def add_unknown(config):
        config["org.example.unknown"] = {"nested": [1, 2]}
        config["process"]["org.example.unknown"] = True
        config["linux"]["org.example.unknown"] = "value"
    assert probe.run("echo ran", add_unknown) == "ran\n"


def test_console_size_ignored_without_terminal(probe):
    """Runtimes MUST ignore consoleSize if terminal is false or unset."""
    console_size = {"height": 25, "width": 80}
    output = probe.run("echo ran", update_section("process", consoleSize=console_size))
    assert output == "ran\n"
