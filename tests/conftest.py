"""Fixtures for pyoci's own tests.

Integration tests drive the installed `pyoci` command (the one beside this
interpreter) with conformance/harness.py's Runtime, Probe and LeakCheck.
"""
import os
import shutil
import stat
import subprocess
import tempfile
from pathlib import Path

import pytest

from conformance.harness import PYOCI


def _can_run_containers():
    return os.geteuid() == 0 and os.path.exists(PYOCI)


def pytest_collection_modifyitems(config, items):
    skip = pytest.mark.skip(reason="needs root and the installed pyoci command")
    if not _can_run_containers():
        for item in items:
            if "root" in item.keywords and "conformance" not in str(item.fspath):
                item.add_marker(skip)


@pytest.fixture(autouse=True)
def reset_log():
    """pyoci.log is module state that CLI calls in-process configure."""
    from pyoci import log
    log.configure()
    yield
    log.configure()


@pytest.fixture
def pyoci():
    from conformance.harness import private_runtime
    with private_runtime(PYOCI) as runtime:
        yield runtime


@pytest.fixture
def probe(pyoci, tmp_path):
    from conformance.harness import Probe
    return Probe(pyoci, tmp_path)


@pytest.fixture
def leak_check(pyoci, tmp_path):
    from conformance.harness import LeakCheck
    check = LeakCheck(pyoci, tmp_path)
    yield check
    check.close()


@pytest.fixture
def scratch():
    """A directory a user namespace's root may traverse (pytest's is 0700);
    whatever a test mounted below it is unmounted."""
    directory = Path(tempfile.mkdtemp(prefix="pyoci-test-"))
    directory.chmod(0o711)
    yield directory
    for line in reversed(Path("/proc/self/mountinfo").read_text().splitlines()):
        point = line.split()[4]
        if point.startswith(str(directory)):
            subprocess.run(["umount", "-l", point], check=False)
    shutil.rmtree(directory, ignore_errors=True)


class RootlessUser:
    """A real unprivileged account for rootless tests: made for the session
    (with /etc/subuid and /etc/subgid ranges and an XDG_RUNTIME_DIR) and
    removed after. It runs pyoci from a venv of Debian's /usr/bin/python3
    (ours lives under /root, which it may not read) over a copy of this
    checkout's package, so the checkout's own path need not be traversable."""

    NAME = "pyoci-rootless"
    TUN = "/dev/net/tun"
    PATH = "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin"

    def __init__(self, directory):
        import pwd
        self.directory = Path(directory)
        self.directory.chmod(0o755)
        subprocess.run(["userdel", "-r", "-f", self.NAME], capture_output=True, check=False)
        made = subprocess.run(["useradd", "-m", "-s", "/bin/sh", self.NAME],
                              capture_output=True, text=True, check=False)
        assert made.returncode == 0, f"useradd {self.NAME}: {made.stderr}"
        entry = pwd.getpwnam(self.NAME)
        self.uid, self.gid, self.home = entry.pw_uid, entry.pw_gid, entry.pw_dir
        self.subuid = self._subordinate("/etc/subuid", "--add-subuids")
        self.subgid = self._subordinate("/etc/subgid", "--add-subgids")
        self.runtime_dir = Path(f"/run/user/{self.uid}")
        self.runtime_dir.mkdir(parents=True, exist_ok=True)
        self.runtime_dir.chmod(0o700)
        os.chown(self.runtime_dir, self.uid, self.gid)
        self.pyoci = self._install_pyoci()
        # Rootless podman's and Docker's networks (slirp4netns) open the tun
        # device as the user: Debian's udev makes it 0666, a bare host may
        # not (and the v2 VM has none: its tests run no engine).
        self.tun_mode = (stat.S_IMODE(os.stat(self.TUN).st_mode)
                         if os.path.exists(self.TUN) else None)
        if self.tun_mode is not None:
            os.chmod(self.TUN, self.tun_mode | 0o666)

    def _subordinate(self, table, flag):
        """(first, count) of the user's range, added where useradd did not."""
        for line in Path(table).read_text().splitlines():
            name, first, count = line.split(":")
            if name == self.NAME:
                return int(first), int(count)
        subprocess.run(["usermod", flag, "300000-365535", self.NAME], check=True)
        return 300000, 65536

    def _install_pyoci(self):
        repo = Path(__file__).resolve().parent.parent
        source = self.directory / "src"
        ignore = shutil.ignore_patterns("__pycache__")
        shutil.copytree(repo / "pyoci", source / "pyoci", ignore=ignore)
        shutil.copytree(repo / "schemas", source / "schemas", ignore=ignore)
        venv = self.directory / "venv"
        # cffi's backend and jsonschema come from Debian's packages (the Makefile's apt list).
        subprocess.run(["/usr/bin/python3", "-m", "venv", "--without-pip",
                        "--system-site-packages", venv], check=True)
        site = next((venv / "lib").glob("python3*/site-packages"))
        (site / "pyoci-src.pth").write_text(f"{source}\n")
        subprocess.run([venv / "bin/python", "-m", "compileall", "-q", source], check=True,
                       stdout=subprocess.DEVNULL)
        command = venv / "bin" / "pyoci"
        command.write_text(f"#!{venv}/bin/python\nimport sys\nfrom pyoci.cli import main\n"
                           "sys.exit(main())\n")
        command.chmod(0o755)
        for path in (self.directory, *self.directory.rglob("*")):
            path.chmod(path.stat().st_mode | 0o555 if path.is_dir() else
                       path.stat().st_mode | 0o444)
        return str(command)

    def prefix(self, cgroup_procs=()):
        """argv that runs a command as the user, in a login-like environment;
        moved first into the cgroups whose cgroup.procs files are given."""
        as_user = ["runuser", "-u", self.NAME, "--", "env", "-i", f"HOME={self.home}",
                   f"USER={self.NAME}", f"LOGNAME={self.NAME}", f"PATH={self.PATH}",
                   f"XDG_RUNTIME_DIR={self.runtime_dir}"]
        if not cgroup_procs:
            return as_user
        join = "".join(f"echo $$ > {procs} && " for procs in cgroup_procs)
        return ["sh", "-c", join + 'exec "$@"', "sh", *as_user]

    def runtime(self, command, cgroup_procs=()):
        """COMMAND (a path, or runc) as the user, with its default --root."""
        from conformance.harness import Runtime
        name = "pyoci" if command == self.pyoci else os.path.basename(command)
        return Runtime(command, self.runtime_dir / name, self.prefix(cgroup_procs),
                       pass_root=False)

    def run(self, *argv, check=True, cgroup_procs=(), **options):
        return subprocess.run([*self.prefix(cgroup_procs), *map(str, argv)], text=True,
                              capture_output=True, check=check, **options)

    def give(self, path):
        """Make the user the owner of everything under PATH."""
        for below in (Path(path), *Path(path).rglob("*")):
            os.lchown(below, self.uid, self.gid)

    def close(self):
        if self.tun_mode is not None:
            os.chmod(self.TUN, self.tun_mode)
        subprocess.run(["pkill", "-KILL", "-u", self.NAME], check=False)
        subprocess.run(["userdel", "-r", "-f", self.NAME], capture_output=True, check=False)
        shutil.rmtree(self.runtime_dir, ignore_errors=True)


@pytest.fixture(scope="session")
def rootless_user():
    directory = tempfile.mkdtemp(prefix="pyoci-rootless-")
    user = RootlessUser(directory)
    try:
        yield user
    finally:
        user.close()
        shutil.rmtree(directory, ignore_errors=True)
