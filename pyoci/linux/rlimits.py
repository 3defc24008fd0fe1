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


def above_hard_limits(resolved):
    """A refusal for each rlimit (of RESOLVED) whose hard limit is above
    this process's own, which only CAP_SYS_RESOURCE may raise, where the
    runtime lacks it: setrlimit would fail in the container's init."""
    found = []
    for index, (number, name, _, hard) in enumerate(resolved):
        current = resource.getrlimit(number)[1]
        if current == resource.RLIM_INFINITY or (hard != resource.RLIM_INFINITY and hard <= current):
            continue
        from pyoci.linux.caps import own_effective
        if own_effective("CAP_SYS_RESOURCE"):
            return []
        shown = "unlimited" if hard == resource.RLIM_INFINITY else hard
        found.append(ConfigError(
            f"config.json: process.rlimits[{index}]: the hard limit of {name} ({shown}) is above "
            f"this host's ({current}), and the runtime lacks CAP_SYS_RESOURCE to raise it"))
    return found


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
