"""The backend interfaces: Queue, Storage, Compute. Backends implement them; nothing else
in the package knows which backend it talks to."""

from distributed_something.interfaces.compute import Compute, ComputeStatus
from distributed_something.interfaces.queue import DeadTask, Message, Queue, QueueCounts
from distributed_something.interfaces.storage import ObjectInfo, Storage

__all__ = [
    "Compute",
    "ComputeStatus",
    "DeadTask",
    "Message",
    "ObjectInfo",
    "Queue",
    "QueueCounts",
    "Storage",
]
