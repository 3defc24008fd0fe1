"""Mounts and the root filesystem on the kernel, beside runc on the same bundle.

Each test builds one bundle and runs it on pyoci and, where runc 1.1.5 has
the feature, on runc, expecting the same result; the security tests also
try the escape and look at the host afterwards.
"""
import os
import subprocess
from pathlib import Path

import pytest

from conformance.bundle import bind_mount, tmpfs_mount, user_namespace
from conformance.harness import (OUT, PYOCI, RUNC, LeakCheck, hand_directories_to,
                                 private_runtime, probe_bundle)

pytestmark = pytest.mark.root

USERNS_ROOT = 100000
BOTH = (PYOCI, RUNC)


class Outcome:
    def __init__(self, completed, output):
        self.returncode = completed.returncode
        self.stderr = completed.stderr.strip()
        self.output = output

    def __repr__(self):
        return f"<exit {self.returncode} stderr={self.stderr!r} output={self.output!r}>"


def host_mount(*args):
    subprocess.run(["mount", *args], check=True)


def bundle_in(directory, script, mutate=None, userns=False):
    """A probe bundle (out/output, seen as /out); USERNS: in a user namespace
    whose root is host uid USERNS_ROOT."""
    def configure(config):
        if userns:
            user_namespace(config, USERNS_ROOT)
        if mutate is not None:
            mutate(config)
    bundle = probe_bundle(directory, script, configure)
    if userns:
        hand_directories_to(bundle, USERNS_ROOT)
    return bundle


def run_on(command, bundle, *global_args, run_args=()):
    """Run BUNDLE to its end on COMMAND; what it printed, and how the runtime ended."""
    output = Path(bundle) / "out" / "output"
    if output.exists():
        output.unlink()
    with private_runtime(command) as runtime:
        runtime.argv[1:1] = list(global_args)
        leaks = LeakCheck(runtime, bundle)
        try:
            completed = runtime.run("run", *run_args, "--bundle", bundle, runtime.new_id(),
                                    check=False)
            runtime.force_delete_all()
            assert leaks.leftovers() == {}, runtime.name
        finally:
            leaks.close()
    return Outcome(completed, output.read_text() if output.exists() else "")


def run_each(bundle, runtimes=BOTH, run_args=()):
    return {os.path.basename(command): run_on(command, bundle, run_args=run_args)
            for command in runtimes}


def mount_options_of(output, point):
    """The per-mount options of POINT in a mountinfo printed by the container."""
    for line in output.splitlines():
        fields = line.split()
        if len(fields) > 5 and fields[4] == point:
            return set(fields[5].split(","))
    raise AssertionError(f"{point} not in mountinfo:\n{output}")


def optional_fields_of(output, point):
    for line in output.splitlines():
        fields = line.split()
        if len(fields) > 5 and fields[4] == point:
            return fields[6:fields.index("-")]
    raise AssertionError(f"{point} not in mountinfo:\n{output}")


# ------------------------------------------------- 1. recursive attributes

def tree_with_submount(scratch, *submount_options):
    """A host directory with a file, and a tmpfs mounted below it (with a file too)."""
    source = scratch / "source"
    (source / "sub").mkdir(parents=True)
    (source / "file").write_text("top\n")
    flags = tuple(option for option in submount_options if option != "ro")
    host_mount("-t", "tmpfs", "-o", ",".join(("mode=777",) + flags), "tmpfs", str(source / "sub"))
    (source / "sub" / "file").write_text("sub\n")
    if "ro" in submount_options:
        host_mount("-o", "remount,ro", str(source / "sub"))
    return source


def test_recursive_read_only_reaches_submounts_and_holds(scratch):
    source = tree_with_submount(scratch)
    script = ("grep ' /mnt' /proc/self/mountinfo; touch /mnt/x; echo top=$?; "
              "touch /mnt/sub/y; echo sub=$?; mount -o remount,rw /mnt/sub; echo remount=$?; "
              "touch /mnt/sub/z; echo after=$?")
    bundle = bundle_in(scratch / "bundle", script, lambda c: c["mounts"].append(
        bind_mount(source, "/mnt", "rro", "rnosuid", "rnodev", "rnoexec")))
    for name, outcome in run_each(bundle).items():
        assert outcome.returncode == 0, (name, outcome)
        for point in ("/mnt", "/mnt/sub"):
            assert {"ro", "nosuid", "nodev", "noexec"} <= mount_options_of(outcome.output, point)
        assert "top=1" in outcome.output and "sub=1" in outcome.output, name
        assert "after=1" in outcome.output, name  # no capability to undo it
    assert sorted(os.listdir(source)) == ["file", "sub"]
    assert sorted(os.listdir(source / "sub")) == ["file"]


# Each recursive option, over a tree whose submount has every flag it could clear.
RECURSIVE = ["rro", "rrw", "rnosuid", "rsuid", "rnodev", "rdev", "rnoexec", "rexec",
             "rrelatime", "rnorelatime", "ratime", "rnoatime", "rstrictatime", "rnodiratime",
             "rdiratime", "rnosymfollow", "rsymfollow"]


@pytest.mark.parametrize("option", RECURSIVE)
def test_each_recursive_option_as_runc(scratch, option):
    source = tree_with_submount(scratch, "nosuid", "nodev", "noexec", "noatime", "nodiratime",
                                "nosymfollow", "ro")
    bundle = bundle_in(scratch / "bundle", "cat /proc/self/mountinfo",
                       lambda c: c["mounts"].append(bind_mount(source, "/mnt", option)))
    outcomes = run_each(bundle)
    seen = {name: [mount_options_of(outcome.output, point) for point in ("/mnt", "/mnt/sub")]
            for name, outcome in outcomes.items() if outcome.returncode == 0}
    if option == "ratime":
        # runc 1.1.5 clears only noatime of the atime field, which the kernel
        # refuses (EINVAL); pyoci sets the field to relatime, as `atime` means.
        assert "invalid argument" in outcomes["runc"].stderr
        assert all("relatime" in options for options in seen["pyoci"]), seen
        return
    assert seen["pyoci"] == seen["runc"]


def test_unknown_recursive_option_is_refused(scratch):
    source = scratch / "source"
    source.mkdir()
    bundle = bundle_in(scratch / "bundle", "true", lambda c: c["mounts"].append(
        bind_mount(source, "/mnt", "rnoexecc")))
    outcome = run_on(PYOCI, bundle)
    assert outcome.returncode == 1
    assert outcome.stderr.count("\n") == 0 and "'rnoexecc'" in outcome.stderr


def test_data_options_on_a_bind_are_accepted_as_runc_and_said_under_debug(scratch):
    """runtime-tools' `mounts` program gives its binds "mode=755,size=1k"."""
    source = scratch / "source"
    source.mkdir()
    bundle = bundle_in(scratch / "bundle", "test -d /mnt && echo bound",
                       lambda c: c["mounts"].append(bind_mount(source, "/mnt", "mode=755", "size=1k")))
    for name, outcome in run_each(bundle).items():
        assert (outcome.returncode, outcome.output) == (0, "bound\n"), (name, outcome)
    debug = run_on(PYOCI, bundle, "--debug")
    assert "has no effect on a bind mount" in debug.stderr


# ------------------------------------------------------ 2. idmapped mounts

def owned_tree(scratch, name="idsource"):
    source = scratch / name
    source.mkdir()
    source.chmod(0o755)
    (source / "file").write_text("data\n")
    os.chown(source / "file", 1, 2)
    return source


def idmapped(source, destination, *options, mappings=True):
    mount = bind_mount(source, destination, *options)
    if mappings:
        mount["uidMappings"] = [{"containerID": 0, "hostID": USERNS_ROOT, "size": 65536}]
        mount["gidMappings"] = [{"containerID": 0, "hostID": USERNS_ROOT, "size": 65536}]
    return mount


def test_idmapped_mount_without_user_namespace(scratch):
    """On-disk ids are shifted by the mount's mappings: 1:2 shows as 100001:100002."""
    source = owned_tree(scratch)
    bundle = bundle_in(scratch / "bundle", "stat -c %u:%g /mnt/file",
                       lambda c: c["mounts"].append(idmapped(source, "/mnt", "idmap")))
    outcome = run_on(PYOCI, bundle)
    assert (outcome.returncode, outcome.output) == (0, f"{USERNS_ROOT + 1}:{USERNS_ROOT + 2}\n")
    assert os.stat(source / "file").st_uid == 1  # the host's files are untouched


@pytest.mark.parametrize("mappings", [True, False], ids=["own-mappings", "container-mappings"])
def test_idmapped_mount_in_a_user_namespace(scratch, mappings):
    """With the container's own mappings, the files' owners read as on disk,
    and files the container makes are stored as those ids on disk."""
    source = owned_tree(scratch)
    source.chmod(0o777)
    bundle = bundle_in(scratch / "bundle", "stat -c %u:%g /mnt/file; touch /mnt/made",
                       lambda c: c["mounts"].append(
                           idmapped(source, "/mnt", "idmap", mappings=mappings)), userns=True)
    outcome = run_on(PYOCI, bundle)
    assert (outcome.returncode, outcome.output) == (0, "1:2\n"), outcome
    made = os.stat(source / "made")
    assert (made.st_uid, made.st_gid) == (0, 0)


@pytest.mark.parametrize("option", ["idmap", "ridmap"])
def test_ridmap_maps_submounts_and_idmap_only_the_top(scratch, option):
    source = owned_tree(scratch)
    (source / "sub").mkdir()
    host_mount("-t", "tmpfs", "tmpfs", str(source / "sub"))
    (source / "sub" / "file").write_text("sub\n")
    os.chown(source / "sub" / "file", 3, 3)
    bundle = bundle_in(scratch / "bundle", "stat -c %u /mnt/file /mnt/sub/file",
                       lambda c: c["mounts"].append(idmapped(source, "/mnt", "rbind", option)),
                       userns=True)
    outcome = run_on(PYOCI, bundle)
    sub_owner = "3" if option == "ridmap" else "65534"  # unmapped: the overflow id
    assert (outcome.returncode, outcome.output) == (0, f"1\n{sub_owner}\n"), outcome


def test_idmapped_mount_is_the_source_of_a_later_mount(scratch):
    source = owned_tree(scratch)
    bundle_dir = scratch / "bundle"

    def mounts(config):
        config["mounts"].append(idmapped(source, "/data", "idmap"))
        config["mounts"].append(bind_mount(bundle_dir / "rootfs" / "data" / "file", "/later"))
    bundle = bundle_in(bundle_dir, "stat -c %u:%g /later", mounts)
    outcome = run_on(PYOCI, bundle)
    assert (outcome.returncode, outcome.output) == (0, f"{USERNS_ROOT + 1}:{USERNS_ROOT + 2}\n")


@pytest.mark.parametrize("case", ["procfs-cannot", "not-a-bind", "no-mappings-no-userns",
                                  "uid-without-gid"])
def test_idmapped_mount_refused_in_one_line(scratch, case):
    def mutate(config):
        if case == "procfs-cannot":
            mount = idmapped("/proc", "/mnt", "idmap")
        elif case == "not-a-bind":
            mount = dict(tmpfs_mount("/mnt", "idmap"),
                         uidMappings=[{"containerID": 0, "hostID": USERNS_ROOT, "size": 1}],
                         gidMappings=[{"containerID": 0, "hostID": USERNS_ROOT, "size": 1}])
        elif case == "no-mappings-no-userns":
            mount = idmapped(scratch, "/mnt", "idmap", mappings=False)
        else:
            mount = idmapped(scratch, "/mnt", "idmap")
            del mount["gidMappings"]
        config["mounts"].append(mount)
    bundle = bundle_in(scratch / "bundle", "echo ran", mutate)
    outcome = run_on(PYOCI, bundle)
    assert outcome.returncode == 1 and outcome.output == "", outcome
    assert "\n" not in outcome.stderr and "/mnt" in outcome.stderr, outcome


# ------------------------------------------- 3. proc through a link, masks

def test_proc_through_a_symlink_is_refused(scratch):
    bundle = bundle_in(scratch / "bundle", "echo ran")
    (bundle / "rootfs" / "proc").rmdir()
    (bundle / "rootfs" / "proc").symlink_to("/tmp")
    before = Path("/proc/self/mountinfo").read_text()
    for name, outcome in run_each(bundle).items():
        assert outcome.returncode == 1 and outcome.output == "", (name, outcome)
        assert "must be mounted on ordinary directory" in outcome.stderr, name
    assert Path("/proc/self/mountinfo").read_text() == before
    assert os.listdir(bundle / "rootfs" / "tmp") == []


def test_masked_path_that_links_into_proc_is_refused(scratch):
    bundle = bundle_in(scratch / "bundle", "echo ran",
                       lambda c: c["linux"]["maskedPaths"].append("/etc/trigger"))
    (bundle / "rootfs" / "etc" / "trigger").symlink_to("/proc/sysrq-trigger")
    outcome = run_on(PYOCI, bundle)
    assert outcome.returncode == 1 and outcome.output == "", outcome
    assert "mask /etc/trigger" in outcome.stderr and "\n" not in outcome.stderr


def test_masked_directories_share_one_tmpfs_and_duplicates_are_accepted(scratch):
    def masks(config):
        config["linux"]["maskedPaths"] += ["/proc/acpi", "/proc/kcore", "/mnt"]
    bundle = bundle_in(scratch / "bundle", "cat /proc/self/mountinfo; ls -A /mnt; "
                       "touch /mnt/x; echo touch=$?", masks)
    (bundle / "rootfs" / "mnt").mkdir()
    (bundle / "rootfs" / "mnt" / "hidden").write_text("")
    outcomes = run_each(bundle)
    for name, outcome in outcomes.items():
        assert outcome.returncode == 0, (name, outcome)
        assert "hidden" not in outcome.output and "touch=1" in outcome.output, name
    outcome = outcomes["pyoci"]
    lines = [line.split() for line in outcome.output.splitlines() if " - tmpfs " in line]
    devices = {fields[2] for fields in lines if fields[4] in ("/proc/acpi", "/proc/scsi", "/mnt")}
    assert len(devices) == 1, outcome.output  # pyoci: one tmpfs for every masked directory


# ------------------------------------------------------- 4. --no-pivot /proc

def test_no_pivot_exposes_no_bare_proc(scratch):
    """A new user and pid namespace inside may mount a proc only where a
    fully visible one exists: the host's, below the chroot, must be gone."""
    def unprivileged(config):
        config["process"]["user"] = {"uid": 1000, "gid": 1000}
    bundle = bundle_in(scratch / "bundle", "unshare -mrpf sh -c 'mount -t proc none /proc "
                       "&& echo h > /proc/sysrq-trigger'; echo rc=$?", unprivileged)
    for name, outcome in run_each(bundle, run_args=("--no-pivot",)).items():
        assert outcome.returncode == 0, (name, outcome)
        assert "mount: permission denied" in outcome.output, (name, outcome)
        assert "rc=1" in outcome.output, name


# ------------------------------------------------------ 5. locked mount flags

def test_bind_of_a_locked_source_keeps_its_flags_in_a_user_namespace(scratch):
    source = scratch / "locked"
    source.mkdir()
    host_mount("-t", "tmpfs", "-o", "nosuid,nodev,noexec,strictatime,mode=755", "tmpfs", str(source))
    bundle = bundle_in(scratch / "bundle", "grep ' /mnt ' /proc/self/mountinfo; "
                       "touch /mnt/x; echo touch=$?",
                       lambda c: c["mounts"].append(bind_mount(source, "/mnt", "ro")), userns=True)
    outcomes = run_each(bundle)
    # runc 1.1.5 retries the remount with ro only, which the kernel refuses;
    # later runc keeps every flag of the source, as pyoci does.
    assert "operation not permitted" in outcomes["runc"].stderr
    outcome = outcomes["pyoci"]
    assert outcome.returncode == 0, outcome
    options = mount_options_of(outcome.output, "/mnt")
    assert {"ro", "nosuid", "nodev", "noexec"} <= options
    assert not options & {"relatime", "noatime"}  # strictatime kept
    assert "touch=1" in outcome.output


@pytest.mark.parametrize("options, kept", [
    (("nosuid",), {"ro", "nodev", "noexec", "nosuid"}),   # named flags added, the rest kept
    (("rw",), {"rw", "nodev", "noexec"}),                  # explicit rw clears ro
    (("symfollow",), {"ro", "nodev", "noexec"}),           # and symfollow nosymfollow
])
def test_bind_remount_keeps_what_the_options_do_not_name(scratch, options, kept):
    source = scratch / "source"
    source.mkdir()
    host_mount("-t", "tmpfs", "-o", "ro,nodev,noexec,nosymfollow", "tmpfs", str(source))
    bundle = bundle_in(scratch / "bundle", "grep ' /mnt ' /proc/self/mountinfo",
                       lambda c: c["mounts"].append(bind_mount(source, "/mnt", *options)))
    outcome = run_on(PYOCI, bundle)
    assert outcome.returncode == 0, outcome
    seen = mount_options_of(outcome.output, "/mnt")
    assert kept <= seen
    assert ("nosymfollow" in seen) == (options != ("symfollow",))


# ------------------------------------------------- 6. container sources

@pytest.mark.parametrize("userns", [False, True], ids=["host-ids", "userns"])
def test_source_below_an_earlier_mount_is_what_that_mount_made(scratch, userns):
    first = scratch / "first"
    (first / "sub").mkdir(parents=True)
    (first / "sub" / "marker").write_text("from the first mount\n")
    first.chmod(0o700)  # only the host's root may reach it
    bundle_dir = scratch / "bundle"

    def mounts(config):
        config["mounts"].append(bind_mount(first, "/data"))
        config["mounts"].append(bind_mount(bundle_dir / "rootfs" / "data" / "sub", "/later"))
    bundle = bundle_in(bundle_dir, "cat /later/marker", mounts, userns=userns)
    runtimes = (PYOCI,) if userns else BOTH
    for name, outcome in run_each(bundle, runtimes).items():
        assert (outcome.returncode, outcome.output) == (0, "from the first mount\n"), (name, outcome)


# ------------------------------------------- 7. cgroup mount without /sys

@pytest.mark.parametrize("userns", [False, True], ids=["host-ids", "userns"])
def test_cgroup_mount_makes_its_missing_parents(scratch, userns):
    def without_sys(config):
        config["mounts"] = [m for m in config["mounts"] if m["destination"] != "/sys"]
        config["mounts"].append({"destination": "/sys/fs/cgroup", "type": "cgroup",
                                 "source": "cgroup", "options": ["ro", "nosuid"]})
        config["linux"]["maskedPaths"] = [p for p in config["linux"]["maskedPaths"]
                                          if not p.startswith("/sys")]
    bundle = bundle_in(scratch / "bundle", "test -d /sys/fs/cgroup && "
                       "grep -c ' /sys/fs/cgroup' /proc/self/mountinfo", without_sys, userns=userns)
    runtimes = (PYOCI,) if userns else BOTH
    for name, outcome in run_each(bundle, runtimes).items():
        assert outcome.returncode == 0 and int(outcome.output) >= 1, (name, outcome)


# ------------------------------------------------------ 8. read-only /dev

def test_read_only_dev_gets_its_submounts_and_devices_first(scratch):
    def read_only_dev(config):
        for mount in config["mounts"]:
            if mount["destination"] == "/dev":
                mount["options"].append("ro")
    bundle = bundle_in(scratch / "bundle", "cat /proc/self/mountinfo; test -c /dev/null; "
                       "echo null=$?; touch /dev/x; echo touch=$?", read_only_dev)
    for name, outcome in run_each(bundle).items():
        assert outcome.returncode == 0, (name, outcome)
        assert "ro" in mount_options_of(outcome.output, "/dev"), name
        assert "rw" in mount_options_of(outcome.output, "/dev/pts"), name
        assert "null=0" in outcome.output and "touch=1" in outcome.output, name


# ------------------------------------------------------------ 9. tmpfs modes

def test_tmpfs_without_mode_takes_the_covered_directory_mode(scratch):
    bundle = bundle_in(scratch / "bundle", "stat -c %a /tmp /plain",
                       lambda c: c["mounts"].extend([tmpfs_mount("/tmp"), tmpfs_mount("/plain")]))
    os.chmod(bundle / "rootfs" / "tmp", 0o7777)
    (bundle / "rootfs" / "plain").mkdir(mode=0o750)
    for name, outcome in run_each(bundle).items():
        assert (outcome.returncode, outcome.output) == (0, "7777\n750\n"), (name, outcome)


# -------------------------------------------------- 10. rootfsPropagation

@pytest.fixture
def shared_scratch(scratch):
    """SCRATCH as a shared mount of its own, so a slave has a master to follow."""
    host_mount("-t", "tmpfs", "-o", "mode=711", "tmpfs", str(scratch))
    host_mount("--make-shared", str(scratch))
    return scratch


@pytest.mark.parametrize("propagation", ["slave", "private", "shared"])
def test_rootfs_propagation_as_requested(shared_scratch, propagation):
    """slave: the host's mounts below the rootfs appear inside, none go out;
    private: neither way; shared: its own peer group, nothing goes out."""
    bundle_dir = shared_scratch / "bundle"
    script = (f"until [ -e {OUT}/go ]; do sleep 0.05; done; "
              "awk '$5 == \"/\"' /proc/self/mountinfo; ls /mnt; mount -t tmpfs inner /mnt2; "
              "echo mounted=$?")

    def mutate(config):
        config["linux"]["rootfsPropagation"] = propagation
        for kind in ("bounding", "effective", "permitted"):
            config["process"]["capabilities"][kind].append("CAP_SYS_ADMIN")
    bundle = bundle_in(bundle_dir, script, mutate)
    (bundle / "rootfs" / "mnt").mkdir()
    (bundle / "rootfs" / "mnt2").mkdir()
    runtimes = BOTH if propagation != "shared" else (PYOCI,)
    for command in runtimes:
        name = os.path.basename(command)
        with private_runtime(command) as runtime:
            container_id = runtime.new_id()
            runtime.run("run", "-d", "--bundle", bundle, container_id)
            host_mount("-t", "tmpfs", "hostside", str(bundle / "rootfs" / "mnt"))
            (bundle / "rootfs" / "mnt" / "from-host").write_text("")
            (bundle / "out" / "go").touch()
            runtime.wait_for_status(container_id, "stopped")
            output = (bundle / "out" / "output").read_text()
            subprocess.run(["umount", str(bundle / "rootfs" / "mnt")], check=True)
            (bundle / "out" / "go").unlink()
        fields = optional_fields_of(output, "/")
        # runc 1.1.5 makes a shared parent of the rootfs private before it
        # binds the rootfs, so its "slave" root follows nothing.
        follows_host = propagation != "private" and not (name == "runc" and propagation == "slave")
        assert "mounted=0" in output, (name, output)
        assert not os.listdir(bundle / "rootfs" / "mnt2"), name  # nothing propagated out
        assert ("from-host" in output) == follows_host, (name, output)
        assert any(f.startswith("master:") for f in fields) == follows_host, (name, output)
        assert any(f.startswith("shared:") for f in fields) == (propagation == "shared"), name


# --------------------------------------- 11. sources only the host's root reaches

def test_source_only_the_hosts_root_reaches_mounts_in_a_user_namespace(scratch):
    private = scratch / "private"
    (private / "shared-dir").mkdir(parents=True)
    private.chmod(0o700)
    (private / "shared-dir").chmod(0o755)
    (private / "shared-dir" / "file").write_text("reached\n")
    bundle = bundle_in(scratch / "bundle", "cat /mnt/file", lambda c: c["mounts"].append(
        bind_mount(private / "shared-dir", "/mnt")), userns=True)
    for name, outcome in run_each(bundle).items():
        assert (outcome.returncode, outcome.output) == (0, "reached\n"), (name, outcome)
