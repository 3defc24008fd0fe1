"""Spec 1.2/1.3 process placement on the kernel (issue 9): process.scheduler,
process.ioPriority, process.execCPUAffinity, linux.memoryPolicy and the
linux.personality flags. runc 1.1.5 has none of them (it ignores them), so
each is checked against the spec's words; every bad value is one line at
create, exit 1, and nothing left behind."""
import os

import pytest

from conformance.bundle import make_bundle

pytestmark = pytest.mark.root

# No fork: a SCHED_DEADLINE task may not.
SCHED = ["grep", "-E", "^(policy|prio) ", "/proc/self/sched"]
# v1 real-time group scheduling gives a new cgroup no real-time time.
RT_GROUPS = os.path.exists("/sys/fs/cgroup/cpu/cpu.rt_runtime_us")


def run_script(pyoci, tmp_path, script, mutate):
    return run_args(pyoci, tmp_path, ["sh", "-c", script], mutate)


def run_args(pyoci, tmp_path, args, mutate):
    bundle = make_bundle(tmp_path / "b", args, mutate)
    return pyoci.run("run", "--bundle", bundle, pyoci.new_id(), check=False)


def sched_of(output):
    """grep's "policy : 1" lines as "policy=1 prio=89"."""
    return " ".join("=".join(line.replace(":", " ").split()) for line in output.splitlines())


def with_scheduler(scheduler):
    def mutate(config):
        config["process"]["scheduler"] = scheduler
        if RT_GROUPS and scheduler["policy"] in ("SCHED_FIFO", "SCHED_RR"):
            config["linux"]["resources"] = {"cpu": {"realtimeRuntime": 10000,
                                                    "realtimePeriod": 1000000}}
    return mutate


def with_process(**fields):
    def mutate(config):
        config["process"].update(fields)
    return mutate


@pytest.mark.parametrize("scheduler, seen", [
    ({"policy": "SCHED_OTHER", "nice": 7}, "policy=0 prio=127"),
    ({"policy": "SCHED_BATCH", "nice": -3}, "policy=3 prio=117"),
    ({"policy": "SCHED_IDLE"}, "policy=5 prio=120"),
    ({"policy": "SCHED_FIFO", "priority": 10}, "policy=1 prio=89"),
    ({"policy": "SCHED_RR", "priority": 99, "flags": ["SCHED_FLAG_RESET_ON_FORK"]},
     "policy=2 prio=0"),
    ({"policy": "SCHED_DEADLINE", "runtime": 2000000, "deadline": 10000000,
      "period": 20000000}, "policy=6 prio=-1"),
])
def test_scheduler_policies_apply_to_run_and_exec(pyoci, tmp_path, scheduler, seen):
    """A real-time policy needs CAP_SYS_NICE, which the container lacks:
    the runtime sets it while privileged."""
    done = run_args(pyoci, tmp_path, SCHED, with_scheduler(scheduler))
    assert (done.returncode, sched_of(done.stdout)) == (0, seen), done.stderr
    bundle = make_bundle(tmp_path / "c", ["sleep", "100"], with_scheduler(scheduler))
    container_id = pyoci.new_id()
    pyoci.run("run", "-d", "--bundle", bundle, container_id)
    assert sched_of(pyoci.run("exec", container_id, *SCHED).stdout) == seen


def test_a_real_time_policy_without_real_time_time_says_what_to_set(pyoci, tmp_path, leak_check):
    if not RT_GROUPS:
        pytest.skip("no real-time group scheduling on this kernel")
    done = run_args(pyoci, tmp_path, SCHED,
                    with_process(scheduler={"policy": "SCHED_FIFO", "priority": 5}))
    assert done.returncode == 1 and "set SCHED_FIFO: operation not permitted" in done.stderr
    assert "linux.resources.cpu.realtimeRuntime" in done.stderr
    assert leak_check.leftovers() == {}


def test_reset_on_fork_puts_children_back_to_normal(pyoci, tmp_path):
    scheduler = {"policy": "SCHED_FIFO", "priority": 5, "flags": ["SCHED_FLAG_RESET_ON_FORK"]}
    done = run_script(pyoci, tmp_path, "grep -E '^policy' /proc/self/sched; true",
                      with_scheduler(scheduler))
    assert done.stdout.split()[-1:] == ["0"], done.stderr


@pytest.mark.parametrize("scheduler, words", [
    ({"policy": "SCHED_FIFO"}, "SCHED_FIFO needs a priority within 1..99"),
    ({"policy": "SCHED_OTHER", "nice": 20}, "process.scheduler.nice: 20 is not within -20..19"),
    ({"policy": "SCHED_ISO"}, "SCHED_ISO is reserved"),
    ({"policy": "SCHED_DEADLINE", "runtime": 10}, "SCHED_DEADLINE needs 1024 <= runtime"),
    ({"policy": "SCHED_OTHER", "flags": ["SCHED_FLAG_NOPE"]}, "process.scheduler.flags[0]"),
])
def test_bad_scheduler_values_are_one_line(pyoci, tmp_path, leak_check, scheduler, words):
    done = run_script(pyoci, tmp_path, "true", with_process(scheduler=scheduler))
    assert done.returncode == 1 and words in done.stderr and done.stderr.count("\n") == 1, \
        done.stderr
    assert leak_check.leftovers() == {}


def test_an_unknown_policy_is_refused_by_the_schema(pyoci, tmp_path, leak_check):
    done = run_script(pyoci, tmp_path, "true", with_process(scheduler={"policy": "SCHED_NOPE"}))
    assert done.returncode == 1 and "process.scheduler.policy" in done.stderr, done.stderr
    assert leak_check.leftovers() == {}


def test_deadline_is_refused_where_the_cgroup_limits_the_cpus(pyoci, tmp_path, leak_check):
    if len(os.sched_getaffinity(0)) < 2:
        pytest.skip("needs two CPUs")

    def mutate(config):
        config["process"]["scheduler"] = {"policy": "SCHED_DEADLINE", "runtime": 2000000,
                                          "deadline": 10000000, "period": 20000000}
        config["linux"]["resources"] = {"cpu": {"cpus": "0"}}
    done = run_script(pyoci, tmp_path, "true", mutate)
    assert done.returncode == 1 and "SCHED_DEADLINE needs every CPU" in done.stderr, done.stderr
    assert leak_check.leftovers() == {}


@pytest.mark.parametrize("io_class, priority, seen", [
    ("IOPRIO_CLASS_BE", 4, "best-effort: prio 4"), ("IOPRIO_CLASS_RT", 0, "realtime: prio 0"),
    ("IOPRIO_CLASS_IDLE", 0, "idle")])
def test_io_priority_for_the_process_and_what_it_starts(pyoci, tmp_path, io_class, priority, seen):
    io = {"class": io_class, "priority": priority}
    done = run_script(pyoci, tmp_path, "ionice -p $$; ionice", with_process(ioPriority=io))
    assert done.returncode == 0 and done.stdout.splitlines() == [seen, seen], done.stdout


def test_bad_io_priority_is_one_line(pyoci, tmp_path, leak_check):
    io = {"class": "IOPRIO_CLASS_BE", "priority": 8}
    done = run_script(pyoci, tmp_path, "true", with_process(ioPriority=io))
    assert done.returncode == 1 and "process.ioPriority.priority: 8 is not within 0..7" in \
        done.stderr, done.stderr
    assert leak_check.leftovers() == {}


def online_cpus():
    with open("/sys/devices/system/cpu/online") as f:
        return f.read().strip()


def test_exec_cpu_affinity_final_is_the_exec_process_s_and_not_init_s(pyoci, tmp_path):
    """The spec: not applicable to the container's init process."""
    if len(os.sched_getaffinity(0)) < 2:
        pytest.skip("needs two CPUs")
    affinity = {"initial": "0", "final": "1"}
    bundle = make_bundle(tmp_path / "b", ["sleep", "100"], with_process(execCPUAffinity=affinity))
    container_id = pyoci.new_id()
    pyoci.run("run", "-d", "--bundle", bundle, container_id)
    script = "grep Cpus_allowed_list /proc/1/status /proc/self/status | cut -f2"
    assert pyoci.run("exec", container_id, "sh", "-c", script).stdout.split() == [online_cpus(), "1"]
    # exec --process with an affinity of its own
    process = tmp_path / "process.json"
    process.write_text('{"args": ["sh", "-c", "grep Cpus_allowed_list /proc/self/status"],'
                       ' "cwd": "/", "execCPUAffinity": {"final": "0"}}')
    assert pyoci.run("exec", "--process", process, container_id).stdout.split()[-1] == "0"


def test_exec_cpu_affinity_initial_alone_is_left_to_the_kernel_after_the_move(pyoci, tmp_path):
    """Without final, the runtime does not change the CPUs after the move into
    the cgroups: a v1 cpuset resets them to its own, v2 without one keeps them."""
    bundle = make_bundle(tmp_path / "b", ["sleep", "100"],
                         with_process(execCPUAffinity={"initial": "0"}))
    container_id = pyoci.new_id()
    pyoci.run("run", "-d", "--bundle", bundle, container_id)
    seen = pyoci.run("exec", container_id, "grep", "Cpus_allowed_list", "/proc/self/status")
    assert seen.stdout.split()[-1] in ("0", online_cpus())


def test_exec_cpu_affinity_out_of_range_is_one_line(pyoci, tmp_path, leak_check):
    done = run_script(pyoci, tmp_path, "true",
                      with_process(execCPUAffinity={"final": "0,4096"}))
    assert done.returncode == 1 and "process.execCPUAffinity.final: CPUs [4096] are not online" \
        in done.stderr, done.stderr
    assert leak_check.leftovers() == {}


@pytest.mark.parametrize("policy, seen", [
    ({"mode": "MPOL_BIND", "nodes": "0"}, "bind:0"),
    ({"mode": "MPOL_INTERLEAVE", "nodes": "0", "flags": ["MPOL_F_STATIC_NODES"]},
     "interleave=static:0"),
    ({"mode": "MPOL_PREFERRED", "nodes": "0"}, "prefer:0"),
    ({"mode": "MPOL_LOCAL"}, "local"),
])
def test_memory_policy_for_init_and_exec(pyoci, tmp_path, policy, seen):
    """numa_maps shows a process's policy on each of its mappings."""
    def mutate(config):
        config["linux"]["memoryPolicy"] = policy
    script = "grep -m1 heap /proc/self/numa_maps | cut -d' ' -f2"
    done = run_script(pyoci, tmp_path, script, mutate)
    assert (done.returncode, done.stdout.strip()) == (0, seen), done.stderr
    bundle = make_bundle(tmp_path / "c", ["sleep", "100"], mutate)
    container_id = pyoci.new_id()
    pyoci.run("run", "-d", "--bundle", bundle, container_id)
    assert pyoci.run("exec", container_id, "sh", "-c", script).stdout.strip() == seen


@pytest.mark.parametrize("policy, words", [
    ({"mode": "MPOL_BIND", "nodes": "7"}, "set_mempolicy MPOL_BIND nodes [7]: invalid argument"),
    ({"mode": "MPOL_BIND"}, "MPOL_BIND needs at least one node"),
    ({"mode": "MPOL_LOCAL", "nodes": "0"}, "MPOL_LOCAL takes no nodes"),
    ({"mode": "MPOL_BIND", "nodes": "0-x"}, "is not a list like 0-3,7"),
])
def test_bad_memory_policies_are_one_line(pyoci, tmp_path, leak_check, policy, words):
    def mutate(config):
        config["linux"]["memoryPolicy"] = policy
    done = run_script(pyoci, tmp_path, "true", mutate)
    assert done.returncode == 1 and words in done.stderr and done.stderr.count("\n") == 1, \
        done.stderr
    assert leak_check.leftovers() == {}


def test_personality_flags_for_init_and_exec(pyoci, tmp_path):
    def mutate(config):
        config["linux"]["personality"] = {"domain": "LINUX32", "flags": ["ADDR_NO_RANDOMIZE"]}
    done = run_script(pyoci, tmp_path, "cat /proc/self/personality; uname -m", mutate)
    assert done.stdout.split() == ["00040008", "i686"], done.stderr
    bundle = make_bundle(tmp_path / "c", ["sleep", "100"], mutate)
    container_id = pyoci.new_id()
    pyoci.run("run", "-d", "--bundle", bundle, container_id)
    assert pyoci.run("exec", container_id, "cat", "/proc/self/personality").stdout.strip() == \
        "00040008"


def test_an_unknown_personality_flag_is_one_line(pyoci, tmp_path, leak_check):
    def mutate(config):
        config["linux"]["personality"] = {"domain": "LINUX", "flags": ["NO_SUCH_FLAG"]}
    done = run_script(pyoci, tmp_path, "true", mutate)
    assert done.returncode == 1 and "linux.personality.flags: unknown flag 'NO_SUCH_FLAG'" in \
        done.stderr, done.stderr
    assert leak_check.leftovers() == {}
