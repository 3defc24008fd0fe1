"""exec into a container's cgroups as runc 1.1.5 does (issue 9): every
hierarchy of a hybrid host, named ones included, and --cgroup's sub-cgroups."""
import os

import pytest

from conformance.bundle import make_bundle
from conformance.harness import PYOCI, RUNC, private_runtime

pytestmark = [pytest.mark.root, pytest.mark.skipif(
    not os.path.isdir("/sys/fs/cgroup/cpu"), reason="needs cgroup v1 hierarchies")]


def cgroup_lines(text):
    """/proc/PID/cgroup as {controllers: path}."""
    return {line.split(":", 2)[1]: line.split(":", 2)[2] for line in text.splitlines()}


def hierarchy_directory(controllers, path):
    name = controllers.split(",")[0].removeprefix("name=")
    return f"/sys/fs/cgroup/{name}{path}"


@pytest.fixture(params=[PYOCI, RUNC], ids=["pyoci", "runc"])
def running(request, tmp_path):
    """(runtime, id, init's cgroups) of a running container."""
    bundle = make_bundle(tmp_path / "b", ["sleep", "100"])
    with private_runtime(request.param) as runtime:
        container_id = runtime.new_id()
        runtime.run("run", "-d", "--bundle", bundle, container_id)
        pid = runtime.state(container_id)["pid"]
        with open(f"/proc/{pid}/cgroup") as f:
            yield runtime, container_id, cgroup_lines(f.read())


def test_exec_joins_every_hierarchy_named_ones_included(running):
    runtime, container_id, init_cgroups = running
    seen = cgroup_lines(runtime.run("exec", container_id, "cat", "/proc/self/cgroup").stdout)
    assert "name=systemd" in seen and "" in seen
    assert seen == init_cgroups


def test_exec_cgroup_puts_the_process_in_sub_cgroups_per_controller(running):
    runtime, container_id, init_cgroups = running
    for controllers, sub in (("cpu", "one"), ("memory", "one"), ("pids", "two")):
        os.mkdir(hierarchy_directory(controllers, init_cgroups[controllers]) + "/" + sub)
    seen = cgroup_lines(runtime.run("exec", "--cgroup", "cpu,memory:one", "--cgroup", "pids:two",
                                    container_id, "cat", "/proc/self/cgroup").stdout)
    for controllers, path in init_cgroups.items():
        sub = {"cpu": "/one", "memory": "/one", "pids": "/two"}.get(controllers, "")
        assert seen[controllers] == path + sub, controllers
    runtime.run("delete", "--force", container_id)  # sub-cgroups go with the container's
    assert not os.path.exists(hierarchy_directory("cpu", init_cgroups["cpu"]))


def test_one_path_without_controller_is_for_every_hierarchy(running):
    runtime, container_id, init_cgroups = running
    for controllers, path in init_cgroups.items():
        directory = hierarchy_directory(controllers or "unified", path)
        os.mkdir(directory + "/all")
        if controllers == "cpuset":  # a new cpuset is empty and takes no process
            for name in ("cpuset.cpus", "cpuset.mems"):
                with open(f"{directory}/{name}") as parent, open(f"{directory}/all/{name}", "w") as f:
                    f.write(parent.read())
    seen = cgroup_lines(runtime.run("exec", "--cgroup", "all", container_id,
                                    "cat", "/proc/self/cgroup").stdout)
    assert seen == {controllers: path + "/all" for controllers, path in init_cgroups.items()}


@pytest.mark.parametrize("args, words", [
    (["--cgroup", "one", "--cgroup", "pids:two"], "missing <controller>: prefix"),
    (["--cgroup", "cpu:a:b"], "invalid --cgroup argument"),
])
def test_bad_cgroup_arguments_are_refused_as_runc(running, args, words):
    runtime, container_id, _ = running
    done = runtime.run("exec", *args, container_id, "true", check=False)
    assert done.returncode != 0 and words in done.stderr, done.stderr


def test_a_sub_cgroup_outside_the_containers_is_refused(tmp_path):
    bundle = make_bundle(tmp_path / "b", ["sleep", "100"])
    with private_runtime(PYOCI) as runtime:
        container_id = runtime.new_id()
        runtime.run("run", "-d", "--bundle", bundle, container_id)
        done = runtime.run("exec", "--cgroup", "pids:../..", container_id, "true", check=False)
        assert done.returncode == 255 and "not below the container's cgroup" in done.stderr
