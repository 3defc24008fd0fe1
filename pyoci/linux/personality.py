"""linux.personality: the execution domain and its flags, for personality(2).

The spec names the domains LINUX and LINUX32 and no flags yet; the flags
accepted are personality.h's, by name. personality(2) survives exec, so
init and exec processes set it just before they become the program.
"""
from pyoci.errors import ConfigError

DOMAINS = {"LINUX": 0x0000, "LINUX32": 0x0008}
FLAGS = {"UNAME26": 0x0020000, "ADDR_NO_RANDOMIZE": 0x0040000, "FDPIC_FUNCPTRS": 0x0080000,
         "MMAP_PAGE_ZERO": 0x0100000, "ADDR_COMPAT_LAYOUT": 0x0200000,
         "READ_IMPLIES_EXEC": 0x0400000, "ADDR_LIMIT_32BIT": 0x0800000,
         "SHORT_INODE": 0x1000000, "WHOLE_SECONDS": 0x2000000, "STICKY_TIMEOUTS": 0x4000000,
         "ADDR_LIMIT_3GB": 0x8000000}


def persona(raw):
    """The personality(2) value of linux.personality RAW, or None if unset."""
    if not raw:
        return None
    value = DOMAINS[raw["domain"]]  # the schema allows only these
    for name in raw.get("flags") or ():
        if name not in FLAGS:
            raise ConfigError(f"config.json: linux.personality.flags: unknown flag {name!r} "
                              f"(known: {', '.join(FLAGS)})")
        value |= FLAGS[name]
    return value
