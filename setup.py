"""Builds pyoci: the cffi shim (pyoci._native), the static fifo waiter, and
the seccomp syscall tables read from this machine's kernel headers."""
import json
import os
import platform
import re
import subprocess
import sys

from setuptools import setup
from setuptools.command.build_ext import build_ext
from distutils.command.build_scripts import build_scripts

WAITER_FLAGS = ["-O2", "-static", "-nostdlib", "-ffreestanding", "-fno-builtin",
                "-fno-stack-protector", "-fno-pie", "-no-pie", "-Wall", "-Werror"]


# libseccomp's architecture names -> the header defining their syscall numbers.
SYSCALL_HEADERS = {
    "x86_64": {"SCMP_ARCH_X86_64": "asm/unistd_64.h", "SCMP_ARCH_X86": "asm/unistd_32.h",
               "SCMP_ARCH_X32": "asm/unistd_x32.h"},
    "aarch64": {"SCMP_ARCH_AARCH64": "asm/unistd.h"},
}
X32_SYSCALL_BIT = 0x40000000


def syscall_numbers(compiler, header):
    """{name: number} from the #defines of HEADER."""
    macros = subprocess.run([compiler, "-E", "-dM", "-include", header, "-x", "c", "/dev/null"],
                            check=True, capture_output=True, text=True).stdout
    table = {}
    for name, value in re.findall(r"^#define __NR_(\w+) (.+)$", macros, re.M):
        found = re.fullmatch(r"\(?(__X32_SYSCALL_BIT \+ )?(\d+)\)?", value.strip())
        if found:
            table[name] = int(found.group(2)) + (X32_SYSCALL_BIT if found.group(1) else 0)
    return table


class BuildWithWaiter(build_ext):
    """Also builds pyoci/pyoci-waiter (csrc/waiter.c) and pyoci/syscalls.json."""

    def run(self):
        super().run()
        package_dir = "pyoci" if self.inplace else os.path.join(self.build_lib, "pyoci")
        os.makedirs(package_dir, exist_ok=True)
        compiler = os.environ.get("CC", "cc")
        subprocess.check_call([compiler, *WAITER_FLAGS, "-o",
                               os.path.join(package_dir, "pyoci-waiter"),
                               "csrc/waiter.c"])
        headers = SYSCALL_HEADERS.get(platform.machine(), {})
        tables = {arch: syscall_numbers(compiler, header) for arch, header in headers.items()}
        with open(os.path.join(package_dir, "syscalls.json"), "w") as f:
            json.dump(tables, f, sort_keys=True)


# The commands: their modules' command() runs them.
LAUNCHERS = {"pyoci": "pyoci.cli", "containerd-shim-pyoci-v2": "pyoci.shim.main"}


def lean_launcher(python, editable, module):
    """A command running MODULE's command(): PYTHON isolated and without
    `site` (-IS saves 3 ms of every call), finding our package and its
    dependencies on the paths that `site` would give PYTHON (asked now; for
    an EDITABLE install, this source tree too). An install laid out
    otherwise still works, through `site`."""
    def sys_path(*flags):
        return json.loads(subprocess.run(
            [python, *flags, "-c", "import json, sys; print(json.dumps(sys.path))"],
            check=True, capture_output=True, text=True).stdout)
    standard = sys_path("-I", "-S")
    paths = [path for path in sys_path("-I") if path not in standard]
    source = os.path.dirname(os.path.abspath(__file__))
    if editable and source not in paths:
        paths.append(source)
    return (f"#!{python} -IS\n"
            "import sys\n"
            f"sys.path += {paths!r}\n"
            "try:\n"
            f"    from {module} import command\n"
            "except ImportError:\n"
            "    import site\n"
            "    site.main()\n"
            f"    from {module} import command\n"
            "command()\n")


class BuildLeanLauncher(build_scripts):
    """Writes the launcher as is: setuptools and pip would rewrite a
    `#!python` line and drop its flags."""

    def run(self):
        self.mkpath(self.build_dir)
        for name, module in LAUNCHERS.items():
            path = os.path.join(self.build_dir, name)
            with open(path, "w") as f:
                f.write(lean_launcher(sys.executable,
                                      editable="editable_wheel" in self.distribution.commands,
                                      module=module))
            os.chmod(path, 0o755)


setup(
    name="pyoci-runtime",
    version="0.1.0",
    description="An OCI runtime-spec container runtime, drop-in for runc",
    python_requires=">=3.11",
    packages=["pyoci", "pyoci.linux", "pyoci.linux.cgroups", "pyoci.shim", "pyoci.schemas"],
    package_dir={"pyoci.schemas": "schemas"},
    package_data={"pyoci.schemas": ["*.json"], "pyoci": ["pyoci-waiter", "syscalls.json"]},
    install_requires=["cffi>=1.15", "jsonschema>=4"],
    cffi_modules=["pyoci/_build.py:ffibuilder"],
    scripts=list(LAUNCHERS),  # the names; BuildLeanLauncher writes them
    cmdclass={"build_ext": BuildWithWaiter, "build_scripts": BuildLeanLauncher},
)
