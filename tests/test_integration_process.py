"""The process as runc makes it (issue 9): capabilities, HOME, env, cwd,
the program's lookup and exec errors. Each test runs runc 1.1.5 on the
same bundle."""
import json
import os
import shlex
import shutil
import subprocess

import pytest

from conformance.bundle import make_bundle, user_namespace
from conformance.harness import PYOCI, RUNC, private_runtime, process_alive, wait_until

pytestmark = pytest.mark.root


def outcomes(bundle, *exec_args):
    """{runtime: (exit status, stdout+stderr of `run`, output of an exec)} on both runtimes."""
    results = {}
    for command in (PYOCI, RUNC):
        with private_runtime(command) as runtime:
            container_id = runtime.new_id()
            if exec_args:
                runtime.run("run", "-d", "--bundle", bundle, container_id)
                done = runtime.run("exec", *exec_args[:-1], container_id, *exec_args[-1],
                                   check=False)
            else:
                done = runtime.run("run", "--bundle", bundle, container_id, check=False)
            results[runtime.name] = (done.returncode, done.stdout, done.stderr)
    return results


def test_unknown_capabilities_are_a_warning_and_left_out(tmp_path):
    """config.md: an unknown or unavailable capability MUST be logged as a
    warning and SHOULD NOT fail the container."""
    def capabilities(config):
        sets = config["process"]["capabilities"]
        sets["bounding"].append("CAP_UNKNOWN")
        sets["effective"].append("CAP_FOO")
    bundle = make_bundle(tmp_path / "b", ["grep", "^CapBnd", "/proc/self/status"], capabilities)
    seen = outcomes(bundle)
    for name, (status, stdout, stderr) in seen.items():
        assert status == 0, (name, stderr)
        assert "ignoring unknown or unavailable capabilities: [CAP_FOO CAP_UNKNOWN]" in stderr, name
        assert "level=warning" in stderr, name
    assert seen["pyoci"][1] == seen["runc"][1]


@pytest.mark.parametrize("uid, env_home, expected", [
    (0, None, "/root"), (65534, None, "/nonexistent"), (1234, None, "/"),
    (0, "", "/root"), (0, "/custom", "/custom")])
def test_home_comes_from_passwd_when_the_env_has_none(tmp_path, uid, env_home, expected):
    def user(config):
        config["process"]["user"] = {"uid": uid, "gid": uid}
        if env_home is not None:
            config["process"]["env"].append(f"HOME={env_home}")
    bundle = make_bundle(tmp_path / "b", ["sh", "-u", "-c", "echo $HOME"], user)
    for name, (status, stdout, stderr) in outcomes(bundle).items():
        assert (status, stdout) == (0, f"{expected}\n"), (name, stderr)


@pytest.mark.parametrize("user, expected", [("0", "/root"), ("65534", "/nonexistent")])
def test_exec_sets_home_for_its_user(tmp_path, user, expected):
    bundle = make_bundle(tmp_path / "b", ["sleep", "100"])
    seen = outcomes(bundle, "--user", user, ["sh", "-u", "-c", "echo $HOME"])
    for name, (status, stdout, stderr) in seen.items():
        assert (status, stdout) == (0, f"{expected}\n"), (name, stderr)


def test_exec_cap_widens_bounding_effective_and_permitted_only(tmp_path):
    """A non-root exec with --cap: nothing in its inheritable or ambient sets,
    so it does not reach the programs it executes."""
    bundle = make_bundle(tmp_path / "b", ["sleep", "100"])
    seen = outcomes(bundle, "--user", "1000", "--cap", "CAP_CHOWN",
                    ["grep", "-E", "^Cap(Inh|Amb)", "/proc/self/status"])
    for name, (status, stdout, stderr) in seen.items():
        assert status == 0, (name, stderr)
        assert stdout.split() == ["CapInh:", "0" * 16, "CapAmb:", "0" * 16], (name, stdout)


def test_kill_0_ps_of_a_stopped_container_and_json_log_lines_as_runc(tmp_path):
    """kill ID 0 checks that the container's init exists; ps of a stopped
    container prints its header; --log json lines are compact, one a line."""
    bundle = make_bundle(tmp_path / "b", ["sleep", "100"])
    seen = {}
    for command in (PYOCI, RUNC):
        with private_runtime(command) as runtime:
            container_id = runtime.new_id()
            runtime.run("create", "--bundle", bundle, container_id)
            created = runtime.run("kill", container_id, "0", check=False).returncode
            runtime.run("start", container_id)
            runtime.run("kill", container_id, "KILL")
            runtime.wait_for_status(container_id, "stopped")
            stopped = runtime.run("kill", container_id, "0", check=False)
            table = runtime.run("ps", container_id, check=False)
            log = tmp_path / f"{runtime.name}.log"
            runtime.run("--log", log, "--log-format", "json", "start", container_id, check=False)
            seen[runtime.name] = (created, stopped.returncode, "container not running" in stopped.stderr,
                                  table.returncode, table.stdout.split(), log.read_text())
    for name, (created, stopped, says, ps_status, ps_words, log_text) in seen.items():
        assert (created, stopped, says) == (0, 1, True), name
        assert ps_status == 0 and ps_words[:2] == ["UID", "PID"] and "sleep" not in ps_words, name
        assert log_text.endswith("}\n") and log_text.count("\n") == 1, (name, log_text)
        assert log_text.startswith('{"level":"error","msg":"cannot start a container that has stopped"'), \
            (name, log_text)


def test_env_repeated_once_with_the_last_value_newlines_kept_exec_env_added(tmp_path):
    def env(config):
        config["process"]["env"] += ["A=1", "A=2", "B=x\ny"]
    bundle = make_bundle(tmp_path / "b", ["sleep", "100"], env)
    script = ['sh', '-c', 'env | grep -c "^A="; echo "$A"; echo "$B"; echo "$C"']
    seen = outcomes(bundle, "--env", "C=3", script)
    for name, (status, stdout, stderr) in seen.items():
        assert (status, stdout) == (0, "1\n2\nx\ny\n3\n"), (name, stderr)


def test_cwd_only_the_runtime_can_enter_is_entered_before_the_user_switch(tmp_path):
    """runc chdirs as root first: a cwd of mode 0700 that the user cannot
    enter still becomes the process's cwd, for run and for exec --user."""
    def cwd(config):
        config["process"]["user"] = {"uid": 1000, "gid": 1000}
        config["process"]["cwd"] = "/root"
    for args, exec_args in ((["pwd"], ()), (["sleep", "100"], ("--user", "1001", ["pwd"]))):
        bundle = make_bundle(tmp_path / args[0], args, cwd)
        os.chmod(bundle / "rootfs/root", 0o700)
        for name, (status, stdout, stderr) in outcomes(bundle, *exec_args).items():
            assert (status, stdout) == (0, "/root\n"), (name, exec_args, stderr)


def test_cwd_only_the_user_can_enter_is_entered_after_the_user_switch(scratch):
    """A directory whose owner is not mapped into the user namespace: its
    root may not enter it, a user of its group may. runc tries again as
    the user."""
    def cwd(config):
        user_namespace(config)
        config["process"]["user"] = {"uid": 1000, "gid": 1000}
        config["process"]["cwd"] = "/shared"
    bundle = make_bundle(scratch / "b", ["pwd"], cwd)
    shared = bundle / "rootfs/shared"
    shared.mkdir()
    os.chown(shared, 5000, 101000)  # owner unmapped; group is the container's 1000
    os.chmod(shared, 0o070)
    for directory, _, _ in os.walk(bundle / "rootfs"):
        if directory != str(shared):
            os.chown(directory, 100000, 100000)
    for name, (status, stdout, stderr) in outcomes(bundle).items():
        assert (status, stdout) == (0, "/shared\n"), (name, stderr)


def with_private_echo(bundle):
    """/priv/echo: busybox, mode 0700, owned by root."""
    (bundle / "rootfs/priv").mkdir()
    shutil.copy(bundle / "rootfs/bin/busybox", bundle / "rootfs/priv/echo")
    os.chmod(bundle / "rootfs/priv/echo", 0o700)


def test_a_user_with_cap_dac_override_runs_a_program_without_its_exec_bit(tmp_path):
    def user_with_dac_override(config):
        config["process"]["user"] = {"uid": 1000, "gid": 1000}
        for name in ("bounding", "effective", "permitted"):
            config["process"]["capabilities"][name].append("CAP_DAC_OVERRIDE")
    bundle = make_bundle(tmp_path / "b", ["/priv/echo", "hi"], user_with_dac_override)
    with_private_echo(bundle)
    for name, (status, stdout, stderr) in outcomes(bundle).items():
        assert (status, stdout) == (0, "hi\n"), (name, stderr)
    bundle = make_bundle(tmp_path / "c", ["sleep", "100"])
    with_private_echo(bundle)
    seen = outcomes(bundle, "--user", "1000", "--cap", "CAP_DAC_OVERRIDE", ["/priv/echo", "hi"])
    for name, (status, stdout, stderr) in seen.items():
        assert (status, stdout) == (0, "hi\n"), (name, stderr)
    for name, (status, stdout, stderr) in outcomes(bundle, "--user", "1000",
                                                   ["/priv/echo", "hi"]).items():
        assert status == 255 and "permission denied" in stderr, (name, stderr)


def test_execve_errors_read_as_runcs(tmp_path):
    """A script whose interpreter is missing: execve's ENOENT, for run and exec."""
    bundle = make_bundle(tmp_path / "b", ["/run.sh"])
    (bundle / "rootfs/run.sh").write_text("#!/bin/missing\n")
    os.chmod(bundle / "rootfs/run.sh", 0o755)
    for name, (status, stdout, stderr) in outcomes(bundle).items():
        assert status == 1 and "exec /run.sh: no such file or directory" in stderr, (name, stderr)
    bundle = make_bundle(tmp_path / "c", ["sleep", "100"])
    (bundle / "rootfs/run.sh").write_text("#!/bin/missing\n")
    os.chmod(bundle / "rootfs/run.sh", 0o755)
    for name, (status, stdout, stderr) in outcomes(bundle, ["/run.sh"]).items():
        assert status != 0 and "exec /run.sh: no such file or directory" in stderr, (name, stderr)


def through_a_pipe_from_a_terminal(runtime, *args):
    """What `RUNTIME ARGS | od -c` prints, run on a terminal of its own (script(1))."""
    command = shlex.join(map(str, [*runtime.argv, *args]))
    done = subprocess.run(["script", "-qec", f"{command} | od -An -c", "/dev/null"],
                          capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=60)
    return "".join(done.stdout.split())


def test_terminal_lines_end_in_newline_and_the_pty_is_the_users(tmp_path):
    """runc clears ONLCR on the container's pty and gives the process's uid
    its stdio: for run and exec -t."""
    def terminal(config):
        config["process"]["terminal"] = True
        config["process"]["user"] = {"uid": 1000, "gid": 1000}
    script = ["sh", "-c", "echo a; stat -c %u:%g $(tty)"]
    bundle = make_bundle(tmp_path / "b", script, terminal)
    idle = make_bundle(tmp_path / "c", ["sleep", "100"])
    for command in (PYOCI, RUNC):
        with private_runtime(command) as runtime:
            container_id = runtime.new_id()
            # runc writes a NUL first, which script echoes as ^@.
            seen = through_a_pipe_from_a_terminal(runtime, "run", "--bundle", bundle, container_id)
            assert seen.replace("^@", "") == "a\\n1000:5\\n", (runtime.name, seen)
            idle_id = runtime.new_id()
            runtime.run("run", "-d", "--bundle", idle, idle_id)
            seen = through_a_pipe_from_a_terminal(runtime, "exec", "-t", "--user", "1000",
                                                  idle_id, *script)
            assert seen.replace("^@", "") == "a\\n1000:5\\n", (runtime.name, seen)


def test_stdio_belongs_to_the_processs_user(tmp_path):
    """Here the runtime's stdout and stderr are files of the host's root."""
    def user(config):
        config["process"]["user"] = {"uid": 1000, "gid": 1000}
    bundle = make_bundle(tmp_path / "b", ["stat", "-L", "-c", "%u", "/proc/self/fd/1",
                                           "/proc/self/fd/2"], user)
    for name, (status, stdout, stderr) in outcomes(bundle).items():
        assert (status, stdout) == (0, "1000\n1000\n"), (name, stderr)


HOOK_KINDS = ("prestart", "createRuntime", "createContainer", "startContainer", "poststart",
              "poststop")


def hooks_reporting_to(log_path, container_log_path):
    """A `hooks` object: each hook appends "KIND ARGV0 CWD MARK" to a log.
    The startContainer hook runs in the container: its log has its own path,
    and its argv[0] is "sh", the busybox applet."""
    def hook(kind):
        path = container_log_path if kind == "startContainer" else log_path
        script = ("a=$(tr '\\000' '\\n' < /proc/$$/cmdline | head -n1); "
                  f'echo "$0 ${{a:-unseen}} $(pwd -P) ${{MARK:-none}}" >> {path}')
        return [{"path": "/bin/sh", "args": ["sh" if kind == "startContainer" else "argv-zero",
                                             "-c", script, kind]}]
    return {kind: hook(kind) for kind in HOOK_KINDS}


def test_hooks_get_their_argv_exactly_runcs_cwd_and_in_the_container_the_process_env(tmp_path):
    def hooked(config):
        config["hooks"] = hooks_reporting_to(tmp_path / "b/rootfs/hooks.log", "/hooks.log")
        config["process"]["env"].append("MARK=process")
        config["process"]["cwd"] = "/tmp"
    bundle = make_bundle(tmp_path / "b", ["true"], hooked)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    rootfs = bundle / "rootfs"
    expected = {
        "run": {"prestart": bundle, "createRuntime": bundle, "createContainer": rootfs,
                "startContainer": "/tmp", "poststart": bundle, "poststop": bundle},
        # delete runs them where it is called from
        "steps": {"prestart": bundle, "createRuntime": bundle, "createContainer": rootfs,
                  "startContainer": "/tmp", "poststart": bundle, "poststop": elsewhere}}
    for command in (PYOCI, RUNC):
        with private_runtime(command) as runtime:
            for way in ("run", "steps"):
                log = rootfs / "hooks.log"
                log.unlink(missing_ok=True)
                container_id = runtime.new_id()
                if way == "run":
                    runtime.run("run", "--bundle", bundle, container_id, cwd=elsewhere)
                else:
                    runtime.run("create", "--bundle", bundle, container_id, cwd=elsewhere)
                    runtime.run("start", container_id, cwd=elsewhere)
                    runtime.wait_for_status(container_id, "stopped")
                    runtime.run("delete", container_id, cwd=elsewhere)
                lines = [line.split() for line in log.read_text().splitlines()]
                kinds = [line[0] for line in lines]
                if runtime.name == "runc":
                    # runc's poststart hooks may run before its startContainer ones end;
                    # the spec has them after the program started: pyoci's order.
                    kinds.sort(key=HOOK_KINDS.index)
                assert kinds == list(HOOK_KINDS), (runtime.name, way, lines)
                for kind, argv0, cwd, mark in lines:
                    # The createContainer hook's $$ is of the container's pid
                    # namespace, which the host's /proc it sees does not show.
                    assert argv0 == {"startContainer": "sh", "createContainer": "unseen"}.get(
                        kind, "argv-zero"), (runtime.name, kind)
                    assert cwd == str(expected[way][kind]), (runtime.name, way, kind, cwd)
                    in_container = kind in ("createContainer", "startContainer")
                    assert mark == ("process" if in_container else "none"), \
                        (runtime.name, kind, mark)


@pytest.mark.parametrize("kind", HOOK_KINDS)
def test_a_failing_hook_names_its_kind_and_index_in_run(tmp_path, kind):
    """The error of a hook that fails in `run` is the hook's (runc 1.2's words:
    runc 1.1.5 leaves the kind out); a poststop hook's is a warning."""
    def hooked(config):
        ok = {"path": "/bin/true"}
        failing = {"path": "/bin/sh", "args": ["sh", "-c", "echo out; echo err >&2; exit 3"]}
        config["hooks"] = {kind: [ok, failing]}
    bundle = make_bundle(tmp_path / "b", ["true"], hooked)
    with private_runtime(PYOCI) as runtime:
        done = runtime.run("run", "--bundle", bundle, runtime.new_id(), check=False)
        message = f"error running {kind} hook #1: exit status 3, stdout: out, stderr: err"
        assert message in done.stderr, done.stderr
        assert done.returncode == (0 if kind == "poststop" else 1), done.stderr
        assert runtime.run("list", "-q").stdout == ""


def test_kill_all_after_init_exited_signals_what_is_left_in_the_cgroup(tmp_path):
    """The host's pid namespace (as a pod sharing one): init exits, its
    children live on in the container's cgroup; `kill --all ID 9` (what
    containerd's shim sends) exits 0 and kills them, as runc does."""
    def host_pids(config):
        config["linux"]["namespaces"] = [ns for ns in config["linux"]["namespaces"]
                                         if ns["type"] != "pid"]
    script = ("sleep 300 & echo $! > /pids.tmp; sleep 300 & echo $! >> /pids.tmp; "
              "mv /pids.tmp /pids")
    bundle = make_bundle(tmp_path / "b", ["sh", "-c", script], host_pids)
    pids_file = bundle / "rootfs/pids"
    for command in (PYOCI, RUNC):
        pids_file.unlink(missing_ok=True)
        with private_runtime(command) as runtime:
            container_id = runtime.new_id()
            runtime.run("run", "-d", "--bundle", bundle, container_id)
            runtime.wait_for_status(container_id, "stopped")
            wait_until(pids_file.exists, "the children's pids")
            children = [int(pid) for pid in pids_file.read_text().split()]
            assert all(process_alive(pid) for pid in children), runtime.name
            done = runtime.run("kill", "--all", container_id, "9", check=False)
            assert done.returncode == 0, (runtime.name, done.stderr)
            wait_until(lambda: not any(process_alive(pid) for pid in children), "the children to die")
            runtime.run("delete", container_id)
            done = runtime.run("kill", "--all", container_id, "9", check=False)
            assert "does not exist" in done.stderr, (runtime.name, done.stderr)


@pytest.mark.parametrize("destination, log_format", [("stderr", "text"), ("file", "text"),
                                                     ("file", "json")])
def test_debug_lines_for_create_run_and_exec(tmp_path, destination, log_format):
    """--debug: runc's line shapes on stderr or in --log; pyoci's include the
    steps its forked processes take, after pivot_root too."""
    bundle = make_bundle(tmp_path / "b", ["sleep", "100"])
    for command in (PYOCI, RUNC):
        with private_runtime(command) as runtime:
            log = tmp_path / f"{runtime.name}.log"
            flags = ["--debug", "--log-format", log_format]
            if destination == "file":
                flags += ["--log", log]
            container_id = runtime.new_id()
            lines = []
            for args in (["run", "-d", "--bundle", bundle, container_id],
                         ["exec", container_id, "true"]):
                done = runtime.run(*flags, *args)
                lines += (log.read_text() if destination == "file" else done.stderr).splitlines()
                if destination == "file":
                    log.unlink()
                    assert "level" not in done.stderr, (runtime.name, done.stderr)
            if log_format == "json":
                entries = [json.loads(line) for line in lines]
                # runc adds "func" and "file" under --debug
                assert all(set(entry) >= {"level", "msg", "time"} for entry in entries)
                messages = [entry["msg"] for entry in entries if entry["level"] == "debug"]
            else:
                messages = [line for line in lines if line.startswith("time=")
                            and " level=debug msg=" in line]
            assert len(messages) >= 3, (runtime.name, lines)
            if runtime.name == "pyoci":
                text = "\n".join(messages)
                for step in ("create " + container_id, "init: entering the root filesystem",
                             "init: the process: uid 0", "exec: the process: uid 0",
                             "exec " + container_id):
                    assert step in text, (step, text)


def test_debug_lines_of_init_stay_out_of_the_containers_terminal(tmp_path):
    def terminal(config):
        config["process"]["terminal"] = True
    bundle = make_bundle(tmp_path / "b", ["echo", "hi"], terminal)
    with private_runtime(PYOCI) as runtime:
        done = runtime.run("--debug", "run", "--bundle", bundle, runtime.new_id())
        assert done.stdout == "hi\n"
        assert "init: the process: uid 0" in done.stderr


class PidfdReceiver:
    """A --pidfd-socket: accepts one connection and keeps the fd it is sent."""

    def __init__(self, path):
        import socket
        import threading
        self.path = str(path)
        self.server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.server.bind(self.path)
        self.server.listen(1)
        self.received = []
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self):
        import socket
        connection, _ = self.server.accept()
        with connection:
            message, fds, _, _ = socket.recv_fds(connection, 64, 4)
            self.received = [(message, fd) for fd in fds]

    def pid_of_received(self):
        self.thread.join(timeout=10)
        (message, fd), = self.received
        with open(f"/proc/self/fdinfo/{fd}") as f:
            fields = dict(line.split(":", 1) for line in f)
        return message, fd, int(fields["Pid"])


@pytest.mark.parametrize("command", ["create", "run"])
def test_pidfd_socket_gets_a_pidfd_of_init(tmp_path, command):
    import signal
    bundle = make_bundle(tmp_path / "b", ["sleep", "100"])
    with private_runtime(PYOCI) as runtime:
        receiver = PidfdReceiver(tmp_path / "pidfd.sock")
        container_id = runtime.new_id()
        args = ["-d"] if command == "run" else []
        runtime.run(command, *args, "--pidfd-socket", receiver.path, "--bundle", bundle,
                    container_id)
        message, fd, pid = receiver.pid_of_received()
        assert message == b"pidfd" and pid == runtime.state(container_id)["pid"]
        signal.pidfd_send_signal(fd, signal.SIGKILL)
        os.close(fd)
        runtime.wait_for_status(container_id, "stopped")


def test_pidfd_socket_of_exec_gets_the_exec_process(tmp_path):
    bundle = make_bundle(tmp_path / "b", ["sleep", "100"])
    with private_runtime(PYOCI) as runtime:
        container_id = runtime.new_id()
        runtime.run("run", "-d", "--bundle", bundle, container_id)
        receiver = PidfdReceiver(tmp_path / "pidfd.sock")
        pid_file = tmp_path / "exec.pid"
        runtime.run("exec", "-d", "--pid-file", pid_file, "--pidfd-socket", receiver.path,
                    container_id, "sleep", "50")
        _, fd, pid = receiver.pid_of_received()
        os.close(fd)
        assert pid == int(pid_file.read_text())


def test_a_pidfd_socket_that_is_not_there_is_one_line(tmp_path):
    bundle = make_bundle(tmp_path / "b", ["true"])
    with private_runtime(PYOCI) as runtime:
        done = runtime.run("run", "--pidfd-socket", tmp_path / "none.sock", "--bundle", bundle,
                           runtime.new_id(), check=False)
        assert done.returncode == 1 and done.stderr.startswith("connect to pidfd socket ")
        assert runtime.listed_ids() == []


def test_the_program_is_found_under_a_seccomp_filter_that_denies_faccessat2(tmp_path):
    """runtime-tools' allowlist, loaded before the lookup (no noNewPrivileges):
    the lookup must not need a syscall the filter may deny."""
    def filtered(config):
        config["process"]["noNewPrivileges"] = False
        config["linux"]["seccomp"] = {
            "defaultAction": "SCMP_ACT_ALLOW", "architectures": ["SCMP_ARCH_X86_64"],
            "syscalls": [{"names": ["faccessat2"], "action": "SCMP_ACT_ERRNO"}]}
    bundle = make_bundle(tmp_path / "b", ["echo", "found"], filtered)
    for name, (status, stdout, stderr) in outcomes(bundle).items():
        assert (status, stdout) == (0, "found\n"), (name, stderr)


def test_spec_rootless_output_runs_even_as_root(tmp_path):
    """Its user namespace maps one id: a devpts gid=5 (unmapped) would be
    EINVAL. Each runtime runs its own `spec --rootless`, made non-interactive."""
    for command in (PYOCI, RUNC):
        with private_runtime(command) as runtime:
            bundle = make_bundle(tmp_path / runtime.name, ["true"])
            (bundle / "config.json").unlink()
            runtime.run("spec", "--rootless", "--bundle", bundle)
            config = json.loads((bundle / "config.json").read_text())
            config["process"].update(terminal=False, args=["sh", "-c", "id -u; cat /proc/self/uid_map"])
            (bundle / "config.json").write_text(json.dumps(config))
            done = runtime.run("run", "--bundle", bundle, runtime.new_id(), check=False)
            assert done.returncode == 0, (runtime.name, done.stderr)
            assert done.stdout.split() == ["0", "0", "0", "1"], (runtime.name, done.stdout)
