"""pyoci.spec: the typed view's defaults, check() rules, load(), default_config()."""
import copy
import json
import os

import pytest

from pyoci import spec
from pyoci.errors import ConfigError
from pyoci.sections import section_of
from pyoci.spec import Config, check, default_config
from pyoci.validate import validate_config


@pytest.fixture
def bundle(tmp_path):
    (tmp_path / "rootfs").mkdir()
    return tmp_path


def minimal(**overrides):
    raw = {"ociVersion": "1.0.2", "root": {"path": "rootfs"},
           "process": {"cwd": "/", "args": ["sh"]},
           "linux": {"namespaces": [{"type": "mount"}]}}
    raw.update(overrides)
    return raw


def config_error(raw, bundle):
    """check() must fail with one line starting 'config.json: PATH: ' and
    ending in the runtime-spec section of PATH; return the line without it."""
    with pytest.raises(ConfigError) as info:
        check(Config(raw, str(bundle)))
    message = str(info.value)
    assert message.startswith("config.json: ")
    assert "\n" not in message
    path = message.removeprefix("config.json: ").partition(": ")[0]
    suffix = f" ({section_of(path)})"
    assert message.endswith(suffix), message
    return message.removesuffix(suffix)


# ------------------------------------------------------------------ typed view
class TestTypedView:
    def test_process_defaults(self, bundle):
        process = Config(minimal(process={"cwd": "/"}), str(bundle)).process
        assert process.terminal is False
        assert process.args == []
        assert process.env == []
        assert process.cwd == "/"
        assert (process.user.uid, process.user.gid) == (0, 0)
        assert process.user.umask is None
        assert process.user.additional_gids == []
        assert process.capabilities is None
        assert process.rlimits == []
        assert process.no_new_privileges is False
        assert process.oom_score_adj is None
        assert process.console_size is None

    def test_process_values(self, bundle):
        raw = minimal(process={
            "cwd": "/w", "terminal": True, "args": ["a", "b"], "env": ["X=1"],
            "user": {"uid": 5, "gid": 6, "umask": 0o22, "additionalGids": [7, 8]},
            "capabilities": {"bounding": ["CAP_KILL"]},
            "rlimits": [{"type": "RLIMIT_NOFILE", "soft": 1, "hard": 2}],
            "noNewPrivileges": True, "oomScoreAdj": -500,
            "consoleSize": {"height": 24, "width": 80}})
        process = Config(raw, str(bundle)).process
        assert process.terminal is True
        assert process.args == ["a", "b"] and process.env == ["X=1"]
        assert (process.user.uid, process.user.gid, process.user.umask) == (5, 6, 0o22)
        assert process.user.additional_gids == [7, 8]
        assert process.capabilities.bounding == ["CAP_KILL"]
        assert process.capabilities.effective is None
        assert [(r.type, r.soft, r.hard) for r in process.rlimits] == [("RLIMIT_NOFILE", 1, 2)]
        assert process.no_new_privileges is True
        assert process.oom_score_adj == -500
        assert process.console_size == {"height": 24, "width": 80}

    def test_no_process(self, bundle):
        raw = minimal()
        del raw["process"]
        config = Config(raw, str(bundle))
        assert config.process is None
        check(config)  # no process, no cwd rule

    def test_root_path(self, bundle):
        assert Config(minimal(), str(bundle)).root_path == str(bundle / "rootfs")
        assert Config(minimal(root={"path": "./x/../rootfs/"}), str(bundle)).root_path == \
            str(bundle / "rootfs")
        assert Config(minimal(root={"path": "/abs/rootfs"}), str(bundle)).root_path == "/abs/rootfs"
        assert Config(minimal(root={"path": "rootfs"}), str(bundle)).root_readonly is False
        assert Config(minimal(root={"path": "rootfs", "readonly": True}),
                      str(bundle)).root_readonly is True

    def test_linux_defaults(self, bundle):
        raw = minimal()
        del raw["linux"]
        linux = Config(raw, str(bundle)).linux
        assert linux.namespaces == []
        assert linux.namespace("mount") is None
        assert linux.uid_mappings == [] and linux.gid_mappings == []
        assert linux.devices == []
        assert linux.cgroups_path is None
        assert linux.resources == {}
        assert linux.masked_paths == [] and linux.readonly_paths == []
        assert linux.sysctl == {} and linux.time_offsets == {}

    def test_linux_namespace(self, bundle):
        raw = minimal(linux={"namespaces": [{"type": "pid"},
                                            {"type": "network", "path": "/proc/1/ns/net"},
                                            {"type": "mount"}]})
        linux = Config(raw, str(bundle)).linux
        assert linux.namespace("pid").type == "pid"
        assert linux.namespace("pid").path is None
        assert linux.namespace("network").path == "/proc/1/ns/net"
        assert linux.namespace("user") is None
        assert [ns.type for ns in linux.namespaces] == ["pid", "network", "mount"]

    def test_hooks(self, bundle):
        raw = minimal(hooks={
            "prestart": [{"path": "/bin/a"}],
            "createRuntime": [{"path": "/bin/b", "args": ["b", "-x"], "env": ["A=1"],
                               "timeout": 5}],
            "poststop": [{"path": "/bin/c", "args": []}]})
        hooks = Config(raw, str(bundle)).hooks
        assert [h.args for h in hooks.prestart] == [["/bin/a"]]
        assert hooks.prestart[0].env is None and hooks.prestart[0].timeout is None
        [b] = hooks.create_runtime
        assert (b.path, b.args, b.env, b.timeout) == ("/bin/b", ["b", "-x"], ["A=1"], 5)
        assert hooks.poststop[0].args == ["/bin/c"]  # empty args: like Go's exec, {path}
        assert hooks.create_container == hooks.start_container == hooks.poststart == []

    def test_no_hooks(self, bundle):
        hooks = Config(minimal(), str(bundle)).hooks
        for phase in ("prestart", "create_runtime", "create_container", "start_container",
                      "poststart", "poststop"):
            assert getattr(hooks, phase) == []

    def test_mounts(self, bundle):
        raw = minimal(mounts=[{"destination": "/proc", "type": "proc", "source": "proc"},
                              {"destination": "/data", "options": ["rbind"],
                               "uidMappings": [{"containerID": 0, "hostID": 1000, "size": 1}]}])
        proc, data = Config(raw, str(bundle)).mounts
        assert (proc.destination, proc.type, proc.source, proc.options) == \
            ("/proc", "proc", "proc", [])
        assert data.type is None and data.source is None and data.options == ["rbind"]
        assert [(m.container_id, m.host_id, m.size) for m in data.uid_mappings] == [(0, 1000, 1)]

    def test_annotations_and_names(self, bundle):
        config = Config(minimal(hostname="h", domainname="d", annotations={"a": "b"}),
                        str(bundle))
        assert (config.hostname, config.domainname, config.annotations) == ("h", "d", {"a": "b"})
        assert Config(minimal(), str(bundle)).annotations == {}


# ---------------------------------------------------------------------- check()
def with_namespaces(*types, **paths):
    namespaces = [{"type": t} for t in types]
    for t, path in paths.items():
        namespaces.append({"type": t, "path": path})
    return namespaces


class TestCheck:
    def test_minimal_passes(self, bundle):
        check(Config(minimal(), str(bundle)))

    @pytest.mark.parametrize("version", ["1.0.0", "1.2.1", "1.3.0", "1.0.2-dev"])
    def test_supported_versions(self, bundle, version):
        check(Config(minimal(ociVersion=version), str(bundle)))

    @pytest.mark.parametrize("version", ["0.9.0", "2.0.0", "11.0"])
    def test_unsupported_version(self, bundle, version):
        message = config_error(minimal(ociVersion=version), bundle)
        assert message == f"config.json: ociVersion: unsupported version {version!r}"

    def test_root_required(self, bundle):
        raw = minimal()
        del raw["root"]
        assert config_error(raw, bundle) == "config.json: root.path: a root filesystem is required"

    def test_root_not_a_directory(self, bundle):
        (bundle / "file").write_text("")
        message = config_error(minimal(root={"path": "file"}), bundle)
        assert message == f"config.json: root.path: rootfs {bundle / 'file'} is not a directory"
        assert "not a directory" in config_error(minimal(root={"path": "missing"}), bundle)

    def test_duplicate_namespace(self, bundle):
        raw = minimal(linux={"namespaces": with_namespaces("mount", "pid", "pid")})
        assert config_error(raw, bundle) == \
            "config.json: linux.namespaces: duplicate namespace 'pid'"

    def test_duplicate_namespace_new_and_path(self, bundle):
        raw = minimal(linux={"namespaces": with_namespaces("mount", "network",
                                                           network="/proc/1/ns/net")})
        assert "duplicate namespace 'network'" in config_error(raw, bundle)

    def test_no_mount_namespace_is_allowed_without_masking(self, bundle):
        """As runc: the container then shares the host's mounts and is only chrooted."""
        check(Config(minimal(linux={"namespaces": with_namespaces("pid", "uts")}), str(bundle)))
        raw = minimal(linux={"namespaces": with_namespaces("pid"), "maskedPaths": ["/proc/kcore"]})
        assert config_error(raw, bundle) == ("config.json: linux.maskedPaths: masked and "
                                             "read-only paths need a mount namespace")

    def test_mount_namespace_by_path_is_fine(self, bundle):
        raw = minimal(linux={"namespaces": with_namespaces(mount="/proc/1/ns/mnt")})
        check(Config(raw, str(bundle)))

    def test_hostname_without_uts(self, bundle):
        raw = minimal(hostname="box")
        assert config_error(raw, bundle) == "config.json: hostname: requires a new uts namespace"
        raw = minimal(hostname="box", linux={"namespaces": with_namespaces("mount", "uts")})
        check(Config(raw, str(bundle)))

    def test_empty_hostname_needs_no_uts(self, bundle):
        check(Config(minimal(hostname=""), str(bundle)))

    def test_domainname_without_uts(self, bundle):
        assert config_error(minimal(domainname="example.org"), bundle) == \
            "config.json: domainname: requires a new uts namespace"

    def test_new_user_namespace_needs_both_mappings(self, bundle):
        mapping = [{"containerID": 0, "hostID": 100000, "size": 65536}]
        for linux in ({"namespaces": with_namespaces("mount", "user")},
                      {"namespaces": with_namespaces("mount", "user"), "uidMappings": mapping},
                      {"namespaces": with_namespaces("mount", "user"), "gidMappings": mapping}):
            assert config_error(minimal(linux=linux), bundle) == (
                "config.json: linux.uidMappings: a new user namespace needs uid and gid mappings")
        check(Config(minimal(linux={"namespaces": with_namespaces("mount", "user"),
                                    "uidMappings": mapping, "gidMappings": mapping}),
                     str(bundle)))

    def test_mappings_need_a_new_user_namespace(self, bundle):
        mapping = [{"containerID": 0, "hostID": 1000, "size": 1}]
        for linux in ({"namespaces": with_namespaces("mount"), "uidMappings": mapping},
                      {"namespaces": with_namespaces("mount"), "gidMappings": mapping},
                      {"namespaces": with_namespaces("mount", user="/proc/1/ns/user"),
                       "uidMappings": mapping, "gidMappings": mapping}):
            assert config_error(minimal(linux=linux), bundle) == \
                "config.json: linux.uidMappings: mappings need a new user namespace"

    def test_joined_user_namespace_needs_no_mappings(self, bundle):
        linux = {"namespaces": with_namespaces("mount", user="/proc/1/ns/user")}
        check(Config(minimal(linux=linux), str(bundle)))

    def test_time_offsets_need_a_new_time_namespace(self, bundle):
        offsets = {"monotonic": {"secs": 10, "nanosecs": 0}}
        expected = "config.json: linux.timeOffsets: offsets need a new time namespace"
        assert config_error(minimal(linux={"namespaces": with_namespaces("mount"),
                                           "timeOffsets": offsets}), bundle) == expected
        assert config_error(minimal(linux={"namespaces": with_namespaces(
            "mount", time="/proc/1/ns/time"), "timeOffsets": offsets}), bundle) == expected
        check(Config(minimal(linux={"namespaces": with_namespaces("mount", "time"),
                                    "timeOffsets": offsets}), str(bundle)))
        check(Config(minimal(linux={"namespaces": with_namespaces("mount", "time")}),
                     str(bundle)))

    @pytest.mark.parametrize("cwd", ["", "tmp", "./", "relative/path"])
    def test_relative_cwd(self, bundle, cwd):
        raw = minimal(process={"cwd": cwd})
        assert config_error(raw, bundle) == \
            f"config.json: process.cwd: {cwd!r} is not an absolute path"

    def test_absolute_cwd(self, bundle):
        check(Config(minimal(process={"cwd": "/work/dir"}), str(bundle)))


# ----------------------------------------------------------------------- load()
class TestLoad:
    def test_missing(self, tmp_path):
        with pytest.raises(ConfigError) as info:
            spec.load(str(tmp_path))
        assert str(info.value) == f"config.json: no such file in bundle {tmp_path}"

    def test_malformed_json(self, bundle):
        (bundle / "config.json").write_text("{not json\n\n")
        with pytest.raises(ConfigError) as info:
            spec.load(str(bundle))
        assert str(info.value).startswith("config.json: ")
        assert "\n" not in str(info.value)

    def test_schema_violation(self, bundle):
        raw = minimal()
        raw["process"]["args"] = "sh"
        (bundle / "config.json").write_text(json.dumps(raw))
        with pytest.raises(ConfigError) as info:
            spec.load(str(bundle))
        assert str(info.value).startswith("config.json: process.args")
        assert "\n" not in str(info.value)

    def test_check_runs(self, bundle):
        (bundle / "config.json").write_text(json.dumps(minimal(hostname="h")))
        with pytest.raises(ConfigError, match="requires a new uts namespace"):
            spec.load(str(bundle))

    def test_good(self, bundle):
        raw = minimal()
        (bundle / "config.json").write_text(json.dumps(raw))
        config, loaded = spec.load(str(bundle))
        assert loaded == raw
        assert config.root_path == str(bundle / "rootfs")


# --------------------------------------------------------------- default_config
class TestDefaultConfig:
    @pytest.mark.parametrize("rootless", [False, True])
    def test_valid_and_checks(self, bundle, rootless):
        raw = default_config(rootless=rootless)
        validate_config(raw)
        validate_config(json.loads(json.dumps(raw)))
        check(Config(raw, str(bundle)))

    def test_default_is_runc_like(self):
        raw = default_config()
        assert raw["process"]["args"] == ["sh"]
        assert raw["process"]["terminal"] is True
        assert raw["root"] == {"path": "rootfs", "readonly": True}
        assert {ns["type"] for ns in raw["linux"]["namespaces"]} == \
            {"pid", "network", "ipc", "uts", "mount", "cgroup"}
        assert "uidMappings" not in raw["linux"]
        assert any(m["type"] == "cgroup" for m in raw["mounts"])
        caps = raw["process"]["capabilities"]
        assert caps["bounding"] == caps["effective"] == caps["permitted"] == \
            ["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"]
        assert caps["bounding"] is not caps["effective"]  # independent lists

    def test_rootless(self):
        raw = default_config(rootless=True)
        linux = raw["linux"]
        types = [ns["type"] for ns in linux["namespaces"]]
        assert "user" in types and "network" not in types
        assert linux["uidMappings"] == [{"containerID": 0, "hostID": os.getuid(), "size": 1}]
        assert linux["gidMappings"] == [{"containerID": 0, "hostID": os.getgid(), "size": 1}]
        assert "resources" not in linux
        assert not any(m["type"] in ("cgroup", "sysfs") for m in raw["mounts"])
        sys_mount = next(m for m in raw["mounts"] if m["destination"] == "/sys")
        assert sys_mount["source"] == "/sys" and "rbind" in sys_mount["options"]
        cgroup_mount = next(m for m in raw["mounts"] if m["destination"] == "/sys/fs/cgroup")
        assert "rbind" in cgroup_mount["options"]

    def test_fresh_each_time(self):
        a = default_config()
        a["process"]["args"].append("x")
        a["linux"]["namespaces"].clear()
        assert default_config()["process"]["args"] == ["sh"]
        assert default_config()["linux"]["namespaces"]
        assert default_config() == copy.deepcopy(default_config())


class TestSysctlRules:
    """A sysctl outside the container's own namespaces would change the host."""

    @pytest.mark.parametrize("key, namespaces", [
        ("kernel.shmmax", ["ipc"]), ("fs.mqueue.msg_max", ["ipc"]),
        ("net.ipv4.ip_forward", ["network"]), ("kernel.domainname", ["uts"])])
    def test_namespaced_sysctls_pass(self, bundle, key, namespaces):
        raw = minimal(linux={"namespaces": with_namespaces("mount", *namespaces),
                             "sysctl": {key: "1"}})
        check(Config(raw, str(bundle)))

    @pytest.mark.parametrize("key, namespaces, reason", [
        ("kernel.shmmax", [], "host's ipc namespace"),
        ("net.ipv4.ip_forward", ["ipc"], "host's network namespace"),
        ("kernel.hostname", ["uts"], "use the hostname property"),
        ("kernel.panic", ["ipc", "network", "uts"], "not in a separate kernel namespace"),
        ("vm.swappiness", ["ipc", "network", "uts"], "not in a separate kernel namespace")])
    def test_host_sysctls_are_refused(self, bundle, key, namespaces, reason):
        raw = minimal(linux={"namespaces": with_namespaces("mount", *namespaces),
                             "sysctl": {key: "1"}})
        message = config_error(raw, bundle)
        assert message.startswith(f"config.json: linux.sysctl: '{key}'") and reason in message


@pytest.mark.parametrize("path, value", [
    ("linux.intelRdt", {"closID": "a"}),
    ("process.user.username", "Administrator"),
    ("windows", {"layerFolders": ["C:"]})])
def test_unsupported_settings_are_refused_not_dropped(path, value):
    from pyoci.spec import check_supported
    raw = minimal()
    *parents, key = path.split(".")
    section = raw
    for name in parents:
        section = section.setdefault(name, {})
    section[key] = value
    with pytest.raises(ConfigError) as caught:
        check_supported(raw)
    assert str(caught.value).startswith(f"config.json: {path}: ")
    check_supported(minimal())


def write_config(bundle, raw):
    import json
    (bundle / "config.json").write_text(json.dumps(raw))


@pytest.mark.parametrize("device_type, mode, kept", [
    ("b", 0o060600, 0o600), ("c", 0o020666, 0o666), ("u", 0o020640, 0o640), ("p", 0o010600, 0o600)])
def test_a_device_file_mode_with_its_own_file_type_is_its_permission_bits(bundle, device_type,
                                                                          mode, kept):
    """podman 4.3's --privileged sends S_IFBLK | 0o600 (24960): runc takes the permission bits."""
    from pyoci.spec import load
    device = {"type": device_type, "path": "/dev/x", "major": 1, "minor": 3, "fileMode": mode}
    if device_type == "p":
        del device["major"], device["minor"]
    write_config(bundle, minimal(linux={"namespaces": [{"type": "mount"}], "devices": [device]}))
    config, _ = load(str(bundle))
    assert config.linux.devices[0].file_mode == kept


@pytest.mark.parametrize("device_type, mode", [
    ("c", 0o060600),   # a block device's type on a character device
    ("b", 0o064600),   # setgid beside the type bits
    ("c", 0o100644)])  # a regular file's type
def test_any_other_file_mode_above_0o777_is_still_refused(bundle, device_type, mode):
    from pyoci.spec import load
    device = {"type": device_type, "path": "/dev/x", "major": 1, "minor": 3, "fileMode": mode}
    write_config(bundle, minimal(linux={"namespaces": [{"type": "mount"}], "devices": [device]}))
    with pytest.raises(ConfigError, match=r"linux\.devices\[0\]\.fileMode"):
        load(str(bundle))
