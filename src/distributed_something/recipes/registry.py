"""Recipe names → recipes. A new recipe registers by adding one entry to `RECIPES`."""

from __future__ import annotations

from collections.abc import Callable

from distributed_something.backends import backend_kind
from distributed_something.config.model import Config
from distributed_something.errors import InputError
from distributed_something.recipes.base import Recipe
from distributed_something.recipes.command import CommandRecipe

__all__ = ["RECIPES", "get_recipe", "recipe_for"]


def _cellprofiler() -> Recipe:
    from distributed_something.recipes.cellprofiler import CellProfilerRecipe

    return CellProfilerRecipe()


def _fiji() -> Recipe:
    from distributed_something.recipes.fiji import FijiRecipe

    return FijiRecipe()


def _omezarr() -> Recipe:
    from distributed_something.recipes.omezarr import OmeZarrRecipe

    return OmeZarrRecipe()


#: name → factory; a factory takes no arguments and returns a fresh recipe. Tool recipes are
#: imported on use, so the base install never loads them.
RECIPES: dict[str, Callable[[], Recipe]] = {
    "command": CommandRecipe,
    "cellprofiler": _cellprofiler,
    "fiji": _fiji,
    "omezarr": _omezarr,
}

_SET_NAME_FIX = (
    'set recipe.name = "command" and recipe.argv = ["tool", "{input_dir}/{image}", '
    '"{output_dir}"] (argv elements are templates filled from each task)'
)


def get_recipe(name: str | None, *, source: str) -> Recipe:
    """The recipe called ``name``.

    Raises ``InputError`` (``source`` = the config file, field ``recipe.name``) when ``name`` is
    None (unset) or not a key of `RECIPES`; the latter error lists the known names.
    """
    if name is None:
        raise InputError(source, "recipe.name", "is not set", _SET_NAME_FIX)
    factory = RECIPES.get(name)
    if factory is None:
        known = ", ".join(f'"{known}"' for known in sorted(RECIPES))
        raise InputError(
            source,
            "recipe.name",
            f"{name!r} is not a known recipe (known: {known})",
            f"set recipe.name to one of {known}",
        )
    return factory()


def recipe_for(config: Config, *, source: str) -> Recipe | None:
    """The config's recipe, or None when it names none and runs on AWS: then the container
    image's own entrypoint processes the tasks, as the family's images do."""
    if config.recipe.name is None and backend_kind(config.backend).in_image:
        return None
    return get_recipe(config.recipe.name, source=source)
