"""`pyoci features`: what this build supports, per runtime-spec features.md.

Only what pyoci really does is listed: AppArmor and SELinux are applied
where the host runs them (as runc, "enabled" says the runtime can); Intel
RDT is reported disabled until it is implemented.
"""
from pyoci import OCI_VERSION, __version__
from pyoci.linux import caps, mounts, namespaces, seccomp


def features():
    return {
        "ociVersionMin": "1.0.0",
        "ociVersionMax": OCI_VERSION,
        "hooks": ["prestart", "createRuntime", "createContainer", "startContainer",
                  "poststart", "poststop"],
        "mountOptions": sorted([*mounts.FLAG_OPTIONS, *mounts.PROPAGATION_OPTIONS,
                                *mounts.RECURSIVE_OPTIONS, *mounts.IDMAP_OPTIONS,
                                mounts.TMPCOPYUP]),
        "linux": {
            "namespaces": sorted(namespaces.FLAGS),
            "capabilities": list(caps.NAMES),
            "cgroup": {"v1": True, "v2": True, "systemd": True, "systemdUser": False,
                       "rdma": False},
            "seccomp": {"enabled": True, "actions": list(seccomp.ACTIONS),
                        "operators": list(seccomp.OPERATORS),
                        "archs": sorted(seccomp.AUDIT_ARCH) + [seccomp.X32],
                        "knownFlags": sorted(seccomp.FLAGS),
                        "supportedFlags": sorted(seccomp.FLAGS)},
            "apparmor": {"enabled": True},
            "selinux": {"enabled": True},
            "intelRdt": {"enabled": False},
            "mountExtensions": {"idmap": {"enabled": True}},
            "netDevices": {"enabled": True},
        },
        "annotations": {"org.opencontainers.runtime-spec.features.version": OCI_VERSION,
                        "io.github.pyoci.version": __version__},
    }
