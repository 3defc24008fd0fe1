#!/bin/bash
# systemd as PID 1 of namespaces of its own, for the --systemd-cgroup tests:
# this machine and the cgroup v2 VM boot without systemd.
#
#   in_systemd_namespaces.sh boot CGROUP_DIR...   # becomes systemd (run it in the background)
#   in_systemd_namespaces.sh enter PID COMMAND... # runs COMMAND beside that systemd
#
# boot: in new pid, mount, cgroup and uts namespaces, joins the cgroup
# directories given (one per hierarchy: they become the root of systemd's
# cgroup namespace), mounts a private /run and fresh cgroup filesystems (which show
# only that subtree), and execs systemd with a target that has no
# dependencies: it manages cgroups and starts nothing of the host's (no
# tmpfiles cleaning /tmp, no services). SIGKILL to it ends everything inside.
#
# enter: COMMAND runs in systemd's namespaces from a leaf cgroup of its own
# (pyoci-runner), as a command on a systemd host runs in some service's cgroup.
set -euo pipefail

mode=$1
shift
case $mode in
boot)
    exec unshare --pid --fork --mount --uts --propagation private "$0" join "$@"
    ;;
join)
    # PID 1 of the new pid namespace joins the cgroups, then makes them the
    # root of its cgroup namespace. unshare's own process stays behind, where
    # it was: on v2 a process left in that root would keep systemd from
    # enabling controllers below it.
    for dir in "$@"; do
        echo 0 > "$dir/cgroup.procs"
    done
    exec unshare --cgroup "$0" inside
    ;;
inside)
    . "$(dirname "$(realpath "$0")")/../cgroups/mount_host_cgroups.sh"
    mount -t proc proc /proc
    mount -t tmpfs -o mode=755 tmpfs /run
    mount_host_cgroups
    mkdir -p /run/systemd/system
    printf '[Unit]\nDescription=pyoci tests\nDefaultDependencies=no\n' \
        > /run/systemd/system/pyoci-tests.target
    export container=pyoci-tests
    exec /lib/systemd/systemd --unit=pyoci-tests.target
    ;;
enter)
    pid=$1
    shift
    exec nsenter -t "$pid" -a "$(realpath "$0")" runner "$@"
    ;;
runner)
    if [ -e /sys/fs/cgroup/cgroup.controllers ]; then
        hierarchies=/sys/fs/cgroup
    else
        hierarchies=$(ls -d /sys/fs/cgroup/*/)
    fi
    for dir in $hierarchies; do
        mountpoint -q "$dir" || continue  # systemd's cpu,cpuacct and the like
        mkdir -p "$dir/pyoci-runner"
        # A new v1 cpuset is empty and refuses tasks (v2 inherits from the parent).
        if [ -e "$dir/cpuset.cpus" ] && [ -e "$dir/cgroup.clone_children" ] &&
                [ ! -s "$dir/pyoci-runner/cpuset.cpus" ]; then
            cat "$dir/cpuset.cpus" > "$dir/pyoci-runner/cpuset.cpus"
            cat "$dir/cpuset.mems" > "$dir/pyoci-runner/cpuset.mems"
        fi
        echo $$ > "$dir/pyoci-runner/cgroup.procs"
    done
    exec "$@"
    ;;
*)
    echo "usage: $0 boot CGROUP_DIR... | enter PID COMMAND..." >&2
    exit 2
    ;;
esac
