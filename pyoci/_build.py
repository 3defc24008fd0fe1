"""cffi build script for pyoci._native (out-of-line API mode).

The cdef is csrc/shim.h itself: the whole C surface Python may call.
Used by setup.py through ``cffi_modules``.
"""
import re
from pathlib import Path

from cffi import FFI

CSRC = Path(__file__).resolve().parent.parent / "csrc"


def _declarations(header):
    """shim.h without its preprocessor lines and comments: one list of the C
    surface, read by the compiler and by cffi alike."""
    text = re.sub(r"/\*.*?\*/", "", header.read_text(), flags=re.S)
    return "\n".join(line for line in text.splitlines() if not line.startswith("#"))


ffibuilder = FFI()
ffibuilder.cdef(_declarations(CSRC / "shim.h"))
ffibuilder.set_source(
    "pyoci._native",
    '#include "shim.h"',
    sources=[str(CSRC / "shim.c")],
    include_dirs=[str(CSRC)],
)

if __name__ == "__main__":
    ffibuilder.compile(verbose=True)
