"""The messages the shim speaks, written from the field numbers containerd
1.6, ttrpc 1.1 and containerd/cgroups 1.0 publish (docs/research/
containerd-shim-v2.md lists them with their sources)."""
from pyoci.wire import MapOf, Message, Repeated

# google.protobuf and google.rpc
TIMESTAMP = Message("google.protobuf.Timestamp", ("seconds", 1, "int64"), ("nanos", 2, "int32"))


def timestamp(seconds):
    """A Timestamp of SECONDS since the epoch (time.time()'s)."""
    return TIMESTAMP.new(seconds=int(seconds), nanos=int(seconds % 1 * 1e9))


ANY = Message("google.protobuf.Any", ("type_url", 1, "string"), ("value", 2, "bytes"))
EMPTY = Message("google.protobuf.Empty")
STATUS = Message("google.rpc.Status", ("code", 1, "int32"), ("message", 2, "string"),
                 ("details", 3, Repeated(ANY)))

# ttrpc
KEY_VALUE = Message("ttrpc.KeyValue", ("key", 1, "string"), ("value", 2, "string"))
REQUEST = Message("ttrpc.Request", ("service", 1, "string"), ("method", 2, "string"),
                  ("payload", 3, "bytes"), ("timeout_nano", 4, "int64"),
                  ("metadata", 5, Repeated(KEY_VALUE)))
RESPONSE = Message("ttrpc.Response", ("status", 1, STATUS), ("payload", 2, "bytes"))

# containerd.types, containerd.v1.types
MOUNT = Message("containerd.types.Mount", ("type", 1, "string"), ("source", 2, "string"),
                ("target", 3, "string"), ("options", 4, Repeated("string")))
PROCESS_INFO = Message("containerd.v1.types.ProcessInfo", ("pid", 1, "uint32"), ("info", 2, ANY))
PROCESS_DETAILS = Message("containerd.runc.v1.ProcessDetails", ("exec_id", 1, "string"))
UNKNOWN, CREATED, RUNNING, STOPPED, PAUSED, PAUSING = range(6)  # containerd.v1.types.Status

# containerd.task.v2
TASK_SERVICE = "containerd.task.v2.Task"
_ID = ("id", 1, "string")
_EXEC_ID = ("exec_id", 2, "string")
CREATE_TASK_REQUEST = Message(
    "containerd.task.v2.CreateTaskRequest", _ID, ("bundle", 2, "string"),
    ("rootfs", 3, Repeated(MOUNT)), ("terminal", 4, "bool"), ("stdin", 5, "string"),
    ("stdout", 6, "string"), ("stderr", 7, "string"), ("checkpoint", 8, "string"),
    ("parent_checkpoint", 9, "string"), ("options", 10, ANY))
CREATE_TASK_RESPONSE = Message("containerd.task.v2.CreateTaskResponse", ("pid", 1, "uint32"))
DELETE_REQUEST = Message("containerd.task.v2.DeleteRequest", _ID, _EXEC_ID)
DELETE_RESPONSE = Message("containerd.task.v2.DeleteResponse", ("pid", 1, "uint32"),
                          ("exit_status", 2, "uint32"), ("exited_at", 3, TIMESTAMP))
EXEC_PROCESS_REQUEST = Message(
    "containerd.task.v2.ExecProcessRequest", _ID, _EXEC_ID, ("terminal", 3, "bool"),
    ("stdin", 4, "string"), ("stdout", 5, "string"), ("stderr", 6, "string"), ("spec", 7, ANY))
RESIZE_PTY_REQUEST = Message("containerd.task.v2.ResizePtyRequest", _ID, _EXEC_ID,
                             ("width", 3, "uint32"), ("height", 4, "uint32"))
STATE_REQUEST = Message("containerd.task.v2.StateRequest", _ID, _EXEC_ID)
STATE_RESPONSE = Message(
    "containerd.task.v2.StateResponse", ("id", 1, "string"), ("bundle", 2, "string"),
    ("pid", 3, "uint32"), ("status", 4, "enum"), ("stdin", 5, "string"),
    ("stdout", 6, "string"), ("stderr", 7, "string"), ("terminal", 8, "bool"),
    ("exit_status", 9, "uint32"), ("exited_at", 10, TIMESTAMP), ("exec_id", 11, "string"))
KILL_REQUEST = Message("containerd.task.v2.KillRequest", _ID, _EXEC_ID, ("signal", 3, "uint32"),
                       ("all", 4, "bool"))
CLOSE_IO_REQUEST = Message("containerd.task.v2.CloseIORequest", _ID, _EXEC_ID,
                           ("stdin", 3, "bool"))
PIDS_REQUEST = Message("containerd.task.v2.PidsRequest", _ID)
PIDS_RESPONSE = Message("containerd.task.v2.PidsResponse",
                        ("processes", 1, Repeated(PROCESS_INFO)))
CHECKPOINT_TASK_REQUEST = Message("containerd.task.v2.CheckpointTaskRequest", _ID,
                                  ("path", 2, "string"), ("options", 3, ANY))
UPDATE_TASK_REQUEST = Message("containerd.task.v2.UpdateTaskRequest", _ID,
                              ("resources", 2, ANY), ("annotations", 3, MapOf("string")))
START_REQUEST = Message("containerd.task.v2.StartRequest", _ID, _EXEC_ID)
START_RESPONSE = Message("containerd.task.v2.StartResponse", ("pid", 1, "uint32"))
WAIT_REQUEST = Message("containerd.task.v2.WaitRequest", _ID, _EXEC_ID)
WAIT_RESPONSE = Message("containerd.task.v2.WaitResponse", ("exit_status", 1, "uint32"),
                        ("exited_at", 2, TIMESTAMP))
STATS_REQUEST = Message("containerd.task.v2.StatsRequest", _ID)
STATS_RESPONSE = Message("containerd.task.v2.StatsResponse", ("stats", 1, ANY))
CONNECT_REQUEST = Message("containerd.task.v2.ConnectRequest", _ID)
CONNECT_RESPONSE = Message("containerd.task.v2.ConnectResponse", ("shim_pid", 1, "uint32"),
                           ("task_pid", 2, "uint32"), ("version", 3, "string"))
SHUTDOWN_REQUEST = Message("containerd.task.v2.ShutdownRequest", _ID, ("now", 2, "bool"))
PAUSE_REQUEST = Message("containerd.task.v2.PauseRequest", _ID)
RESUME_REQUEST = Message("containerd.task.v2.ResumeRequest", _ID)

# Runtime options: runc's shim's, and CRI's for other runtime types.
RUNC_OPTIONS = Message(
    "containerd.runc.v1.Options", ("no_pivot_root", 1, "bool"), ("no_new_keyring", 2, "bool"),
    ("shim_cgroup", 3, "string"), ("io_uid", 4, "uint32"), ("io_gid", 5, "uint32"),
    ("binary_name", 6, "string"), ("root", 7, "string"), ("criu_path", 8, "string"),
    ("systemd_cgroup", 9, "bool"), ("criu_image_path", 10, "string"),
    ("criu_work_path", 11, "string"))
CRI_RUNTIME_OPTIONS = Message("runtimeoptions.v1.Options", ("type_url", 1, "string"),
                              ("config_path", 2, "string"))

# Events: containerd.events, forwarded through containerd.services.events.ttrpc.v1
EVENTS_SERVICE = "containerd.services.events.ttrpc.v1.Events"
ENVELOPE = Message("containerd.services.events.ttrpc.v1.Envelope", ("timestamp", 1, TIMESTAMP),
                   ("namespace", 2, "string"), ("topic", 3, "string"), ("event", 4, ANY))
FORWARD_REQUEST = Message("containerd.services.events.ttrpc.v1.ForwardRequest",
                          ("envelope", 1, ENVELOPE))
_CONTAINER_ID = ("container_id", 1, "string")
TASK_IO = Message("containerd.events.TaskIO", ("stdin", 1, "string"), ("stdout", 2, "string"),
                  ("stderr", 3, "string"), ("terminal", 4, "bool"))
TASK_CREATE = Message("containerd.events.TaskCreate", _CONTAINER_ID, ("bundle", 2, "string"),
                      ("rootfs", 3, Repeated(MOUNT)), ("io", 4, TASK_IO),
                      ("checkpoint", 5, "string"), ("pid", 6, "uint32"))
TASK_START = Message("containerd.events.TaskStart", _CONTAINER_ID, ("pid", 2, "uint32"))
TASK_DELETE = Message("containerd.events.TaskDelete", _CONTAINER_ID, ("pid", 2, "uint32"),
                      ("exit_status", 3, "uint32"), ("exited_at", 4, TIMESTAMP),
                      ("id", 5, "string"))
TASK_EXIT = Message("containerd.events.TaskExit", _CONTAINER_ID, ("id", 2, "string"),
                    ("pid", 3, "uint32"), ("exit_status", 4, "uint32"),
                    ("exited_at", 5, TIMESTAMP))
TASK_OOM = Message("containerd.events.TaskOOM", _CONTAINER_ID)
TASK_EXEC_ADDED = Message("containerd.events.TaskExecAdded", _CONTAINER_ID,
                          ("exec_id", 2, "string"))
TASK_EXEC_STARTED = Message("containerd.events.TaskExecStarted", _CONTAINER_ID,
                            ("exec_id", 2, "string"), ("pid", 3, "uint32"))
TASK_PAUSED = Message("containerd.events.TaskPaused", _CONTAINER_ID)
TASK_RESUMED = Message("containerd.events.TaskResumed", _CONTAINER_ID)
TOPICS = {TASK_CREATE: "/tasks/create", TASK_START: "/tasks/start", TASK_DELETE: "/tasks/delete",
          TASK_EXIT: "/tasks/exit", TASK_OOM: "/tasks/oom", TASK_EXEC_ADDED: "/tasks/exec-added",
          TASK_EXEC_STARTED: "/tasks/exec-started", TASK_PAUSED: "/tasks/paused",
          TASK_RESUMED: "/tasks/resumed"}

# cgroup metrics: io.containerd.cgroups.v1 and .v2, as CRI and `ctr task metrics` read them
_U64 = "uint64"


def _u64s(name, *fields):
    return Message(name, *((field, number, _U64) for number, field in enumerate(fields, 1)))


V1_HUGETLB = Message("io.containerd.cgroups.v1.HugetlbStat", ("usage", 1, _U64),
                     ("max", 2, _U64), ("failcnt", 3, _U64), ("pagesize", 4, "string"))
V1_PIDS = _u64s("io.containerd.cgroups.v1.PidsStat", "current", "limit")
V1_CPU_USAGE = Message("io.containerd.cgroups.v1.CPUUsage", ("total", 1, _U64),
                       ("kernel", 2, _U64), ("user", 3, _U64), ("per_cpu", 4, Repeated(_U64)))
V1_THROTTLE = _u64s("io.containerd.cgroups.v1.Throttle", "periods", "throttled_periods",
                    "throttled_time")
V1_CPU = Message("io.containerd.cgroups.v1.CPUStat", ("usage", 1, V1_CPU_USAGE),
                 ("throttling", 2, V1_THROTTLE))
V1_MEMORY_ENTRY = _u64s("io.containerd.cgroups.v1.MemoryEntry", "limit", "usage", "max",
                        "failcnt")
V1_MEMORY_COUNTERS = (
    "cache", "rss", "rss_huge", "mapped_file", "dirty", "writeback", "pg_pg_in", "pg_pg_out",
    "pg_fault", "pg_maj_fault", "inactive_anon", "active_anon", "inactive_file", "active_file",
    "unevictable", "hierarchical_memory_limit", "hierarchical_swap_limit", "total_cache",
    "total_rss", "total_rss_huge", "total_mapped_file", "total_dirty", "total_writeback",
    "total_pg_pg_in", "total_pg_pg_out", "total_pg_fault", "total_pg_maj_fault",
    "total_inactive_anon", "total_active_anon", "total_inactive_file", "total_active_file",
    "total_unevictable")
V1_MEMORY = Message("io.containerd.cgroups.v1.MemoryStat",
                    *((field, number, _U64) for number, field in enumerate(V1_MEMORY_COUNTERS, 1)),
                    ("usage", 33, V1_MEMORY_ENTRY), ("swap", 34, V1_MEMORY_ENTRY),
                    ("kernel", 35, V1_MEMORY_ENTRY), ("kernel_tcp", 36, V1_MEMORY_ENTRY))
V1_BLKIO_ENTRY = Message("io.containerd.cgroups.v1.BlkIOEntry", ("op", 1, "string"),
                         ("device", 2, "string"), ("major", 3, _U64), ("minor", 4, _U64),
                         ("value", 5, _U64))
V1_BLKIO_LISTS = ("io_service_bytes_recursive", "io_serviced_recursive", "io_queued_recursive",
                  "io_service_time_recursive", "io_wait_time_recursive", "io_merged_recursive",
                  "io_time_recursive", "sectors_recursive")
V1_BLKIO = Message("io.containerd.cgroups.v1.BlkIOStat",
                   *((field, number, Repeated(V1_BLKIO_ENTRY))
                     for number, field in enumerate(V1_BLKIO_LISTS, 1)))
V1_OOM_CONTROL = _u64s("io.containerd.cgroups.v1.MemoryOomControl", "oom_kill_disable",
                       "under_oom", "oom_kill")
V1_METRICS = Message("io.containerd.cgroups.v1.Metrics", ("hugetlb", 1, Repeated(V1_HUGETLB)),
                     ("pids", 2, V1_PIDS), ("cpu", 3, V1_CPU), ("memory", 4, V1_MEMORY),
                     ("blkio", 5, V1_BLKIO), ("memory_oom_control", 9, V1_OOM_CONTROL))

V2_PIDS = _u64s("io.containerd.cgroups.v2.PidsStat", "current", "limit")
V2_CPU = _u64s("io.containerd.cgroups.v2.CPUStat", "usage_usec", "user_usec", "system_usec",
               "nr_periods", "nr_throttled", "throttled_usec")
V2_MEMORY_COUNTERS = (
    "anon", "file", "kernel_stack", "slab", "sock", "shmem", "file_mapped", "file_dirty",
    "file_writeback", "anon_thp", "inactive_anon", "active_anon", "inactive_file", "active_file",
    "unevictable", "slab_reclaimable", "slab_unreclaimable", "pgfault", "pgmajfault",
    "workingset_refault", "workingset_activate", "workingset_nodereclaim", "pgrefill", "pgscan",
    "pgsteal", "pgactivate", "pgdeactivate", "pglazyfree", "pglazyfreed", "thp_fault_alloc",
    "thp_collapse_alloc", "usage", "usage_limit", "swap_usage", "swap_limit")
V2_MEMORY = _u64s("io.containerd.cgroups.v2.MemoryStat", *V2_MEMORY_COUNTERS)
V2_MEMORY_EVENTS = _u64s("io.containerd.cgroups.v2.MemoryEvents", "low", "high", "max", "oom",
                         "oom_kill")
V2_IO_ENTRY = _u64s("io.containerd.cgroups.v2.IOEntry", "major", "minor", "rbytes", "wbytes",
                    "rios", "wios")
V2_IO = Message("io.containerd.cgroups.v2.IOStat", ("usage", 1, Repeated(V2_IO_ENTRY)))
V2_HUGETLB = Message("io.containerd.cgroups.v2.HugeTlbStat", ("current", 1, _U64),
                     ("max", 2, _U64), ("pagesize", 3, "string"))
V2_METRICS = Message("io.containerd.cgroups.v2.Metrics", ("pids", 1, V2_PIDS),
                     ("cpu", 2, V2_CPU), ("memory", 4, V2_MEMORY), ("io", 6, V2_IO),
                     ("hugetlb", 7, Repeated(V2_HUGETLB)), ("memory_events", 8, V2_MEMORY_EVENTS))

# The runtime-spec objects containerd sends as JSON inside an Any.
SPEC_PROCESS_URL = "types.containerd.io/opencontainers/runtime-spec/1/Process"
SPEC_RESOURCES_URL = "types.containerd.io/opencontainers/runtime-spec/1/LinuxResources"
