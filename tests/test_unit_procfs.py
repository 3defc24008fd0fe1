"""procfs's mount lookups against this process's own /proc (any user may
read it): the ids a mount's check compares, read without file objects."""
import os
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
