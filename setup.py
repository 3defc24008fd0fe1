"""Builds pyoci: the cffi shim (pyoci._native) and the static fifo waiter."""
import os
import subprocess

from setuptools import setup
from setuptools.command.build_ext import build_ext

WAITER_FLAGS = ["-O2", "-static", "-nostdlib", "-ffreestanding", "-fno-builtin",
                "-fno-stack-protector", "-fno-pie", "-no-pie", "-Wall", "-Werror"]


class BuildWithWaiter(build_ext):
    """Also compiles csrc/waiter.c into the package as pyoci/pyoci-waiter."""

    def run(self):
        super().run()
        package_dir = "pyoci" if self.inplace else os.path.join(self.build_lib, "pyoci")
        os.makedirs(package_dir, exist_ok=True)
        compiler = os.environ.get("CC", "cc")
        subprocess.check_call([compiler, *WAITER_FLAGS, "-o",
                               os.path.join(package_dir, "pyoci-waiter"),
                               "csrc/waiter.c"])


setup(
    name="pyoci-runtime",
    version="0.1.0",
    description="An OCI runtime-spec container runtime, drop-in for runc",
    python_requires=">=3.11",
    packages=["pyoci", "pyoci.linux", "pyoci.linux.cgroups", "pyoci.schemas"],
    package_dir={"pyoci.schemas": "schemas"},
    package_data={"pyoci.schemas": ["*.json"], "pyoci": ["pyoci-waiter"]},
    install_requires=["cffi>=1.15", "jsonschema>=4"],
    cffi_modules=["pyoci/_build.py:ffibuilder"],
    cmdclass={"build_ext": BuildWithWaiter},
    entry_points={"console_scripts": ["pyoci=pyoci.cli:main"]},
)
