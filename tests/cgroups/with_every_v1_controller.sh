#!/bin/bash
# with_every_v1_controller.sh COMMAND...: COMMAND in a mount namespace of its
# own whose /sys/fs/cgroup has every cgroup v1 controller this kernel has: the
# host's hierarchies again, and those the host leaves unmounted (net_cls and
# net_prio together, as systemd mounts them; the others one each), so that
# the limits of controllers this host does not mount are tested on the
# kernel too. A v1 or hybrid host only.
#
# A hierarchy outlives the namespace when it holds cgroups at the unmount,
# so every command run this way (create, then state, delete, a cat of a
# cgroup file) sees the same cgroups. The kernel frees it only at an unmount
# that finds it empty: once the containers are gone, one more run (of
# `true`) gives the controllers back to the host. A controller that cannot
# be mounted (one the hybrid host's cgroup2 uses) is left out: the tests
# then expect its clear error. COMMAND finds the hierarchies this script
# added in $ADDED_HIERARCHIES (their directory names, space-separated).
set -euo pipefail

if [ "${1:-}" != --inside ]; then
    exec unshare --mount --propagation private "$0" --inside "$@"
fi
shift
. "$(dirname "$(realpath "$0")")/mount_host_cgroups.sh"
mounted=$(awk '{ for (i = 7; $i != "-"; i++); if ($(i+1) == "cgroup") print $(i+3) }' /proc/self/mountinfo | tr , '\n')
# /proc/cgroups: name, hierarchy, cgroups, enabled.
unmounted=$(awk 'NR > 1 && $4 == 1 { print $1 }' /proc/cgroups | grep -vxF "$mounted" || true)
mount_host_cgroups
ADDED_HIERARCHIES=

together=no
if echo "$unmounted" | grep -qx net_cls && echo "$unmounted" | grep -qx net_prio; then
    together=yes
fi
for controllers in $unmounted; do
    if [ "$together" = yes ]; then
        case $controllers in
        net_cls) controllers=net_cls,net_prio ;;
        net_prio) continue ;;
        esac
    fi
    mkdir -p "/sys/fs/cgroup/$controllers"
    if mount -t cgroup -o "$controllers" cgroup "/sys/fs/cgroup/$controllers" 2>/dev/null; then
        ADDED_HIERARCHIES="${ADDED_HIERARCHIES:+$ADDED_HIERARCHIES }$controllers"
        if [ "$controllers" = net_cls,net_prio ]; then  # systemd's links
            ln -s net_cls,net_prio /sys/fs/cgroup/net_cls
            ln -s net_cls,net_prio /sys/fs/cgroup/net_prio
        fi
    else
        rmdir "/sys/fs/cgroup/$controllers"
    fi
done
export ADDED_HIERARCHIES
exec "$@"
