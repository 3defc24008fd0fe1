"""process.rlimits, set by name."""
import resource

from pyoci.errors import ConfigError, ExecError, errno_text


def resolve(rlimits):
    """[(resource number, soft, hard)] for the config's rlimits."""
    result = []
    seen = set()
    for rlimit in rlimits:
        number = getattr(resource, rlimit.type, None)
        if not rlimit.type.startswith("RLIMIT_") or number is None:
            raise ConfigError(f"config.json: process.rlimits: unknown rlimit type {rlimit.type!r}")
        if number in seen:
            raise ConfigError(f"config.json: process.rlimits: duplicate type {rlimit.type!r}")
        seen.add(number)
        result.append((number, rlimit.type, _limit(rlimit.soft), _limit(rlimit.hard)))
    return result


def _limit(value):
    """The spec's 2^64-1 and Python's RLIM_INFINITY are both 'unlimited'."""
    return resource.RLIM_INFINITY if value >= 2**63 else value


def apply(resolved):
    for number, name, soft, hard in resolved:
        try:
            resource.setrlimit(number, (soft, hard))
        except (OSError, ValueError) as exc:
            reason = errno_text(exc.errno) if isinstance(exc, OSError) else str(exc)
            raise ExecError(f"setrlimit {name}: {reason}") from None
