# Sourced by the test scripts that need a /sys/fs/cgroup of their own.
#
# mount_host_cgroups: in a mount namespace of one's own, fresh cgroup mounts
# like the host's at /sys/fs/cgroup: a new cgroup2 on a unified host;
# otherwise a tmpfs with each hierarchy mounted again (v1 ones by their
# controllers or name, the cgroup2 one as it was). In a cgroup namespace the
# new mounts show only its subtree.
mount_host_cgroups() {
    local cgroup_mounts target fs_type options controllers
    cgroup_mounts=$(awk '{ for (i = 7; $i != "-"; i++); if ($5 ~ "^/sys/fs/cgroup" && $(i+1) ~ /^cgroup2?$/) print $5, $(i+1), $(i+3) }' /proc/self/mountinfo)
    if echo "$cgroup_mounts" | grep -q '^/sys/fs/cgroup cgroup2 '; then
        umount -l /sys/fs/cgroup  # the same superblock cannot be mounted there twice
        mount -t cgroup2 cgroup2 /sys/fs/cgroup
        return
    fi
    mount -t tmpfs -o mode=755 tmpfs /sys/fs/cgroup
    echo "$cgroup_mounts" | while read -r target fs_type options; do
        mkdir -p "$target"
        if [ "$fs_type" = cgroup2 ]; then
            mount -t cgroup2 cgroup2 "$target"
        else
            controllers=$(echo "$options" | tr , '\n' | grep -v -x -e rw -e ro -e relatime -e noexec -e nosuid -e nodev | paste -sd,)
            case $controllers in name=*) controllers=none,$controllers ;; esac
            mount -t cgroup -o "$controllers" cgroup "$target"
        fi
    done
}
