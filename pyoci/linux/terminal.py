"""The container's pseudo-terminal: made inside the container's devpts, its
master handed to the engine over the console socket (SCM_RIGHTS, as runc),
its slave made the init's controlling terminal and stdio."""
import fcntl
import os
import stat
import struct
import termios

from pyoci.errors import ExecError
from pyoci.linux import inroot, unix
from pyoci.linux.mounts import MS_BIND

TIOCSPTLCK = 0x40045431
TIOCGPTN = 0x80045430


def open_pty():
    """(master fd, slave path) from /dev/ptmx of the current root."""
    master = os.open("/dev/ptmx", os.O_RDWR | os.O_NOCTTY | os.O_CLOEXEC)
    fcntl.ioctl(master, TIOCSPTLCK, struct.pack("i", 0))
    number = struct.unpack("I", fcntl.ioctl(master, TIOCGPTN, b"\0\0\0\0"))[0]
    return master, f"/dev/pts/{number}"


def set_size(fd, rows, columns):
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, columns, 0, 0))


def _mount_console(sys, slave_path):
    """The slave over /dev/console, which must not be a link: the bind
    would go over whatever it points to, inside /proc perhaps, before the
    masks and read-only paths are made (CVE-2025-52565)."""
    root = inroot.open_root("/")
    try:
        place = inroot.make_leaf_in(sys, root, "/dev/console", "file")
    finally:
        os.close(root)
    try:
        if stat.S_ISLNK(os.fstat(place).st_mode):
            raise ExecError("/dev/console is a symbolic link: refusing to mount the console "
                            "over what it points to")
        sys.mount(slave_path, inroot.fd_path(place), "bind", MS_BIND)
    finally:
        os.close(place)


def send_master(console_socket_fd, master):
    sock = unix.of_fd(console_socket_fd)
    try:
        unix.send_fds(sock, b"/dev/ptmx", [master])
    finally:
        sock.close()


def become_controlling(sys, slave_path, console_size, mount_console):
    """Make the slave the controlling tty and fds 0-2 (and, for init, /dev/console)."""
    if mount_console:
        _mount_console(sys, slave_path)
    slave = os.open(slave_path, os.O_RDWR | os.O_CLOEXEC)
    # As runc: "\n" stays "\n", so what reads the terminal through a pipe
    # sees no "\r" the program did not write.
    attributes = termios.tcgetattr(slave)
    attributes[1] &= ~termios.ONLCR
    termios.tcsetattr(slave, termios.TCSANOW, attributes)
    if console_size:
        set_size(slave, console_size["height"], console_size["width"])
    for fd in (0, 1, 2):
        os.dup2(slave, fd)
    os.close(slave)
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)
