"""CRIU's RPC: `criu swrk FD` serves one request on a SOCK_SEQPACKET socket,
one protobuf message per datagram, asks the client at each step it reaches
(a NOTIFY the client must answer) and ends with its response.

The messages are pyoci's own definitions, written from the field numbers
CRIU 3.17 publishes (docs/research/criu-checkpoint.md §1.3). They are
proto2: a field is sent only when it is set, as CRIU tells "false" from
"not given". The RPC rather than CRIU's command line, as runc: the notify
steps are where the runtime runs hooks, records the restored pid and hands
a terminal's new master on, and the command line has no such steps.
"""
import os

from pyoci import log, wire
from pyoci.errors import ExecError, errno_text
from pyoci.linux import unix

DUMP, RESTORE, PRE_DUMP, NOTIFY, FEATURE_CHECK, VERSION = 1, 2, 4, 6, 9, 10
TYPE_NAMES = {DUMP: "DUMP", RESTORE: "RESTORE", PRE_DUMP: "PRE_DUMP", NOTIFY: "NOTIFY",
              FEATURE_CHECK: "FEATURE_CHECK", VERSION: "VERSION"}
# --manage-cgroups-mode: CRIU's criu_cg_mode values.
CGROUP_MODES = {"ignore": 0, "soft": 3, "full": 4, "strict": 5}
MIN_VERSION = 30000  # as runc: 3.0
LSM_VERSION = 31600  # lsm_profile, lsm_mount_context

CLONE_NEWNET = 0x40000000


def _message(name, *fields):
    return wire.Message(name, *fields, proto2=True)


PAGE_SERVER_INFO = _message("criu_page_server_info", ("address", 1, "string"),
                            ("port", 2, "int32"), ("pid", 3, "int32"), ("fd", 4, "int32"))
EXT_MOUNT = _message("ext_mount_map", ("key", 1, "string"), ("val", 2, "string"))
JOIN_NAMESPACE = _message("join_namespace", ("ns", 1, "string"), ("ns_file", 2, "string"),
                          ("extra_opt", 3, "string"))
INHERIT_FD = _message("inherit_fd", ("key", 1, "string"), ("fd", 2, "int32"))
CGROUP_ROOT = _message("cgroup_root", ("ctrl", 1, "string"), ("path", 2, "string"))
OPTS = _message(
    "criu_opts", ("images_dir_fd", 1, "int32"), ("pid", 2, "int32"),
    ("leave_running", 3, "bool"), ("ext_unix_sk", 4, "bool"), ("tcp_established", 5, "bool"),
    ("evasive_devices", 6, "bool"), ("shell_job", 7, "bool"), ("file_locks", 8, "bool"),
    ("log_level", 9, "int32"), ("log_file", 10, "string"), ("ps", 11, PAGE_SERVER_INFO),
    ("notify_scripts", 12, "bool"), ("root", 13, "string"), ("parent_img", 14, "string"),
    ("track_mem", 15, "bool"), ("auto_dedup", 16, "bool"), ("work_dir_fd", 17, "int32"),
    ("ext_mnt", 23, wire.Repeated(EXT_MOUNT)), ("manage_cgroups", 24, "bool"),
    ("cg_root", 25, wire.Repeated(CGROUP_ROOT)), ("rst_sibling", 26, "bool"),
    ("inherit_fd", 27, wire.Repeated(INHERIT_FD)), ("manage_cgroups_mode", 34, "enum"),
    ("external", 37, wire.Repeated("string")), ("empty_ns", 38, "uint32"),
    ("join_ns", 39, wire.Repeated(JOIN_NAMESPACE)), ("freeze_cgroup", 44, "string"),
    ("lazy_pages", 48, "bool"), ("status_fd", 49, "int32"), ("orphan_pts_master", 50, "bool"),
    ("config_file", 51, "string"), ("lsm_profile", 53, "string"),
    ("lsm_mount_context", 63, "string"))
FEATURES = _message("criu_features", ("mem_track", 1, "bool"), ("lazy_pages", 2, "bool"),
                    ("pidfd_store", 3, "bool"))
REQUEST = _message("criu_req", ("type", 1, "enum"), ("opts", 2, OPTS),
                   ("notify_success", 3, "bool"), ("keep_open", 4, "bool"),
                   ("features", 5, FEATURES), ("pid", 6, "uint32"))
NOTIFY_MESSAGE = _message("criu_notify", ("script", 1, "string"), ("pid", 2, "int32"))
VERSION_MESSAGE = _message(
    "criu_version", ("major_number", 1, "int32"), ("minor_number", 2, "int32"),
    ("gitid", 3, "string"), ("sublevel", 4, "int32"), ("extra", 5, "int32"),
    ("name", 6, "string"))
RESPONSE = _message(
    "criu_resp", ("type", 1, "enum"), ("success", 2, "bool"),
    ("dump", 3, _message("criu_dump_resp", ("restored", 1, "bool"))),
    ("restore", 4, _message("criu_restore_resp", ("pid", 1, "int32"))),
    ("notify", 5, NOTIFY_MESSAGE), ("ps", 6, PAGE_SERVER_INFO), ("cr_errno", 7, "int32"),
    ("features", 8, FEATURES), ("cr_errmsg", 9, "string"), ("version", 10, VERSION_MESSAGE),
    ("status", 11, "int32"))

_DATAGRAM = 1 << 16  # CRIU's messages are a few hundred bytes


class CriuError(ExecError):
    pass


def version(criu):
    """CRIU's version as one number, major*10000 + minor*100 + sublevel (a
    build from git counts as the next minor, as runc counts it); refused
    below 3.0 or when CRIU cannot be run."""
    try:
        response = Conversation(criu).request(VERSION, None)
    except CriuError as exc:
        raise CriuError(f"CRIU version check failed: {exc}") from None
    found = response["version"] or {}
    number = (found.get("major_number", 0) * 10000 + found.get("minor_number", 0) * 100
              + found.get("sublevel", 0))
    if found.get("gitid"):
        number = number - number % 100 + 100
    if number < MIN_VERSION:
        raise CriuError(f"CRIU version {number} must be {MIN_VERSION} or higher")
    return number


def check_features(criu, opts, **wanted):
    """Refuse unless CRIU has each feature in WANTED (mem_track, lazy_pages)."""
    try:
        response = Conversation(criu).request(FEATURE_CHECK, opts, features=wanted)
    except CriuError as exc:
        raise CriuError(f"CRIU feature check failed: {exc}") from None
    found = response["features"] or {}
    missing = sorted(name for name in wanted if not found.get(name))
    if missing:
        raise CriuError(f"CRIU is missing features: {', '.join(missing)}")


class Conversation:
    """One `criu swrk` worker and the request it serves.

    STDIO: the worker's (stdin, stdout, stderr) fds (a restore's become the
    restored process's, through inherit_fd), by default /dev/null;
    PASS_FDS: more fds it inherits under their own numbers (inherit_fd's).
    LOG_PATH: the log CRIU writes, quoted when it fails.
    """

    def __init__(self, criu, stdio=None, pass_fds=(), log_path=None):
        self.criu = criu or "criu"
        self.stdio = stdio
        self.pass_fds = tuple(pass_fds)
        self.log_path = log_path
        self.process = None
        self._sock = None

    def start(self):
        """Start the worker; it waits for the request (a restore puts it in
        the container's cgroups meanwhile). Returns its pid."""
        import subprocess
        ours, theirs = unix.pair(unix.SEQPACKET)
        stdio = self.stdio or (subprocess.DEVNULL,) * 3
        try:
            self.process = subprocess.Popen(
                [self.criu, "swrk", str(theirs.fileno())], pass_fds=(theirs.fileno(),
                                                                     *self.pass_fds),
                stdin=stdio[0], stdout=stdio[1], stderr=stdio[2])
        except OSError as exc:
            ours.close()
            raise CriuError(f"exec {self.criu}: {errno_text(exc.errno)}") from None
        finally:
            theirs.close()  # a worker that dies is then an end of file, not a hang
        self._sock = ours
        return self.process.pid

    def request(self, request_type, opts, on_notify=None, **fields):
        """Send the request, answer its notifies with ON_NOTIFY(script, pid,
        fds) (which raises to refuse the step), and return the response."""
        if self.process is None:
            self.start()
        name = TYPE_NAMES[request_type]
        try:
            self._send({"type": request_type, "opts": opts, **fields})
            while True:
                response = self._receive(name)
                if response["type"] != NOTIFY:
                    break
                notify = response["notify"] or {}
                script = notify.get("script", "")
                log.debug(f"criu {name}: {script}")
                received = response.pop("fds")
                if on_notify is not None:
                    on_notify(script, notify.get("pid", 0), received)
                else:
                    for fd in received:
                        os.close(fd)
                self._send({"type": NOTIFY, "notify_success": True})
        except BaseException:
            self.close(kill=True)
            raise
        self._finish(name, response)
        return response

    def _send(self, request):
        try:
            self._sock.send(wire.encode(REQUEST, request))
        except OSError as exc:
            raise self._failure(f"send to CRIU: {errno_text(exc.errno)}") from None

    def _receive(self, name):
        try:
            data, fds = unix.receive_fds(self._sock, _DATAGRAM, 1)
        except OSError as exc:
            raise self._failure(f"receive from CRIU: {errno_text(exc.errno)}") from None
        if not data:
            raise self._failure(f"criu failed: type {name}: it exited without an answer")
        try:
            response = wire.decode(RESPONSE, data)
        except wire.DecodeError as exc:
            raise self._failure(f"criu failed: type {name}: unreadable answer ({exc})") from None
        response["fds"] = fds
        return response

    def _finish(self, name, response):
        """After the response: CRIU's own verdict, then its exit status."""
        for fd in response.pop("fds"):
            os.close(fd)
        if not response["success"]:
            errno = response.get("cr_errno") or 0
            raise self._failure(f"criu failed: type {name} errno {errno}",
                                response.get("cr_errmsg"))
        self._sock.shutdown(1)  # SHUT_WR: the worker reads an end and exits
        status = self.close()
        # After a PRE_DUMP the worker waits for the next one, and fails on the end.
        if status != 0 and name != "PRE_DUMP":
            raise self._failure(f"criu failed: type {name}: exit status {status}")

    def close(self, kill=False):
        """End the conversation; the worker's exit status."""
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        if self.process is None:
            return None
        if kill and self.process.poll() is None:
            self.process.kill()
        return self.process.wait()

    def _failure(self, what, errmsg=None):
        """WHAT, and the first error CRIU logged (or said), as one line."""
        if self.process is not None and self.process.poll() is None:
            self.close(kill=True)
        quoted = first_error(self.log_path) or errmsg
        text = f"{what}: {quoted}" if quoted else what
        if self.log_path:
            text += f" (log: {self.log_path})"
        return CriuError(text)


def first_error(log_path):
    """The first line of CRIU's log at LOG_PATH that says Error, without its
    timestamp; None if there is none (or no log)."""
    if not log_path:
        return None
    try:
        with open(log_path, errors="replace") as f:
            for line in f:
                if "Error" in line:
                    text = line.strip()
                    if text.startswith("("):
                        text = text.partition(") ")[2]
                    return text
    except OSError:
        pass
    return None
