#define _GNU_SOURCE
#include <sched.h>
#include <signal.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/personality.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <unistd.h>
#include <linux/capability.h>
#include <linux/filter.h>
#include <linux/openat2.h>
#include <linux/seccomp.h>
#include "shim.h"

#ifndef KEYCTL_JOIN_SESSION_KEYRING
#define KEYCTL_JOIN_SESSION_KEYRING 1
#endif

int pyoci_unshare(int flags) { return unshare(flags); }

int pyoci_setns(int fd, int nstype) { return setns(fd, nstype); }

int pyoci_mount(const char *source, const char *target, const char *fstype,
                unsigned long flags, const char *data)
{
    return mount(source, target, fstype, flags, data);
}

int pyoci_umount2(const char *target, int flags) { return umount2(target, flags); }

/* The new mount API (Linux 5.2; mount_setattr 5.12): detached copies of a
 * tree, moved into place, and attributes set on a whole tree at once. */
int pyoci_open_tree(int dirfd, const char *path, unsigned int flags)
{
    return open_tree(dirfd, path, flags);
}

int pyoci_move_mount(int from_dirfd, const char *from_path, int to_dirfd,
                     const char *to_path, unsigned int flags)
{
    return move_mount(from_dirfd, from_path, to_dirfd, to_path, flags);
}

int pyoci_mount_setattr(int dirfd, const char *path, unsigned int flags,
                        uint64_t attr_set, uint64_t attr_clr, uint64_t propagation,
                        uint64_t userns_fd)
{
    struct mount_attr attr = {
        .attr_set = attr_set, .attr_clr = attr_clr,
        .propagation = propagation, .userns_fd = userns_fd,
    };
    return mount_setattr(dirfd, path, flags, &attr, sizeof(attr));
}

/* Resolution the kernel keeps inside a root: RESOLVE_IN_ROOT and friends. */
int pyoci_openat2(int dirfd, const char *path, uint64_t flags, uint64_t mode,
                  uint64_t resolve)
{
    struct open_how how = { .flags = flags, .mode = mode, .resolve = resolve };
    return syscall(SYS_openat2, dirfd, path, &how, sizeof(how));
}

int pyoci_pivot_root(const char *new_root, const char *put_old)
{
    return syscall(SYS_pivot_root, new_root, put_old);
}

/* Capability sets travel as two 32-bit words each (version 3 ABI). */
int pyoci_capset(uint32_t effective[2], uint32_t permitted[2],
                 uint32_t inheritable[2])
{
    struct __user_cap_header_struct header = {_LINUX_CAPABILITY_VERSION_3, 0};
    struct __user_cap_data_struct data[2];
    for (int i = 0; i < 2; i++) {
        data[i].effective = effective[i];
        data[i].permitted = permitted[i];
        data[i].inheritable = inheritable[i];
    }
    return syscall(SYS_capset, &header, data);
}

int pyoci_prctl(int option, unsigned long arg2, unsigned long arg3,
                unsigned long arg4, unsigned long arg5)
{
    return prctl(option, arg2, arg3, arg4, arg5);
}

int pyoci_setdomainname(const char *name, size_t len)
{
    return setdomainname(name, len);
}

long pyoci_join_session_keyring(const char *name)
{
    return syscall(SYS_keyctl, KEYCTL_JOIN_SESSION_KEYRING, name);
}

int pyoci_personality(unsigned long persona) { return personality(persona); }

/* ATTR is a struct sched_attr, its size in its first field (Python packs it). */
int pyoci_sched_setattr(int pid, const void *attr, unsigned int flags)
{
    return syscall(SYS_sched_setattr, pid, attr, flags);
}

int pyoci_ioprio_set(int which, int who, int ioprio)
{
    return syscall(SYS_ioprio_set, which, who, ioprio);
}

long pyoci_set_mempolicy(int mode, const unsigned long *nodemask, unsigned long maxnode)
{
    return syscall(SYS_set_mempolicy, mode, nodemask, maxnode);
}

/* FILTER is LENGTH bytes of struct sock_filter, as pyoci/linux/seccomp.py assembles them. */
int pyoci_seccomp_load(unsigned int flags, const void *filter, size_t length)
{
    struct sock_fprog program = {
        .len = (unsigned short)(length / sizeof(struct sock_filter)),
        .filter = (struct sock_filter *)filter,
    };
    return syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, flags, &program);
}

/* Every signal to its default action and an empty mask, for exec. The raw
 * syscall reaches the signals glibc reserves (32, 33), which sigaction(3) and
 * so Python refuse, yet which a parent may have left ignored. */
int pyoci_reset_signals(void)
{
    struct {
        void *handler;
        unsigned long flags;
        void *restorer;
        unsigned long mask;
    } action;
    memset(&action, 0, sizeof(action));   /* SIG_DFL */
    for (int signum = 1; signum <= 64; signum++) {
        if (signum == SIGKILL || signum == SIGSTOP)
            continue;
        if (syscall(SYS_rt_sigaction, signum, &action, NULL, 8) < 0)
            return -1;
    }
    unsigned long empty = 0;
    return syscall(SYS_rt_sigprocmask, SIG_SETMASK, &empty, NULL, 8);
}

long pyoci_bpf(int command, void *attr, unsigned int size)
{
    return syscall(SYS_bpf, command, attr, size);
}
