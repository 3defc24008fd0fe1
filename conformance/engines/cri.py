"""A CRI client (runtime.v1, as containerd 1.6 serves it): what kubelet asks
of containerd for a pod, over gRPC (grpcio) on containerd's socket.

The messages are the project's own definitions, written from the field
numbers of the published CRI API (k8s.io/cri-api v0.25.0, the version
containerd 1.6 vendors; docs/research/cri-v1.md lists them), encoded by
pyoci.wire, the shim's codec: only the fields these tests use.
"""
import json
import uuid

import grpc

from conformance.engines import helpers
from pyoci.wire import MapOf, Message, Repeated, decode, encode

POD, CONTAINER, NODE = 0, 1, 2  # NamespaceMode
CONTAINER_CREATED, CONTAINER_RUNNING, CONTAINER_EXITED = 0, 1, 2
SANDBOX_READY, SANDBOX_NOTREADY = 0, 1

INT64_VALUE = Message("runtime.v1.Int64Value", ("value", 1, "int64"))
UINT64_VALUE = Message("runtime.v1.UInt64Value", ("value", 1, "uint64"))
KEY_VALUE = Message("runtime.v1.KeyValue", ("key", 1, "string"), ("value", 2, "string"))

VERSION_REQUEST = Message("runtime.v1.VersionRequest", ("version", 1, "string"))
VERSION_RESPONSE = Message("runtime.v1.VersionResponse", ("version", 1, "string"),
                           ("runtime_name", 2, "string"), ("runtime_version", 3, "string"),
                           ("runtime_api_version", 4, "string"))

POD_SANDBOX_METADATA = Message("runtime.v1.PodSandboxMetadata", ("name", 1, "string"),
                               ("uid", 2, "string"), ("namespace", 3, "string"),
                               ("attempt", 4, "uint32"))
NAMESPACE_OPTION = Message("runtime.v1.NamespaceOption", ("network", 1, "enum"),
                           ("pid", 2, "enum"), ("ipc", 3, "enum"), ("target_id", 4, "string"))
LINUX_SANDBOX_SECURITY_CONTEXT = Message(
    "runtime.v1.LinuxSandboxSecurityContext", ("namespace_options", 1, NAMESPACE_OPTION),
    ("privileged", 6, "bool"))
LINUX_CONTAINER_RESOURCES = Message(
    "runtime.v1.LinuxContainerResources", ("cpu_period", 1, "int64"), ("cpu_quota", 2, "int64"),
    ("cpu_shares", 3, "int64"), ("memory_limit_in_bytes", 4, "int64"),
    ("oom_score_adj", 5, "int64"), ("cpuset_cpus", 6, "string"), ("cpuset_mems", 7, "string"),
    ("unified", 9, MapOf("string")), ("memory_swap_limit_in_bytes", 10, "int64"))
LINUX_POD_SANDBOX_CONFIG = Message(
    "runtime.v1.LinuxPodSandboxConfig", ("cgroup_parent", 1, "string"),
    ("security_context", 2, LINUX_SANDBOX_SECURITY_CONTEXT), ("sysctls", 3, MapOf("string")))
POD_SANDBOX_CONFIG = Message(
    "runtime.v1.PodSandboxConfig", ("metadata", 1, POD_SANDBOX_METADATA),
    ("hostname", 2, "string"), ("log_directory", 3, "string"), ("labels", 6, MapOf("string")),
    ("annotations", 7, MapOf("string")), ("linux", 8, LINUX_POD_SANDBOX_CONFIG))
RUN_POD_SANDBOX_REQUEST = Message("runtime.v1.RunPodSandboxRequest",
                                  ("config", 1, POD_SANDBOX_CONFIG),
                                  ("runtime_handler", 2, "string"))
RUN_POD_SANDBOX_RESPONSE = Message("runtime.v1.RunPodSandboxResponse",
                                   ("pod_sandbox_id", 1, "string"))
POD_SANDBOX_ID = Message("runtime.v1.PodSandboxIdRequest", ("pod_sandbox_id", 1, "string"))
EMPTY = Message("runtime.v1.Empty")
POD_IP = Message("runtime.v1.PodIP", ("ip", 1, "string"))
POD_SANDBOX_NETWORK_STATUS = Message("runtime.v1.PodSandboxNetworkStatus", ("ip", 1, "string"),
                                     ("additional_ips", 2, Repeated(POD_IP)))
POD_SANDBOX_STATUS = Message(
    "runtime.v1.PodSandboxStatus", ("id", 1, "string"), ("metadata", 2, POD_SANDBOX_METADATA),
    ("state", 3, "enum"), ("created_at", 4, "int64"),
    ("network", 5, POD_SANDBOX_NETWORK_STATUS), ("runtime_handler", 9, "string"))
POD_SANDBOX_STATUS_RESPONSE = Message("runtime.v1.PodSandboxStatusResponse",
                                      ("status", 1, POD_SANDBOX_STATUS))

CONTAINER_METADATA = Message("runtime.v1.ContainerMetadata", ("name", 1, "string"),
                             ("attempt", 2, "uint32"))
IMAGE_SPEC = Message("runtime.v1.ImageSpec", ("image", 1, "string"))
CAPABILITY = Message("runtime.v1.Capability", ("add_capabilities", 1, Repeated("string")),
                     ("drop_capabilities", 2, Repeated("string")))
LINUX_CONTAINER_SECURITY_CONTEXT = Message(
    "runtime.v1.LinuxContainerSecurityContext", ("capabilities", 1, CAPABILITY),
    ("privileged", 2, "bool"), ("namespace_options", 3, NAMESPACE_OPTION),
    ("run_as_user", 5, INT64_VALUE), ("readonly_rootfs", 7, "bool"),
    ("no_new_privs", 11, "bool"))
LINUX_CONTAINER_CONFIG = Message(
    "runtime.v1.LinuxContainerConfig", ("resources", 1, LINUX_CONTAINER_RESOURCES),
    ("security_context", 2, LINUX_CONTAINER_SECURITY_CONTEXT))
CONTAINER_CONFIG = Message(
    "runtime.v1.ContainerConfig", ("metadata", 1, CONTAINER_METADATA), ("image", 2, IMAGE_SPEC),
    ("command", 3, Repeated("string")), ("args", 4, Repeated("string")),
    ("working_dir", 5, "string"), ("envs", 6, Repeated(KEY_VALUE)),
    ("labels", 9, MapOf("string")), ("annotations", 10, MapOf("string")),
    ("log_path", 11, "string"), ("stdin", 12, "bool"), ("stdin_once", 13, "bool"),
    ("tty", 14, "bool"), ("linux", 15, LINUX_CONTAINER_CONFIG))
CREATE_CONTAINER_REQUEST = Message(
    "runtime.v1.CreateContainerRequest", ("pod_sandbox_id", 1, "string"),
    ("config", 2, CONTAINER_CONFIG), ("sandbox_config", 3, POD_SANDBOX_CONFIG))
CONTAINER_ID = Message("runtime.v1.ContainerIdRequest", ("container_id", 1, "string"))
STOP_CONTAINER_REQUEST = Message("runtime.v1.StopContainerRequest",
                                 ("container_id", 1, "string"), ("timeout", 2, "int64"))
CONTAINER_STATUS = Message(
    "runtime.v1.ContainerStatus", ("id", 1, "string"), ("metadata", 2, CONTAINER_METADATA),
    ("state", 3, "enum"), ("created_at", 4, "int64"), ("started_at", 5, "int64"),
    ("finished_at", 6, "int64"), ("exit_code", 7, "int32"), ("image", 8, IMAGE_SPEC),
    ("reason", 10, "string"), ("message", 11, "string"), ("log_path", 15, "string"))
CONTAINER_STATUS_REQUEST = Message("runtime.v1.ContainerStatusRequest",
                                   ("container_id", 1, "string"), ("verbose", 2, "bool"))
CONTAINER_STATUS_RESPONSE = Message("runtime.v1.ContainerStatusResponse",
                                    ("status", 1, CONTAINER_STATUS), ("info", 2, MapOf("string")))
UPDATE_CONTAINER_RESOURCES_REQUEST = Message(
    "runtime.v1.UpdateContainerResourcesRequest", ("container_id", 1, "string"),
    ("linux", 2, LINUX_CONTAINER_RESOURCES))
EXEC_SYNC_REQUEST = Message("runtime.v1.ExecSyncRequest", ("container_id", 1, "string"),
                            ("cmd", 2, Repeated("string")), ("timeout", 3, "int64"))
EXEC_SYNC_RESPONSE = Message("runtime.v1.ExecSyncResponse", ("stdout", 1, "bytes"),
                             ("stderr", 2, "bytes"), ("exit_code", 3, "int32"))
EXEC_REQUEST = Message("runtime.v1.ExecRequest", ("container_id", 1, "string"),
                       ("cmd", 2, Repeated("string")), ("tty", 3, "bool"), ("stdin", 4, "bool"),
                       ("stdout", 5, "bool"), ("stderr", 6, "bool"))
EXEC_RESPONSE = Message("runtime.v1.ExecResponse", ("url", 1, "string"))
CONTAINER_ATTRIBUTES = Message("runtime.v1.ContainerAttributes", ("id", 1, "string"))
CPU_USAGE = Message("runtime.v1.CpuUsage", ("timestamp", 1, "int64"),
                    ("usage_core_nano_seconds", 2, UINT64_VALUE))
MEMORY_USAGE = Message("runtime.v1.MemoryUsage", ("timestamp", 1, "int64"),
                       ("working_set_bytes", 2, UINT64_VALUE), ("usage_bytes", 4, UINT64_VALUE))
CONTAINER_STATS = Message("runtime.v1.ContainerStats",
                          ("attributes", 1, CONTAINER_ATTRIBUTES), ("cpu", 2, CPU_USAGE),
                          ("memory", 3, MEMORY_USAGE))
CONTAINER_STATS_RESPONSE = Message("runtime.v1.ContainerStatsResponse",
                                   ("stats", 1, CONTAINER_STATS))

IMAGE = Message("runtime.v1.Image", ("id", 1, "string"), ("repo_tags", 2, Repeated("string")))
IMAGE_STATUS_REQUEST = Message("runtime.v1.ImageStatusRequest", ("image", 1, IMAGE_SPEC))
IMAGE_STATUS_RESPONSE = Message("runtime.v1.ImageStatusResponse", ("image", 1, IMAGE))
PULL_IMAGE_REQUEST = Message("runtime.v1.PullImageRequest", ("image", 1, IMAGE_SPEC))
PULL_IMAGE_RESPONSE = Message("runtime.v1.PullImageResponse", ("image_ref", 1, "string"))

RUNTIME = "runtime.v1.RuntimeService"
IMAGES = "runtime.v1.ImageService"
# method: (service, request type, response type)
METHODS = {
    "Version": (RUNTIME, VERSION_REQUEST, VERSION_RESPONSE),
    "RunPodSandbox": (RUNTIME, RUN_POD_SANDBOX_REQUEST, RUN_POD_SANDBOX_RESPONSE),
    "StopPodSandbox": (RUNTIME, POD_SANDBOX_ID, EMPTY),
    "RemovePodSandbox": (RUNTIME, POD_SANDBOX_ID, EMPTY),
    "PodSandboxStatus": (RUNTIME, POD_SANDBOX_ID, POD_SANDBOX_STATUS_RESPONSE),
    "CreateContainer": (RUNTIME, CREATE_CONTAINER_REQUEST, CONTAINER_ID),
    "StartContainer": (RUNTIME, CONTAINER_ID, EMPTY),
    "StopContainer": (RUNTIME, STOP_CONTAINER_REQUEST, EMPTY),
    "RemoveContainer": (RUNTIME, CONTAINER_ID, EMPTY),
    "ContainerStatus": (RUNTIME, CONTAINER_STATUS_REQUEST, CONTAINER_STATUS_RESPONSE),
    "UpdateContainerResources": (RUNTIME, UPDATE_CONTAINER_RESOURCES_REQUEST, EMPTY),
    "ExecSync": (RUNTIME, EXEC_SYNC_REQUEST, EXEC_SYNC_RESPONSE),
    "Exec": (RUNTIME, EXEC_REQUEST, EXEC_RESPONSE),
    "ContainerStats": (RUNTIME, CONTAINER_ID, CONTAINER_STATS_RESPONSE),
    "ImageStatus": (IMAGES, IMAGE_STATUS_REQUEST, IMAGE_STATUS_RESPONSE),
    "PullImage": (IMAGES, PULL_IMAGE_REQUEST, PULL_IMAGE_RESPONSE),
}
MAX_MESSAGE = 16 << 20  # kubelet's and containerd's
FOREVER = ["sleep", "600"]


class Client:
    """CRI calls on containerd's socket: client.Call(**fields) -> response dict."""

    def __init__(self, socket_path, timeout=120):
        self._channel = grpc.insecure_channel(
            f"unix:{socket_path}", options=[("grpc.max_receive_message_length", MAX_MESSAGE),
                                            ("grpc.max_send_message_length", MAX_MESSAGE)])
        self._timeout = timeout
        self._calls = {}
        for method, (service, request_type, response_type) in METHODS.items():
            self._calls[method] = (request_type, self._channel.unary_unary(
                f"/{service}/{method}",
                request_serializer=lambda message, kind=request_type: encode(kind, message),
                response_deserializer=lambda data, kind=response_type: decode(kind, data)))

    def __getattr__(self, method):
        if method not in METHODS:
            raise AttributeError(method)
        request_type, call = self._calls[method]
        return lambda timeout=None, **fields: call(request_type.new(**fields),
                                                   timeout=timeout or self._timeout)

    def close(self):
        self._channel.close()

    def image_present_or_pulled(self, image):
        """kubelet's IfNotPresent: the image's id, pulled only if containerd lacks it."""
        found = self.ImageStatus(image=IMAGE_SPEC.new(image=image))["image"]
        if found:
            return found["id"]
        return self.PullImage(image=IMAGE_SPEC.new(image=image))["image_ref"]


class Pods:
    """One runtime handler's pods, asked for as kubelet does; remembers
    what it made (ROOT: where the handler keeps its containers' state)."""

    def __init__(self, client, handler, log_root, root=None):
        self.client = client
        self.handler = handler
        self.log_root = log_root
        self.root = root
        self.sandboxes = []
        self.ids = []

    def sandbox_config(self, name, hostname=None, **linux):
        uid = uuid.uuid4().hex[:12]
        return POD_SANDBOX_CONFIG.new(
            metadata=POD_SANDBOX_METADATA.new(name=f"{name}-{uid}", uid=uid,
                                              namespace="pyoci-tests"),
            hostname=name if hostname is None else hostname, log_directory=str(self.log_root / uid),
            linux=LINUX_POD_SANDBOX_CONFIG.new(cgroup_parent="/pyoci-cri-pods", **linux))

    def run_pod(self, name="pod", hostname=None, **linux):
        config = self.sandbox_config(name, hostname, **linux)
        sandbox = self.client.RunPodSandbox(config=config,
                                            runtime_handler=self.handler)["pod_sandbox_id"]
        self.sandboxes.append(sandbox)
        self.ids.append(sandbox)
        return sandbox, config

    def start_container(self, sandbox, sandbox_config, name, command=FOREVER, resources=None):
        self.client.image_present_or_pulled(helpers.IMAGE)
        config = CONTAINER_CONFIG.new(
            metadata=CONTAINER_METADATA.new(name=name), image=IMAGE_SPEC.new(image=helpers.IMAGE),
            command=list(command), log_path=f"{name}.log",
            linux=LINUX_CONTAINER_CONFIG.new(resources=resources))
        container = self.client.CreateContainer(pod_sandbox_id=sandbox, config=config,
                                                sandbox_config=sandbox_config)["container_id"]
        self.ids.append(container)
        self.client.StartContainer(container_id=container)
        return container

    def status(self, container):
        return self.client.ContainerStatus(container_id=container)["status"]

    def pid(self, container):
        info = self.client.ContainerStatus(container_id=container, verbose=True)["info"]
        return json.loads(info["info"])["pid"]

    def exec_sync(self, container, *cmd, timeout=30):
        done = self.client.ExecSync(container_id=container, cmd=list(cmd), timeout=timeout)
        return done["exit_code"], done["stdout"].decode(), done["stderr"].decode()

    def tear_down(self, sandbox):
        """StopPodSandbox, then RemovePodSandbox: how kubelet ends a pod."""
        self.client.StopPodSandbox(pod_sandbox_id=sandbox)
        self.client.RemovePodSandbox(pod_sandbox_id=sandbox)
        self.sandboxes.remove(sandbox)

    def remove_all(self):
        """Tear down every pod still kept; one that is already gone (a tear_down
        interrupted between its removal and its forgetting) is forgotten."""
        for sandbox in list(self.sandboxes):
            try:
                self.tear_down(sandbox)
            except grpc.RpcError as exc:
                if exc.code() != grpc.StatusCode.NOT_FOUND:
                    raise
                self.sandboxes.remove(sandbox)


def stream_exec(url, stdin=b"", size=None, timeout=60):
    """Run a CRI Exec's stream at URL (the streaming server's websocket,
    channel protocol v4.channel.k8s.io), as kubectl exec -it does: resize to
    SIZE (width, height), write STDIN, read until the exit status.
    Returns (exit code, what the process wrote)."""
    import base64
    import os
    import socket
    import struct
    from urllib.parse import urlsplit
    parts = urlsplit(url)
    sock = socket.create_connection((parts.hostname, parts.port), timeout=timeout)
    try:
        key = base64.b64encode(os.urandom(16)).decode()
        sock.sendall((f"GET {parts.path} HTTP/1.1\r\nHost: {parts.netloc}\r\n"
                      "Upgrade: websocket\r\nConnection: Upgrade\r\n"
                      f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
                      "Sec-WebSocket-Protocol: v4.channel.k8s.io\r\n\r\n").encode())
        reader = sock.makefile("rb")
        status_line = reader.readline()
        if b" 101 " not in status_line:
            raise AssertionError(f"no websocket: {status_line!r}")
        while reader.readline() not in (b"\r\n", b""):
            pass

        def send(channel, data):
            payload = bytes([channel]) + data
            mask = os.urandom(4)
            length = len(payload)
            header = bytes([0x82]) + (bytes([0x80 | length]) if length < 126 else
                                      bytes([0x80 | 126]) + struct.pack("!H", length))
            sock.sendall(header + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload)))
        if size is not None:
            send(4, json.dumps({"Width": size[0], "Height": size[1]}).encode())
        if stdin:
            send(0, stdin)
        output = bytearray()
        while True:
            try:
                head = reader.read(2)
            except TimeoutError:
                raise AssertionError(f"no exit status after {timeout}s; the process wrote "
                                     f"{bytes(output)!r}") from None
            if len(head) < 2:
                raise AssertionError(f"stream closed before the exit status: {bytes(output)!r}")
            opcode, length = head[0] & 0x0F, head[1] & 0x7F
            if length == 126:
                length = struct.unpack("!H", reader.read(2))[0]
            elif length == 127:
                length = struct.unpack("!Q", reader.read(8))[0]
            payload = reader.read(length)
            if opcode == 0x8:
                raise AssertionError(f"closed without an exit status: {bytes(output)!r}")
            if opcode not in (0x1, 0x2) or not payload:
                continue
            if payload[0] in (1, 2):
                output += payload[1:]
            elif payload[0] == 3:
                status = json.loads(payload[1:])
                if status.get("status") == "Success":
                    return 0, output.decode(errors="replace")
                causes = status.get("details", {}).get("causes", [])
                codes = [int(c["message"]) for c in causes if c.get("reason") == "ExitCode"]
                if not codes:
                    raise AssertionError(f"exec failed: {status}")
                return codes[0], output.decode(errors="replace")
    finally:
        sock.close()
