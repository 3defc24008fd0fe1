/* pyoci-waiter: what a created container runs while it waits for `start`.
 *
 *   pyoci-waiter FIFO_FD SECCOMP_FD SECCOMP_FLAGS PROGRAM ARGV0 [ARGS...]
 *
 * The container's init has done all of its setup in Python, then executes
 * this (from a sealed memfd copy) so that a waiting container costs a few
 * pages instead of a parked interpreter. It:
 *   1. makes itself non-dumpable (it still holds a host fd, FIFO_FD),
 *   2. opens the exec fifo for writing through /proc/self/fd/FIFO_FD, which
 *      blocks until `start` opens the fifo for reading; where there is no
 *      /proc (a container without a mount namespace is only chrooted),
 *      FIFO_FD is the container's state directory and it opens exec.fifo
 *      in it,
 *   3. writes "0" and closes FIFO_FD,
 *   4. unless SECCOMP_FD is -1, reads a seccomp filter (an array of struct
 *      sock_filter) from it and installs it with SECCOMP_FLAGS: as late as
 *      possible, so that only execve runs under it,
 *   5. executes PROGRAM with ARGV0 ARGS... and the environment it was given.
 *      The fifo's write end is close-on-exec, so `start` reads end-of-file
 *      exactly when the exec has happened.
 * If step 4 or 5 fails it writes "S<errno>" or "E<errno>" to the fifo and
 * exits 127.
 *
 * No libc: it is static, tiny, and runs inside any root filesystem. */
#include <asm/unistd.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <sys/prctl.h>

#if defined(__x86_64__)
__asm__(".globl _start\n_start:\n"
        "  xor %rbp, %rbp\n  mov %rsp, %rdi\n  and $-16, %rsp\n"
        "  call waiter_main\n  hlt\n");

static long sys(long nr, long a, long b, long c, long d)
{
    long ret;
    register long r10 __asm__("r10") = d;
    __asm__ volatile("syscall" : "=a"(ret)
                     : "a"(nr), "D"(a), "S"(b), "d"(c), "r"(r10)
                     : "rcx", "r11", "memory");
    return ret;
}
#elif defined(__aarch64__)
__asm__(".globl _start\n_start:\n  mov x0, sp\n  bl waiter_main\n  brk #0\n");

static long sys(long nr, long a, long b, long c, long d)
{
    register long x8 __asm__("x8") = nr;
    register long x0 __asm__("x0") = a;
    register long x1 __asm__("x1") = b;
    register long x2 __asm__("x2") = c;
    register long x3 __asm__("x3") = d;
    __asm__ volatile("svc 0" : "+r"(x0) : "r"(x8), "r"(x1), "r"(x2), "r"(x3)
                     : "memory");
    return x0;
}
#else
#error "pyoci-waiter: unsupported architecture"
#endif

static void exit_now(int code)
{
    for (;;)
        sys(__NR_exit, code, 0, 0, 0);
}

/* Writes the decimal form of value (>= 0) ending just before end. */
static char *decimal(char *end, long value)
{
    do {
        *--end = '0' + value % 10;
        value /= 10;
    } while (value);
    return end;
}

/* A non-negative decimal number, or -1 for anything else ("-1" included). */
static long parse_number(const char *text)
{
    long value = 0;
    if (!*text)
        return -1;
    for (; *text; text++) {
        if (*text < '0' || *text > '9')
            return -1;
        value = value * 10 + (*text - '0');
    }
    return value;
}

/* Reports KIND, the errno and, if not NULL, the program it concerns
 * ("E2 /run.sh"), then exits. */
static void report_and_exit(long fifo, char kind, long err, const char *program)
{
    char report[24];
    char *start = decimal(report + sizeof(report), err);
    *--start = kind;
    sys(__NR_write, fifo, (long)start, report + sizeof(report) - start, 0);
    if (program) {
        long length = 0;
        while (program[length])
            length++;
        sys(__NR_write, fifo, (long)" ", 1, 0);
        sys(__NR_write, fifo, (long)program, length, 0);
    }
    exit_now(127);
}

/* The kernel caps a filter at 4096 instructions. */
static struct sock_filter filter[4096];

static long load_seccomp(long fd, long flags)
{
    long total = 0, n;
    while ((n = sys(__NR_read, fd, (long)filter + total, sizeof(filter) - total, 0)) > 0)
        total += n;
    sys(__NR_close, fd, 0, 0, 0);
    if (n < 0)
        return n;
    struct sock_fprog program = {(unsigned short)(total / sizeof(filter[0])), filter};
    return sys(__NR_seccomp, SECCOMP_SET_MODE_FILTER, flags, (long)&program, 0);
}

void waiter_main(long *stack)
{
    long argc = stack[0];
    char **argv = (char **)(stack + 1);
    char **envp = argv + argc + 1;

    sys(__NR_prctl, PR_SET_DUMPABLE, 0, 0, 0);
    if (argc < 6)
        exit_now(2);
    long fifo_fd = parse_number(argv[1]);
    long seccomp_fd = parse_number(argv[2]);
    long seccomp_flags = parse_number(argv[3]);
    if (fifo_fd < 0)
        exit_now(2);

    static const char prefix[] = "/proc/self/fd/";
    char path[sizeof(prefix) + 20];
    char digits[20];
    char *number = decimal(digits + sizeof(digits), fifo_fd);
    long n = 0;
    for (const char *p = prefix; *p; p++)
        path[n++] = *p;
    while (number < digits + sizeof(digits))
        path[n++] = *number++;
    path[n] = '\0';

    long fifo = sys(__NR_openat, AT_FDCWD, (long)path, O_WRONLY | O_CLOEXEC, 0);
    if (fifo == -ENOENT)
        fifo = sys(__NR_openat, fifo_fd, (long)"exec.fifo", O_WRONLY | O_CLOEXEC, 0);
    if (fifo < 0)
        exit_now(3);
    if (sys(__NR_write, fifo, (long)"0", 1, 0) != 1)
        exit_now(4);
    sys(__NR_close, fifo_fd, 0, 0, 0);

    if (seccomp_fd >= 0) {
        long err = load_seccomp(seccomp_fd, seccomp_flags < 0 ? 0 : seccomp_flags);
        if (err < 0)
            report_and_exit(fifo, 'S', -err, 0);
    }
    report_and_exit(fifo, 'E', -sys(__NR_execve, (long)argv[4], (long)(argv + 5), (long)envp, 0),
                    argv[4]);
}
