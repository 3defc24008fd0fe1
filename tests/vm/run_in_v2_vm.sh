#!/bin/bash
# Run a command as root inside a pure cgroup v2 VM that sees this machine's
# own filesystem, and exit with that command's status.
#
#   tests/vm/run_in_v2_vm.sh                  # the cgroup-relevant pytest subset
#   tests/vm/run_in_v2_vm.sh 'OCI_RUNTIME=$PWD/.venv/bin/pyoci .venv/bin/python -m pytest -q conformance'
#   tests/vm/run_in_v2_vm.sh .venv/bin/pyoci --root /tmp/r run --bundle /tmp/b id
#
# One argument is run by bash -c; several are run as one command line (argv).
# The command starts in this checkout (wherever it is cloned) with the same
# path inside the VM.
#
# The VM: Debian's 6.1 kernel (linux-image-amd64) booted by virtme-ng under
# QEMU software emulation (no KVM), with cgroup v1 disabled on the kernel
# command line, so /sys/fs/cgroup is cgroup2 only, and AppArmor enabled
# (apparmor=1 security=apparmor) for the LSM tests. The guest's root is the
# host's / over 9p, read-write; /tmp, /run, /var/tmp, /var/log and /var/cache
# are the guest's own (/tmp is a copy-on-write overlay of the host's /tmp:
# host files are visible, writes stay in the VM), and so is /etc (a copy,
# for the accounts tests make). This checkout and a status
# directory are shared read-write explicitly, so they work even under /tmp.
# A boot takes about 15-20 s; guest code runs about 30x slower than the host.
#
# Installs what it needs when missing (Debian packages, virtme-ng in its own
# venv, the project's .venv via `make install`). Root, non-interactive, no tty.
#
# Environment: VM_MEMORY (2G), VM_CPUS (2), VM_TIMEOUT seconds (3600),
# VM_KERNEL (newest /boot/vmlinuz-6.1*), VM_HOST_RW (1: guest may write the
# host's root; 0: only this checkout, the rest copy-on-write), VM_LSM (the
# major LSM the kernel enables: apparmor, the default, or selinux),
# VM_VERBOSE (1: show the kernel console), VNG_VENV (/opt/vng-venv),
# VNG_VERSION (1.42).
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd -P)
VM_MEMORY=${VM_MEMORY:-2G}
VM_CPUS=${VM_CPUS:-2}
VM_TIMEOUT=${VM_TIMEOUT:-3600}
VM_HOST_RW=${VM_HOST_RW:-1}
VM_VERBOSE=${VM_VERBOSE:-0}
VM_LSM=${VM_LSM:-apparmor}
VNG_VENV=${VNG_VENV:-/opt/vng-venv}
VNG_VERSION=${VNG_VERSION:-1.42}
APT_PACKAGES="qemu-system-x86 linux-image-amd64 busybox-static python3-venv apparmor
selinux-policy-default"
DEFAULT_COMMAND=".venv/bin/python -m pytest -q -p no:cacheprovider tests/test_integration_linux.py -k cgroup"

say() { echo "run_in_v2_vm: $*" >&2; }

if [ "$(id -u)" != 0 ]; then
    say "must run as root"; exit 2
fi

# --- dependencies (each step only when something is missing) ---------------
# quietly STEP...: its output is shown only if it fails.
quietly() {
    local log status=0
    log=$(mktemp)
    "$@" >"$log" 2>&1 </dev/null || status=$?
    [ "$status" = 0 ] || { cat "$log" >&2; say "failed ($status): $*"; }
    rm -f "$log"
    return "$status"
}

missing=$(for p in $APT_PACKAGES; do dpkg -s "$p" >/dev/null 2>&1 || echo "$p"; done)
if [ -n "$missing" ]; then
    say "installing:" $missing
    export DEBIAN_FRONTEND=noninteractive
    # Another apt may be running on a shared machine: wait for its lock.
    quietly apt-get -o DPkg::Lock::Timeout=600 update -qq || exit 2
    quietly apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends $missing || exit 2
fi

if [ "$("$VNG_VENV/bin/vng" --version 2>/dev/null)" != "virtme-ng $VNG_VERSION" ]; then
    say "installing virtme-ng $VNG_VERSION into $VNG_VENV"
    if [ ! -x "$VNG_VENV/bin/pip" ]; then
        quietly /usr/bin/python3 -m venv "$VNG_VENV" || exit 2
    fi
    quietly "$VNG_VENV/bin/pip" install -q --disable-pip-version-check "virtme-ng==$VNG_VERSION" || exit 2
fi

if [ ! -x "$REPO/.venv/bin/pyoci" ]; then
    say "building the project's .venv (make install)"
    quietly make -C "$REPO" install || exit 2
fi

KERNEL=${VM_KERNEL:-$(ls -v /boot/vmlinuz-6.1* 2>/dev/null | tail -n 1)}
if [ -z "$KERNEL" ] || [ ! -r "$KERNEL" ]; then
    say "no kernel found (/boot/vmlinuz-6.1*; set VM_KERNEL)"; exit 2
fi

# --- the command, and where its status comes back --------------------------
if [ $# -eq 0 ]; then
    set -- "$DEFAULT_COMMAND"
fi
if [ $# -eq 1 ]; then
    command_line="bash -c $(printf '%q' "$1")"
else
    command_line=$(printf '%q ' "$@")
fi

STATUS_DIR=$(mktemp -d /tmp/pyoci-v2vm.XXXXXX)
trap 'rm -rf "$STATUS_DIR"' EXIT

cat >"$STATUS_DIR/inner.sh" <<EOF
#!/bin/bash
# Runs in the VM as root. The status goes back through fd 9, opened now, so
# it reaches the host even if the command mounts over /tmp.
exec 9>$(printf '%q' "$STATUS_DIR")/status
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
export HOME=/root LANG=C.UTF-8
# Guest code runs about 30x slower: the test harness's per-command timeouts stretch.
export OCI_TIMEOUT_SCALE=4
if [ "\$(stat -f -c %T /sys/fs/cgroup)" != cgroup2fs ] || awk '\$3 == "cgroup" { found = 1 } END { exit !found }' /proc/mounts; then
    echo "run_in_v2_vm: the VM's cgroups are not pure v2:" >&2
    grep cgroup /proc/mounts >&2
    echo 125 >&9
    exit 125
fi
echo "run_in_v2_vm: \$(uname -r), cgroup2 controllers: \$(cat /sys/fs/cgroup/cgroup.controllers)" >&2
# /etc of the guest's own (the host's over 9p cannot take useradd's lock
# files, hard links): accounts the tests make stay in the VM.
mkdir -p /run/vm-etc && cp -a /etc/. /run/vm-etc/ && mount --bind /run/vm-etc /etc
cd $(printf '%q' "$REPO") || { echo 125 >&9; exit 125; }
$command_line </dev/null 9>&-
status=\$?
echo \$status >&9
exec 9>&-
exit \$status
EOF
chmod 755 "$STATUS_DIR/inner.sh"

vng_args=(--run "$KERNEL" --disable-kvm --memory "$VM_MEMORY" --cpus "$VM_CPUS"
          --append cgroup_no_v1=all --append systemd.unified_cgroup_hierarchy=1
          --append "$VM_LSM=1" --append "security=$VM_LSM"
          --rwdir "$REPO" --rwdir "$STATUS_DIR" --exec "$STATUS_DIR/inner.sh")
[ "$VM_HOST_RW" = 1 ] && vng_args+=(--rw)
[ "$VM_VERBOSE" = 1 ] && vng_args+=(--verbose)

say "booting $KERNEL (vng ${vng_args[*]})"
start=$(date +%s)
# vng runs virtme-run from its own bin directory. QEMU opens the guest's
# stdout and stderr as files, each at offset 0: a pipe (cat) keeps them from
# overwriting each other when the caller redirects to a regular file.
set +e
(cd / && PATH="$VNG_VENV/bin:$PATH" timeout --kill-after=30 "$VM_TIMEOUT" \
    "$VNG_VENV/bin/vng" "${vng_args[@]}" </dev/null 2>&1) | cat
vng_status=${PIPESTATUS[0]}
set -e
say "VM ran $(( $(date +%s) - start )) s (vng exit $vng_status)"

if [ ! -s "$STATUS_DIR/status" ]; then
    if [ "$vng_status" = 124 ] || [ "$vng_status" = 137 ]; then
        say "timed out after $VM_TIMEOUT s"
    else
        say "the command left no exit status: the VM failed (rerun with VM_VERBOSE=1)"
    fi
    exit 125
fi
exit "$(cat "$STATUS_DIR/status")"
