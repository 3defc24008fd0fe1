"""Fixtures for pyoci's own tests.

Integration tests drive the installed `pyoci` command (the one beside this
interpreter) with conformance/harness.py's Runtime, Probe and LeakCheck.
"""
import os
import shutil
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
