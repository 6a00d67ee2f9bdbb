"""Does a worker fit on the machines of ``aws.machine_type``? Checked before anything is
created, and again before the fleet is requested.

ECS places a worker only on a machine with the container's ``memory`` (MiB) and ``cpu`` (CPU
units, 1,024 per vCPU) unreserved. A worker larger than a machine is never placed: the fleet's
machines run and cost while the service waits, and nothing says why but an ECS service event
("no container instance met all of its requirements"). moto places anything, so only a check
of the request's numbers against DescribeInstanceTypes can show it.
"""

from __future__ import annotations

from collections.abc import Mapping

from distributed_something.backends.aws.fleet import InstanceFacts
from distributed_something.config.legacy import legacy_error, legacy_text
from distributed_something.config.model import Config
from distributed_something.errors import InputError

#: ECS registers less memory than is installed (the kernel's and the platform's share): an
#: m4.large with 8,192 MiB registers 7,985, 2.5% less (ECS developer guide, "Reserving Amazon
#: ECS Linux container instance memory"). Above this share of a type's memory a worker may not
#: fit; above all of it, it cannot.
REGISTERED_SHARE = 0.97
#: CPU units ECS registers per vCPU.
UNITS_PER_VCPU = 1024


def machine_fit(config: Config, facts: Mapping[str, InstanceFacts], *, source: str) -> list[str]:
    """Warnings about workers that may not fit, or fit fewer to a machine than
    ``cluster.tasks_per_machine``; raises `InputError` when a worker fits on none of the
    types (types whose sizes are unknown count as fitting). Fields are named as the config
    ``source`` names them (a config.py's variables: `legacy_text`)."""
    memory, cpu = config.cluster.memory, config.cluster.effective_cpu_shares
    per_machine = config.cluster.tasks_per_machine
    never: list[str] = []
    warnings: list[str] = []
    for name, fact in facts.items():
        if fact.memory_mib is None or fact.vcpus is None:
            continue
        units = fact.vcpus * UNITS_PER_VCPU
        size = f"{name} ({fact.memory_mib:,} MiB, {fact.vcpus} vCPUs = {units:,} CPU units)"
        if memory > fact.memory_mib or cpu > units:
            never.append(size)
            continue
        usable = int(fact.memory_mib * REGISTERED_SHARE)
        if memory > usable:
            warnings.append(
                f"a worker's {memory:,} MiB (cluster.memory) may not fit on {size}: "
                f"ECS registers some 3% less than is installed; {usable:,} MiB or less fits"
            )
            continue
        fits = min(usable // memory, units // cpu)
        if fits < per_machine:
            warnings.append(
                f"only {fits} of cluster.tasks_per_machine = {per_machine} workers "
                f"fit on {size} with {memory:,} MiB and {cpu:,} CPU units each: the others "
                "would wait for room that never comes"
            )
    if never and len(never) == len(facts):
        short_of_memory = any(
            f.memory_mib is not None and memory > f.memory_mib for f in facts.values()
        )
        raise legacy_error(
            InputError(
                source,
                "cluster.memory" if short_of_memory else "cluster.cpu_shares",
                f"a worker ({memory:,} MiB, {cpu:,} CPU units) is larger than every machine "
                f"of aws.machine_type: {'; '.join(never)}; ECS would never start one",
                "lower cluster.memory / cluster.cpu_shares, or list larger instance types in "
                "aws.machine_type",
            )
        )
    if never:
        warnings.append(
            f"no worker fits on {'; '.join(never)} ({memory:,} MiB, {cpu:,} CPU units each): "
            f"machines of {'that type' if len(never) == 1 else 'those types'} would run "
            f"nothing; remove them from aws.machine_type"
        )
    return [legacy_text(w) for w in warnings] if source.endswith(".py") else warnings
