/* pyoci-waiter: what a created container runs while it waits for `start`.
 *
 *   pyoci-waiter FIFO_FD PROGRAM ARGV0 [ARGS...]
 *
 * The container's init has done all of its setup in Python, then executes
 * this (from a sealed memfd copy) so that a waiting container costs a few
 * pages instead of a parked interpreter. It:
 *   1. makes itself non-dumpable (it still holds a host fd, FIFO_FD),
 *   2. opens the exec fifo for writing through /proc/self/fd/FIFO_FD, which
 *      blocks until `start` opens the fifo for reading,
 *   3. writes "0", closes FIFO_FD, and executes PROGRAM with ARGV0 ARGS...
 *      and the environment it was given. The write end is close-on-exec, so
 *      `start` reads end-of-file exactly when the exec has happened.
 * If the exec fails it writes "E<errno>" to the fifo and exits 127.
 *
 * No libc: it is static, tiny, and runs inside any root filesystem. */
#include <asm/unistd.h>
#include <fcntl.h>
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

static long parse_fd(const char *text)
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

void waiter_main(long *stack)
{
    long argc = stack[0];
    char **argv = (char **)(stack + 1);
    char **envp = argv + argc + 1;

    sys(__NR_prctl, PR_SET_DUMPABLE, 0, 0, 0);
    long fifo_fd = argc >= 4 ? parse_fd(argv[1]) : -1;
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
    if (fifo < 0)
        exit_now(3);
    if (sys(__NR_write, fifo, (long)"0", 1, 0) != 1)
        exit_now(4);
    sys(__NR_close, fifo_fd, 0, 0, 0);

    long err = -sys(__NR_execve, (long)argv[2], (long)(argv + 3), (long)envp, 0);
    char report[24];
    char *start = decimal(report + sizeof(report), err);
    *--start = 'E';
    sys(__NR_write, fifo, (long)start, report + sizeof(report) - start, 0);
    exit_now(127);
}
