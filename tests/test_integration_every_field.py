"""Nothing accepted and then dropped: every property of schemas/config.schema.json
is either seen at work in a real container or refused at create in one line.

The list of properties comes from the schema itself, so a field added there
fails test_every_schema_property_is_judged until it is given an observation
here (or, for linux.resources, in tests/test_integration_cgroup_fields.py).
"""
import contextlib
import json
import os
import re
import shutil
import tempfile
from pathlib import Path

import pytest

from conformance.bundle import bind_mount, make_bundle, tmpfs_mount, user_namespace
from conformance.harness import (PYOCI, ConsoleSocket, LeakCheck, hand_directories_to,
                                 private_runtime, probe_bundle, read_until_closed)

SCHEMA = Path(__file__).resolve().parent.parent / "schemas" / "config.schema.json"
MARKER = "/out/hook-ran"


def schema_properties():
    """Every property path: 'process.user.uid', 'mounts[].options', 'linux.netDevices.*.name'."""
    schema = json.loads(SCHEMA.read_text())
    definitions = schema["definitions"]
    found = set()

    def walk(node, path):
        while "$ref" in node:
            node = definitions[node["$ref"].rsplit("/", 1)[1]]
        for branch in node.get("allOf", []) + node.get("anyOf", []) + node.get("oneOf", []):
            walk(branch, path)
        for name, child in node.get("properties", {}).items():
            child_path = f"{path}.{name}" if path else name
            found.add(child_path)
            walk(child, child_path)
        if isinstance(node.get("items"), dict):
            walk(node["items"], path + "[]")
        for child in list(node.get("patternProperties", {}).values()) + (
                [node["additionalProperties"]] if isinstance(node.get("additionalProperties"), dict)
                else []):
            walk(child, path + ".*")
    walk(schema, "")
    return found


# ------------------------------------------------------------ observations
# Each run is one container; FIELDS maps a property (and so every property
# below it) to the run that shows it at work and the check of that run's output.

# kill(pid, 0) is refused (ENOSYS) by an argument rule with a mask; other signals pass.
SECCOMP = {"defaultAction": "SCMP_ACT_ALLOW", "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86"],
           "flags": ["SECCOMP_FILTER_FLAG_LOG"],
           "syscalls": [{"names": ["kill"], "action": "SCMP_ACT_ERRNO", "errnoRet": 38,
                         "args": [{"index": 1, "value": 0xFF, "valueTwo": 0,
                                   "op": "SCMP_CMP_MASKED_EQ"}]}]}


def process_fields(config):
    process = config["process"]
    process["env"].append("PYOCI_FIELD=env-seen")
    process["cwd"] = "/root"
    process["user"] = {"uid": 5, "gid": 6, "umask": 0o027, "additionalGids": [7]}
    caps = process["capabilities"]
    caps["bounding"] = caps["permitted"] = caps["effective"] = caps["inheritable"] = [
        "CAP_KILL", "CAP_CHOWN"]
    caps["ambient"] = ["CAP_KILL"]
    process["rlimits"] = [{"type": "RLIMIT_NOFILE", "soft": 321, "hard": 654}]
    process["noNewPrivileges"] = True
    process["oomScoreAdj"] = 123
    config["hostname"] = "field-host"
    config["domainname"] = "field-domain"
    config["root"]["readonly"] = True
    config["mounts"].append(tmpfs_mount("/scratch", "size=1m", "mode=0753"))
    config["mounts"].append(bind_mount("/etc", "/host-etc", "ro"))
    config["linux"]["sysctl"] = {"kernel.shmmax": "123456789"}
    config["linux"]["devices"] = [{"type": "c", "path": "/dev/field-null", "major": 1,
                                   "minor": 3, "fileMode": 0o640, "uid": 5, "gid": 6}]
    config["linux"]["maskedPaths"].append("/etc/masked")
    config["linux"]["readonlyPaths"].append("/root")
    config["linux"]["personality"] = {"domain": "LINUX32", "flags": ["ADDR_NO_RANDOMIZE"]}
    config["linux"]["memoryPolicy"] = {"mode": "MPOL_BIND", "nodes": "0"}
    process["scheduler"] = {"policy": "SCHED_BATCH", "nice": 3}
    process["ioPriority"] = {"class": "IOPRIO_CLASS_BE", "priority": 6}
    config["linux"]["rootfsPropagation"] = "private"
    config["linux"]["cgroupsPath"] = "/pyoci-field-test"
    config["linux"]["seccomp"] = SECCOMP


PROCESS_SCRIPT = r"""
echo "args=$0"; echo "env=$PYOCI_FIELD"; echo "cwd=$(pwd)"; echo "id=$(id -u):$(id -g):$(id -G)"
echo "umask=$(umask)"; grep -E '^Cap(Inh|Prm|Eff|Bnd|Amb)|^NoNewPrivs' /proc/self/status
echo "nofile=$(ulimit -Sn):$(ulimit -Hn)"; echo "oom=$(cat /proc/self/oom_score_adj)"
echo "hostname=$(hostname)"; echo "domainname=$(cat /proc/sys/kernel/domainname)"
touch /root-write 2>/dev/null; echo "rootwrite=$?"
grep -E ' /(scratch|host-etc) ' /proc/self/mountinfo; stat -c 'scratchmode=%a' /scratch
echo "shmmax=$(cat /proc/sys/kernel/shmmax)"; stat -c 'device=%F:%t:%T:%a:%u:%g' /dev/field-null
cat /etc/masked 2>&1 | head -c 40; echo; echo "masked-size=$(wc -c </etc/masked)"
touch /root/x 2>&1; echo "uname=$(uname -m)"
awk '$5 == "/"' /proc/self/mountinfo; grep pyoci-field-test /proc/self/cgroup | head -1
kill -0 $$ 2>&1; echo "signal0=$?"; kill -CONT $$; echo "cont=$?"
echo "personality=$(cat /proc/self/personality)"; grep -E '^(policy|prio) ' /proc/self/sched
ionice -p $$; grep -m1 heap /proc/self/numa_maps
"""


def hook(path_marker, *, kind, timeout=None):
    """A hook that records its kind, argv and env, and the state it was given."""
    entry = {"path": "/bin/sh", "args": ["sh", "-c",
             f'echo "{kind} $0 $PYOCI_HOOK_ENV" >> {path_marker}; cat >> {path_marker}.state', kind],
             "env": ["PYOCI_HOOK_ENV=hook-env"]}
    if timeout is not None:
        entry["timeout"] = timeout
    return entry


HOOK_KINDS = ("prestart", "createRuntime", "createContainer", "startContainer", "poststart",
              "poststop")


def hook_fields(bundle):
    marker = Path(bundle) / "out" / "hooks"

    def mutate(config):
        # startContainer runs after pivot_root, in the container: its /out.
        config["hooks"] = {kind: [hook(MARKER if kind == "startContainer" else str(marker),
                                       kind=kind, timeout=30)] for kind in HOOK_KINDS}
        config["annotations"] = {"org.pyoci.field": "annotation-seen"}
    return mutate


def userns_fields(config):
    user_namespace(config, 100000)
    config["linux"]["namespaces"].append({"type": "time"})
    config["linux"]["timeOffsets"] = {"boottime": {"secs": 86400 * 400, "nanosecs": 1},
                                      "monotonic": {"secs": 86400 * 300, "nanosecs": 2}}


USERNS_SCRIPT = "cat /proc/self/uid_map /proc/self/gid_map; cat /proc/self/timens_offsets"


def expect(pattern):
    return lambda output: re.search(pattern, output, re.M) is not None


# property -> (run, check of its output), or ("elsewhere", "file::test") for
# a property another test already watches at work on the kernel. An entry
# covers the properties below it, but for the SECTIONS, which hold others.
SECTIONS = {"root", "mounts", "mounts[]", "process", "hooks", "linux"}
ELSEWHERE = "elsewhere"
FIELDS = {
    "ociVersion": ("process", expect(r"^args=sh$")),  # accepted: 1.0.2 ran
    "root": ("process", expect(r"^args=sh$")),
    "root.path": ("process", expect(r"^args=sh$")),
    "root.readonly": ("process", expect(r"^rootwrite=1$")),
    "mounts": ("process", expect(r" /scratch ")),
    "mounts[]": ("process", expect(r" /scratch ")),
    "mounts[].destination": ("process", expect(r" /scratch ")),
    "mounts[].type": ("process", expect(r" /scratch .* - tmpfs ")),
    "mounts[].source": ("process", expect(r" /host-etc .* - \S+ /dev/")),
    "mounts[].options": ("process", expect(r" - tmpfs tmpfs rw,size=1024k,mode=753")),
    "mounts[].uidMappings": ("userns-idmap", expect(r"^owner=0:0$")),
    "mounts[].gidMappings": ("userns-idmap", expect(r"^owner=0:0$")),
    "process": ("process", expect(r"^args=sh$")),
    "process.terminal": ("terminal", expect(r"^/dev/pts/0$")),
    "process.consoleSize": ("terminal", expect(r"^33 101$")),
    "process.env": ("process", expect(r"^env=env-seen$")),
    "process.cwd": ("process", expect(r"^cwd=/root$")),
    "process.args": ("process", expect(r"^args=sh$")),
    "process.user": ("process", expect(r"^id=5:6:6 7$")),
    "process.user.umask": ("process", expect(r"^umask=0027$")),
    "process.capabilities": ("process", expect(r"^CapBnd:\s+0+21$")),
    "process.capabilities.bounding": ("process", expect(r"^CapBnd:\s+0+21$")),
    "process.capabilities.permitted": ("process", expect(r"^CapPrm:\s+0+20$")),
    "process.capabilities.effective": ("process", expect(r"^CapEff:\s+0+20$")),
    "process.capabilities.inheritable": ("process", expect(r"^CapInh:\s+0+21$")),
    "process.capabilities.ambient": ("process", expect(r"^CapAmb:\s+0+20$")),
    "process.rlimits": ("process", expect(r"^nofile=321:654$")),
    "process.noNewPrivileges": ("process", expect(r"^NoNewPrivs:\s+1$")),
    "process.oomScoreAdj": ("process", expect(r"^oom=123$")),
    "hostname": ("process", expect(r"^hostname=field-host$")),
    "domainname": ("process", expect(r"^domainname=field-domain$")),
    "hooks": ("hooks", expect(r"^prestart prestart hook-env$")),
    **{f"hooks.{kind}": ("hooks", expect(rf"^{kind} {kind} hook-env$")) for kind in HOOK_KINDS},
    **{f"hooks.{kind}[].timeout": ("hook-timeout", expect(r"hook ran past specified timeout")) for kind in HOOK_KINDS},
    "annotations": ("hooks", expect(r'"org.pyoci.field": ?"annotation-seen"')),
    "linux": ("process", expect(r"^uname=i686$")),
    "linux.namespaces": ("process", expect(r"^hostname=field-host$")),
    "linux.uidMappings": ("userns", expect(r"^\s+0\s+100000\s+65536$")),
    "linux.gidMappings": ("userns", expect(r"^\s+0\s+100000\s+65536$")),
    "linux.timeOffsets": ("userns", lambda output: re.search(r"boottime\s+34560000\s+1", output)
                          and re.search(r"monotonic\s+25920000\s+2", output)),
    "linux.devices": ("process", expect(r"^device=character special file:1:3:640:5:6$")),
    "linux.cgroupsPath": ("process", expect(r"pyoci-field-test")),
    "linux.sysctl": ("process", expect(r"^shmmax=123456789$")),
    "linux.seccomp": ("process", lambda output: "signal0=1" in output and "cont=0" in output
                      and "Function not implemented" in output),
    "linux.seccomp.defaultErrnoRet": (
        ELSEWHERE, "tests/test_seccomp.py::test_default_action_with_allow_list"),
    "linux.rootfsPropagation": (
        ELSEWHERE, "tests/test_integration_mounts.py::test_rootfs_propagation_as_requested"),
    "linux.maskedPaths": ("process", expect(r"^masked-size=0$")),
    "linux.readonlyPaths": ("process", expect(r"touch: /root/x: Read-only file system")),
    "linux.personality": ("process", expect(r"^uname=i686$")),
    "linux.personality.flags": ("process", expect(r"^personality=00040008$")),
    "linux.memoryPolicy": ("process", expect(r" bind:0 ")),
    "process.scheduler": ("process", lambda output: re.search(r"^policy\s+:\s+3$", output, re.M)
                          and re.search(r"^prio\s+:\s+123$", output, re.M)),
    "process.ioPriority": ("process", expect(r"^best-effort: prio 6$")),
    "linux.seccomp.listenerPath": (
        ELSEWHERE, "tests/test_integration_seccomp_agent.py::"
        "test_the_agent_answers_notified_syscalls_of_run"),
    "linux.seccomp.listenerMetadata": (
        ELSEWHERE, "tests/test_integration_seccomp_agent.py::"
        "test_the_agent_answers_notified_syscalls_of_run"),
    "linux.netDevices": (
        ELSEWHERE, "tests/test_integration_net_devices.py::"
        "test_a_host_device_moves_renamed_with_its_addresses_and_up"),
    "process.execCPUAffinity": (
        ELSEWHERE, "tests/test_integration_scheduling.py::"
        "test_exec_cpu_affinity_final_is_the_exec_process_s_and_not_init_s"),
    "process.apparmorProfile": (
        ELSEWHERE, "tests/test_integration_lsm.py::test_apparmor_profile_confines_the_program"),
    "process.selinuxLabel": (
        ELSEWHERE, "tests/test_integration_lsm.py::"
        "test_an_lsm_the_host_does_not_run_is_refused_in_one_line"),
    "linux.mountLabel": (
        ELSEWHERE, "tests/test_integration_lsm.py::"
        "test_an_lsm_the_host_does_not_run_is_refused_in_one_line"),
    "linux.resources": (
        ELSEWHERE, "tests/test_integration_cgroup_fields.py::test_each_field_is_written_or_refused_in_one_line"),
}

# Refused at create, in one line naming the property.
REFUSED = {
    "process.commandLine": "sh -c true",
    "process.user.username": "root",
    "linux.intelRdt": {"closID": "pyoci"},
    "windows": {"layerFolders": ["C:\\layers"]},
    "solaris": {"milestone": "svc:/milestone/container:default"},
    "vm": {"kernel": {"path": "/vmlinuz"}},
    "zos": {"namespaces": [{"type": "pid"}]},
    "freebsd": {"devices": []},
}


def judged_by(path):
    """The FIELDS or REFUSED entry that covers PATH: itself, or the nearest
    entry above it that is not a section."""
    if path in FIELDS or path in REFUSED:
        return path
    while (path := re.sub(r"(\.[^.\[]+|\[\]|\.\*)$", "", path)):
        if path in SECTIONS:
            return None
        if path in FIELDS or path in REFUSED:
            return path
    return None


def resources_fields_tested():
    """The linux.resources properties tests/test_integration_cgroup_fields.py sets."""
    from tests.test_integration_cgroup_fields import fields
    seen = set()

    def keys(value, path):
        seen.add(path)
        if isinstance(value, dict):
            for name, child in value.items():
                keys(child, f"{path}.{'*' if path == 'linux.resources.rdma' else name}")
        elif isinstance(value, list):
            for item in value:
                keys(item, path + "[]")
    for field in fields("8:0").values():
        keys(field.resources, "linux.resources")
    return seen


CGROUPS = "tests/test_integration_cgroups.py::"
# linux.resources properties read back by test_integration_cgroups.py rather
# than by test_integration_cgroup_fields.py's table.
RESOURCES_ELSEWHERE = {
    **{f"linux.resources.{name}": CGROUPS + "test_each_resource_is_written_to_its_cgroup_file"
       for name in ("memory.limit", "memory.reservation", "memory.swap", "cpu.shares",
                    "cpu.cpus", "cpu.mems")},
    **{f"linux.resources.devices{name}": CGROUPS + "test_device_rules_deny_what_they_do_not_allow"
       for name in ("", "[].allow", "[].type", "[].major", "[].minor", "[].access")},
    "linux.resources.memory.checkBeforeUpdate":
        CGROUPS + "test_update_check_before_update_refuses_a_limit_below_usage",
}


def test_every_schema_property_is_judged():
    properties = schema_properties()
    unjudged = sorted(path for path in properties
                      if not path.startswith("linux.resources") and judged_by(path) is None)
    assert unjudged == []
    resources = {path for path in properties if path.startswith("linux.resources.")}
    assert sorted(resources - resources_fields_tested() - set(RESOURCES_ELSEWHERE)) == []
    elsewhere = [where for run, where in FIELDS.values() if run == ELSEWHERE]
    for where in elsewhere + list(RESOURCES_ELSEWHERE.values()):
        file, test = where.split("::")
        assert f"def {test}(" in (SCHEMA.parent.parent / file).read_text(), where


# --------------------------------------------------------------- the runs

@pytest.fixture(scope="module")
def outputs():
    """Every run's output, by name: each is one container on pyoci."""
    if os.geteuid() != 0 or not os.path.exists(PYOCI):
        pytest.skip("needs root and the installed pyoci command")
    # pytest's own temp tree is private to the host's root: a user namespace's is not.
    directory = Path(tempfile.mkdtemp(prefix="pyoci-fields-"))
    directory.chmod(0o711)
    results = {}
    with private_runtime(PYOCI) as runtime, _removed(directory):
        results["process"] = _run(runtime, directory / "process", PROCESS_SCRIPT, process_fields)
        bundle = directory / "hooks"
        results["hooks"] = _run(runtime, bundle, "true", hook_fields(bundle), read_hooks=True)
        results["userns"] = _run(runtime, directory / "userns", USERNS_SCRIPT, userns_fields)
        results["userns-idmap"] = _idmapped_run(runtime, directory / "idmap")
        results["terminal"] = _terminal_run(runtime, directory / "terminal")
        results["hook-timeout"] = _hook_timeout_run(runtime, directory / "hook-timeout")
    return results


@contextlib.contextmanager
def _removed(directory):
    try:
        yield
    finally:
        shutil.rmtree(directory)


def _run(runtime, directory, script, mutate, read_hooks=False):
    bundle = probe_bundle(directory, script, mutate)
    (bundle / "rootfs" / "etc" / "masked").write_text("secret\n")
    for name in ("root", "scratch", "host-etc"):
        (bundle / "rootfs" / name).mkdir(exist_ok=True)
    namespaces = json.loads((bundle / "config.json").read_text())["linux"]["namespaces"]
    if any(ns["type"] == "user" for ns in namespaces):
        hand_directories_to(bundle, 100000)
    runtime.run("run", "--bundle", bundle, runtime.new_id())
    output = (bundle / "out" / "output").read_text()
    if read_hooks:
        for name in ("hooks", "hooks.state", "hook-ran", "hook-ran.state"):
            path = bundle / "out" / name
            output += "\n" + path.read_text() if path.exists() else ""
    return output


def _idmapped_run(runtime, directory):
    source = Path(directory) / "source"
    source.mkdir(parents=True)
    (source / "file").write_text("")
    os.chmod(directory, 0o711)

    def mutate(config):
        user_namespace(config, 100000)
        mount = bind_mount(source, "/mnt", "idmap")
        mount["uidMappings"] = [{"containerID": 0, "hostID": 100000, "size": 65536}]
        mount["gidMappings"] = [{"containerID": 0, "hostID": 100000, "size": 65536}]
        config["mounts"].append(mount)
    return _run(runtime, Path(directory) / "bundle", "stat -c owner=%u:%g /mnt/file", mutate)


def _terminal_run(runtime, directory):
    directory.mkdir()
    console = ConsoleSocket(directory / "console.sock")

    def terminal(config):
        config["process"]["terminal"] = True
        config["process"]["consoleSize"] = {"height": 33, "width": 101}
    bundle = make_bundle(directory / "bundle", ["sh", "-c", "tty; stty size"], mutate=terminal)
    container_id = runtime.new_id()
    runtime.run("create", "--bundle", bundle, "--console-socket", console.path, container_id)
    master = console.received_master()
    runtime.start(container_id)
    try:
        return read_until_closed(master).decode(errors="replace").replace("\r", "")
    finally:
        os.close(master)


def _hook_timeout_run(runtime, directory):
    def slow_hook(config):
        config["hooks"] = {"createRuntime": [{"path": "/bin/sleep", "args": ["sleep", "20"],
                                              "timeout": 1}]}
    bundle = probe_bundle(directory, "true", slow_hook)
    failed = runtime.run("create", "--bundle", bundle, runtime.new_id(), check=False)
    assert failed.returncode == 1 and failed.stderr.count("\n") == 1, failed.stderr
    return failed.stderr


@pytest.mark.root
@pytest.mark.parametrize("path", sorted(FIELDS))
def test_field_is_seen_at_work(outputs, path):
    run, check = FIELDS[path]
    if run == ELSEWHERE:
        return  # test_every_schema_property_is_judged checks that test exists
    assert check(outputs[run]), f"{path}: not seen in the {run} run:\n{outputs[run]}"


@pytest.mark.root
@pytest.mark.parametrize("path", sorted(REFUSED))
def test_field_is_refused_in_one_line(pyoci, tmp_path, path):
    *parents, key = path.split(".")

    def mutate(config):
        section = config
        for name in parents:
            section = section.setdefault(name, {})
        section[key] = REFUSED[path]
        if path.startswith("linux.seccomp."):
            section.setdefault("defaultAction", "SCMP_ACT_ALLOW")
    bundle = probe_bundle(tmp_path / "bundle", "echo ran", mutate)
    leaks = LeakCheck(pyoci, bundle)
    try:
        failed = pyoci.run("create", "--bundle", bundle, pyoci.new_id(), check=False)
        assert failed.returncode == 1, failed
        assert failed.stderr.count("\n") == 1 and path in failed.stderr, failed.stderr
        assert leaks.leftovers() == {}
    finally:
        leaks.close()
    assert not (bundle / "out" / "output").exists()
