"""Backends: bundles of Queue, Storage and Compute. `open_backend` picks one from the config."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from distributed_something.interfaces import Compute, Queue, Storage
from distributed_something.interfaces.provisioner import Provisioner
from distributed_something.project import Project


@dataclass
class Backend:
    """What a run talks to.

    ``storage`` is the main bucket (run records, logs, default outputs); ``bucket(name)``
    opens any bucket by name, '' meaning the main one; ``provisioner`` creates and removes
    the run's resources; ``location(name)`` says where bucket ``name`` is, for people (a
    folder, or ``s3://bucket/``).
    """

    name: str
    queue: Queue
    storage: Storage
    compute: Compute
    bucket: Callable[[str], Storage]
    provisioner: Provisioner
    location: Callable[[str], str] = field(default=lambda name: name)


def open_backend(project: Project) -> Backend:
    """Open the backend the project's config names. Creates nothing remote."""
    if project.config.backend == "local":
        from distributed_something.backends.local import open_local

        return open_local(project)
    if project.config.backend == "slurm":
        from distributed_something.backends.slurm import open_slurm

        return open_slurm(project)
    from distributed_something.backends.aws.backend import open_aws

    return open_aws(project)
