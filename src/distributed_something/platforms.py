"""Container platforms (``os/arch``): of the worker image, and of the machines that run it.

An image holds binaries of one architecture: built on an arm64 machine (Apple silicon) it
does not start on x86_64 instances, and an x86_64 one does not start on Graviton instances
("exec format error"; on ECS the task only stops). `ds image build` builds for the
architecture of ``aws.machine_type`` when it is one (`instance_platform`), and `ds setup`
warns when the image found locally is of another (`image_platform_warning`).

Shared by the use cases and the AWS backend (neither may import the other); no AWS calls
here, and nothing beyond the standard library (the monitor function's bundle holds this
package).
"""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Iterable, Mapping, Sequence

#: EC2's architecture names (DescribeInstanceTypes' SupportedArchitectures) → the container
#: platform of an image that runs there.
PLATFORMS = {"x86_64": "linux/amd64", "arm64": "linux/arm64"}
#: What `ds image build --platform` accepts: ``os/arch`` (``linux/amd64``), an optional
#: variant (``linux/arm/v7``), as docker and podman take it.
PLATFORM_PATTERN = re.compile(r"^[a-z0-9_]+/[a-z0-9_]+(/[a-z0-9_]+)?$")
#: The engines asked about a local image, in this order.
ENGINES = ("docker", "podman")

# Graviton (arm64) families: a1, and a generation digit followed by "g" (m6g, c7gn, t4g,
# x2gd, im4gn, g5g, hpc7g, r8g …). Only a fallback when DescribeInstanceTypes cannot answer
# (and what `ds image build` goes by: it asks no AWS API).
_GRAVITON_FAMILY = re.compile(r"^(a1|[a-z]+[0-9]+g[a-z0-9-]*)$")


def guess_architecture(instance_type: str) -> str:
    """ "arm64" for a Graviton instance type by its family name, else "x86_64"."""
    family = instance_type.split(".", 1)[0].lower()
    return "arm64" if _GRAVITON_FAMILY.match(family) else "x86_64"


def platform_of(architectures: Iterable[str]) -> str | None:
    """The one platform that runs on all of ``architectures`` (EC2's names); None when there
    are none, or several (no single-architecture image runs on both), or one ds does not
    know."""
    found = {PLATFORMS.get(architecture) for architecture in architectures}
    if len(found) != 1 or None in found:
        return None
    return found.pop()


def instance_platform(instance_types: Sequence[str]) -> str | None:
    """The platform to build for, for a fleet of ``instance_types`` (by `guess_architecture`:
    no AWS call), or None when ds cannot tell (`platform_of`)."""
    return platform_of(guess_architecture(t) for t in instance_types)


def local_image_platform(image: str, engines: Sequence[str] = ENGINES) -> str | None:
    """``os/arch`` of ``image`` as the first of ``engines`` that has it locally says
    (``image inspect``); None when no engine is installed, answers, or has the image.

    The local copy is the one `ds image build` made and pushed under that tag, so it says
    what the instances will pull; an image that was only ever in the registry is not
    looked at (that would need the registry's credentials).
    """
    for engine in engines:
        path = shutil.which(engine)
        if path is None:
            continue
        try:
            done = subprocess.run(
                [path, "image", "inspect", "--format", "{{.Os}}/{{.Architecture}}", image],
                capture_output=True,
                text=True,
                timeout=30,
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired):
            continue  # a stuck or broken engine only means nothing is known
        answer = done.stdout.strip().lower()
        if done.returncode == 0 and PLATFORM_PATTERN.match(answer):
            return answer
    return None


def image_platform_warning(
    image: str, image_platform: str | None, architectures: Mapping[str, str]
) -> str | None:
    """One line when ``image`` (of ``image_platform``; None: unknown) cannot start on some
    of the instance types ``architectures`` ({type: EC2 architecture}); None otherwise."""
    if image_platform is None:
        return None
    foreign = sorted(t for t, a in architectures.items() if PLATFORMS.get(a) != image_platform)
    if not foreign:
        return None
    wanted = platform_of(architectures[t] for t in foreign)
    types = ", ".join(f"{t} ({architectures[t]})" for t in foreign)
    fix = (
        f"rebuild it with `ds image build --platform {wanted}` and push it"
        if wanted
        else "build and push an image for their architecture"
    )
    return (
        f"the local image {image} is {image_platform}, but aws.machine_type's {types} cannot "
        f"run it: its containers would stop at once there (exec format error). Fix: {fix}, "
        "or choose instance types of its architecture"
    )
