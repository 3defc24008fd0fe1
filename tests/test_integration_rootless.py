"""Rootless: pyoci run by a real unprivileged account (the session's
rootless_user), beside runc run by the same account on the same bundles.

The user's containers map it to root (one id), or through newuidmap and
newgidmap to its /etc/subuid and /etc/subgid ranges; their state is under
$XDG_RUNTIME_DIR; a cgroup the user may not write is left out unless the
config sets limits, and a cgroup delegated to the user gets them. Rootless
podman and rootless Docker run pyoci as their runtime.
"""
import os
import shutil
import subprocess
import uuid
from pathlib import Path

import pytest

from conformance.bundle import make_rootfs, read_config, write_config
from conformance.harness import (RUNC, TIMEOUT_SCALE, WAIT_FOR_STOP, CommandFailed, LeakCheck,
                                 Probe, wait_until)
from pyoci.checkbundle import CONTAINER_ID

pytestmark = pytest.mark.root

CGROUP = Path("/sys/fs/cgroup")
UNIFIED = (CGROUP / "cgroup.controllers").exists()


@pytest.fixture(params=["pyoci", "runc"])
def runtime_command(request, rootless_user):
    return rootless_user.pyoci if request.param == "pyoci" else RUNC


@pytest.fixture
def as_user(rootless_user, runtime_command):
    runtime = rootless_user.runtime(runtime_command)
    yield runtime
    runtime.force_delete_all()


def rootless(user, uid_maps=None, gid_maps=None):
    """A mutate: a user namespace mapping USER to root (or the maps given);
    no uid=/gid= mount options, which a one-id namespace cannot map."""
    def mutate(config):
        linux = config["linux"]
        linux["namespaces"].append({"type": "user"})
        linux["uidMappings"] = uid_maps or [{"containerID": 0, "hostID": user.uid, "size": 1}]
        linux["gidMappings"] = gid_maps or [{"containerID": 0, "hostID": user.gid, "size": 1}]
        for mount in config["mounts"]:
            mount["options"] = [option for option in mount.get("options", ())
                                if not option.startswith(("uid=", "gid="))]
    return mutate


def both(*mutations):
    def mutate(config):
        for mutation in mutations:
            mutation(config)
    return mutate


def probe_as(user, runtime, scratch):
    """A Probe whose bundles the user may use: their directories are its."""
    probe = Probe(runtime, scratch)
    plain = probe.bundle

    def bundle(script, mutate=None):
        made = plain(script, mutate)
        user.give(made)
        return made
    probe.bundle = bundle
    return probe


def test_runs_as_the_user_with_its_state_in_its_runtime_dir(rootless_user, as_user, scratch):
    user = rootless_user
    probe = probe_as(user, as_user, scratch)
    bundle = probe.bundle("id -u; cat /proc/self/uid_map /proc/self/gid_map /proc/self/setgroups\n"
                          f"echo ran\n{WAIT_FOR_STOP}", rootless(user))
    container_id = as_user.new_id()
    as_user.create(container_id, bundle)
    state_dir = as_user.root / container_id
    assert state_dir.is_dir() and state_dir.stat().st_uid == user.uid
    as_user.start(container_id)
    output = probe.wait_for_output(bundle, "ran").split("\n")
    assert output[0] == "0"
    assert output[1].split() == ["0", str(user.uid), "1"]
    assert output[2].split() == ["0", str(user.gid), "1"]
    # An unprivileged gid_map needs setgroups denied first.
    assert output[3] == "deny"
    state = as_user.state(container_id)
    assert state["status"] == "running"
    assert open(f"/proc/{state['pid']}/status").read().count(f"\t{user.uid}\t") >= 1
    execed = as_user.run("exec", container_id, "cat", "/proc/self/uid_map").stdout
    assert execed.split() == ["0", str(user.uid), "1"]
    as_user.kill(container_id, "KILL")
    as_user.wait_for_status(container_id, "stopped")
    as_user.delete(container_id)
    assert not state_dir.exists()


def test_spec_rootless_output_runs_as_the_user(rootless_user, runtime_command, scratch):
    user = rootless_user
    bundle = scratch / "bundle"
    make_rootfs(bundle / "rootfs")
    user.give(bundle)
    user.run(runtime_command, "spec", "--rootless", cwd=bundle)
    config = read_config(bundle)
    config["process"].update(terminal=False, args=["id"])
    write_config(bundle, config)
    result = user.run(runtime_command, "run", f"spec-{uuid.uuid4().hex[:8]}", cwd=bundle)
    assert result.stdout.startswith("uid=0(root) gid=0(root)"), result


def test_subordinate_ranges_go_through_newuidmap(rootless_user, runtime_command, as_user,
                                                 scratch):
    user = rootless_user
    (uid_first, _), (gid_first, _) = user.subuid, user.subgid
    probe = probe_as(user, as_user, scratch)

    def as_user_1000(config):
        config["process"]["user"] = {"uid": 1000, "gid": 1000, "additionalGids": [2000]}
    maps = [[{"containerID": 0, "hostID": own, "size": 1},
             {"containerID": 1, "hostID": first, "size": 65535}]
            for own, first in ((user.uid, uid_first), (user.gid, gid_first))]
    mutate = both(rootless(user, *maps), as_user_1000)
    if runtime_command == RUNC:
        # runc 1.1.5 refuses additionalGids to any unprivileged caller, even
        # where newgidmap left setgroups allowed; pyoci sets them there.
        with pytest.raises(CommandFailed, match="cannot set any additional groups"):
            probe.run("true", mutate)
        mutate = both(rootless(user, *maps), as_user_1000,
                      lambda config: config["process"]["user"].pop("additionalGids"))
    output = probe.run("cat /proc/self/uid_map; id -u; id -G; touch /out/made", mutate)
    lines = output.split("\n")
    assert [line.split() for line in lines[:2]] == [["0", str(user.uid), "1"],
                                                    ["1", str(uid_first), "65535"]]
    # Supplementary groups are set: setgroups stays allowed with newgidmap.
    # runc, rootless, never calls setgroups: the process keeps the
    # runtime's own groups (the user's, mapped to 0).
    assert lines[2:4] == ["1000", "1000 0" if runtime_command == RUNC else "1000 2000"]
    made = os.stat(probe.directory / f"bundle{probe.bundle_count}" / "out" / "made")
    assert (made.st_uid, made.st_gid) == (uid_first + 999, gid_first + 999)


def test_cgroup_the_user_may_not_use_is_left_out(rootless_user, as_user, scratch):
    """It runs in the runtime's own cgroups, which a cgroup mount shows."""
    probe = probe_as(rootless_user, as_user, scratch)

    def cgroup_mount(config):
        config["mounts"].append({"destination": "/sys/fs/cgroup", "type": "cgroup",
                                 "source": "cgroup", "options": ["ro", "nosuid", "nodev"]})
    bundle = probe.bundle(f"ls /sys/fs/cgroup\necho ran\n{WAIT_FOR_STOP}",
                          both(rootless(rootless_user), cgroup_mount))
    container_id = as_user.new_id()
    as_user.create(container_id, bundle)
    as_user.start(container_id)
    output = probe.wait_for_output(bundle, "ran")
    assert ("cgroup.procs" if UNIFIED else "pids") in output.split()
    pid = as_user.state(container_id)["pid"]
    assert container_id not in Path(f"/proc/{pid}/cgroup").read_text()
    probe.stop_program(bundle)
    as_user.wait_for_status(container_id, "stopped")
    as_user.delete(container_id)


def assert_refused_leaving_nothing(runtime, container_id, bundle, words, scratch):
    leaks = LeakCheck(runtime, scratch)
    try:
        with pytest.raises(CommandFailed) as failed:
            runtime.create(container_id, bundle)
        assert words in str(failed.value)
        assert not runtime.exists(container_id)
        assert leaks.leftovers() == {}
    finally:
        leaks.close()


def test_cgroup_limits_the_user_may_not_set_fail_in_one_line(rootless_user, as_user, scratch):
    probe = probe_as(rootless_user, as_user, scratch)

    def limited(config):
        config["linux"]["resources"] = {"pids": {"limit": 50}}
    bundle = probe.bundle("true", both(rootless(rootless_user), limited))
    expected = ("rootless needs no limits + no cgrouppath when no permission is granted for "
                "cgroups" if UNIFIED else
                "cannot set pids limit: container could not join or create cgroup")
    assert_refused_leaving_nothing(as_user, as_user.new_id(), bundle, expected, scratch)


def test_cgroups_path_the_user_may_not_use_is_fatal(rootless_user, as_user, scratch):
    probe = probe_as(rootless_user, as_user, scratch)
    container_id = as_user.new_id()

    def placed(config):
        config["linux"]["cgroupsPath"] = f"/{container_id}"
    bundle = probe.bundle("true", both(rootless(rootless_user), placed))
    assert_refused_leaving_nothing(as_user, container_id, bundle, "permission denied", scratch)


@pytest.fixture
def delegated_cgroup(rootless_user):
    """A cgroup the user owns, and the cgroup.procs files that put its
    commands where the runtime makes the container's cgroup inside it: on
    v1 below our own cgroup in pids and memory, on v2 below our parent."""
    name = f"pyoci-delegated-{uuid.uuid4().hex[:8]}"
    user = rootless_user
    if UNIFIED:
        top = CGROUP / name
        top.mkdir()
        enabled = (CGROUP / "cgroup.subtree_control").read_text().split()
        for controller in ("pids", "memory"):
            if controller not in enabled:
                (CGROUP / "cgroup.subtree_control").write_text(f"+{controller}")
        for owned in ("", "cgroup.procs", "cgroup.subtree_control", "cgroup.threads"):
            os.chown(top / owned, user.uid, user.gid)
        (top / "runner").mkdir()
        user.give(top / "runner")
        tops = {"pids": top, "memory": top}
        procs = [top / "runner" / "cgroup.procs"]
    else:
        tops = {controller: CGROUP / controller / name for controller in ("pids", "memory")}
        for top in tops.values():
            top.mkdir()
            user.give(top)
        procs = [top / "cgroup.procs" for top in tops.values()]
    yield tops, procs
    for top in tops.values():
        for below, _, _ in sorted(os.walk(top), reverse=True):
            if os.path.isdir(below):
                os.rmdir(below)


def test_delegated_cgroup_gets_the_limits(rootless_user, runtime_command, delegated_cgroup,
                                          scratch):
    tops, procs = delegated_cgroup
    runtime = rootless_user.runtime(runtime_command, cgroup_procs=procs)
    probe = probe_as(rootless_user, runtime, scratch)

    def limited(config):
        config["linux"]["resources"] = {"pids": {"limit": 50},
                                        "memory": {"limit": 64 << 20}}
    try:
        container_id = runtime.new_id()
        bundle = probe.bundle(f"echo ran\n{WAIT_FOR_STOP}", both(rootless(rootless_user), limited))
        runtime.create(container_id, bundle)
        runtime.start(container_id)
        probe.wait_for_output(bundle, "ran")
        pids = tops["pids"] / container_id
        memory = tops["memory"] / container_id
        assert (pids / ("pids.max")).read_text().strip() == "50"
        limit_file = "memory.max" if UNIFIED else "memory.limit_in_bytes"
        assert (memory / limit_file).read_text().strip() == str(64 << 20)
        pid = runtime.state(container_id)["pid"]
        assert str(pid) in (pids / "cgroup.procs").read_text().split()
        runtime.kill(container_id, "KILL")
        runtime.wait_for_status(container_id, "stopped")
        runtime.delete(container_id)
        wait_until(lambda: not pids.exists(), f"{pids} removed")
        assert not memory.exists()
    finally:
        runtime.force_delete_all()


IMAGE = "localhost/pyoci-rootless-test"
PODMAN = ["podman", "--cgroup-manager", "cgroupfs", "--events-backend", "file"]
DOCKERD_ROOTLESS = "/usr/share/docker.io/contrib/dockerd-rootless.sh"


@pytest.fixture(scope="module")
def user_image(rootless_user):
    """A busybox image in the user's podman storage."""
    if shutil.which("podman") is None:
        pytest.skip("podman is not installed")
    user = rootless_user
    directory = user.directory / "image"  # one the user may read
    directory.mkdir(mode=0o755)
    rootfs = make_rootfs(directory / "rootfs")
    archive = Path(shutil.make_archive(str(directory / "image"), "tar", rootfs))
    archive.chmod(0o644)
    user.run(*PODMAN, "import", "--change", 'CMD ["/bin/sh"]', archive, IMAGE, cwd=user.home)
    return IMAGE


def assert_mapped_root(user, output):
    """`id; cat /proc/self/uid_map` of an engine's rootless container: root,
    the user's own id and its /etc/subuid range."""
    lines = output.splitlines()
    assert lines[0].startswith("uid=0(root) gid=0(root)")
    first, count = user.subuid
    assert [line.split() for line in lines[1:]] == [["0", str(user.uid), "1"],
                                                    ["1", str(first), str(count)]]


@pytest.mark.engine
def test_rootless_podman_runs_it(rootless_user, runtime_command, user_image):
    result = rootless_user.run(*PODMAN, "--runtime", runtime_command, "run", "--rm", user_image,
                               "sh", "-c", "id; cat /proc/self/uid_map", cwd=rootless_user.home,
                               check=False)
    assert result.returncode == 0, result.stderr
    assert_mapped_root(rootless_user, result.stdout)


@pytest.fixture(scope="module")
def rootless_docker(rootless_user, user_image):
    """A rootless dockerd (RootlessKit, slirp4netns) of the user's, with pyoci
    added as a runtime beside runc; yields a function running docker."""
    if shutil.which("rootlesskit") is None or not os.path.exists(DOCKERD_ROOTLESS):
        pytest.skip("rootless Docker needs rootlesskit and docker.io's dockerd-rootless.sh")
    user = rootless_user
    socket = user.runtime_dir / "docker.sock"
    log = open(Path(user.home) / "dockerd.log", "w")
    daemon = subprocess.Popen(
        [*user.prefix(), "env", f"PATH={os.path.dirname(DOCKERD_ROOTLESS)}:{user.PATH}",
         DOCKERD_ROOTLESS, "--add-runtime", f"pyoci={user.pyoci}", "--bridge=none",
         "--iptables=false"], stdin=subprocess.DEVNULL, stdout=log, stderr=log)

    def docker(*args, check=True):
        return user.run("docker", "-H", f"unix://{socket}", *args, cwd=user.home, check=check)
    try:
        wait_until(lambda: socket.exists() and docker("info", check=False).returncode == 0,
                   "rootless dockerd to answer", timeout=60 * TIMEOUT_SCALE)
        archive = Path(user.home) / "image.docker.tar"
        user.run(*PODMAN, "save", "--format", "docker-archive", "-o", archive, user_image,
                 cwd=user.home)
        docker("load", "-i", archive)
        yield docker
    finally:
        subprocess.run(["pkill", "-TERM", "-u", user.NAME], check=False)
        try:
            daemon.wait(timeout=30)
        except subprocess.TimeoutExpired:
            daemon.kill()
        subprocess.run(["pkill", "-KILL", "-u", user.NAME], check=False)
        log.close()


@pytest.mark.engine
def test_rootless_docker_runs_it(rootless_user, runtime_command, rootless_docker, user_image):
    name = "pyoci" if runtime_command == rootless_user.pyoci else "runc"
    result = rootless_docker("run", "--rm", "--network", "none", "--runtime", name, user_image,
                             "sh", "-c", "id; cat /proc/self/uid_map", check=False)
    assert result.returncode == 0, result.stderr
    assert_mapped_root(rootless_user, result.stdout)


# ------------------------------------------------ pyoci check, rootless
def _no_user_namespace(user):
    return lambda config: None


def _subordinate_ids_not_given(user):
    far = user.subuid[0] + user.subuid[1] + 1000000
    return rootless(user, [{"containerID": 0, "hostID": user.uid, "size": 1},
                           {"containerID": 1, "hostID": far, "size": 10}])


def _limits(user):
    return both(rootless(user), lambda config: config["linux"].update(
        resources={"pids": {"limit": 50}}))


def _cgroups_path(user):
    return both(rootless(user), lambda config: config["linux"].update(
        cgroupsPath=f"/{uuid.uuid4().hex[:12]}"))


@pytest.mark.parametrize("problem", [_no_user_namespace, _subordinate_ids_not_given, _limits,
                                     _cgroups_path])
def test_check_finds_what_create_refuses_rootless(problem, rootless_user, scratch):
    """As the user: `pyoci check` says in one line what `create` refuses,
    in create's words, and exits 1; a bundle create runs, check passes.
    runc, as the same user, refuses the same bundle too."""
    runtime = rootless_user.runtime(rootless_user.pyoci)
    probe = probe_as(rootless_user, runtime, scratch)
    bundle = probe.bundle("true", problem(rootless_user))
    checked = runtime.run("check", bundle, check=False)
    assert checked.returncode == 1, checked
    problems = [line for line in checked.stdout.splitlines() if not line.startswith("warning:")]
    assert len(problems) == 1, (checked.stdout, checked.stderr)
    container_id = runtime.new_id()
    refused = runtime.run("create", "--bundle", bundle, container_id, check=False)
    assert refused.returncode == 1
    # What is wrong, without "config.json: PATH: " and the spec section.
    said = problems[0].rsplit(" (", 1)[0].split(": ", 2)[2].replace(CONTAINER_ID, container_id)
    assert said in refused.stderr, (problems[0], refused.stderr)
    fine = probe.bundle("true", rootless(rootless_user))
    assert runtime.run("check", fine).returncode == 0
    runtime.force_delete_all()
    runc = rootless_user.runtime(RUNC)
    assert runc.run("create", "--bundle", bundle, runc.new_id(), check=False).returncode == 1
    runc.force_delete_all()
