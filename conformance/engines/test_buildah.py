"""buildah building an image with ``--runtime`` the runtime under test for its RUN steps."""
import pytest

from conformance.engines import helpers
from conformance.engines.helpers import IMAGE

helpers.require_engine("buildah")

pytestmark = pytest.mark.engine

CONTAINERFILE = f"""\
FROM {IMAGE}
RUN echo step-one > /one && echo "$(cat /one)" > /marker
RUN cat /one > /two && echo step-two >> /two && id -u >> /two
"""


def test_two_step_build(buildah, tmp_path):
    context = tmp_path / "context"
    context.mkdir()
    (context / "Containerfile").write_text(CONTAINERFILE)
    tag = f"localhost/engine-built-{buildah.shim.name}:latest"
    buildah("bud", "--runtime", buildah.shim.path, "--isolation", "oci", "--pull-never",
            "-f", context / "Containerfile", "-t", tag, context)
    container = buildah("from", "--pull-never", tag).stdout.strip()
    try:
        mountpoint = buildah("mount", container).stdout.strip()
        with open(f"{mountpoint}/one") as one, open(f"{mountpoint}/two") as two:
            assert one.read() == "step-one\n"
            assert two.read() == "step-one\nstep-two\n0\n"
        buildah("umount", container)
    finally:
        buildah("rm", container, check=False)
        buildah("rmi", "-f", tag, check=False)
