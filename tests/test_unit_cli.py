"""pyoci.cli.main() in-process: version, spec, features, errors of commands on
missing containers, id validation, parse errors, --log. Nothing here creates
a container."""
import json
import os
import re

import pytest

from pyoci import OCI_VERSION, __version__
from pyoci.cli import main
from pyoci.spec import default_config
from pyoci.validate import validate_config

try:
    from pyoci.validate import validate_features
except ImportError:  # pragma: no cover
    validate_features = None


@pytest.fixture
def root(tmp_path):
    return str(tmp_path / "state-root")


def run(capsys, *argv):
    """main(argv) -> (exit status, stdout, stderr); SystemExit counts as a return."""
    try:
        status = main(list(argv))
    except SystemExit as exc:  # argparse's --version/--help exit by themselves
        status = exc.code
    captured = capsys.readouterr()
    return status or 0, captured.out, captured.err


def one_line(text):
    assert text.endswith("\n"), repr(text)
    assert text.count("\n") == 1, repr(text)
    return text[:-1]


# ------------------------------------------------------------- version / help
def test_version(capsys):
    status, out, err = run(capsys, "--version")
    assert status == 0
    assert out.startswith(f"pyoci version {__version__}")
    assert f"spec: {OCI_VERSION}" in out
    assert err == ""


def test_version_is_one_fact_per_line(capsys):
    status, out, _ = run(capsys, "--version")
    lines = out.splitlines()
    assert lines[0] == f"pyoci version {__version__}"
    assert f"spec: {OCI_VERSION}" in lines[1:]


def test_short_version(capsys):
    assert run(capsys, "-v")[1].startswith("pyoci version ")


def test_help(capsys):
    status, out, _ = run(capsys, "--help")
    assert status == 0
    for command in ("create", "start", "state", "kill", "delete", "run", "list", "spec",
                    "features"):
        assert command in out


# ----------------------------------------------------------------------- spec
def test_spec_writes_config(capsys, tmp_path):
    status, out, err = run(capsys, "spec", "--bundle", str(tmp_path))
    assert (status, out, err) == (0, "", "")
    raw = json.loads((tmp_path / "config.json").read_text())
    assert raw == default_config()
    validate_config(raw)


def test_spec_rootless(capsys, tmp_path):
    assert run(capsys, "spec", "--rootless", "-b", str(tmp_path))[0] == 0
    raw = json.loads((tmp_path / "config.json").read_text())
    validate_config(raw)
    assert {"type": "user"} in raw["linux"]["namespaces"]


def test_spec_in_current_directory(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert run(capsys, "spec")[0] == 0
    assert (tmp_path / "config.json").is_file()


def test_spec_refuses_existing(capsys, tmp_path):
    (tmp_path / "config.json").write_text("keep me")
    status, out, err = run(capsys, "spec", "--bundle", str(tmp_path))
    assert status == 1
    assert out == ""
    assert one_line(err) == "File config.json exists. Remove it first."
    assert (tmp_path / "config.json").read_text() == "keep me"


def test_spec_missing_bundle_dir(capsys, tmp_path):
    status, _, err = run(capsys, "spec", "--bundle", str(tmp_path / "absent"))
    assert status == 1
    assert "no such file or directory" in one_line(err)


# ------------------------------------------------------------------- features
def test_features(capsys):
    status, out, err = run(capsys, "features")
    assert status == 0 and err == ""
    doc = json.loads(out)
    assert doc["ociVersionMax"] == OCI_VERSION
    assert doc["ociVersionMin"] == "1.0.0"
    assert "mount" in doc["linux"]["namespaces"]
    assert "CAP_SYS_ADMIN" in doc["linux"]["capabilities"]
    assert {"ro", "rw", "rbind", "rprivate", "tmpcopyup"} <= set(doc["mountOptions"])
    assert doc["hooks"] == ["prestart", "createRuntime", "createContainer",
                            "startContainer", "poststart", "poststop"]
    if validate_features is not None:
        validate_features(doc)


# ------------------------------------------------- commands on missing containers
@pytest.mark.parametrize("argv", [["state", "ghost"], ["delete", "ghost"], ["kill", "ghost"],
                                  ["kill", "ghost", "KILL"], ["start", "ghost"]])
def test_missing_container(capsys, root, argv):
    status, out, err = run(capsys, "--root", root, *argv)
    assert status == 1
    assert out == ""
    assert one_line(err) == 'container "ghost" does not exist'


def test_missing_container_root_is_not_created_by_state(capsys, root):
    run(capsys, "--root", root, "state", "ghost")
    assert not os.path.exists(os.path.join(root, "ghost"))


def test_delete_force_missing_is_fine(capsys, root):
    assert run(capsys, "--root", root, "delete", "--force", "ghost") == (0, "", "")
    assert run(capsys, "--root", root, "delete", "-f", "ghost") == (0, "", "")


def test_kill_unknown_signal(capsys, root):
    os.makedirs(os.path.join(root, "c"))  # a container (left by a create that died)
    status, _, err = run(capsys, "--root", root, "kill", "c", "NOPE")
    assert status == 1
    assert one_line(err) == "unknown signal 'NOPE'"


def test_kill_non_ascii_digit_signal_is_one_line(capsys, root):
    status, _, err = run(capsys, "--root", root, "kill", "ghost", "\u00b9")
    assert status == 1
    assert one_line(err)


def test_list_empty(capsys, root):
    assert run(capsys, "--root", root, "list", "--format", "json") == (0, "null\n", "")
    assert run(capsys, "--root", root, "list", "-q") == (0, "", "")
    status, out, _ = run(capsys, "--root", root, "list")
    assert status == 0
    assert out.split() == ["ID", "PID", "STATUS", "BUNDLE", "CREATED", "OWNER"]


def test_list_and_state_of_a_stopped_record(capsys, root):
    directory = os.path.join(root, "old")
    os.makedirs(directory)
    record = {"id": "old", "pid": 0, "pid_start_time": None, "bundle": "/b", "rootfs": "/b/r",
              "created": "2024-01-01T00:00:00.000000000Z", "annotations": {"a": "b"},
              "cgroup_paths": {}, "owner": "", "has_process": True,
              "hooks": {"poststart": [], "poststop": []}}
    with open(os.path.join(directory, "state.json"), "w") as f:
        json.dump(record, f)
    status, out, _ = run(capsys, "--root", root, "state", "old")
    assert status == 0
    doc = json.loads(out)
    assert doc["status"] == "stopped" and doc["pid"] == 0 and doc["annotations"] == {"a": "b"}
    from pyoci.validate import validate_state
    validate_state(doc)
    status, out, _ = run(capsys, "--root", root, "list", "--format", "json")
    assert [s["id"] for s in json.loads(out)] == ["old"]
    assert run(capsys, "--root", root, "list", "-q")[1] == "old\n"
    status, out, _ = run(capsys, "--root", root, "list")
    assert re.search(r"^old\s+0\s+stopped\s+/b\s+", out.splitlines()[1])
    # kill and start refuse, delete removes it.
    status, _, err = run(capsys, "--root", root, "kill", "old", "KILL")
    assert (status, one_line(err)) == (1, "container not running")
    assert run(capsys, "--root", root, "delete", "old") == (0, "", "")
    assert not os.path.exists(directory)


def test_start_of_a_stopped_record(capsys, root):
    # (A separate test: the container lock is held until the process exits, so one
    # process must not lock the same container twice.)
    directory = os.path.join(root, "old")
    os.makedirs(directory)
    status, _, err = run(capsys, "--root", root, "start", "old")
    assert (status, one_line(err)) == (1, "cannot start a container that has stopped")


# --------------------------------------------------------------- invalid ids
@pytest.mark.parametrize("bad_id", ["a/b", "../x", "..", ".", "a b"])
def test_create_bad_id(capsys, root, tmp_path, bad_id):
    status, out, err = run(capsys, "--root", root, "create", "--bundle", str(tmp_path), bad_id)
    assert status == 1
    assert one_line(err) == f"invalid container ID format: {bad_id}"
    assert not os.path.exists(root)


@pytest.mark.parametrize("bad_id", ["a b", "x*y"])
def test_run_bad_id(capsys, root, tmp_path, bad_id):
    status, _, err = run(capsys, "--root", root, "run", "--bundle", str(tmp_path), bad_id)
    assert status == 1
    assert one_line(err) == f"invalid container ID format: {bad_id}"


@pytest.mark.parametrize("argv", [["state"], ["start"], ["kill"], ["delete"],
                                  ["delete", "--force"]])
def test_other_commands_validate_the_id(capsys, root, argv):
    status, _, err = run(capsys, "--root", root, *argv, "a/b")
    assert status == 1
    assert one_line(err) == "invalid container ID format: a/b"


def test_delete_cannot_escape_the_root(capsys, tmp_path):
    root = tmp_path / "root"
    root.mkdir()
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "precious").write_text("data")
    status, _, err = run(capsys, "--root", str(root), "delete", "../victim")
    assert (victim / "precious").read_text() == "data"
    assert status == 1
    assert "invalid container ID format" in err


def test_state_cannot_escape_the_root(capsys, tmp_path):
    root = tmp_path / "root"
    root.mkdir()
    other = tmp_path / "other"
    other.mkdir()
    (other / "state.json").write_text(json.dumps({
        "id": "other", "pid": 0, "pid_start_time": None, "bundle": "/elsewhere", "rootfs": "",
        "created": "", "annotations": {}, "cgroup_paths": {}, "owner": ""}))
    status, out, err = run(capsys, "--root", str(root), "state", "../other")
    assert "/elsewhere" not in out
    assert status == 1
    assert "invalid container ID format" in err


# --------------------------------------------------------------- parse errors
@pytest.mark.parametrize("argv", [
    [],                                  # no command
    ["bogus"],                           # unknown command
    ["state"],                           # missing id
    ["--log-format", "xml", "state", "x"],
    ["state", "a", "b"],                 # extra argument
    ["--no-such-flag", "state", "x"],
    ["delete", "--bogus", "x"],
    ["create", "--preserve-fds", "many", "x"],
    ["list", "--format", "yaml"],
])
def test_parse_errors_are_one_line_exit_1(capsys, root, argv):
    status, out, err = run(capsys, "--root", root, *argv)
    assert status == 1
    assert out == ""
    line = one_line(err)
    assert line.startswith("pyoci")
    assert not os.path.exists(root)


def test_global_flag_equals_form(capsys, root):
    status, _, err = run(capsys, f"--root={root}", "state", "ghost")
    assert status == 1 and "does not exist" in err


def test_compat_flags_accepted(capsys, root):
    status, _, err = run(capsys, "--root", root, "--systemd-cgroup", "--rootless", "true",
                         "--debug", "state", "ghost")
    assert status == 1
    assert one_line(err) == 'container "ghost" does not exist'


@pytest.mark.parametrize("value, rootless", [("true", True), ("1", True), ("False", False),
                                             ("f", False)])
def test_rootless_flag_takes_gos_booleans(monkeypatch, value, rootless):
    from pyoci import cli
    args = cli.parse(["--rootless", value, "create", "x"])
    assert args.rootless is rootless
    assert cli._runtime(args).create_options(args.bundle).rootless is rootless


def test_rootless_auto_is_rootless_only_off_the_hosts_root(monkeypatch):
    from pyoci import cli, lifecycle
    from pyoci.linux import procfs
    args = cli.parse(["create", "x"])
    assert args.rootless is None
    for euid, in_userns, systemd, expected in ((0, False, False, False), (1000, False, False, True),
                                               (0, True, False, True), (1000, False, True, False)):
        monkeypatch.setattr(lifecycle.os, "geteuid", lambda: euid)
        monkeypatch.setattr(procfs, "in_user_namespace", lambda: in_userns)
        assert lifecycle.CreateOptions(systemd_cgroup=systemd).rootless is expected


def test_rootless_flag_refuses_other_words(capsys, root):
    status, _, err = run(capsys, "--root", root, "--rootless", "maybe", "state", "ghost")
    assert status == 1 and "--rootless" in err and "maybe" in err


# ------------------------------------------------------------------------ --log
@pytest.mark.parametrize("log_format", ["json", "text"])
def test_log_file_gets_the_formatted_error(capsys, root, tmp_path, log_format):
    log_file = tmp_path / "log"
    status, _, err = run(capsys, "--log", str(log_file), "--log-format", log_format,
                         "--root", root, "state", "ghost")
    assert status == 1
    assert one_line(err) == 'container "ghost" does not exist'
    [line] = log_file.read_text().splitlines()
    if log_format == "json":
        record = json.loads(line)
        assert set(record) == {"level", "msg", "time"}
        assert record["level"] == "error"
        assert record["msg"] == 'container "ghost" does not exist'
    else:
        assert re.fullmatch(r'time="[^"]+" level=error msg="container \\"ghost\\" does not exist"',
                            line)



def test_unwritable_log_file_still_one_line(capsys, root, tmp_path):
    status, _, err = run(capsys, "--log", str(tmp_path / "missing-dir" / "log"),
                         "--root", root, "state", "ghost")
    assert status == 1
    assert one_line(err)


def test_systemd_cgroup_is_accepted_by_other_commands(capsys, root):
    status, _, err = run(capsys, "--root", root, "--systemd-cgroup", "delete", "--force", "c1")
    assert (status, err) == (0, "")


# ------------------------------------------------------------------- update
def test_update_takes_runcs_flag_names(capsys, root, monkeypatch):
    from pyoci import control
    seen = {}
    monkeypatch.setattr(control, "update", lambda root, cid, resources: seen.update(resources))
    for shares in ("--cpu-share", "--cpu-shares"):  # runc's name, and the plural
        assert run(capsys, "--root", root, "update", shares, "7", "--cpu-burst", "5",
                   "--cpu-idle", "1", "c")[0] == 0
        assert seen["cpu"] == {"shares": 7, "burst": 5, "idle": 1}
    assert control.UPDATE_FLAGS["cpu_share"][:2] == ("cpu", "shares")


@pytest.mark.parametrize("flag", ["--l3-cache-schema", "--mem-bw-schema"])
def test_update_refuses_intel_rdt_schemas(capsys, root, flag):
    status, _, err = run(capsys, "--root", root, "update", flag, "L3:0=f", "c")
    assert status == 1 and one_line(err) == f"{flag}: Intel RDT is not supported"


# ------------------------------------------------------------- the parser
def test_flags_as_gos_flag_package_takes_them():
    from pyoci.cli import parse
    for argv in (["--bundle", "/b", "x"], ["--bundle=/b", "x"], ["-b", "/b", "x"],
                 ["-bundle", "/b", "x"], ["-b=/b", "x"], ["x", "--bundle", "/b"]):
        args = parse(["create", *argv])
        assert (args.bundle, args.id) == ("/b", "x"), argv
    args = parse(["--root=/r", "--debug", "--log-format=json", "run", "--detach=false",
                  "--preserve-fds=2", "-d", "x"])
    assert (args.root, args.debug, args.log_format) == ("/r", True, "json")
    assert (args.detach, args.preserve_fds, args.keep) == (True, 2, False)
    assert parse(["run", "--detach=false", "x"]).detach is False


def test_defaults_of_every_flag():
    from pyoci.cli import parse
    args = parse(["exec", "x", "true"])
    assert (args.env, args.cap, args.cgroup, args.additional_gids) == ([], [], [], [])
    assert (args.tty, args.detach, args.preserve_fds, args.cwd) == (False, False, 0, None)
    args = parse(["kill", "x"])
    assert (args.signal, args.all) == ("SIGTERM", False)
    assert parse(["list"]).format == "table"
    assert parse(["state", "x"]).root is None  # main() picks the default root


def test_exec_and_ps_pass_what_follows_the_id_on():
    from pyoci.cli import parse
    args = parse(["exec", "-e", "A=1", "--env=B=2", "-t", "x", "sh", "-c", "echo --tty"])
    assert (args.id, args.program, args.env, args.tty) == (
        "x", ["sh", "-c", "echo --tty"], ["A=1", "B=2"], True)
    assert parse(["exec", "x", "--", "ls"]).program == ["--", "ls"]
    assert parse(["exec", "--", "x", "ls"]).program == ["ls"]
    assert parse(["ps", "x", "-e", "-o", "pid"]).ps_args == ["-e", "-o", "pid"]
    assert parse(["ps", "-f", "json", "x"]).format == "json"


def test_a_commands_flag_wins_over_the_global_one_of_its_name():
    from pyoci.cli import parse
    assert parse(["--rootless", "true", "spec"]).rootless is False
    assert parse(["--rootless", "true", "spec", "--rootless"]).rootless is True
    assert parse(["--rootless", "true", "create", "x"]).rootless is True


def test_update_flags_come_from_control():
    from pyoci.cli import parse
    from pyoci.control import UPDATE_FLAGS
    args = parse(["update", "--memory", "1M", "--pids-limit=5", "x"])
    assert (args.memory, args.pids_limit, args.cpu_quota) == ("1M", "5", None)
    assert set(UPDATE_FLAGS) <= set(vars(args))


@pytest.mark.parametrize("argv, message", [
    (["delete", "--bogus", "x"], "pyoci delete: flag provided but not defined: --bogus"),
    (["create", "--bundle"], "pyoci create: flag needs an argument: --bundle"),
    (["run", "--detach=maybe", "x"],
     'pyoci run: invalid boolean value "maybe" for flag --detach'),
    (["create", "--preserve-fds", "many", "x"],
     'pyoci create: invalid value "many" for flag --preserve-fds: not a number'),
    (["state"], "pyoci state: missing the container id"),
    (["state", "a", "b"], "pyoci state: unexpected argument: b"),
    (["bogus"], "pyoci: no such command: bogus"),
    ([], "pyoci: no command given (pyoci --help lists them)"),
])
def test_parse_error_texts(capsys, argv, message):
    status, out, err = run(capsys, *argv)
    assert (status, out, one_line(err)) == (1, "", message)


@pytest.mark.parametrize("command", ["create", "exec", "update", "kill", "list"])
def test_command_help_lists_its_flags(capsys, command):
    from pyoci.cli import COMMANDS
    status, out, err = run(capsys, command, "--help")
    assert (status, err) == (0, "")
    assert out.startswith(f"usage: pyoci {command} ")
    flags = COMMANDS[command].flags
    for flag in flags() if callable(flags) else flags:
        if flag.help is not None:
            assert flag.names[-1] in out
