"""The runner's view of its device: RUNs wait in a queue and go out together, as one list
(:meth:`~sparqforge.sw.runtime.link.Device.run_list`), just before the next transfer, so that
a device with program slots runs each list from its slots with one RUNS command
(``docs/protocol.md``, "Stored descriptors")."""

__all__ = ["QueuedRuns"]


class QueuedRuns:
    """Wraps a :class:`~sparqforge.sw.runtime.link.Device`: :meth:`run` queues a layer, and
    every transfer (WRITE, READ, OPEN) first sends the queue; ``account(layer, cycles)`` is
    called for each layer once it has run. Other attributes are the device's."""

    def __init__(self, device, account):
        self._device = device
        self._account = account
        self._queue = []

    def run(self, descriptor, cycles, layer):
        """Queue layer ``layer``'s RUN ``descriptor`` (``cycles``: its budget)."""
        self._queue.append((descriptor, cycles, layer))

    def flush(self):
        """Run the queued layers (the queue is empty afterwards, whatever happens)."""
        queue, self._queue = self._queue, []
        if queue:
            counts = self._device.run_list([d for d, _, _ in queue], [c for _, c, _ in queue])
            for (_, _, layer), count in zip(queue, counts):
                self._account(layer, count)

    def write(self, *args, **kwargs):
        self.flush()
        return self._device.write(*args, **kwargs)

    def read_act(self, *args, **kwargs):
        self.flush()
        return self._device.read_act(*args, **kwargs)

    def open(self):
        """Open the device anew: what was queued is dropped (the batch runs again)."""
        self._queue = []
        return self._device.open()

    def __getattr__(self, name):
        return getattr(self._device, name)
