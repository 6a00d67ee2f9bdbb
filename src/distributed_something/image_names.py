"""Container image references: their parts, and the names `ds image build` suggests.

Pure string rules, shared by the use cases and the backends that run images.
"""

from __future__ import annotations


def split_image(image: str) -> tuple[str, str, str]:
    """``(registry host, repository path, tag)`` of an image reference, lower-cased.

    ``cellprofiler/distributed-fiji:latest`` → ``("", "cellprofiler/distributed-fiji",
    "latest")``; ``ghcr.io/me/tool@sha256:…`` → ``("ghcr.io", "me/tool", "")``. The first
    path component is a registry host only when it has a ``.`` or ``:`` or is
    ``localhost``, as Docker reads references. A missing tag is "".
    """
    reference = image.strip().lower().split("@", 1)[0]
    host = ""
    first, slash, rest = reference.partition("/")
    if slash and ("." in first or ":" in first or first == "localhost"):
        host, reference = first, rest
    path, colon, tag = reference.rpartition(":")
    if not colon or "/" in tag:
        path, tag = reference, ""
    return host, path, tag


def ds_worker_image(image: str) -> bool:
    """Whether ``image`` is named as `build_command` names the images it suggests: its
    repository's own name starts with ``ds-`` (``lab/ds-fiji:1``). Such an image was built
    with `ds image build`, so its entrypoint is ``ds worker``."""
    _, path, _ = split_image(image)
    return path.rsplit("/", 1)[-1].startswith("ds-")
