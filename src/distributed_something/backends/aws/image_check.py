"""Whether a container image can run `ds worker`, checked before a task definition is made.

A run with a recipe registers a task definition whose containers run ``ds worker``. The
family's published images (Distributed-CellProfiler, -Fiji, -OmeZarrCreator and the
Distributed-Something template, on Docker Hub under ``cellprofiler/``) start their own worker
script and contain no ``ds``: on them every task would exit at once on every machine. Such a
run is refused before anything is created, with the one command that builds an image that
works (`ds image build`, docker/Dockerfile on top of the image).

Only images known to lack ``ds`` are refused: any other image may have been built with
`ds image build`, and its name says nothing about that.
"""

from __future__ import annotations

from distributed_something.config.model import Config
from distributed_something.errors import InputError
from distributed_something.image_names import ds_worker_image, split_image

#: Repository names of the family's worker images: their entrypoint is the family's own
#: worker script, and they have no `ds`.
FAMILY_REPOSITORIES = frozenset(
    {
        "distributed-cellprofiler",
        "distributed-fiji",
        "distributed-omezarrcreator",
        "distributed-something",
    }
)
#: Docker Hub organisations that publish the family's images.
FAMILY_PUBLISHERS = frozenset({"cellprofiler"})
#: Host names of Docker Hub in an image reference ("" is Docker Hub too: no host given).
_DOCKER_HUB = frozenset({"", "docker.io", "index.docker.io", "registry-1.docker.io"})


def family_image(image: str) -> bool:
    """Whether ``image`` is one of the family's published images (known to have no ``ds``)."""
    host, path, _ = split_image(image)
    parts = path.split("/")
    return (
        host in _DOCKER_HUB
        and len(parts) == 2
        and parts[0] in FAMILY_PUBLISHERS
        and parts[1] in FAMILY_REPOSITORIES
    )


def build_command(image: str) -> str:
    """The `ds image build` command that puts ``ds worker`` on top of ``image``."""
    _, path, tag = split_image(image)
    tool = path.rsplit("/", 1)[-1].removeprefix("distributed-")
    return f"ds image build --base {image.strip()} --tag <your-repository>/ds-{tool}:{tag or '1'}"


def check_worker_image(image: str) -> None:
    """Refuse ``image`` as the image of containers that run ``ds worker`` when it is known
    not to contain ``ds`` (`family_image`).

    Raises `InputError` (source ``config``, field ``image``) whose fix is the `ds image
    build` command for that image; returns None for every other image.
    """
    if not family_image(image):
        return
    raise InputError(
        "config",
        "image",
        f"{image.strip()} is one of the family's published images: it starts its own worker "
        "and has no `ds`, so the containers of this run (`ds worker`, because recipe.name is "
        "set) could not start",
        f"build a worker image on top of it, push it and set image to its tag: "
        f"{build_command(image)} (or unset recipe.name to run the image's own worker)",
    )


def check_run_image(config: Config) -> None:
    """`check_worker_image` for a config whose AWS containers run ``ds worker`` (backend
    ``aws`` with a recipe; without one the image's own entrypoint runs). Without a recipe,
    an image named as `ds image build` suggests (`ds_worker_image`) is refused too: its
    entrypoint is ``ds worker``, which has nothing to run. Raises `InputError`."""
    if config.backend != "aws":
        return
    if config.recipe.name is not None:
        check_worker_image(config.image)
    elif ds_worker_image(config.image):
        raise InputError(
            "config",
            "recipe.name",
            f"is not set, and {config.image.strip()} is a ds worker image (its name starts "
            "with ds-): its `ds worker` would have no recipe to run the tasks with",
            "set recipe.name (RECIPE in config.py) to the recipe, or keep a job file of the "
            "family's format (DCP, DF, DOZC) in the project folder or its files/",
        )


def family_worker_note(config: Config) -> str | None:
    """A one-line note when a run leaves the tasks to a family image's own worker (no
    recipe) on AWS and that worker mounts the buckets with s3fs, which needs a privileged
    container (and, in DF's and some DCP images, access keys in the environment): ds gives
    neither (keys never go into task definitions), so its tasks would fail, each retried
    until dead. DCP's worker mounts only with DOWNLOAD_FILES = 'False' (with 'True' it
    downloads with the task's role); DOZC's never mounts. None otherwise."""
    if config.backend != "aws" or config.recipe.name is not None or not family_image(config.image):
        return None
    recipe = split_image(config.image)[1].rsplit("/", 1)[-1].removeprefix("distributed-")
    recipe = {"omezarrcreator": "omezarr"}.get(recipe, recipe)
    if recipe == "omezarr" or (recipe == "cellprofiler" and config.tool.download_files):
        return None
    instead = (
        "set DOWNLOAD_FILES = 'True' (the worker then downloads), or "
        if recipe == ("cellprofiler")
        else ""
    )
    return (
        f"{config.image} will run its own worker, which mounts the buckets with s3fs"
        + (" (DOWNLOAD_FILES = 'False')" if recipe == "cellprofiler" else "")
        + ": that needs a privileged container (and, in some of its images, access keys in "
        "the task definition), and ds gives neither, so every task would fail. Fix: "
        f"{instead}build an image with ds in it (`{build_command(config.image)}`), set "
        f"DOCKERHUB_TAG to it and RECIPE = '{recipe}'"
    )
