"""Docker (dockerd on our containerd) running containers with ``--runtime`` the runtime under test.

The runtime is registered with ``dockerd --add-runtime NAME=PATH`` and chosen per container.
"""
import time

import pytest

from conformance.engines import helpers
from conformance.engines.helpers import IMAGE, wait_until

helpers.require_engine("dockerd", "docker", "containerd", "containerd-shim-runc-v2")

pytestmark = pytest.mark.engine

FOREVER = ["sleep", "600"]


def test_run_output_and_exit_status(docker):
    done = docker.run("--rm", IMAGE, "sh", "-c", "echo hello from docker; echo oops >&2; exit 3",
                      check=False)
    assert done.returncode == 3, helpers.describe(done)
    assert done.stdout == "hello from docker\n"
    assert "oops" in done.stderr


def test_exec(docker):
    cid = docker.run_detached(IMAGE, *FOREVER)
    assert docker("exec", cid, "echo", "in-container").stdout == "in-container\n"
    done = docker("exec", "--user", "nobody", "--env", "GREETING=hi there", "--workdir", "/tmp",
                  cid, "sh", "-c", 'id -u; echo "$GREETING"; pwd; exit 6', check=False)
    assert done.returncode == 6, helpers.describe(done)
    assert done.stdout.splitlines() == ["65534", "hi there", "/tmp"]


def test_stop_container_trapping_term(docker):
    cid = docker.run_detached(IMAGE, "sh", "-c", 'trap "exit 0" TERM; echo ready; '
                                                 "while :; do sleep 0.1; done")
    wait_until(lambda: "ready" in docker("logs", cid).stdout, "the TERM trap to be set")
    started = time.monotonic()
    docker("stop", "--time", "30", cid)
    assert time.monotonic() - started < 15
    assert docker.inspect(cid, "{{.State.ExitCode}}") == "0"


def test_stop_container_ignoring_term_is_killed(docker):
    cid = docker.run_detached(IMAGE, "sh", "-c", 'trap "" TERM; echo ready; '
                                                 "while :; do sleep 0.1; done")
    wait_until(lambda: "ready" in docker("logs", cid).stdout, "TERM to be ignored")
    started = time.monotonic()
    docker("stop", "--time", "1", cid)
    assert 1 <= time.monotonic() - started < 15
    assert docker.inspect(cid, "{{.State.ExitCode}}") == "137"


def test_kill(docker):
    cid = docker.run_detached(IMAGE, *FOREVER)
    docker("kill", cid)
    assert docker("wait", cid).stdout.strip() == "137"


def test_pause_unpause(docker):
    cid = docker.run_detached(IMAGE, *FOREVER)
    docker("pause", cid)
    assert docker.inspect(cid, "{{.State.Status}}") == "paused"
    docker("unpause", cid)
    assert docker.inspect(cid, "{{.State.Status}}") == "running"
    assert docker("exec", cid, "true").returncode == 0


def test_run_with_tty(docker):
    status, output = helpers.run_in_pty(
        [*docker.argv, "run", "--rm", "-it", "--runtime", docker.runtime, IMAGE,
         "sh", "-c", f"tty; {helpers.STTY_SIZE_WHEN_SET}; exit 5"],
        env=docker.daemon.env(), rows=19, cols=83)
    assert status == 5, output
    assert "/dev/pts/0" in output
    assert "19 83" in output


def test_exec_with_tty(docker):
    cid = docker.run_detached(IMAGE, *FOREVER)
    status, output = helpers.run_in_pty(
        [*docker.argv, "exec", "-it", cid, "sh", "-c",
         f"tty; {helpers.STTY_SIZE_WHEN_SET}; exit 4"],
        env=docker.daemon.env(), rows=23, cols=71)
    assert status == 4, output
    assert "/dev/pts/" in output
    assert "23 71" in output


def test_limits_visible_inside(docker):
    done = docker.run("--rm", "--memory", "64m", "--pids-limit", "42", IMAGE, "sh", "-c",
                      f"cat {helpers.MEMORY_LIMIT_FILE} {helpers.PIDS_LIMIT_FILE}")
    assert done.stdout.split() == [str(64 * 1024 * 1024), "42"]


def test_update(docker):
    cid = docker.run_detached("--pids-limit", "42", IMAGE, *FOREVER)
    docker("update", "--pids-limit", "77", cid)
    assert docker("exec", cid, "sh", "-c", f"cat {helpers.PIDS_LIMIT_FILE}").stdout == "77\n"


def test_cap_drop_all(docker):
    done = docker.run("--rm", "--cap-drop", "ALL", IMAGE, "sh", "-c",
                      "grep -E '^Cap(Prm|Eff|Bnd)' /proc/self/status")
    sets = dict(line.split() for line in done.stdout.splitlines())
    assert {key: int(value, 16) for key, value in sets.items()} == {
        "CapPrm:": 0, "CapEff:": 0, "CapBnd:": 0}


def test_privileged_run_gets_the_hosts_devices(docker, runtime_shim):
    """Docker asks for every capability; where the host withholds one from
    root (CAP_SYS_RESOURCE on this project's CI machine) runc 1.1.5 fails,
    pyoci leaves it out with the spec's warning and runs."""
    device, host_mode = helpers.host_block_device()
    done = docker.run("--rm", "--privileged", IMAGE, "stat", "-c", "%F %a", device, check=False)
    if runtime_shim.name == "runc" and not helpers.root_has_every_capability():
        assert "unable to apply caps: operation not permitted" in done.stderr, helpers.describe(done)
        return
    assert (done.returncode, done.stdout) == (0, f"block special file {host_mode}\n"), \
        helpers.describe(done)


def test_device_option_adds_a_device(docker):
    done = docker.run("--rm", "--device", "/dev/null:/dev/pyoci-null", IMAGE,
                      "sh", "-c", "test -c /dev/pyoci-null && echo a-device >/dev/pyoci-null && echo ok",
                      check=False)
    assert (done.returncode, done.stdout) == (0, "ok\n"), helpers.describe(done)
