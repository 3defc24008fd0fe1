"""`pyoci check BUNDLE`: would this bundle run here? Its config.json is
validated, then the host is checked against what the config needs, and
nothing is created. Every problem is one line, "config.json: PATH: what is
wrong (SECTION)", worded as create refuses it; what pyoci accepts although
the schema forbids it (as runc does, where engines send it) is a warning.
"""
import os

from pyoci import log
from pyoci.errors import ConfigError, PyociError


# Where a line names the container's own cgroup, which check cannot know.
CONTAINER_ID = "<container-id>"


class Report:
    def __init__(self, bundle):
        self.bundle = bundle
        self.problems = []
        self.warnings = []
        self.oci_version = None

    def lines(self):
        if self.problems:
            return [str(problem) for problem in self.problems] + \
                [f"warning: {warning}" for warning in self.warnings]
        count = len(self.warnings)
        return [f"warning: {warning}" for warning in self.warnings] + [
            f"{self.bundle}: config.json (ociVersion {self.oci_version}) is valid and this "
            f"host can run it" + (f" ({count} warning{'s' * (count != 1)})" if count else "")]


def check_bundle(bundle, systemd_cgroup=False, rootless=None):
    """The Report of BUNDLE: problems with its config.json first; the host's
    only once the config itself is sound, since they read it. SYSTEMD_CGROUP
    and ROOTLESS are the global flags create would be given."""
    from pyoci import spec, validate
    report = Report(os.path.abspath(bundle))
    try:
        raw = spec.read(report.bundle)
    except ConfigError as exc:
        report.problems.append(exc)
        return report
    report.warnings += spec.accept_deviations(raw)
    report.problems += validate.config_problems(raw)
    if report.problems:
        return report
    report.oci_version = raw["ociVersion"]
    _collect(report, lambda: spec.check_supported(raw))
    config = spec.Config(raw, report.bundle)
    report.problems += spec.problems(config)
    if report.problems:
        return report
    log.collect_warnings(report.warnings)  # what create would warn about (capabilities)
    try:
        _collect(report, lambda: _process_settings_problems(config))
    finally:
        log.collect_warnings(None)
    from pyoci.lifecycle import CreateOptions
    options = CreateOptions(bundle, systemd_cgroup=systemd_cgroup, rootless=rootless)
    for source in _host_checks(config, options):
        _collect(report, source)
    return report


def _process_settings_problems(config):
    """Capabilities, rlimits, scheduling and seccomp, compiled as create
    compiles them; the first refusal raises."""
    from pyoci.lifecycle import process_settings
    process_settings(config, config.process)
    return []


def _collect(report, source):
    """SOURCE() returns a list of refusals, or raises the one it found."""
    try:
        report.problems += source() or []
    except PyociError as exc:
        report.problems.append(exc)


def _host_checks(config, options):
    """What the host must have for CONFIG, each a function returning refusals."""
    from pyoci import hooks
    from pyoci.linux import cgroups, devices, mounts, namespaces
    return (lambda: namespaces.host_problems(config.linux.namespaces),
            lambda: namespaces.privilege_problems(config.linux),
            lambda: namespaces.id_map_problems(config.linux),
            lambda: cgroups.manager_problems(config, CONTAINER_ID, options.systemd_cgroup,
                                             options.rootless),
            lambda: cgroups.missing_controllers(config.linux.resources),
            lambda: devices.host_problems(config),
            lambda: mounts.host_problems(config),
            lambda: hooks.missing_programs(config.hooks, config.root_path),
            lambda: _program_problems(config))


def _program_problems(config):
    """process.args[0], looked up in the root filesystem as init will."""
    if config.process is None:
        return []
    from pyoci.init import find_program
    from pyoci.linux.inroot import secure_join

    def may_execute(candidate):
        path = secure_join(config.root_path, candidate)
        return os.path.isfile(path) and os.access(path, os.X_OK)

    name = config.process.args[0] if config.process.args else ""
    try:
        find_program(name, config.process.env, may_execute,
                     lambda path: os.stat(secure_join(config.root_path, path)))
    except PyociError as exc:
        return [ConfigError(f"config.json: process.args[0]: {exc}")]
    return []
