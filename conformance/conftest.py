"""Fixtures that drive the runtime named by $OCI_RUNTIME (default pyoci) through its CLI.

Test modules call ``skip_module_unless_runnable()`` first.  Every test gets a
private state directory (``--root``), and every container it creates is
force-deleted afterwards, so a failing test leaves nothing behind.
"""
import shutil
import tempfile
from pathlib import Path

import pytest

from conformance.harness import LeakCheck, Probe, Runtime, runtime_path


@pytest.fixture
def runtime():
    # A short path: runtimes may put unix sockets, limited to 108 bytes, in their state.
    scratch = Path(tempfile.mkdtemp(prefix="oci-"))
    runtime = Runtime(runtime_path(), scratch / "state")
    yield runtime
    runtime.force_delete_all()
    shutil.rmtree(scratch)


@pytest.fixture
def container_id(runtime):
    return runtime.new_id()


@pytest.fixture
def probe(runtime, tmp_path):
    return Probe(runtime, tmp_path)


@pytest.fixture
def leak_check(runtime, tmp_path):
    check = LeakCheck(runtime, tmp_path)
    yield check
    check.close()


@pytest.fixture
def deviates(runtime, request):
    """``deviates("runc", why)``: this test is expected to fail on that runtime only."""
    def expect_failure_on(runtime_name, reason):
        if runtime.name == runtime_name:
            request.applymarker(pytest.mark.xfail(reason=reason, strict=True))
    return expect_failure_on
