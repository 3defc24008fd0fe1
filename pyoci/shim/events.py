"""Task events to containerd, in the order they happen: queued as the
service makes them, forwarded (ttrpc Events/Forward on $TTRPC_ADDRESS)
after each turn of the loop, so a reply never waits on containerd."""
import time

from pyoci import wire
from pyoci.shim import messages as m, ttrpc

ATTEMPTS = 3


class Publisher:
    def __init__(self, address, namespace, log):
        self._namespace = namespace
        self._log = log
        self._queue = []
        path = address[len("unix://"):] if address.startswith("unix://") else address
        self._client = ttrpc.Client(path, [("containerd-namespace-ttrpc", namespace)]) \
            if path else None

    def publish(self, event_type, event):
        self._queue.append((event_type, event, time.time()))

    def flush(self):
        queue, self._queue = self._queue, []
        for event_type, event, when in queue:
            self._forward(event_type, event, when)

    def _forward(self, event_type, event, when):
        topic = m.TOPICS[event_type]
        if self._client is None:
            self._log.warning(f"shim: no TTRPC_ADDRESS: event {topic} not sent")
            return
        envelope = m.ENVELOPE.new(
            timestamp=m.timestamp(when),
            namespace=self._namespace, topic=topic,
            event=m.ANY.new(type_url=event_type.name, value=wire.encode(event_type, event)))
        for attempt in range(ATTEMPTS):
            try:
                self._client.call(m.EVENTS_SERVICE, "Forward", m.FORWARD_REQUEST,
                                  {"envelope": envelope}, m.EMPTY)
                return
            except (OSError, ValueError, ttrpc.TtrpcError) as exc:
                failure = exc
        self._log.error(f"shim: event {topic} not sent: {failure}")
