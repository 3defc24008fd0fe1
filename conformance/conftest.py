"""Fixtures that drive the runtime named by $OCI_RUNTIME (default pyoci) through its CLI.

Test modules call ``skip_module_unless_runnable()`` first.  Every test gets a
private state directory (``--root``), and every container it creates is
force-deleted afterwards, so a failing test leaves nothing behind.
"""

import pytest

from conformance.harness import LeakCheck, Probe, private_runtime, runtime_path


@pytest.fixture
def runtime():
    with private_runtime(runtime_path()) as runtime:
        yield runtime


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
