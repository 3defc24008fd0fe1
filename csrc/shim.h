/* The C surface pyoci calls through cffi: thin wrappers over syscalls that
 * CPython 3.11's os module lacks. Each returns the syscall's result (-1 and
 * errno on failure); Python checks it at the call. pyoci/_build.py hands
 * this file's declarations to cffi's cdef, so they are written once. */
#ifndef PYOCI_SHIM_H
#define PYOCI_SHIM_H
#include <stdint.h>

int pyoci_unshare(int flags);
int pyoci_setns(int fd, int nstype);
int pyoci_mount(const char *source, const char *target, const char *fstype,
                unsigned long flags, const char *data);
int pyoci_umount2(const char *target, int flags);
int pyoci_open_tree(int dirfd, const char *path, unsigned int flags);
int pyoci_move_mount(int from_dirfd, const char *from_path, int to_dirfd,
                     const char *to_path, unsigned int flags);
int pyoci_mount_setattr(int dirfd, const char *path, unsigned int flags,
                        uint64_t attr_set, uint64_t attr_clr, uint64_t propagation,
                        uint64_t userns_fd);
/* openat2 (Linux 5.6) with how's fields as arguments. */
int pyoci_openat2(int dirfd, const char *path, uint64_t flags, uint64_t mode,
                  uint64_t resolve);
int pyoci_pivot_root(const char *new_root, const char *put_old);
int pyoci_capset(uint32_t effective[2], uint32_t permitted[2],
                 uint32_t inheritable[2]);
int pyoci_prctl(int option, unsigned long arg2, unsigned long arg3,
                unsigned long arg4, unsigned long arg5);
int pyoci_setdomainname(const char *name, size_t len);
long pyoci_join_session_keyring(const char *name);
int pyoci_personality(unsigned long persona);
int pyoci_sched_setattr(int pid, const void *attr, unsigned int flags);
int pyoci_ioprio_set(int which, int who, int ioprio);
long pyoci_set_mempolicy(int mode, const unsigned long *nodemask, unsigned long maxnode);
int pyoci_reset_signals(void);
long pyoci_bpf(int command, void *attr, unsigned int size);
int pyoci_seccomp_load(unsigned int flags, const void *filter, size_t length);
#endif
