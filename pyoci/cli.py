"""The runc-compatible command line: parse, dispatch, map errors to exit codes.

Global flags come before the command, as with runc; both ``--flag value``
and ``--flag=value`` work. Every failure is one line on stderr (and in the
--log file) and exit status 1.
"""
import argparse
import json
import signal
import sys

from pyoci import log
from pyoci.errors import ConfigError, PyociError, describe


class _Parser(argparse.ArgumentParser):
    def error(self, message):
        raise PyociError(f"{self.prog}: {message}")


class _Version(argparse.Action):
    """runc's layout, one fact per line (argparse's version action reflows it)."""

    def __call__(self, parser, namespace, values, option_string=None):
        from pyoci import OCI_VERSION, __version__
        sys.stdout.write(f"pyoci version {__version__}\nspec: {OCI_VERSION}\n"
                         f"python: {sys.version.split()[0]}\n")
        parser.exit()


def _bool_or_auto(text):
    """runc's --rootless: Go's boolean spellings, or auto (None)."""
    if text == "auto":
        return None
    if text in ("1", "t", "T", "true", "TRUE", "True"):
        return True
    if text in ("0", "f", "F", "false", "FALSE", "False"):
        return False
    raise argparse.ArgumentTypeError(f'invalid --rootless value {text!r}: true, false or auto')


def _build_parser():
    from pyoci.state import default_root
    parser = _Parser(prog="pyoci", description="OCI runtime (runc-compatible)")
    parser.add_argument("-v", "--version", action=_Version, nargs=0,
                        help="print the version and exit")
    parser.add_argument("--root", default=default_root(), help="state directory root")
    parser.add_argument("--log", default=None, help="log file")
    parser.add_argument("--log-format", default="text", choices=("text", "json"))
    parser.add_argument("--debug", action="store_true")
    parser.add_argument("--systemd-cgroup", action="store_true",
                        help="let systemd make the cgroups: a transient scope per container")
    parser.add_argument("--rootless", default=None, type=_bool_or_auto, metavar="true|false|auto",
                        help="cgroups the runtime may not use are left out (auto: when not "
                        "root, or root of a user namespace)")
    parser.add_argument("--criu", default=None, help=argparse.SUPPRESS)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    commands.required = True

    def command(name, help_text):
        return commands.add_parser(name, help=help_text, description=help_text)

    def add_create_flags(sub):
        sub.add_argument("-b", "--bundle", default=".")
        sub.add_argument("--pid-file")
        sub.add_argument("--console-socket")
        sub.add_argument("--pidfd-socket", help="a unix socket to send the container "
                         "process's pidfd to")
        sub.add_argument("--no-pivot", action="store_true")
        sub.add_argument("--no-new-keyring", action="store_true")
        sub.add_argument("--preserve-fds", type=int, default=0)
        sub.add_argument("id")

    add_create_flags(command("create", "create a container"))
    run = command("run", "create and start a container")
    add_create_flags(run)
    run.add_argument("-d", "--detach", action="store_true")
    run.add_argument("--keep", action="store_true", help="keep the container after it exits")
    command("start", "start a created container").add_argument("id")
    command("state", "print a container's state").add_argument("id")
    kill = command("kill", "send a signal to a container's init")
    kill.add_argument("-a", "--all", action="store_true")
    kill.add_argument("id")
    kill.add_argument("signal", nargs="?", default="SIGTERM")
    delete = command("delete", "delete a container")
    delete.add_argument("-f", "--force", action="store_true")
    delete.add_argument("id")
    listing = command("list", "list containers")
    listing.add_argument("-f", "--format", default="table", choices=("table", "json"))
    listing.add_argument("-q", "--quiet", action="store_true")
    spec = command("spec", "write a default config.json")
    spec.add_argument("-b", "--bundle", default=".")
    spec.add_argument("--rootless", action="store_true")
    command("features", "print the features this runtime supports")
    command("pause", "freeze every process of a container").add_argument("id")
    command("resume", "thaw a paused container").add_argument("id")
    ps = command("ps", "list the processes of a container")
    ps.add_argument("-f", "--format", default="table", choices=("table", "json"))
    ps.add_argument("id")
    ps.add_argument("ps_args", nargs=argparse.REMAINDER, help="options for ps(1)")
    update = command("update", "change a container's resource limits")
    update.add_argument("-r", "--resources", help="LinuxResources JSON file, or - for stdin")
    from pyoci.control import UPDATE_FLAGS
    for name in UPDATE_FLAGS:
        update.add_argument("--" + name.replace("_", "-"), dest=name)
    update.add_argument("--cpu-shares", dest="cpu_share", help=argparse.SUPPRESS)
    for name in ("--l3-cache-schema", "--mem-bw-schema"):  # Intel RDT, refused
        update.add_argument(name)
    update.add_argument("id")
    events = command("events", "print a container's stats and OOM events")
    events.add_argument("--stats", action="store_true", help="one stats line, then exit")
    events.add_argument("--interval", default="5s")
    events.add_argument("id")
    execute = command("exec", "run another process in a running container")
    execute.add_argument("-p", "--process", help="a runtime-spec process JSON file")
    execute.add_argument("-t", "--tty", action="store_true")
    execute.add_argument("-d", "--detach", action="store_true")
    execute.add_argument("--pid-file")
    execute.add_argument("--console-socket")
    execute.add_argument("--pidfd-socket", help="a unix socket to send the process's pidfd to")
    execute.add_argument("--cwd")
    execute.add_argument("-e", "--env", action="append", default=[])
    execute.add_argument("-u", "--user", help="UID[:GID]")
    execute.add_argument("-g", "--additional-gids", action="append", default=[])
    execute.add_argument("-c", "--cap", action="append", default=[])
    execute.add_argument("--no-new-privs", action="store_true")
    execute.add_argument("-a", "--apparmor")
    execute.add_argument("--process-label")
    execute.add_argument("--preserve-fds", type=int, default=0)
    execute.add_argument("--cgroup", action="append", default=[],
                         help="[CONTROLLER[,CONTROLLER]:]PATH: an existing sub-cgroup to run in")
    execute.add_argument("--ignore-paused", action="store_true")
    execute.add_argument("id")
    execute.add_argument("program", nargs=argparse.REMAINDER, help="COMMAND [ARGS...]")
    return parser


def _create_options(args):
    from pyoci.lifecycle import CreateOptions
    return CreateOptions(bundle=args.bundle, pid_file=args.pid_file,
                         console_socket=args.console_socket, pidfd_socket=args.pidfd_socket,
                         no_pivot=args.no_pivot,
                         no_new_keyring=args.no_new_keyring, preserve_fds=args.preserve_fds,
                         systemd_cgroup=args.systemd_cgroup, rootless=args.rootless)


def _print_json(value, indent=2):
    sys.stdout.write(json.dumps(value, indent=indent) + "\n")


def cmd_create(args):
    from pyoci import lifecycle
    lifecycle.create(args.root, args.id, _create_options(args))


def cmd_run(args):
    from pyoci import lifecycle
    return lifecycle.run(args.root, args.id, _create_options(args), detach=args.detach,
                         keep=args.keep)


def cmd_start(args):
    from pyoci import lifecycle
    lifecycle.start(args.root, args.id)


def cmd_state(args):
    from pyoci import lifecycle
    _print_json(lifecycle.container_state(args.root, args.id))


def cmd_kill(args):
    from pyoci import lifecycle
    lifecycle.kill(args.root, args.id, args.signal, all_processes=args.all)


def cmd_delete(args):
    from pyoci import lifecycle
    lifecycle.delete(args.root, args.id, force=args.force)


def cmd_list(args):
    from pyoci import lifecycle
    states = lifecycle.list_states(args.root)
    if args.quiet:
        sys.stdout.write("".join(s["id"] + "\n" for s in states))
    elif args.format == "json":
        # runc prints a Go nil slice, null, when there are no containers.
        sys.stdout.write(json.dumps(states or None, separators=(",", ":")) + "\n")
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


def cmd_pause(args):
    from pyoci import control
    control.pause(args.root, args.id)


def cmd_resume(args):
    from pyoci import control
    control.resume(args.root, args.id)


def cmd_ps(args):
    from pyoci import control
    pids = control.pids(args.root, args.id)
    if args.format == "json":
        sys.stdout.write(json.dumps(pids, separators=(",", ":")) + "\n")
    else:
        sys.stdout.write(control.ps_table(pids, args.ps_args))


def cmd_update(args):
    from pyoci import control
    for flag, value in (("--l3-cache-schema", args.l3_cache_schema),
                        ("--mem-bw-schema", args.mem_bw_schema)):
        if value is not None:
            raise ConfigError(f"{flag}: Intel RDT is not supported")
    flags = {name: getattr(args, name) for name in control.UPDATE_FLAGS}
    control.update(args.root, args.id, args.resources, flags)


def cmd_events(args):
    from pyoci import control
    control.events(args.root, args.id, control.parse_interval(args.interval), args.stats)


def cmd_features(_args):
    from pyoci.features import features
    _print_json(features(), indent=4)


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    # An inherited SIG_IGN for SIGCHLD would make the kernel reap our children
    # before we can wait for them.
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    try:
        args = _build_parser().parse_args(argv)
        log.configure(args.log, args.log_format, args.debug)
        handler = globals()["cmd_" + args.command]
        status = handler(args)
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


if __name__ == "__main__":
    sys.exit(main())
