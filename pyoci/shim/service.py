"""containerd's task service (containerd.task.v2.Task) over pyoci.runtime.

One shim serves every container of its group (a pod's sandbox and its
containers, as runc's shim groups them). It is the subreaper of every
process it starts: their exits come as SIGCHLD, reaped here, answered to
Wait and published as TaskExit.
"""
import os
import time

from pyoci import jsontext
from pyoci.errors import PyociError
from pyoci.shim import messages as m, stdio as stdio_module
from pyoci.shim.ttrpc import (ALREADY_EXISTS, FAILED_PRECONDITION, INVALID_ARGUMENT, LATER,
                              NOT_FOUND, UNIMPLEMENTED, Service, TtrpcError)

SIGKILL = 9


class Process:
    """A container's init (EXEC_ID "") or one of its exec processes."""

    def __init__(self, task, exec_id, stdio, spec=None):
        self.task = task
        self.exec_id = exec_id
        self.stdio = stdio
        self.spec = spec
        self.pid = 0
        self.status = m.CREATED
        self.exit_status = 0
        self.exited_at = None
        self.waiters = []

    @property
    def exited(self):
        return self.exited_at is not None

    def exit_fields(self):
        return {"exit_status": self.exit_status,
                "exited_at": m.timestamp(self.exited_at) if self.exited else None}


class Task:
    def __init__(self, container_id, bundle, rootfs_mounted):
        self.id = container_id
        self.bundle = bundle
        self.rootfs_mounted = rootfs_mounted
        self.oom_watch = None
        self.init = None
        self.execs = {}
        self.exit_held = False  # init's TaskExit waits for its execs' (runc's order)

    def process(self, exec_id):
        if not exec_id:
            return self.init
        process = self.execs.get(exec_id)
        if process is None:
            raise TtrpcError(NOT_FOUND, f"process does not exist {exec_id}")
        return process


class TaskService:
    def __init__(self, loop, runtime, publish, on_empty, log):
        self._loop = loop
        self.runtime = runtime
        self._publish = publish  # (event type, event): queued, sent after the loop's turn
        self._on_empty = on_empty  # Shutdown with no container left
        self._log = log
        self.tasks = {}
        self._by_pid = {}
        loop.on_signal(17, self.reap)  # SIGCHLD
        self.service = Service(m.TASK_SERVICE, {
            "State": (m.STATE_REQUEST, m.STATE_RESPONSE, self.state),
            "Create": (m.CREATE_TASK_REQUEST, m.CREATE_TASK_RESPONSE, self.create),
            "Start": (m.START_REQUEST, m.START_RESPONSE, self.start),
            "Delete": (m.DELETE_REQUEST, m.DELETE_RESPONSE, self.delete),
            "Pids": (m.PIDS_REQUEST, m.PIDS_RESPONSE, self.pids),
            "Pause": (m.PAUSE_REQUEST, m.EMPTY, self.pause),
            "Resume": (m.RESUME_REQUEST, m.EMPTY, self.resume),
            "Checkpoint": (m.CHECKPOINT_TASK_REQUEST, m.EMPTY, self.checkpoint),
            "Kill": (m.KILL_REQUEST, m.EMPTY, self.kill),
            "Exec": (m.EXEC_PROCESS_REQUEST, m.EMPTY, self.exec),
            "ResizePty": (m.RESIZE_PTY_REQUEST, m.EMPTY, self.resize_pty),
            "CloseIO": (m.CLOSE_IO_REQUEST, m.EMPTY, self.close_io),
            "Update": (m.UPDATE_TASK_REQUEST, m.EMPTY, self.update),
            "Wait": (m.WAIT_REQUEST, m.WAIT_RESPONSE, self.wait),
            "Stats": (m.STATS_REQUEST, m.STATS_RESPONSE, self.stats),
            "Connect": (m.CONNECT_REQUEST, m.CONNECT_RESPONSE, self.connect),
            "Shutdown": (m.SHUTDOWN_REQUEST, m.EMPTY, self.shutdown),
        })

    def _task(self, container_id):
        task = self.tasks.get(container_id)
        if task is None:
            raise TtrpcError(NOT_FOUND, "container not created")
        return task

    # ------------------------------------------------------------ the init process

    def create(self, request, _reply):
        from pyoci.shim import rootfs
        container_id, bundle = request["id"], request["bundle"]
        if container_id in self.tasks:
            raise TtrpcError(ALREADY_EXISTS, f"container {container_id}")
        if request["checkpoint"] or request["parent_checkpoint"]:
            raise TtrpcError(UNIMPLEMENTED, "restoring from a checkpoint: not implemented")
        create_flags = self._options(request["options"])
        mounted = rootfs.mount_all(request["rootfs"], os.path.join(bundle, "rootfs"))
        task = Task(container_id, bundle, mounted)
        stdio = None
        try:
            stdio = stdio_module.Stdio(self._loop, request["stdin"], request["stdout"],
                                       request["stderr"], request["terminal"])
            fds = stdio.for_terminal() if request["terminal"] else stdio.for_process()
            try:
                container = self.runtime.create(container_id, bundle, stdio=fds,
                                                terminal=request["terminal"], **create_flags)
            except (PyociError, OSError) as exc:
                raise TtrpcError(2, f"OCI runtime create failed: {_text(exc)}") from None
            stdio.handed_over()
            if request["terminal"]:
                if container.terminal_master is None:
                    raise TtrpcError(INVALID_ARGUMENT, "terminal asked for, but config.json's "
                                     "process.terminal is false")
                stdio.attach_master(container.terminal_master)
        except BaseException:
            if stdio is not None:
                stdio.close()
            if mounted:
                rootfs.unmount(os.path.join(bundle, "rootfs"))
            raise
        init = task.init = Process(task, "", stdio)
        init.pid = container.record["pid"]
        self._by_pid[init.pid] = init
        self.tasks[container_id] = task
        from pyoci.shim.oom import OomWatch
        try:
            task.oom_watch = OomWatch(self._loop, container.record.get("cgroup_paths") or {},
                                      lambda: self._publish(m.TASK_OOM, m.TASK_OOM.new(
                                          container_id=container_id)))
        except OSError as exc:  # the container runs; only its OOM events are lost
            self._log.warning(f"shim: {container_id}: OOM kills will not be reported: {exc}")
        self._publish(m.TASK_CREATE, m.TASK_CREATE.new(
            container_id=container_id, bundle=bundle, rootfs=request["rootfs"], pid=init.pid,
            io=m.TASK_IO.new(stdin=request["stdin"], stdout=request["stdout"],
                             stderr=request["stderr"], terminal=request["terminal"])))
        return {"pid": init.pid}

    def _options(self, options):
        """create's flags from the runtime options containerd passes, refusing
        what the pyoci shim cannot do rather than dropping it."""
        if options is None or not options["type_url"]:
            return {}
        from pyoci import wire
        name = options["type_url"].rpartition("/")[2]
        if name == m.CRI_RUNTIME_OPTIONS.name:
            given = wire.decode(m.CRI_RUNTIME_OPTIONS, options["value"])
            if given["config_path"]:
                raise TtrpcError(INVALID_ARGUMENT, f"runtime options: config_path "
                                 f"{given['config_path']}: the pyoci shim reads no options file")
            return {}
        if name != m.RUNC_OPTIONS.name:
            raise TtrpcError(INVALID_ARGUMENT, f"runtime options of type {options['type_url']}: "
                             f"the pyoci shim takes {m.RUNC_OPTIONS.name}")
        given = wire.decode(m.RUNC_OPTIONS, options["value"])
        unsupported = [field for field in ("shim_cgroup", "io_uid", "io_gid", "binary_name",
                                           "criu_path", "criu_image_path", "criu_work_path")
                       if given[field]]
        if unsupported:
            raise TtrpcError(INVALID_ARGUMENT, "runtime options: the pyoci shim does not take "
                             + ", ".join(unsupported))
        if given["root"] and given["root"] != self.runtime.root or \
                given["systemd_cgroup"] != self.runtime.systemd_cgroup:
            raise TtrpcError(INVALID_ARGUMENT, "runtime options: root and systemd_cgroup are the "
                             "shim's, from its start (they differ here)")
        return {"no_pivot": given["no_pivot_root"], "no_new_keyring": given["no_new_keyring"]}

    def start(self, request, _reply):
        task = self._task(request["id"])
        process = task.process(request["exec_id"])
        if process.status != m.CREATED:
            raise TtrpcError(FAILED_PRECONDITION, f"process {process.exec_id or task.id} "
                             "is not in the created state")
        if process.exec_id:
            return {"pid": self._start_exec(task, process)}
        try:
            self.runtime.start(task.id)
        except (PyociError, OSError) as exc:
            raise TtrpcError(2, f"OCI runtime start failed: {_text(exc)}") from None
        if not process.exited:
            process.status = m.RUNNING
        self._publish(m.TASK_START, m.TASK_START.new(container_id=task.id, pid=process.pid))
        return {"pid": process.pid}

    def delete(self, request, _reply):
        task = self._task(request["id"])
        process = task.process(request["exec_id"])
        if process.exec_id:
            if process.status == m.RUNNING:
                raise TtrpcError(FAILED_PRECONDITION, "cannot delete a running process")
            del task.execs[process.exec_id]
            process.stdio.close()
            return {"pid": process.pid, **process.exit_fields()}
        if process.status == m.RUNNING and not process.exited:
            raise TtrpcError(FAILED_PRECONDITION, "cannot delete a running process")
        try:
            # A created one's init is killed first, and reaped here.
            self.runtime.delete(task.id, force=not process.exited)
        except PyociError as exc:
            if "does not exist" not in str(exc):
                raise TtrpcError(2, f"OCI runtime delete failed: {_text(exc)}") from None
        if not process.exited:
            self._reap_now(process)
        for exec_process in task.execs.values():
            exec_process.stdio.close()
        process.stdio.close()
        if task.oom_watch is not None:
            task.oom_watch.close()
        if task.rootfs_mounted:
            from pyoci.shim import rootfs
            rootfs.unmount(os.path.join(task.bundle, "rootfs"))
        del self.tasks[task.id]
        self._publish(m.TASK_DELETE, m.TASK_DELETE.new(
            container_id=task.id, pid=process.pid, **process.exit_fields()))
        return {"pid": process.pid, **process.exit_fields()}

    def _reap_now(self, process):
        try:
            _, status = os.waitpid(process.pid, 0)
        except ChildProcessError:
            status = SIGKILL
        self._exited(process, status)

    # ------------------------------------------------------------ exec processes

    def exec(self, request, _reply):
        task = self._task(request["id"])
        exec_id = request["exec_id"]
        if exec_id in task.execs:
            raise TtrpcError(ALREADY_EXISTS, f"id {exec_id}")
        if task.init.exited:
            raise TtrpcError(FAILED_PRECONDITION, f"container {task.id}: its init has exited")
        spec = request["spec"]
        if spec is None or spec["type_url"].rpartition("/1/")[2] != "Process":
            raise TtrpcError(INVALID_ARGUMENT, f"exec {exec_id}: spec is not a runtime-spec Process")
        try:
            process_spec = jsontext.loads(spec["value"])
        except ValueError as exc:
            raise TtrpcError(INVALID_ARGUMENT, f"exec {exec_id}: spec: {exc}") from None
        stdio = stdio_module.Stdio(self._loop, request["stdin"], request["stdout"],
                                   request["stderr"], request["terminal"])
        task.execs[exec_id] = Process(task, exec_id, stdio, process_spec)
        self._publish(m.TASK_EXEC_ADDED, m.TASK_EXEC_ADDED.new(container_id=task.id,
                                                               exec_id=exec_id))
        return {}

    def _start_exec(self, task, process):
        terminal = process.stdio.terminal
        try:
            if terminal:
                pid, master = self.runtime.exec(task.id, process.spec, stdio=process.stdio.for_terminal(),
                                                terminal_master=True)
            else:
                pid = self.runtime.exec(task.id, process.spec, stdio=process.stdio.for_process())
        except (PyociError, OSError) as exc:
            raise TtrpcError(2, f"OCI runtime exec failed: {_text(exc)}") from None
        process.stdio.handed_over()
        if terminal:
            process.stdio.attach_master(master)
        process.pid = pid
        process.status = m.RUNNING
        self._by_pid[pid] = process
        self._publish(m.TASK_EXEC_STARTED, m.TASK_EXEC_STARTED.new(
            container_id=task.id, exec_id=process.exec_id, pid=pid))
        return pid

    # ------------------------------------------------------------ exits

    def reap(self):
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            process = self._by_pid.get(pid)
            if process is not None:
                self._exited(process, status)

    def _exited(self, process, wait_status):
        self._by_pid.pop(process.pid, None)
        process.exit_status = (128 + os.WTERMSIG(wait_status) if os.WIFSIGNALED(wait_status)
                               else os.WEXITSTATUS(wait_status))
        process.exited_at = time.time()
        process.status = m.STOPPED
        process.stdio.finish()
        for reply in process.waiters:
            reply.answer(process.exit_fields())
        process.waiters = []
        task = process.task
        if task.oom_watch is not None:
            task.oom_watch.check()  # an OOM kill is told before the exit it caused
        if process.exec_id:
            self._publish_exit(process)
            if task.exit_held and not self._running_execs(task):
                task.exit_held = False
                self._publish_exit(task.init)
        elif self._running_execs(task):
            task.exit_held = True
        else:
            self._publish_exit(process)

    @staticmethod
    def _running_execs(task):
        return [p for p in task.execs.values() if p.status == m.RUNNING]

    def _publish_exit(self, process):
        task = process.task
        self._publish(m.TASK_EXIT, m.TASK_EXIT.new(
            container_id=task.id, id=process.exec_id or task.id, pid=process.pid,
            **process.exit_fields()))

    def wait(self, request, reply):
        process = self._task(request["id"]).process(request["exec_id"])
        if process.exited:
            return process.exit_fields()
        process.waiters.append(reply)
        return LATER

    # ------------------------------------------------------------ the rest

    def state(self, request, _reply):
        task = self._task(request["id"])
        process = task.process(request["exec_id"])
        status = process.status
        if status == m.RUNNING and not process.exec_id:
            try:
                if self.runtime.state(task.id)["status"] == "paused":
                    status = m.PAUSED
            except PyociError:
                pass
        names = process.stdio.names
        return {"id": process.exec_id or task.id, "exec_id": process.exec_id, "bundle": task.bundle,
                "pid": process.pid, "status": status, "stdin": names[0], "stdout": names[1],
                "stderr": names[2], "terminal": process.stdio.terminal, **process.exit_fields()}

    def kill(self, request, _reply):
        task = self._task(request["id"])
        process = task.process(request["exec_id"])
        if process.exec_id:
            if process.status != m.RUNNING:
                raise TtrpcError(NOT_FOUND, "process already finished")
            os.kill(process.pid, request["signal"])  # ours to reap: its pid is not reused before
            return {}
        if process.exited and not request["all"]:
            raise TtrpcError(NOT_FOUND, "process already finished")
        try:
            self.runtime.kill(task.id, request["signal"], all_processes=request["all"])
        except PyociError as exc:
            if "not running" in str(exc):
                raise TtrpcError(NOT_FOUND, "process already finished") from None
            raise TtrpcError(2, f"OCI runtime kill failed: {_text(exc)}") from None
        return {}

    def pids(self, request, _reply):
        task = self._task(request["id"])
        from pyoci import wire
        exec_ids = {p.pid: p.exec_id for p in task.execs.values() if p.status == m.RUNNING}
        processes = []
        for pid in self._runtime_call(self.runtime.pids, task.id):
            info = None
            if pid in exec_ids:
                info = m.ANY.new(type_url=m.PROCESS_DETAILS.name, value=wire.encode(
                    m.PROCESS_DETAILS, {"exec_id": exec_ids[pid]}))
            processes.append(m.PROCESS_INFO.new(pid=pid, info=info))
        return {"processes": processes}

    def pause(self, request, _reply):
        task = self._task(request["id"])
        self._runtime_call(self.runtime.pause, task.id)
        self._publish(m.TASK_PAUSED, m.TASK_PAUSED.new(container_id=task.id))
        return {}

    def resume(self, request, _reply):
        task = self._task(request["id"])
        self._runtime_call(self.runtime.resume, task.id)
        self._publish(m.TASK_RESUMED, m.TASK_RESUMED.new(container_id=task.id))
        return {}

    def checkpoint(self, request, _reply):
        raise TtrpcError(UNIMPLEMENTED, "checkpoint: not implemented by the pyoci shim")

    def resize_pty(self, request, _reply):
        process = self._task(request["id"]).process(request["exec_id"])
        if process.stdio.master is None:
            raise TtrpcError(FAILED_PRECONDITION, "the process has no terminal")
        stdio_module.set_window_size(process.stdio.master, request["width"], request["height"])
        return {}

    def close_io(self, request, _reply):
        process = self._task(request["id"]).process(request["exec_id"])
        if request["stdin"]:
            process.stdio.close_stdin()
        return {}

    def update(self, request, _reply):
        task = self._task(request["id"])
        if request["annotations"]:
            # Taken and not applied, as runc's shim takes them (a deviation, in the README).
            self._log.debug(f"shim: update {task.id}: annotations "
                            f"{sorted(request['annotations'])} are not applied")
        resources = request["resources"]
        if resources is None:
            return {}
        try:
            value = jsontext.loads(resources["value"])
        except ValueError as exc:
            raise TtrpcError(INVALID_ARGUMENT, f"resources: {exc}") from None
        self._runtime_call(self.runtime.update, task.id, value)
        return {}

    def stats(self, request, _reply):
        from pyoci.linux import cgroups
        from pyoci.shim.metrics import metrics_any
        task = self._task(request["id"])
        stats = self._runtime_call(self.runtime.stats, task.id)
        return {"stats": metrics_any(stats, cgroups.detect_mode() == cgroups.UNIFIED)}

    def connect(self, request, _reply):
        task = self.tasks.get(request["id"])
        return {"shim_pid": os.getpid(), "task_pid": task.init.pid if task else 0}

    def shutdown(self, request, _reply):
        if not self.tasks:
            self._on_empty()
        return {}

    def _runtime_call(self, call, *args):
        try:
            return call(*args)
        except PyociError as exc:
            code = NOT_FOUND if "does not exist" in str(exc) else 2
            raise TtrpcError(code, _text(exc)) from None


def _text(exc):
    from pyoci.errors import describe
    return describe(exc)
