"""`pyoci check BUNDLE`: one line per problem (path, what, the spec's
section), worded as create refuses it; a summary line when the bundle would
run; nothing created either way."""
import json
import os
import re
import subprocess
from pathlib import Path

import pytest

from conformance.bundle import make_bundle, user_namespace
from conformance.harness import PYOCI, RUNC, LeakCheck, private_runtime
from pyoci.linux.caps import own_effective
from pyoci.sections import SECTIONS, section_of

SPEC = Path(__file__).resolve().parents[2] / "shared" / "oci-runtime-spec"
needs_spec = pytest.mark.skipif(not SPEC.is_dir(), reason=f"no runtime-spec text at {SPEC}")
LINE = re.compile(r"config\.json: (?P<path>[^:]+): .+ \((?P<section>[\w.-]+#[\w-]+)\)")


def heading_anchors(document):
    """GitHub's anchor of each heading of a markdown file of the spec."""
    anchors = set()
    for line in (SPEC / document).read_text().splitlines():
        if line.startswith("#"):
            text = re.sub(r"<a name=\"[^\"]*\" */>", "", line.lstrip("#")).strip().lower()
            anchors.add(re.sub(r"[^\w\- ]", "", text).replace(" ", "-"))
    return anchors


@needs_spec
def test_every_section_is_a_heading_of_the_spec():
    for section in set(SECTIONS.values()):
        document, _, anchor = section.partition("#")
        assert anchor in heading_anchors(document), section


def test_section_of_a_path():
    assert section_of("linux.namespaces[2].type") == "config-linux.md#namespaces"
    assert section_of("linux.resources.memory.limit") == "config-linux.md#memory"
    assert section_of("process.capabilities.bounding[0]") == "config.md#linux-process"
    assert section_of("mounts[1] (/etc/resolv.conf)") == "config.md#mounts"
    assert section_of("(root)") == "config.md#configuration"
    assert section_of("no such file in bundle /x") is None


def check(bundle):
    return subprocess.run([PYOCI, "check", str(bundle)], capture_output=True, text=True)


@needs_spec
@pytest.mark.parametrize("example", sorted((SPEC / "schema/test/config/bad").glob("*.json")),
                         ids=lambda path: path.stem)
def test_the_specs_bad_examples(example, tmp_path):
    (tmp_path / "rootfs").mkdir()
    (tmp_path / "config.json").write_bytes(example.read_bytes())
    checked = check(tmp_path)
    assert checked.returncode == 1 and checked.stderr == ""
    lines = checked.stdout.splitlines()
    assert lines and all(LINE.fullmatch(line) for line in lines), lines


@pytest.mark.root
def test_a_bundle_that_would_run(tmp_path):
    bundle = make_bundle(tmp_path / "bundle", ["sh", "-c", "true"], user_namespace)
    checked = check(bundle)
    assert (checked.returncode, checked.stderr) == (0, "")
    assert checked.stdout == (f"{bundle}: config.json (ociVersion 1.0.2) is valid and this host "
                              "can run it\n")


def problem_bundle(directory):
    """A bundle with one problem of each kind pyoci check finds on the host."""
    def mutate(config):
        user_namespace(config)
        config["process"]["args"] = ["no-such-program"]
        config["process"]["rlimits"] = [{"type": "RLIMIT_NOFILE", "soft": 1024,
                                         "hard": 1 << 40}]
        config["linux"]["namespaces"].append({"type": "cgroup", "path": "/proc/self/ns/net"})
        config["linux"]["resources"] = {"hugepageLimits": [{"pageSize": "1GB", "limit": 1}]}
        config["linux"]["devices"] = [{"path": "/dev/no-such-device", "type": "c", "major": 10,
                                       "minor": 250, "fileMode": 0o20666}]
        config["hooks"] = {"prestart": [{"path": "/no/such/hook"}],
                           "startContainer": [{"path": "/bin/no-such-hook"}]}
    return make_bundle(directory, ["true"], mutate)


EXPECTED = [
    "config.json: process.rlimits[0]: the hard limit of RLIMIT_NOFILE (1099511627776) is above "
    "this host's ({hard}), and the runtime lacks CAP_SYS_RESOURCE to raise it "
    "(config.md#posix-process)",
    "config.json: linux.namespaces[6].path: cgroup namespace /proc/self/ns/net: a network "
    "namespace (config-linux.md#namespaces)",
    "config.json: linux.devices[0]: /dev/no-such-device: in a user namespace a device is the "
    "host's, bound in, and the host has none (config-linux.md#devices)",
    "config.json: hooks.prestart[0].path: exec /no/such/hook: no such file or directory "
    "(config.md#prestart)",
    "config.json: hooks.startContainer[0].path: exec /bin/no-such-hook: no such file or "
    "directory (config.md#startcontainer-hooks)",
    'config.json: process.args[0]: exec: "no-such-program": executable file not found in $PATH '
    "(config.md#process)",
    "warning: config.json: linux.devices[0].fileMode: 8630 carries the device's file type: using "
    "its permission bits 0o666",
]


def has_sys_resource():
    return own_effective("CAP_SYS_RESOURCE")


@pytest.mark.root
def test_every_problem_one_line_and_nothing_made(pyoci, tmp_path):
    if has_sys_resource():
        pytest.skip("with CAP_SYS_RESOURCE any hard limit may be set")
    import resource
    bundle = problem_bundle(tmp_path / "bundle")
    leaks = LeakCheck(pyoci, tmp_path)
    try:
        checked = check(bundle)
        assert leaks.leftovers() == {}
    finally:
        leaks.close()
    expected = [line.format(hard=resource.getrlimit(resource.RLIMIT_NOFILE)[1])
                for line in EXPECTED]
    hugetlb = [line for line in checked.stdout.splitlines() if "hugetlb" in line]
    if hugetlb:  # a host without the hugetlb controller (this one's v1 leaves it unmounted)
        assert hugetlb == ["config.json: linux.resources: the hugetlb cgroup controller is not "
                           "available on this host (hugetlb.1GB.limit_in_bytes) "
                           "(config-linux.md#control-groups)"]
        expected.insert(2, hugetlb[0])
    assert (checked.returncode, checked.stderr) == (1, "")
    assert checked.stdout.splitlines() == expected


@pytest.mark.root
@pytest.mark.parametrize("problem", ["rlimit", "namespace path", "config rule", "schema"])
def test_create_refuses_in_checks_words(problem, pyoci, tmp_path):
    """What create refuses before anything exists reads as check's line;
    runc refuses the same bundle."""
    def mutate(config):
        if problem == "rlimit":
            config["process"]["rlimits"] = [{"type": "RLIMIT_NOFILE", "soft": 1, "hard": 1 << 40}]
        elif problem == "namespace path":
            config["linux"]["namespaces"].append({"type": "ipc", "path": "/proc/self/ns/uts"})
            config["linux"]["namespaces"] = [ns for ns in config["linux"]["namespaces"]
                                             if ns != {"type": "ipc"}]
        elif problem == "config rule":
            config["linux"]["namespaces"].append({"type": "pid"})
        else:
            config["process"]["user"]["uid"] = -1
    if problem == "rlimit" and has_sys_resource():
        pytest.skip("with CAP_SYS_RESOURCE any hard limit may be set")
    bundle = make_bundle(tmp_path / "bundle", ["true"], mutate)
    checked = check(bundle)
    assert checked.returncode == 1
    leaks = LeakCheck(pyoci, tmp_path)
    try:
        created = pyoci.run("create", "--bundle", bundle, pyoci.new_id(), check=False)
        assert created.returncode == 1
        assert created.stderr.strip().splitlines() == checked.stdout.splitlines()
        assert leaks.leftovers() == {}
        assert not os.listdir(pyoci.root) if pyoci.root.exists() else True
    finally:
        leaks.close()
    with private_runtime(RUNC) as runc:  # refuses each of them too, in its own words
        assert runc.run("create", "--bundle", bundle, runc.new_id(), check=False).returncode == 1


def test_no_config(tmp_path):
    checked = check(tmp_path)
    assert (checked.returncode, checked.stdout) == (
        1, f"config.json: no such file in bundle {tmp_path}\n")


def test_not_json(tmp_path):
    (tmp_path / "config.json").write_text("{")
    checked = check(tmp_path)
    assert checked.returncode == 1
    assert checked.stdout.startswith("config.json: (root): not JSON: ")
    assert checked.stdout.endswith("(config.md#configuration)\n")


def test_every_schema_error_is_listed(tmp_path):
    (tmp_path / "rootfs").mkdir()
    config = json.loads(json.dumps({"ociVersion": "1.0.2", "root": {"path": "rootfs"},
                                    "process": {"cwd": "/", "args": ["sh"],
                                                "user": {"uid": -1, "gid": -2}},
                                    "hostname": 7}))
    (tmp_path / "config.json").write_text(json.dumps(config))
    lines = check(tmp_path).stdout.splitlines()
    assert [LINE.fullmatch(line).group("path") for line in lines] == [
        "hostname", "process.user.gid", "process.user.uid"]


@pytest.mark.root
@pytest.mark.skipif(os.path.isdir("/run/systemd/system"), reason="systemd runs here")
def test_systemd_cgroup_on_a_host_without_systemd(pyoci, tmp_path):
    """The global --systemd-cgroup reaches check: a cgroupsPath not in
    systemd's form and a host without systemd, one line each, as create
    says them (create stops at the first)."""
    bundle = make_bundle(tmp_path / "bundle", ["true"], lambda config: config["linux"].update(
        cgroupsPath="/not/a/unit"))
    checked = pyoci.run("--systemd-cgroup", "check", bundle, check=False)
    assert checked.returncode == 1
    lines = checked.stdout.splitlines()
    assert len(lines) == 2
    assert lines[0].startswith("--systemd-cgroup: systemd is not running on this host")
    assert lines[1].startswith('config.json: linux.cgroupsPath: expected "slice:prefix:name"')
    created = pyoci.run("--systemd-cgroup", "create", "--bundle", bundle, pyoci.new_id(),
                        check=False)
    assert created.returncode == 1
    assert created.stderr.strip() in lines
    assert check(bundle).returncode == 0  # without the flag, it would run
