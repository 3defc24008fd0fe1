"""Seccomp notify (issue 10): SCMP_ACT_NOTIFY rules, the listener fd and
the spec's seccomp state sent to the agent at listenerPath, for run and
exec, with and without noNewPrivileges, with a startContainer hook.
runc 1.1.5 does the same, beside it in each test."""
import errno
import fcntl
import json
import os
import select
import socket
import struct
import threading

import pytest

from conformance.bundle import make_bundle
from conformance.harness import PYOCI, RUNC, private_runtime

pytestmark = pytest.mark.root

NOTIF_RECV = 0xC0502100  # _IOWR('!', 0, struct seccomp_notif), 80 bytes
NOTIF_SEND = 0xC0182101  # _IOWR('!', 1, struct seccomp_notif_resp), 24 bytes


class Agent:
    """A seccomp agent: takes the listener and the state, then answers each
    notified syscall with success (it does nothing), or, DIES, closes the
    listener at once."""

    def __init__(self, path, dies=False):
        self.path = str(path)
        self.server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.server.bind(self.path)
        self.server.listen(4)
        self.dies = dies
        self.states = []
        self.answered = 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self):
        self.server.settimeout(0.2)
        listeners = []
        while not self.stop.is_set():
            try:
                connection, _ = self.server.accept()
                with connection:
                    message, fds, _, _ = socket.recv_fds(connection, 1 << 16, 4)
                self.states.append(json.loads(message))
                if self.dies:
                    for fd in fds:
                        os.close(fd)
                else:
                    listeners += fds
            except socket.timeout:
                pass
            for fd in list(listeners):
                if not self._answer_pending(fd):
                    listeners.remove(fd)
                    os.close(fd)
        for fd in listeners:
            os.close(fd)

    def _answer_pending(self, fd):
        """Answer what is pending; False once no process uses the filter."""
        poller = select.poll()
        poller.register(fd, select.POLLIN)
        while (events := poller.poll(0)):
            if not events[0][1] & select.POLLIN:
                return False  # POLLHUP: the container's processes are gone
            notification = bytearray(80)
            try:
                fcntl.ioctl(fd, NOTIF_RECV, notification)
            except OSError as exc:
                if exc.errno == errno.ENOENT:  # the caller went away
                    continue
                raise
            notification_id = struct.unpack_from("=Q", notification)[0]
            fcntl.ioctl(fd, NOTIF_SEND, bytearray(struct.pack("=QqiI", notification_id, 0, 0, 0)))
            self.answered += 1
        return True

    def close(self):
        self.stop.set()
        self.thread.join(timeout=5)
        self.server.close()


def notifying_mkdir(agent_path, no_new_privileges=True, start_hook=False):
    def mutate(config):
        config["process"]["noNewPrivileges"] = no_new_privileges
        config["linux"]["seccomp"] = {
            "defaultAction": "SCMP_ACT_ALLOW", "listenerPath": str(agent_path),
            "listenerMetadata": "pyoci-test",
            "architectures": ["SCMP_ARCH_X86_64"],
            "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_NOTIFY"}]}
        if start_hook:
            config["hooks"] = {"startContainer": [{"path": "/bin/true"}]}
    return mutate


SCRIPT = "mkdir /made && echo made; test -d /made || echo absent"


@pytest.mark.parametrize("no_new_privileges", [True, False], ids=["nnp", "no-nnp"])
@pytest.mark.parametrize("start_hook", [False, True], ids=["", "startContainer-hook"])
def test_the_agent_answers_notified_syscalls_of_run(tmp_path, no_new_privileges, start_hook):
    agent_path = tmp_path / "agent.sock"
    bundle = make_bundle(tmp_path / "b", ["sh", "-c", SCRIPT],
                         notifying_mkdir(agent_path, no_new_privileges, start_hook))
    for command in (PYOCI, RUNC):
        agent = Agent(agent_path)
        try:
            with private_runtime(command) as runtime:
                container_id = runtime.new_id()
                done = runtime.run("run", "--bundle", bundle, container_id, check=False)
                assert (done.returncode, done.stdout) == (0, "made\nabsent\n"), \
                    (runtime.name, done.stderr)
                state, = agent.states
                assert state["fds"] == ["seccompFd"] and state["metadata"] == "pyoci-test"
                assert state["state"]["id"] == container_id and state["pid"] > 0
                assert agent.answered >= 1
        finally:
            agent.close()
            agent_path.unlink()


def test_the_agent_gets_each_exec_process_listener_too(tmp_path):
    agent_path = tmp_path / "agent.sock"
    bundle = make_bundle(tmp_path / "b", ["sleep", "100"], notifying_mkdir(agent_path))
    for command in (PYOCI, RUNC):
        agent = Agent(agent_path)
        try:
            with private_runtime(command) as runtime:
                container_id = runtime.new_id()
                runtime.run("run", "-d", "--bundle", bundle, container_id)
                done = runtime.run("exec", container_id, "sh", "-c", SCRIPT)
                assert done.stdout == "made\nabsent\n", runtime.name
                assert len(agent.states) == 2
                assert agent.states[1]["pid"] != agent.states[0]["pid"]
                assert agent.states[1]["state"]["status"] == "running"
        finally:
            agent.close()
            agent_path.unlink()


def test_when_the_agent_is_gone_the_syscall_fails_with_enosys(tmp_path):
    agent_path = tmp_path / "agent.sock"
    bundle = make_bundle(tmp_path / "b", ["sh", "-c", "mkdir /made 2>&1; true"],
                         notifying_mkdir(agent_path))
    for command in (PYOCI, RUNC):
        agent = Agent(agent_path, dies=True)
        try:
            with private_runtime(command) as runtime:
                done = runtime.run("run", "--bundle", bundle, runtime.new_id())
                assert "Function not implemented" in done.stdout, (runtime.name, done.stdout)
        finally:
            agent.close()
            agent_path.unlink()


def test_no_agent_listening_is_one_line_and_leaves_nothing(tmp_path, leak_check):
    bundle = make_bundle(tmp_path / "b", ["true"], notifying_mkdir(tmp_path / "none.sock"))
    for command in (PYOCI, RUNC):
        with private_runtime(command) as runtime:
            done = runtime.run("run", "--bundle", bundle, runtime.new_id(), check=False)
            assert done.returncode == 1, runtime.name
            assert "failed to connect with seccomp agent" in done.stderr, (runtime.name, done.stderr)
            assert runtime.listed_ids() == []
