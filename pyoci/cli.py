"""The runc-compatible command line: parse, dispatch, map errors to exit codes.

Global flags come before the command, as with runc. As Go's flag package
parses them, a flag is ``--name`` or ``-name``, its value the next word or
after ``=``, and a boolean flag may say ``--name=false``; ``--`` ends the
flags. Every failure is one line on stderr (and in the --log file) and exit
status 1.

The parser is our own, a table and one loop: engines call the short
commands (state, start, kill, delete) many times per container, and
argparse with what it imports costs more than the whole of such a command.
"""
import sys

import pyoci
from pyoci import jsontext, log
from pyoci.errors import ConfigError, PyociError, describe

BOOL, VALUE, INT, LIST = "bool", "value", "int", "list"


class Flag:
    __slots__ = ("names", "dest", "kind", "default", "choices", "convert", "help")

    def __init__(self, *names, kind=VALUE, dest=None, default=None, choices=None, convert=None,
                 help=None):
        self.names = names
        self.dest = dest or names[-1].lstrip("-").replace("-", "_")
        self.kind = kind
        self.default = [] if kind == LIST else (False if kind == BOOL else default)
        self.choices = choices
        self.convert = convert
        self.help = help  # None: not shown by --help

    def value(self, text, prog):
        if self.kind == INT:
            try:
                return int(text)
            except ValueError:
                raise _usage(prog, f'invalid value "{text}" for flag {self.names[-1]}: '
                             "not a number") from None
        if self.choices and text not in self.choices:
            raise _usage(prog, f'invalid value "{text}" for flag {self.names[-1]}: '
                         f"one of {', '.join(self.choices)}")
        return self.convert(text, self.names[-1], prog) if self.convert else text


class Command:
    """HELP, FLAGS, and positional NAMES; a name ending in "?" may be left out
    (its default after "="), one ending in "..." takes every word left."""
    __slots__ = ("help", "flags", "positionals")

    def __init__(self, help_text, flags=(), positionals=("id",)):
        self.help = help_text
        self.flags = flags
        self.positionals = positionals


_GO_TRUE = ("1", "t", "T", "true", "TRUE", "True")
_GO_FALSE = ("0", "f", "F", "false", "FALSE", "False")


def _go_bool(text, flag, prog):
    if text in _GO_TRUE:
        return True
    if text in _GO_FALSE:
        return False
    raise _usage(prog, f'invalid boolean value "{text}" for flag {flag}')


def _bool_or_auto(text, flag, prog):
    """runc's --rootless: Go's boolean spellings, or auto (None)."""
    if text == "auto":
        return None
    if text not in _GO_TRUE + _GO_FALSE:
        raise _usage(prog, f"invalid {flag} value {text!r}: true, false or auto")
    return _go_bool(text, flag, prog)


GLOBAL_FLAGS = (
    Flag("--root", help="state directory root (default /run/pyoci; not root: "
         "$XDG_RUNTIME_DIR/pyoci)"),
    Flag("--log", help="log file (default: stderr)"),
    Flag("--log-format", default="text", choices=("text", "json"), help="text or json"),
    Flag("--debug", kind=BOOL, help="log what is done, step by step"),
    Flag("--systemd-cgroup", kind=BOOL,
         help="let systemd make the cgroups: a transient scope per container"),
    Flag("--rootless", convert=_bool_or_auto,
         help="true|false|auto: leave out the cgroups the runtime may not use "
         "(auto: when not root, or root of a user namespace)"),
    Flag("--criu"),
)

CREATE_FLAGS = (
    Flag("-b", "--bundle", default=".", help="the bundle directory (default: .)"),
    Flag("--pid-file", help="write the container process's pid here"),
    Flag("--console-socket", help="a unix socket to send the terminal's master fd to"),
    Flag("--pidfd-socket", help="a unix socket to send the container process's pidfd to"),
    Flag("--no-pivot", kind=BOOL, help="chroot instead of pivot_root"),
    Flag("--no-new-keyring", kind=BOOL, help="keep the caller's session keyring"),
    Flag("--preserve-fds", kind=INT, default=0, help="pass fds 3 to 3+N-1 on"),
)
FORMAT = Flag("-f", "--format", default="table", choices=("table", "json"), help="table or json")


def _update_flags():
    from pyoci.control import UPDATE_FLAGS  # only update pays for importing control
    return (Flag("-r", "--resources", help="LinuxResources JSON file, or - for stdin"),
            *(Flag("--" + name.replace("_", "-"), help="as runc's") for name in UPDATE_FLAGS),
            Flag("--cpu-shares", dest="cpu_share"),
            Flag("--l3-cache-schema", help="Intel RDT: refused"),
            Flag("--mem-bw-schema", help="Intel RDT: refused"))


# What checkpoint and restore share, with runc's names.
_CRIU_FLAGS = (
    Flag("--tcp-established", kind=BOOL, help="allow open TCP connections"),
    Flag("--ext-unix-sk", kind=BOOL, help="allow external unix sockets"),
    Flag("--shell-job", kind=BOOL, help="allow a shell job (a terminal from outside)"),
    Flag("--file-locks", kind=BOOL, help="save and restore file locks"),
    Flag("--manage-cgroups-mode", help="soft (default), full, strict or ignore"),
    Flag("--empty-ns", kind=LIST, help="network: a new, empty namespace (repeatable)"),
    Flag("--auto-dedup", kind=BOOL, help="deduplicate memory images"))

COMMANDS = {
    "create": Command("create a container", CREATE_FLAGS),
    "run": Command("create and start a container", (
        *CREATE_FLAGS, Flag("-d", "--detach", kind=BOOL, help="do not wait for the container"),
        Flag("--keep", kind=BOOL, help="keep the container after it exits"))),
    "start": Command("start a created container"),
    "state": Command("print a container's state"),
    "kill": Command("send a signal to a container's init", (
        Flag("-a", "--all", kind=BOOL, help="to every process of the container"),),
        ("id", "signal?=SIGTERM")),
    "delete": Command("delete a container", (
        Flag("-f", "--force", kind=BOOL, help="kill it first if it is running"),)),
    "list": Command("list containers", (
        FORMAT, Flag("-q", "--quiet", kind=BOOL, help="ids only")), ()),
    "spec": Command("write a default config.json", (
        Flag("-b", "--bundle", default=".", help="where (default: .)"),
        Flag("--rootless", kind=BOOL, help="for a rootless container")), ()),
    "features": Command("print the features this runtime supports", (), ()),
    "check": Command("check a bundle and this host against what its config needs, "
                     "creating nothing", (), ("bundle?=.",)),
    "pause": Command("freeze every process of a container"),
    "resume": Command("thaw a paused container"),
    "ps": Command("list the processes of a container", (FORMAT,), ("id", "ps_args...")),
    "update": Command("change a container's resource limits", _update_flags),
    "events": Command("print a container's stats and OOM events", (
        Flag("--stats", kind=BOOL, help="one stats line, then exit"),
        Flag("--interval", default="5s", help="between stats lines (default 5s)"))),
    "checkpoint": Command("save a running container with CRIU", (
        Flag("--image-path", help="where CRIU's images go (default: ./checkpoint)"),
        Flag("--work-path", help="where CRIU's log and work files go (default: the image path)"),
        Flag("--parent-path", help="a pre-dump's images, relative to the image path"),
        Flag("--leave-running", kind=BOOL, help="keep the container running afterwards"),
        Flag("--pre-dump", kind=BOOL, help="save memory only, and leave it running"),
        *_CRIU_FLAGS,
        Flag("--lazy-pages", kind=BOOL, help="serve memory pages lazily (userfaultfd)"),
        Flag("--status-fd", kind=INT, default=-1,
             help="CRIU writes \\0 to this fd once lazy pages are served"),
        Flag("--page-server", help="ADDRESS:PORT of a CRIU page server"))),
    "restore": Command("bring back a checkpointed container with CRIU", (
        Flag("-b", "--bundle", default=".", help="the bundle directory (default: .)"),
        Flag("--image-path", help="CRIU's images (default: ./checkpoint)"),
        Flag("--work-path", help="where CRIU's log and work files go (default: the image path)"),
        Flag("-d", "--detach", kind=BOOL, help="do not wait for the container"),
        Flag("--pid-file", help="write the container process's pid here"),
        Flag("--console-socket", help="a unix socket to send the terminal's master fd to"),
        Flag("--no-subreaper", kind=BOOL, help="do not reap the container's orphans"),
        Flag("--no-pivot", kind=BOOL, help="as create's (CRIU makes the root itself)"),
        *_CRIU_FLAGS,
        Flag("--lazy-pages", kind=BOOL, help="take memory pages lazily (userfaultfd)"),
        Flag("--lsm-profile", help="TYPE:NAME: the LSM profile to restore under"),
        Flag("--lsm-mount-context", help="the LSM mount context to restore with"))),
    "exec": Command("run another process in a running container", (
        Flag("-p", "--process", help="a runtime-spec process JSON file"),
        Flag("-t", "--tty", kind=BOOL, help="give the process a terminal"),
        Flag("-d", "--detach", kind=BOOL, help="do not wait for the process"),
        Flag("--pid-file", help="write the process's pid here"),
        Flag("--console-socket", help="a unix socket to send the terminal's master fd to"),
        Flag("--pidfd-socket", help="a unix socket to send the process's pidfd to"),
        Flag("--cwd", help="working directory"),
        Flag("-e", "--env", kind=LIST, help="NAME=VALUE, repeatable"),
        Flag("-u", "--user", help="UID[:GID]"),
        Flag("-g", "--additional-gids", kind=LIST, help="GID, repeatable"),
        Flag("-c", "--cap", kind=LIST, help="a capability to add, repeatable"),
        Flag("--no-new-privs", kind=BOOL, help="set no_new_privs"),
        Flag("-a", "--apparmor", help="AppArmor profile"),
        Flag("--process-label", help="SELinux label"),
        Flag("--preserve-fds", kind=INT, default=0, help="pass fds 3 to 3+N-1 on"),
        Flag("--cgroup", kind=LIST,
             help="[CONTROLLER[,CONTROLLER]:]PATH: an existing sub-cgroup to run in"),
        Flag("--ignore-paused", kind=BOOL, help="exec even if the container is paused")),
        ("id", "program...")),
}


class Arguments:
    """The parsed command line: one attribute per flag and positional."""

    def __init__(self, command=None):
        self.command = command


class _Done(Exception):
    """--help or --version has printed what was asked."""


def _usage(prog, message):
    return PyociError(f"{prog}: {message}")


def parse(argv):
    """ARGV (without the program name) to Arguments; a PyociError if malformed."""
    args = Arguments()
    index = _parse_global_flags(argv, args)
    if index == len(argv):
        raise _usage("pyoci", "no command given (pyoci --help lists them)")
    args.command = name = argv[index]
    command = COMMANDS.get(name)
    if command is None:
        raise _usage("pyoci", f"no such command: {name}")
    flags = command.flags() if callable(command.flags) else command.flags
    _set_defaults(flags, args)  # a command's own flag wins over a global one of its name
    prog = f"pyoci {name}"
    words = []
    takes_rest = any(positional.endswith("...") for positional in command.positionals)
    rest_starts = len(command.positionals) - 1
    index += 1
    while index < len(argv):
        word = argv[index]
        if takes_rest and len(words) >= rest_starts:
            words.extend(argv[index:])  # the program and its arguments, as given
            break
        if word == "--":
            words.extend(argv[index + 1:])
            break
        if word.startswith("-") and word != "-":
            if word in ("-h", "--help"):
                sys.stdout.write(_command_help(name, command, flags))
                raise _Done
            index = _parse_flag(argv, index, flags, args, prog)
        else:
            words.append(word)
            index += 1
    _fill_positionals(command.positionals, words, args, prog)
    return args


def _set_defaults(flags, args):
    for flag in flags:
        setattr(args, flag.dest, list(flag.default) if flag.kind == LIST else flag.default)


def _parse_global_flags(argv, args):
    """The global flags, up to the command's name; the index of the name."""
    _set_defaults(GLOBAL_FLAGS, args)
    index = 0
    while index < len(argv) and argv[index].startswith("-") and argv[index] != "-":
        word = argv[index]
        if word == "--":
            return index + 1
        if word in ("-h", "--help"):
            sys.stdout.write(_top_help())
            raise _Done
        if word in ("-v", "--version"):
            from pyoci import OCI_VERSION, __version__
            sys.stdout.write(f"pyoci version {__version__}\nspec: {OCI_VERSION}\n"
                             f"python: {sys.version.split()[0]}\n")
            raise _Done
        index = _parse_flag(argv, index, GLOBAL_FLAGS, args, "pyoci")
    return index


def _parse_flag(argv, index, flags, args, prog):
    """Take the flag at ARGV[INDEX] (and its value); the index after them."""
    word = argv[index]
    name, equals, text = word.lstrip("-").partition("=")
    flag = next((f for f in flags if "-" + name in f.names or "--" + name in f.names), None)
    if flag is None or word.startswith("---"):
        raise _usage(prog, f"flag provided but not defined: {word.partition('=')[0]}")
    if flag.kind == BOOL:
        setattr(args, flag.dest, _go_bool(text, flag.names[-1], prog) if equals else True)
        return index + 1
    if not equals:
        if index + 1 >= len(argv):
            raise _usage(prog, f"flag needs an argument: {word}")
        index += 1
        text = argv[index]
    if flag.kind == LIST:
        getattr(args, flag.dest).append(text)
    else:
        setattr(args, flag.dest, flag.value(text, prog))
    return index + 1


def _fill_positionals(positionals, words, args, prog):
    for position, spec in enumerate(positionals):
        if spec.endswith("..."):
            setattr(args, spec[:-3], words[position:])
            return
        name, optional, default = spec.partition("?=")
        if position < len(words):
            setattr(args, name, words[position])
        elif optional:
            setattr(args, name, default)
        else:
            raise _usage(prog, "missing the container id" if name == "id" else f"missing {name}")
    if len(words) > len(positionals):
        raise _usage(prog, f"unexpected argument: {words[len(positionals)]}")


def _flag_lines(flags):
    lines = []
    for flag in flags:
        if flag.help is not None:
            takes = "" if flag.kind == BOOL else " VALUE"
            lines.append(f"  {', '.join(flag.names) + takes:<30} {flag.help}\n")
    return "".join(lines)


def _top_help():
    commands = "".join(f"  {name:<10} {command.help}\n" for name, command in COMMANDS.items())
    return ("usage: pyoci [GLOBAL FLAGS] COMMAND [FLAGS] [ARGS]\n\n"
            "OCI runtime (runc-compatible)\n\ncommands:\n" + commands
            + "\nglobal flags:\n  -h, --help" + " " * 21 + "this help\n"
            "  -v, --version" + " " * 18 + "print the version and exit\n"
            + _flag_lines(GLOBAL_FLAGS) + "\npyoci COMMAND --help: that command's flags\n")


def _command_help(name, command, flags):
    words = " ".join(p.partition("?")[0].replace("...", " ...").upper()
                     for p in command.positionals)
    return (f"usage: pyoci {name} [FLAGS] {words}\n\n{command.help}\n"
            + (f"\nflags:\n{_flag_lines(flags)}" if flags else ""))


# The commands that place a process in cgroups: their wait for the kernel's
# grace period starts before anything else they do (see
# cgroups.start_migrations_early).
MIGRATING = ("create", "run", "exec")


def _runtime(args):
    from pyoci.runtime import Runtime
    return Runtime(args.root, systemd_cgroup=args.systemd_cgroup, rootless=args.rootless)


def _create_flags(args):
    return dict(pid_file=args.pid_file, console_socket=args.console_socket,
                pidfd_socket=args.pidfd_socket, no_pivot=args.no_pivot,
                no_new_keyring=args.no_new_keyring, preserve_fds=args.preserve_fds)


def _print_json(value, indent=None):
    sys.stdout.write(jsontext.dumps(value, indent) + "\n")


def cmd_create(args):
    _runtime(args).create(args.id, args.bundle, **_create_flags(args))


def cmd_run(args):
    return _runtime(args).run(args.id, args.bundle, detach=args.detach, keep=args.keep,
                              **_create_flags(args))


def cmd_start(args):
    _runtime(args).start(args.id)


def cmd_state(args):
    _print_json(_runtime(args).state(args.id), indent=2)


def cmd_kill(args):
    _runtime(args).kill(args.id, args.signal, all_processes=args.all)


def cmd_delete(args):
    _runtime(args).delete(args.id, force=args.force)


def cmd_list(args):
    states = _runtime(args).list()
    if args.quiet:
        sys.stdout.write("".join(s["id"] + "\n" for s in states))
    elif args.format == "json":
        _print_json(states or None)  # runc prints a Go nil slice, null, when there are none
    else:
        rows = [("ID", "PID", "STATUS", "BUNDLE", "CREATED", "OWNER")]
        rows += [(s["id"], str(s["pid"]), s["status"], s["bundle"], s["created"], s["owner"])
                 for s in states]
        widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
        for row in rows:
            cells = [cell.ljust(width + 3) for cell, width in zip(row, widths)]
            sys.stdout.write("".join(cells) + row[-1] + "\n")


def cmd_spec(args):
    from pyoci import lifecycle
    lifecycle.write_default_spec(args.bundle, args.rootless)


def cmd_exec(args):
    from pyoci.execute import ExecOptions, execute
    options = ExecOptions(
        process_file=args.process, args=args.program, tty=args.tty, detach=args.detach,
        pid_file=args.pid_file, console_socket=args.console_socket,
        pidfd_socket=args.pidfd_socket, cwd=args.cwd,
        env=args.env, user=args.user, additional_gids=args.additional_gids, caps=args.cap,
        no_new_privs=args.no_new_privs, apparmor=args.apparmor,
        process_label=args.process_label, preserve_fds=args.preserve_fds, cgroup=args.cgroup,
        ignore_paused=args.ignore_paused)
    try:
        return execute(args.root, args.id, options)
    except (PyociError, OSError) as exc:
        # runc's convention, which engines rely on: 255 is the runtime's own failure.
        raise ExecFailed(f"exec failed: {describe(exc)}") from None


class ExecFailed(PyociError):
    exit_code = 255


def _criu_options(args, *flags):
    from pyoci.checkpoint import CriuOptions
    shared = ("image_path", "work_path", "tcp_established", "ext_unix_sk", "shell_job",
              "file_locks", "manage_cgroups_mode", "empty_ns", "auto_dedup", "lazy_pages")
    return CriuOptions(criu=args.criu, **{name: getattr(args, name) for name in shared + flags})


def cmd_checkpoint(args):
    _runtime(args).checkpoint(args.id, _criu_options(
        args, "parent_path", "leave_running", "pre_dump", "status_fd", "page_server"))


def cmd_restore(args):
    return _runtime(args).restore(
        args.id, args.bundle, _criu_options(args, "lsm_profile", "lsm_mount_context"),
        detach=args.detach, subreaper=not args.no_subreaper, pid_file=args.pid_file,
        console_socket=args.console_socket, no_pivot=args.no_pivot)


def cmd_pause(args):
    _runtime(args).pause(args.id)


def cmd_resume(args):
    _runtime(args).resume(args.id)


def cmd_ps(args):
    from pyoci import control
    pids = _runtime(args).pids(args.id)
    if args.format == "json":
        _print_json(pids)
    else:
        sys.stdout.write(control.ps_table(pids, args.ps_args))


def cmd_update(args):
    from pyoci import control
    for flag, value in (("--l3-cache-schema", args.l3_cache_schema),
                        ("--mem-bw-schema", args.mem_bw_schema)):
        if value is not None:
            raise ConfigError(f"{flag}: Intel RDT is not supported")
    flags = {name: getattr(args, name) for name in control.UPDATE_FLAGS}
    _runtime(args).update(args.id, control.resources_from(args.resources, flags))


def cmd_events(args):
    from pyoci import control
    control.events(args.root, args.id, control.parse_interval(args.interval), args.stats)


def cmd_check(args):
    from pyoci.checkbundle import check_bundle
    report = check_bundle(args.bundle, args.systemd_cgroup, args.rootless)
    sys.stdout.write("".join(line + "\n" for line in report.lines()))
    return 1 if report.problems else 0


def cmd_features(_args):
    from pyoci.features import features
    _print_json(features(), indent=4)


def main(argv=None):
    import _signal
    argv = sys.argv[1:] if argv is None else argv
    # An inherited SIG_IGN for SIGCHLD would make the kernel reap our children
    # before we can wait for them.
    _signal.signal(_signal.SIGCHLD, _signal.SIG_DFL)
    try:
        args = parse(argv)
        if args.command in MIGRATING:
            from pyoci.linux import cgroups
            cgroups.start_migrations_early()
        log.configure(args.log, args.log_format, args.debug)
        pyoci.is_the_command = True
        if args.root is None:
            from pyoci.state import default_root
            args.root = default_root()
        status = globals()["cmd_" + args.command](args)
    except _Done:
        return 0
    except PyociError as exc:
        log.error(str(exc))
        return exc.exit_code
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # noqa: BLE001 - a bug still gets one line (traceback with --debug)
        if log.debug_enabled():
            import traceback
            log.debug(traceback.format_exc())
        log.error(describe(exc))
        return 1
    return status or 0


def command():
    """The installed `pyoci`: main(), then an exit without the interpreter's
    teardown of every module, which costs a short command 2 ms (nothing of
    ours needs it: files are written through fds, stdio is flushed here)."""
    import os
    status = main()
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except OSError:  # a closed pipe: the interpreter's exit would say 120
        status = status or 120
    os._exit(status)


if __name__ == "__main__":
    command()
