"""procfs's mount lookups against this process's own /proc (any user may
read it): the ids a mount's check compares, read without file objects;
and the pidfds of processes that are gone, as each kernel says it."""
import os
import signal
import threading

from pyoci.linux import procfs


def mountinfo_lines():
    with open("/proc/self/mountinfo") as f:
        return [line.split() for line in f]


def test_mount_parent_is_mountinfos_second_field_for_every_mount():
    lines = mountinfo_lines()
    assert lines
    for fields in lines:
        assert procfs.mount_parent(int(fields[0])) == int(fields[1])


def test_mount_parent_matches_the_whole_id_at_a_lines_start(tmp_path):
    mountinfo = tmp_path / "mountinfo"
    mountinfo.write_text(
        "23 1 0:21 / / rw - ext4 /dev/vda rw\n"
        "123 23 0:22 / /mnt/12\\040 rw - tmpfs 12 rw,size=12k\n"
        "12 123 0:23 / /mnt/12\\040/x rw - proc proc rw\n")
    assert procfs.mount_parent(23, mountinfo) == 1
    assert procfs.mount_parent(123, mountinfo) == 23
    assert procfs.mount_parent(12, mountinfo) == 123
    assert procfs.mount_parent(2, mountinfo) is None
    assert procfs.mount_parent(0, mountinfo) is None


def test_mount_id_is_the_mount_an_open_directory_is_on():
    """/proc's fd is on the last mount made at /proc (what a lookup finds)."""
    by_point = {}
    for fields in mountinfo_lines():
        by_point[fields[4]] = int(fields[0])
    for path in ("/", "/proc"):
        fd = os.open(path, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            assert procfs.mount_id(fd) == by_point[path]
        finally:
            os.close(fd)


def test_read_all_reads_past_one_chunk_until_end_of_file():
    read_end, write_end = os.pipe()
    data = bytes(range(256)) * 1000  # 256000 bytes: several 64 KiB reads
    writer = threading.Thread(target=lambda: (os.write(write_end, data), os.close(write_end)))
    writer.start()
    try:
        assert procfs.read_all(read_end) == data
    finally:
        writer.join()
        os.close(read_end)


def test_open_pidfd_of_a_live_process_signals_it():
    pidfd = procfs.open_pidfd(os.getpid())
    try:
        signal.pidfd_send_signal(pidfd, 0)
    finally:
        os.close(pidfd)


def test_open_pidfd_of_a_thread_is_none():
    """Not a process: ENOENT since 6.15, EINVAL before."""
    release = threading.Event()
    started = threading.Event()
    thread_ids = []

    def run():
        thread_ids.append(threading.get_native_id())
        started.set()
        release.wait()

    thread = threading.Thread(target=run)
    thread.start()
    try:
        started.wait()
        assert procfs.open_pidfd(thread_ids[0]) is None
    finally:
        release.set()
        thread.join()


def test_open_pidfd_of_a_reaped_session_leader_is_none():
    """Its pid lives on as the session id of its child: before 6.15,
    pidfd_open finds it and says EINVAL (what delete saw when a container's
    init was reaped under it); since, ESRCH."""
    read_end, write_end = os.pipe()
    leader = os.fork()
    if leader == 0:
        try:
            os.setsid()
            if os.fork() == 0:
                os.close(write_end)
                os.read(read_end, 1)  # until the test closes its end
        finally:
            os._exit(0)
    os.close(read_end)
    try:
        os.waitpid(leader, 0)
        assert procfs.open_pidfd(leader) is None
    finally:
        os.close(write_end)
