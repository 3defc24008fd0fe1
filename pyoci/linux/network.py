"""The network steps a runtime owns: bringing up lo in a new netns, and
linux.netDevices, moving host interfaces into the container's netns over
rtnetlink (rename, keep their permanent global addresses, set them up)."""
import errno
import fcntl
import _socket  # not `socket`: its import costs every create milliseconds
import os
import struct

from pyoci.errors import ConfigError, ExecError, errno_text

SIOCGIFFLAGS = 0x8913
SIOCSIFFLAGS = 0x8914
IFF_UP = 0x1
_IFREQ = "16sh22x"  # struct ifreq: name, then flags in the union

RTM_NEWLINK, RTM_GETLINK, RTM_NEWADDR, RTM_GETADDR = 16, 18, 20, 22
NLMSG_ERROR, NLMSG_DONE = 2, 3
NLM_F_REQUEST, NLM_F_ACK, NLM_F_EXCL, NLM_F_CREATE, NLM_F_DUMP = 0x1, 0x4, 0x200, 0x400, 0x300
IFLA_IFNAME, IFLA_NET_NS_FD = 3, 28
IFA_ADDRESS, IFA_LOCAL, IFA_BROADCAST, IFA_FLAGS = 1, 2, 4, 8
IFA_F_PERMANENT = 0x80
RT_SCOPE_UNIVERSE = 0
_HEADER = struct.Struct("=IHHII")      # struct nlmsghdr
_IFINFO = struct.Struct("=BxHiII")     # struct ifinfomsg
_IFADDR = struct.Struct("=BBBBI")      # struct ifaddrmsg
_ATTR = struct.Struct("=HH")           # struct rtattr
IFNAMSIZ = 16


def loopback_up():
    sock = _socket.socket(_socket.AF_INET, _socket.SOCK_DGRAM)
    try:
        request = struct.pack(_IFREQ, b"lo", 0)
        flags = struct.unpack(_IFREQ, fcntl.ioctl(sock, SIOCGIFFLAGS, request))[1]
        fcntl.ioctl(sock, SIOCSIFFLAGS, struct.pack(_IFREQ, b"lo", flags | IFF_UP))
    finally:
        sock.close()


def check_devices(config):
    """linux.netDevices, before anything exists: a netns of the container's
    own to move into, host devices that exist, names the kernel takes."""
    devices = config.linux.net_devices
    if not devices:
        return
    where = "config.json: linux.netDevices"
    if config.linux.namespace("network") is None:
        raise ConfigError(f"{where}: moving devices needs a network namespace of the "
                          "container's own, not the host's")
    names = {}
    for host_name, entry in devices.items():
        try:
            _socket.if_nametoindex(host_name)
        except OSError:
            raise ConfigError(f"{where}: no network device {host_name!r} on the host") from None
        name = (entry or {}).get("name") or host_name
        if len(name.encode()) >= IFNAMSIZ or not name or "/" in name or any(
                c.isspace() for c in name) or name in (".", ".."):
            raise ConfigError(f"{where}.{host_name}.name: {name!r} is not a valid interface name")
        if "%d" not in name and names.setdefault(name, host_name) != host_name:
            raise ConfigError(f"{where}: {names[name]!r} and {host_name!r} are both to be "
                              f"named {name!r}")


def move_devices(devices, netns_path):
    """Move each host device of DEVICES ({host name: {"name": new name}})
    into the netns at NETNS_PATH; there rename it, give back its permanent
    global addresses (a move drops them) and set it up."""
    with _Rtnetlink() as host, _Rtnetlink(netns_path) as container:
        netns_fd = os.open(netns_path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            for host_name, entry in devices.items():
                name = (entry or {}).get("name") or host_name
                _move_device(host, container, netns_fd, host_name, name)
        finally:
            os.close(netns_fd)


def _move_device(host, container, netns_fd, host_name, name):
    what = f"linux.netDevices: {host_name}"
    index = _socket.if_nametoindex(host_name)
    if "%d" not in name and container.link_index(name) is not None:
        raise ExecError(f"{what}: a device named {name!r} exists in the container's "
                        "network namespace")
    addresses = host.permanent_global_addresses(index)
    try:
        host.request(RTM_NEWLINK, _IFINFO.pack(_socket.AF_UNSPEC, 0, index, 0, 0)
                     + _attr(IFLA_NET_NS_FD, struct.pack("=I", netns_fd)))
        # Its name is kept unless the namespace has it already.
        index = container.link_index(host_name)
        if name != host_name:
            container.request(RTM_NEWLINK, _IFINFO.pack(_socket.AF_UNSPEC, 0, index, 0, 0)
                              + _attr(IFLA_IFNAME, name.encode() + b"\0"))
        for header, attributes in addresses:
            container.request(RTM_NEWADDR, header[:4] + struct.pack("=I", index) + attributes,
                              NLM_F_CREATE | NLM_F_EXCL)
        container.request(RTM_NEWLINK, _IFINFO.pack(_socket.AF_UNSPEC, 0, index, IFF_UP, IFF_UP))
    except OSError as exc:
        raise ExecError(f"{what}: move into the container as {name!r}: "
                        f"{errno_text(exc.errno)}") from None


def _attr(kind, payload):
    length = _ATTR.size + len(payload)
    return _ATTR.pack(length, kind) + payload + b"\0" * (-length % 4)


def _attributes(data):
    """{type: payload} of a run of rtattrs."""
    found = {}
    while len(data) >= _ATTR.size:
        length, kind = _ATTR.unpack_from(data)
        if length < _ATTR.size:
            break
        found[kind] = data[_ATTR.size:length]
        data = data[(length + 3) & ~3:]
    return found


class _Rtnetlink:
    """An rtnetlink socket, of our netns or (NETNS_PATH) of another: a
    socket belongs to the netns it was made in, so join it only for that."""

    def __init__(self, netns_path=None):
        self._netns_path = netns_path
        self._seq = 0

    def __enter__(self):
        if self._netns_path is None:
            self.sock = _netlink_socket()
            return self
        from pyoci.linux import syscalls as sc
        own = os.open("/proc/self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
        target = os.open(self._netns_path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            sc.syscalls().setns(target, sc.CLONE_NEWNET)
            try:
                self.sock = _netlink_socket()
            finally:
                sc.syscalls().setns(own, sc.CLONE_NEWNET)
        finally:
            os.close(own)
            os.close(target)
        return self

    def __exit__(self, *exc_info):
        self.sock.close()

    def _send(self, kind, payload, flags):
        self._seq += 1
        self.sock.send(_HEADER.pack(_HEADER.size + len(payload), kind, flags, self._seq, 0)
                       + payload)

    def _replies(self):
        """Messages (type, payload) answering our last request, to its end."""
        while True:
            data = self.sock.recv(1 << 16)
            while len(data) >= _HEADER.size:
                length, kind, _, seq, _ = _HEADER.unpack_from(data)
                payload, data = data[_HEADER.size:length], data[(length + 3) & ~3:]
                if seq != self._seq:
                    continue
                if kind == NLMSG_DONE:
                    return
                if kind == NLMSG_ERROR:
                    code = -struct.unpack_from("=i", payload)[0]
                    if code:
                        raise OSError(code, os.strerror(code))
                    return
                yield kind, payload

    def request(self, kind, payload, flags=0):
        """A change, acknowledged; the kernel's refusal raises OSError."""
        self._send(kind, payload, NLM_F_REQUEST | NLM_F_ACK | flags)
        for _ in self._replies():
            pass

    def link_index(self, name):
        """The index of the device NAME here, or None."""
        self._send(RTM_GETLINK, _IFINFO.pack(_socket.AF_UNSPEC, 0, 0, 0, 0)
                   + _attr(IFLA_IFNAME, name.encode() + b"\0"), NLM_F_REQUEST)
        try:
            for _, payload in self._replies():
                return _IFINFO.unpack_from(payload)[2]
        except OSError as exc:
            if exc.errno in (errno.ENODEV, errno.EINVAL):
                return None
            raise
        return None

    def permanent_global_addresses(self, index):
        """[(ifaddrmsg bytes, attribute bytes)] of INDEX's addresses the spec
        says a move keeps: permanent, of global scope."""
        self._send(RTM_GETADDR, _IFADDR.pack(_socket.AF_UNSPEC, 0, 0, 0, 0),
                   NLM_F_REQUEST | NLM_F_DUMP)
        kept = []
        for _, payload in self._replies():
            family, prefix, flags, scope, owner = _IFADDR.unpack_from(payload)
            attributes = _attributes(payload[_IFADDR.size:])
            if IFA_FLAGS in attributes:
                flags = struct.unpack("=I", attributes[IFA_FLAGS])[0]
            if owner != index or scope != RT_SCOPE_UNIVERSE or not flags & IFA_F_PERMANENT:
                continue
            carried = b"".join(_attr(kind, attributes[kind]) for kind in
                               (IFA_LOCAL, IFA_ADDRESS, IFA_BROADCAST) if kind in attributes)
            kept.append((_IFADDR.pack(family, prefix, flags & 0xFF, scope, 0), carried))
        return kept


def _netlink_socket():
    sock = _socket.socket(_socket.AF_NETLINK, _socket.SOCK_RAW | _socket.SOCK_CLOEXEC,
                          _socket.NETLINK_ROUTE)
    sock.bind((0, 0))
    return sock
