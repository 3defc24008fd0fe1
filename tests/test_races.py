"""Races: many commands at once, on many containers and on one. Each
command succeeds or fails in one line of its own, none hangs, and the host
is left as it was (LeakCheck)."""
import os
import re
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from conformance.bundle import make_bundle
from conformance.harness import RUNC, LeakCheck, private_runtime

pytestmark = pytest.mark.root

# What a command may say when another one got there first.
RACE_LOSSES = re.compile(
    r'container "[^"]+" does not exist|container not running|container not paused|'
    r"container already paused|cannot delete container \S+ that is not stopped: \w+|"
    r"cannot start an already \w+ container|cannot start a container that has stopped")


@pytest.fixture
def leak_check(pyoci, tmp_path):
    check = LeakCheck(pyoci, tmp_path)
    yield check
    check.close()


def in_parallel(calls, workers):
    """Run every call at once (as far as WORKERS threads go); their results, in order."""
    start = threading.Barrier(min(len(calls), workers))

    def call(function):
        try:
            start.wait(timeout=30)
        except threading.BrokenBarrierError:
            pass  # fewer threads than calls: the later ones start as threads free up
        return function()

    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(call, calls))


def assert_one_line_or_success(completed, allowed=RACE_LOSSES):
    if completed.returncode == 0:
        return
    lines = completed.stderr.strip().splitlines()
    assert completed.returncode == 1 and len(lines) == 1, completed
    assert allowed.fullmatch(lines[0]), lines[0]


def test_fifty_parallel_lifecycles(pyoci, tmp_path, leak_check):
    bundle = make_bundle(tmp_path / "bundle", ["sleep", "1000"])
    ids = [pyoci.new_id() for _ in range(50)]
    for phase in (("create", "--bundle", bundle), ("start",), ("delete", "--force")):
        results = in_parallel([lambda i=i: pyoci.run(*phase[:1], *phase[1:], i, check=False)
                               for i in ids], workers=50)
        failed = [r for r in results if r.returncode != 0]
        assert failed == [], f"{phase[0]}: {len(failed)} failed, first: {failed[:1]}"
    assert pyoci.listed_ids() == []
    assert leak_check.leftovers() == {}


def test_ten_parallel_creates_of_one_id(pyoci, tmp_path, leak_check):
    bundle = make_bundle(tmp_path / "bundle", ["sleep", "1000"])
    container_id = pyoci.new_id()
    results = in_parallel([lambda: pyoci.run("create", "--bundle", bundle, container_id,
                                             check=False)] * 10, workers=10)
    assert sorted(r.returncode for r in results) == [0] + [1] * 9
    for lost in (r for r in results if r.returncode):
        assert lost.stderr.strip().splitlines() == [f"container with id exists: {container_id}"]
    assert pyoci.state(container_id)["status"] == "created"
    pyoci.start(container_id)
    assert pyoci.state(container_id)["status"] == "running"
    pyoci.run("delete", "--force", container_id)
    assert leak_check.leftovers() == {}


def test_parallel_commands_on_one_container(pyoci, tmp_path, leak_check):
    """state, kill (one and --all), pause, resume and delete --force, all at
    once, ROUNDS times over: each ends in one line, and delete --force wins."""
    bundle = make_bundle(tmp_path / "bundle", ["sleep", "1000"])
    for _ in range(ROUNDS):
        container_id = pyoci.new_id()
        pyoci.create(container_id, bundle)
        pyoci.start(container_id)
        commands = [("state",), ("pause",), ("resume",), ("kill",), ("kill", "--all"),
                    ("state",), ("pause",), ("resume",), ("delete", "--force"), ("state",)]
        calls = [lambda c=c: pyoci.run(*c[:1], *c[1:], container_id,
                                       *(("0",) if c[0] == "kill" else ()), check=False)
                 for c in commands * 2]
        for completed in in_parallel(calls, workers=len(calls)):
            assert_one_line_or_success(completed)
        pyoci.run("delete", "--force", container_id)
        assert not pyoci.exists(container_id)
    assert leak_check.leftovers() == {}


ROUNDS = int(os.environ.get("PYOCI_RACE_ROUNDS", "3"))


@pytest.mark.parametrize("runtime_command", [RUNC, "pyoci"], ids=["runc", "pyoci"])
def test_delete_force_of_a_paused_container(runtime_command, pyoci, tmp_path):
    """Frozen processes die of SIGKILL only once thawed: delete --force
    thaws after signalling, as runc does."""
    bundle = make_bundle(tmp_path / "bundle", ["sleep", "1000"])
    with private_runtime(pyoci.argv[0] if runtime_command == "pyoci" else runtime_command) \
            as runtime:
        check = LeakCheck(runtime, tmp_path)
        try:
            container_id = runtime.new_id()
            runtime.create(container_id, bundle)
            runtime.start(container_id)
            runtime.run("pause", container_id)
            assert runtime.state(container_id)["status"] == "paused"
            runtime.run("delete", "--force", container_id, timeout=10)
            assert not runtime.exists(container_id)
            assert check.leftovers() == {}
        finally:
            check.close()
