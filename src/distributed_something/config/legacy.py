"""Read a legacy Distributed-Something family ``config.py`` without executing it.

The family's config files are Python, but only ever assign values. We parse them with `ast`
and evaluate a small, side-effect-free subset statement by statement (constants, containers,
earlier variables, arithmetic, f-strings, a few conversions and string methods, reads of the
environment, conditional expressions). Anything else is refused with the line number, so a
config can never run code on the machine that reads it.

The variables are then mapped onto the typed model (`LEGACY_FIELDS`); any other upper-case
variable becomes an entry of ``env`` (the family passed those to the container).
"""

from __future__ import annotations

import ast
import json
import operator
import os
import re
import shlex
import string
from collections.abc import Callable, Iterable, Mapping, Sequence
from contextvars import ContextVar
from pathlib import Path
from typing import Any, NoReturn

from distributed_something.config.model import Config
from distributed_something.errors import InputError
from distributed_something.secrets_scan import check_config_credentials
from distributed_something.userfiles import read_user_text

#: Every legacy variable (docs/design.md §3), plus ds-native extras, and its dotted model field.
LEGACY_FIELDS: dict[str, str] = {
    "APP_NAME": "app_name",
    "BACKEND": "backend",
    "DOCKERHUB_TAG": "image",
    "RECIPE": "recipe.name",
    "COMMAND": "recipe.argv",
    "OUTPUT_PREFIX": "recipe.output_prefix",
    "INPUTS": "recipe.inputs",
    "RECIPE_ENGINE": "recipe.engine",
    "AWS_REGION": "aws.region",
    "AWS_PROFILE": "aws.profile",
    "SSH_KEY_NAME": "aws.ssh_key_name",
    "AWS_BUCKET": "storage.bucket",
    "SOURCE_BUCKET": "storage.source_bucket",
    "WORKSPACE_BUCKET": "storage.workspace_bucket",
    "DESTINATION_BUCKET": "storage.destination_bucket",
    "UPLOAD_FLAGS": "storage.upload_flags",
    "ECS_CLUSTER": "aws.ecs_cluster",
    "CLUSTER_MACHINES": "cluster.machines",
    "TASKS_PER_MACHINE": "cluster.tasks_per_machine",
    "DOCKER_CORES": "cluster.docker_cores",
    "CPU_SHARES": "cluster.cpu_shares",
    "MEMORY": "cluster.memory",
    "SECONDS_TO_START": "cluster.seconds_to_start",
    "MACHINE_TYPE": "aws.machine_type",
    "MACHINE_PRICE": "aws.machine_price",
    "EBS_VOL_SIZE": "aws.ebs_vol_size",
    "ASSIGN_IP": "aws.assign_ip",
    "SQS_QUEUE_NAME": "queue.name",
    "SQS_MESSAGE_VISIBILITY": "queue.visibility",
    "SQS_DEAD_LETTER_QUEUE": "queue.dead_letter_queue",
    "JOB_RETRIES": "queue.job_retries",
    "TASK_TIMEOUT": "recipe.timeout",
    "LOG_GROUP_NAME": "aws.log_group_name",
    "AUTO_MONITOR": "aws.auto_monitor",
    "CREATE_DASHBOARD": "aws.create_dashboard",
    "CLEAN_DASHBOARD": "aws.clean_dashboard",
    "TASK_ROLE_ARN": "aws.task_role_arn",
    "CHECK_IF_DONE_BOOL": "check_if_done.enabled",
    "EXPECTED_NUMBER_FILES": "check_if_done.expected_number_files",
    "MIN_FILE_SIZE_BYTES": "check_if_done.min_file_size_bytes",
    "NECESSARY_STRING": "check_if_done.necessary_string",
    "DOWNLOAD_FILES": "tool.download_files",
    "ALWAYS_CONTINUE": "tool.always_continue",
    "USE_PLUGINS": "tool.use_plugins",
    "UPDATE_PLUGINS": "tool.update_plugins",
    "PLUGINS_COMMIT": "tool.plugins_commit",
    "INSTALL_REQUIREMENTS": "tool.install_requirements",
    "REQUIREMENTS_FILE": "tool.requirements_file",
    "REQUIREMENTS": "tool.requirements",
    "SCRIPT_DOWNLOAD_URL": "tool.script_download_url",
    "SCRIPT_SHA256": "tool.script_sha256",
    "LOCAL_ROOT": "local.root",
    "LOCAL_WORKERS": "local.workers",
    "LOCAL_POLL_INTERVAL": "local.poll_interval",
    "LOCAL_PREPARE": "local.prepare",
    "SLURM_SHARED_DIR": "slurm.shared_dir",
    "SLURM_PARTITION": "slurm.partition",
    "SLURM_ACCOUNT": "slurm.account",
    "SLURM_QOS": "slurm.qos",
    "SLURM_TIME": "slurm.time",
    "SLURM_MEMORY": "slurm.memory",
    "SLURM_CPUS_PER_TASK": "slurm.cpus_per_task",
    "SLURM_MAX_JOBS": "slurm.max_jobs",
    "SLURM_TASKS_PER_JOB": "slurm.tasks_per_job",
    "SLURM_SBATCH_ARGS": "slurm.sbatch_args",
}

#: The legacy variable that sets each dotted model field (the inverse of `LEGACY_FIELDS`).
LEGACY_VARIABLE_OF: dict[str, str] = {field: name for name, field in LEGACY_FIELDS.items()}

ONLY_ASSIGNMENTS = "config.py may only assign values; compute it elsewhere and write the result"

_UPPER_CASE = re.compile(r"[A-Z][A-Z0-9_]*")
_TRUE = frozenset({"true", "yes", "1"})
_FALSE = frozenset({"false", "no", "0"})
# Guards against a config that would exhaust memory or CPU while being evaluated: every value
# the evaluator builds is measured, and an operation whose result would break a limit is
# refused before it runs (a real config.py is a few kilobytes of short strings and lists).
#: characters in one string
_MAX_STRING = 1_000_000
#: elements in one list, tuple, set or dict
_MAX_ITEMS = 100_000
#: the size of one value: characters of its strings + its elements, counted at every place
#: they appear (``[[0] * 1000] * 1000`` is 1,000,000 however little memory it shares)
_MAX_TOTAL = 2_000_000
#: the size of all the file's variables together (what the environment would receive)
_MAX_NAMESPACE = 4_000_000
#: lists in lists (in dicts …)
_MAX_DEPTH = 32
_MAX_INT_BITS = 4096
# A %-format conversion: %[(key)][flags][width][.precision][length]type.
_PRINTF_SPEC = re.compile(
    r"%(?:\((?P<key>[^)]*)\))?[-#0 +]*(?P<width>\*|\d+)?(?:\.(?P<precision>\*|\d*))?[hlL]?"
    r"(?P<type>[diouxXeEfFgGcrsab%])"
)

_BINARY: dict[type[ast.operator], Callable[[Any, Any], Any]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
    ast.Pow: operator.pow,
}
_COMPARE: dict[type[ast.cmpop], Callable[[Any, Any], Any]] = {
    ast.Eq: operator.eq,
    ast.NotEq: operator.ne,
    ast.Lt: operator.lt,
    ast.LtE: operator.le,
    ast.Gt: operator.gt,
    ast.GtE: operator.ge,
    ast.In: lambda a, b: a in b,
    ast.NotIn: lambda a, b: a not in b,
}
_CONVERSIONS: dict[str, Callable[..., Any]] = {
    "str": str,
    "int": int,
    "float": float,
    "bool": bool,
    "len": len,
}
_STRING_METHODS = frozenset({"lower", "upper", "format", "replace", "strip"})

_STATEMENT_KINDS: dict[type[ast.stmt], str] = {
    ast.FunctionDef: "a function definition",
    ast.AsyncFunctionDef: "a function definition",
    ast.ClassDef: "a class definition",
    ast.Return: "a return statement",
    ast.Delete: "a del statement",
    ast.For: "a for loop",
    ast.AsyncFor: "a for loop",
    ast.While: "a while loop",
    ast.If: "an if statement",
    ast.With: "a with statement",
    ast.AsyncWith: "a with statement",
    ast.Match: "a match statement",
    ast.Raise: "a raise statement",
    ast.Try: "a try statement",
    ast.Assert: "an assert statement",
    ast.Global: "a global statement",
    ast.Nonlocal: "a nonlocal statement",
}


#: Whether the command at work read a legacy config.py (set by `load_legacy`; `main` clears
#: it before each command): then an error about any file (a job file's fix that says
#: `recipe.engine`) names config fields as the config.py's variables (`legacy_error`).
LEGACY_CONFIG_READ: ContextVar[bool] = ContextVar("legacy_config_read", default=False)


def load_legacy(path: Path, *, backend: str | None = None) -> Config:
    """Read a legacy ``config.py`` and return the validated `Config` it describes.

    The file is never executed. Raises `InputError` (naming the file and the line, or the
    legacy variable) when the file is missing, is not valid Python, uses anything beyond
    plain assignments, or sets a value the model rejects. The family's defaults apply
    (`family_defaults`): without ``BACKEND`` the backend is "aws", as the family's run.py
    always was, and without ``CHECK_IF_DONE_BOOL`` nothing is skipped. ``backend`` (from
    ``--backend`` / ``DS_BACKEND``) overrides the file's ``BACKEND`` without editing it.
    """
    # Imported here: the loader dispatches `.py` files to this module.
    from distributed_something.config.loader import validate_data

    LEGACY_CONFIG_READ.set(True)

    source = str(path)
    data = family_defaults(legacy_data(read_variables(path), source))
    if backend is not None:
        data["backend"] = backend
    if data.get("backend") == "slurm":
        _slurm_defaults(data)
    config = validate_data(data, source, name_field=legacy_name, show=repr)
    # A credential in a setting (a presigned SCRIPT_DOWNLOAD_URL) is refused here, before
    # anything is created; `main` names the field by its legacy variable (`legacy_error`).
    check_config_credentials(config, source=source)
    return config


def _slurm_defaults(data: dict[str, Any]) -> None:
    """On Slurm a family config's CLUSTER_MACHINES × DOCKER_CORES (its machines times the
    processes each runs) caps the Slurm jobs running at once, unless SLURM_MAX_JOBS says.
    Values the model would reject are left for its error message."""
    cluster = data.get("cluster", {})
    machines, cores = cluster.get("machines", 1), cluster.get("docker_cores", 1)
    if isinstance(machines, int) and isinstance(cores, int) and machines * cores >= 1:
        data.setdefault("slurm", {}).setdefault("max_jobs", machines * cores)


def family_defaults(data: dict[str, Any]) -> dict[str, Any]:
    """``data`` (from `legacy_data`) with the family's defaults where the file is silent.

    ``backend`` is "aws" (a family config.py was written for AWS). ``check_if_done.enabled``
    is false: the family's workers check only when told to (DOZC's worker defaults
    CHECK_IF_DONE_BOOL to False, DCP's run.py requires it, DF's workers never check), while
    a ds.toml checks by default. ``queue.job_retries`` is `FAMILY_JOB_RETRIES`: the
    dead-letter limit every family run.py used without JOB_RETRIES. Returns ``data``
    itself, changed in place.
    """
    data.setdefault("backend", "aws")
    data.setdefault("check_if_done", {}).setdefault("enabled", False)
    data.setdefault("queue", {}).setdefault("job_retries", FAMILY_JOB_RETRIES)
    return data


#: The receives before a task is dead-lettered when a config.py has no JOB_RETRIES: DF's,
#: DOZC's and DS's run.py wrote maxReceiveCount 10, and DCP's defaults JOB_RETRIES to 10.
FAMILY_JOB_RETRIES = 10


def read_variables(path: Path) -> dict[str, Any]:
    """Evaluate a legacy ``config.py`` safely and return its variables in assignment order.

    Imports, docstrings and bare expressions are skipped; every other statement must be an
    assignment (plain, annotated, augmented or to a tuple of names) of a supported
    expression, else `InputError` names the line and what was found there. What the file
    builds is bounded: a string of at most 1,000,000 characters, a list (tuple, set, dict)
    of at most 100,000 elements, a value of at most 2,000,000 characters and elements in all
    (shared parts counted each time they appear), 4,000,000 for all variables together,
    lists nested at most 32 deep, integers of at most 4,096 bits, and format widths within
    those limits. An expression that would go beyond is refused before it is computed, with
    `InputError` naming the line and the variable ("is too large"), as is a file nested too
    deeply for Python's parser.
    """
    from distributed_something.config.loader import MISSING_CONFIG_FIX

    source = str(path)
    text = read_user_text(path, missing_fix=MISSING_CONFIG_FIX)
    try:
        tree = ast.parse(text, filename=source)
    except SyntaxError as error:
        raise InputError(
            source,
            f"line {error.lineno}" if error.lineno else None,
            f"this is not valid Python ({error.msg})",
            "correct the syntax on that line (strings need quotes, lists need brackets)",
        ) from None
    except (RecursionError, MemoryError):  # the parser's own stack: thousands of nested terms
        raise InputError(
            source,
            None,
            "an expression is nested too deeply for Python to read it",
            "write the value itself instead of a long chain of operators or brackets",
        ) from None
    return _Evaluator(source).run(tree)


def legacy_data(variables: Mapping[str, Any], source: str) -> dict[str, Any]:
    """Arrange legacy variables as the nested mapping `Config` validates.

    Known variables (`LEGACY_FIELDS`) go to their fields after the family's conventions are
    applied (string booleans, ``''`` or ``None`` meaning unset for non-text fields, a single
    machine type, a COMMAND string split like a shell would, a dead-letter queue given as an
    ARN, a key file name ending in ``.pem``, ``PLUGINS_COMMIT = 'False'``). Other upper-case
    variables go to ``env`` as strings (lists, tuples, sets and dicts as JSON; ``None`` is
    left out); lower-case names are local helpers and are dropped.
    """
    data: dict[str, Any] = {}
    env: dict[str, str] = {}
    for name, value in variables.items():
        if not _UPPER_CASE.fullmatch(name):
            continue
        dotted = LEGACY_FIELDS.get(name)
        if dotted is None:
            if value is not None:
                env[name] = _env_string(value)
            continue
        converted = _convert(name, dotted, value, source)
        if converted is _UNSET:
            continue
        section, _, field = dotted.rpartition(".")
        target = data.setdefault(section, {}) if section else data
        target[field] = converted
    if env:
        data["env"] = env
    return data


def legacy_name(loc: Sequence[str | int]) -> str:
    """The legacy variable naming a model location, e.g. ``("aws", "machine_type", 0)`` →
    ``MACHINE_TYPE[0]``, ``("env", "FOO")`` → ``FOO``; the dotted path when none does."""
    parts = [str(p) for p in loc if isinstance(p, str)]
    if parts[:1] == ["env"] and len(loc) > 1:
        return str(loc[1])
    for cut in range(len(loc), 0, -1):
        prefix = loc[:cut]
        if not all(isinstance(p, str) for p in prefix):
            continue
        name = LEGACY_VARIABLE_OF.get(".".join(str(p) for p in prefix))
        if name is not None:
            return name + "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in loc[cut:])
    return ".".join(parts)


#: Words in an image's repository name that say which recipe its tool needs (the family's
#: images: distributed-cellprofiler, distributed-fiji, distributed-bioformats2raw).
_IMAGE_WORDS: dict[str, tuple[str, ...]] = {
    "cellprofiler": ("cellprofiler",),
    "fiji": ("fiji", "imagej"),
    "omezarr": ("omezarr", "ome-zarr", "ome_zarr", "bioformats2raw"),
}

# Key pair names as the family's templates write them ("your-key-file.pem").
_KEY_PLACEHOLDER = re.compile(r"(?i)^your[-_ ]|key[-_ ]?file")

#: The fix when nothing says which recipe a legacy config's tasks need.
RECIPE_FIX = (
    "add RECIPE = 'cellprofiler' to config.py (or 'fiji' or 'omezarr'; or RECIPE = 'command' "
    "with COMMAND = ['tool', '{input_dir}/{image}', '{output_dir}'])"
)

# A dotted ds.toml field in an error's text, e.g. "tool.script_download_url".
_DOTTED_FIELD = re.compile(
    r"\b(?:"
    + "|".join(sorted({f.split(".")[0] for f in LEGACY_VARIABLE_OF if "." in f}))
    + r")\.[a-z_]+\b"
)


def recipe_from_image(image: str) -> str | None:
    """The recipe an image's name implies, or None when it implies none or several.

    Only the repository's own name counts (``cellprofiler/distributed-fiji:latest`` is a Fiji
    image of the cellprofiler organisation): ``…cellprofiler…`` → "cellprofiler",
    ``…fiji…``/``…imagej…`` → "fiji", ``…omezarr…``/``…bioformats2raw…`` → "omezarr".
    """
    name = image.strip().lower().split("@", 1)[0].rsplit("/", 1)[-1].split(":", 1)[0]
    found = {recipe for recipe, words in _IMAGE_WORDS.items() if any(w in name for w in words)}
    return found.pop() if len(found) == 1 else None


def legacy_text(text: str) -> str:
    """``text`` with its dotted ds.toml field names (``cluster.memory``) as the legacy
    variables that set them (``MEMORY``)."""
    return _DOTTED_FIELD.sub(lambda m: LEGACY_VARIABLE_OF.get(m.group(0), m.group(0)), text)


def legacy_error(error: InputError, *, config_py: bool = False) -> InputError:
    """``error`` as a user of a legacy ``config.py`` reads it: ds.toml field names (the
    field, and dotted names in the problem and fix) become the legacy variables that set
    them (``recipe.name`` → ``RECIPE``, ``tool.script_download_url`` →
    ``SCRIPT_DOWNLOAD_URL``, a field ``app_name`` → ``APP_NAME``). An error about another
    file (a source not ending in ``.py``) keeps its field, a field of that file; with
    ``config_py`` (the command read a config.py) its problem and fix name the variables
    too, else it is returned unchanged."""
    about_config = error.source.endswith(".py")
    if not about_config and not config_py:
        return error
    if about_config and error.field == "recipe.name" and error.problem == "is not set":
        return InputError(
            error.source,
            "RECIPE",
            "is not set, and neither the job file's format nor the image name "
            "(DOCKERHUB_TAG) says which recipe runs the tasks",
            RECIPE_FIX,
        )

    field = error.field
    if field and about_config:  # a top-level field (app_name) whole; dotted ones anywhere
        field = LEGACY_VARIABLE_OF.get(field) or legacy_text(field)
    problem, fix = legacy_text(error.problem), legacy_text(error.fix)
    if (field, problem, fix) == (error.field, error.problem, error.fix):
        return error
    return InputError(error.source, field, problem, fix)


def misspelt_variables(names: Iterable[str]) -> list[tuple[str, str]]:
    """(name, the legacy variable it is one edit away from) for each upper-case name that is
    not a legacy variable but differs from one by one inserted, deleted, replaced or two
    swapped neighbouring characters (``SQS_MESSAGE_VISIBILTY`` → ``SQS_MESSAGE_VISIBILITY``).
    Such a name would silently become a container environment variable."""
    found: list[tuple[str, str]] = []
    for name in names:
        if not _UPPER_CASE.fullmatch(name) or name in LEGACY_FIELDS:
            continue
        close = [known for known in LEGACY_FIELDS if _one_edit_apart(name, known)]
        if close:
            found.append((name, close[0]))
    return found


def config_warnings(path: Path, *, backend: str = "aws") -> list[str]:
    """One-line warnings about a legacy ``config.py`` that loads but is likely wrong: a
    variable one edit away from a legacy variable. Empty for other files. (``backend`` is
    kept for callers; no warning depends on it now.)"""
    if path.suffix != ".py":
        return []
    variables = read_variables(path)
    notes = [
        f"{path}: {name}: did you mean {known}? (as written it only sets an environment variable)"
        for name, known in misspelt_variables(variables)
    ]
    return notes


def key_name_note(path: Path, fleet: Mapping[str, Any]) -> str | None:
    """A note when a legacy ``config.py``'s ``SSH_KEY_NAME`` (a real one, ``.pem`` left out)
    names another key pair than the fleet file's ``KeyName``: the fleet file's is used, as
    run.py used it (no run.py read SSH_KEY_NAME). None otherwise, and for other files."""
    if path.suffix != ".py":
        return None
    key = read_variables(path).get("SSH_KEY_NAME")
    if not isinstance(key, str) or not key.strip() or _KEY_PLACEHOLDER.search(key):
        return None
    pair = key.strip().removesuffix(".pem")
    specs = fleet.get("LaunchSpecifications") or []
    names = sorted({str(s["KeyName"]) for s in specs if isinstance(s, dict) and s.get("KeyName")})
    if names == [pair]:
        return None
    used = f"KeyName {', '.join(names)}" if names else "no KeyName (no key pair)"
    return (
        f"{path}: SSH_KEY_NAME: {key!r} is not the fleet file's key pair; the instances get "
        f"the fleet file's {used}, as with run.py, which never read SSH_KEY_NAME"
    )


def _one_edit_apart(a: str, b: str) -> bool:
    if a == b or abs(len(a) - len(b)) > 1:
        return False
    if len(a) == len(b):
        diffs = [i for i, (x, y) in enumerate(zip(a, b, strict=True)) if x != y]
        if len(diffs) == 1:
            return True
        # two swapped neighbours
        return (
            len(diffs) == 2
            and diffs[1] == diffs[0] + 1
            and a[diffs[0]] == b[diffs[1]]
            and a[diffs[1]] == b[diffs[0]]
        )
    short, long = (a, b) if len(a) < len(b) else (b, a)
    # the deletion that matters is at the first difference
    cut = next(
        (i for i, (x, y) in enumerate(zip(short, long[: len(short)], strict=True)) if x != y),
        len(short),
    )
    return short[cut:] == long[cut + 1 :]


# --- evaluation --------------------------------------------------------------------------


class _Evaluator:
    """Evaluates the statements of one legacy config in a namespace of its own variables."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.names: dict[str, Any] = {}
        #: (size, depth) of each variable's value (see `_measure`), and their sum
        self._sizes_of_names: dict[str, tuple[int, int]] = {}
        self._namespace_size = 0
        #: id → (value, size, depth) of the values of the current statement; the value is
        #: kept so its id cannot be reused while the entry exists. Emptied after each one.
        self._measured: dict[int, tuple[Any, int, int]] = {}
        #: the variables the current statement assigns, for errors
        self._targets = ""

    def run(self, tree: ast.Module) -> dict[str, Any]:
        for statement in tree.body:
            self._targets = _target_names(statement)
            try:
                self._statement(statement)
            except RecursionError:  # a deep chain of operators the parser still accepted
                raise InputError(
                    self.source,
                    f"line {getattr(statement, 'lineno', '?')}",
                    "the expression is nested too deeply",
                    "write the value itself instead of a long chain of operators",
                ) from None
            finally:
                self._measured.clear()
        return self.names

    # -- sizes ---------------------------------------------------------------------------

    def _measure(self, value: Any, level: int = 0) -> tuple[int, int]:
        """(size, depth) of ``value``: characters of strings, 1 + the sizes of the elements
        of a container (keys and values of a dict), about the digits of an integer, 1 for
        anything else; depth counts containers within containers. Stops counting past
        `_MAX_TOTAL` and `_MAX_DEPTH`, so measuring never costs more than those limits."""
        if isinstance(value, str):
            return len(value), 0
        if isinstance(value, int) and not isinstance(value, bool):
            return 1 + value.bit_length() // 3, 0
        if not isinstance(value, list | tuple | set | frozenset | dict):
            return 1, 0
        known = self._measured.get(id(value))
        if known is not None:
            return known[1], known[2]
        if level > _MAX_DEPTH:
            return 1, 1
        items: Iterable[Any] = (
            (x for pair in value.items() for x in pair) if isinstance(value, dict) else value
        )
        size, depth = 1, 0
        for item in items:
            item_size, item_depth = self._measure(item, level + 1)
            size += item_size
            depth = max(depth, item_depth)
            if size > _MAX_TOTAL or depth > _MAX_DEPTH:
                break
        self._measured[id(value)] = (value, size, depth + 1)
        return size, depth + 1

    def _too_large(self, node: ast.AST, what: str) -> NoReturn:
        assigned = f" (the value of {self._targets})" if self._targets else ""
        raise InputError(
            self.source,
            f"line {getattr(node, 'lineno', '?')}",
            f"`{_source_of(node)}` is too large{assigned}: {what}",
            "a config.py holds settings, not data: write a shorter value, or put the data "
            "in a file in storage and give its key",
        )

    def _checked(self, node: ast.AST, value: Any) -> Any:
        """``value`` after checking it against the limits (see `read_variables`)."""
        if isinstance(value, str):
            if len(value) > _MAX_STRING:
                self._too_large(node, f"a string of more than {_MAX_STRING:,} characters")
            return value
        if isinstance(value, int) and not isinstance(value, bool):
            if value.bit_length() > _MAX_INT_BITS:
                self._too_large(node, f"an integer of more than {_MAX_INT_BITS:,} bits")
            return value
        if isinstance(value, list | tuple | set | frozenset | dict):
            if len(value) > _MAX_ITEMS:
                self._too_large(node, f"more than {_MAX_ITEMS:,} elements in one list")
            size, depth = self._measure(value)
            if depth > _MAX_DEPTH:
                self._too_large(node, f"lists nested more than {_MAX_DEPTH} deep")
            if size > _MAX_TOTAL:
                self._too_large(node, f"more than {_MAX_TOTAL:,} characters and elements in all")
        return value

    def _remember(self, name: str, value: Any) -> None:
        size, depth = self._measure(value)
        old, _ = self._sizes_of_names.get(name, (0, 0))
        self._namespace_size += size - old
        self._sizes_of_names[name] = (size, depth)
        if self._namespace_size > _MAX_NAMESPACE:
            raise InputError(
                self.source,
                name,
                f"the variables of the file hold more than {_MAX_NAMESPACE:,} characters and "
                "elements in all",
                "a config.py holds settings, not data: put the data in a file in storage and "
                "give its key",
            )

    def _refuse(self, node: ast.AST, what: str) -> NoReturn:
        line = getattr(node, "lineno", None)
        raise InputError(
            self.source,
            f"line {line}" if line else None,
            f"{what} is not allowed",
            ONLY_ASSIGNMENTS,
        )

    def _statement(self, node: ast.stmt) -> None:
        if isinstance(node, ast.Import | ast.ImportFrom | ast.Expr | ast.Pass):
            return  # imports do nothing here; docstrings and bare expressions are ignored
        if isinstance(node, ast.Assign):
            value = self._eval(node.value)
            for target in node.targets:
                self._bind(target, value)
        elif isinstance(node, ast.AnnAssign):
            if node.value is not None:
                self._bind(node.target, self._eval(node.value))
        elif isinstance(node, ast.AugAssign):
            if not isinstance(node.target, ast.Name):
                self._refuse(node, "an augmented assignment to an attribute or item")
            current = self._name(node.target)
            self._bind(node.target, self._binary(node, node.op, current, self._eval(node.value)))
        else:
            kind = _STATEMENT_KINDS.get(type(node), f"a {type(node).__name__} statement")
            self._refuse(node, kind)

    def _bind(self, target: ast.expr, value: Any) -> None:
        if isinstance(target, ast.Name):
            self._remember(target.id, value)
            self.names[target.id] = value
            return
        if isinstance(target, ast.Tuple | ast.List):
            if any(isinstance(element, ast.Starred) for element in target.elts):
                self._refuse(target, "a starred assignment")
            if not isinstance(value, list | tuple | str) or len(value) != len(target.elts):
                raise InputError(
                    self.source,
                    f"line {target.lineno}",
                    f"cannot unpack {value!r} into {len(target.elts)} names",
                    "give as many values as names, e.g. A, B = 1, 2",
                )
            for element, item in zip(target.elts, value, strict=True):
                self._bind(element, item)
            return
        self._refuse(target, "an assignment to an attribute or item")

    def _name(self, node: ast.Name) -> Any:
        if node.id not in self.names:
            raise InputError(
                self.source,
                f"line {node.lineno}",
                f"`{node.id}` is used before it is assigned",
                f"assign {node.id} above this line, or write the value itself",
            )
        value = self.names[node.id]
        if isinstance(value, list | tuple | set | frozenset | dict):
            # Measured when it was assigned: a statement using it does not walk it again.
            size, depth = self._sizes_of_names[node.id]
            self._measured[id(value)] = (value, size, depth)
        return value

    def _eval(self, node: ast.expr) -> Any:
        if isinstance(node, ast.Name):
            return self._name(node)
        return self._checked(node, self._compute(node))

    def _element(self, node: ast.expr, total: list[int]) -> Any:
        # One element of a literal list, counted as it comes: a literal of many large
        # elements stops at the first that breaks the limit, not after building them all.
        value = self._eval(node)
        total[0] += self._measure(value)[0]
        if total[0] > _MAX_TOTAL:
            self._too_large(node, f"more than {_MAX_TOTAL:,} characters and elements in all")
        return value

    def _compute(self, node: ast.expr) -> Any:
        if isinstance(node, ast.Constant):
            return node.value
        total = [1]
        if isinstance(node, ast.List):
            return [self._element(element, total) for element in self._elements(node.elts)]
        if isinstance(node, ast.Tuple):
            return tuple(self._element(element, total) for element in self._elements(node.elts))
        if isinstance(node, ast.Set):
            return {self._hashable(e, self._element(e, total)) for e in self._elements(node.elts)}
        if isinstance(node, ast.Dict):
            result: dict[Any, Any] = {}
            for key, value in zip(node.keys, node.values, strict=True):
                if key is None:
                    self._refuse(value, "a ** unpacking")
                result[self._hashable(key, self._element(key, total))] = self._element(value, total)
            return result
        if isinstance(node, ast.BinOp):
            return self._binary(node, node.op, self._eval(node.left), self._eval(node.right))
        if isinstance(node, ast.UnaryOp):
            return self._unary(node)
        if isinstance(node, ast.BoolOp):
            # Short-circuits like Python's `and`/`or`, returning the deciding operand.
            result = self._eval(node.values[0])
            for operand in node.values[1:]:
                if (isinstance(node.op, ast.And) and not result) or (
                    isinstance(node.op, ast.Or) and result
                ):
                    break
                result = self._eval(operand)
            return result
        if isinstance(node, ast.Compare):
            return self._compare(node)
        if isinstance(node, ast.IfExp):
            return self._eval(node.body) if self._eval(node.test) else self._eval(node.orelse)
        if isinstance(node, ast.JoinedStr):
            parts: list[str] = []
            length = 0
            for value in node.values:
                parts.append(self._fstring_part(value))
                length += len(parts[-1])
                if length > _MAX_STRING:
                    self._too_large(node, f"a string of more than {_MAX_STRING:,} characters")
            return "".join(parts)
        if isinstance(node, ast.Call):
            return self._call(node)
        if isinstance(node, ast.Attribute):
            self._refuse(node, f"attribute access `{ast.unparse(node)}`")
        self._refuse(node, f"`{ast.unparse(node)}` ({_expression_kind(node)})")

    def _elements(self, elements: list[ast.expr]) -> list[ast.expr]:
        for element in elements:
            if isinstance(element, ast.Starred):
                self._refuse(element, "a * unpacking")
        return elements

    def _hashable(self, node: ast.expr, value: Any) -> Any:
        try:
            hash(value)
        except TypeError:
            raise InputError(
                self.source,
                f"line {node.lineno}",
                f"{value!r} cannot be a dict key or set element",
                "use a string or a number there",
            ) from None
        return value

    def _fail(self, node: ast.AST, problem: str) -> NoReturn:
        raise InputError(
            self.source,
            f"line {getattr(node, 'lineno', '?')}",
            problem,
            "correct the expression, or write the value itself",
        )

    def _binary(self, node: ast.AST, op: ast.operator, left: Any, right: Any) -> Any:
        function = _BINARY.get(type(op))
        if function is None:
            self._refuse(node, f"the operator in `{_source_of(node)}`")
        self._check_size(node, op, left, right)
        try:
            return function(left, right)
        except (TypeError, ValueError, ArithmeticError) as error:
            self._fail(node, f"`{_source_of(node)}` fails: {error}")

    def _check_size(self, node: ast.AST, op: ast.operator, left: Any, right: Any) -> None:
        """Refuse ``left op right`` before computing it when its result would break a limit."""
        if (
            isinstance(op, ast.Pow)
            and _is_number(left)
            and isinstance(left, int)
            and isinstance(right, int)
            and not isinstance(right, bool)
            and max(abs(left), 2).bit_length() * right > _MAX_INT_BITS
        ):
            self._fail(node, f"`{_source_of(node)}` is too large")
        if (
            isinstance(op, ast.Mult)
            and _is_int(left)
            and _is_int(right)
            and abs(left).bit_length() + abs(right).bit_length() > _MAX_INT_BITS + 1
        ):
            self._too_large(node, f"an integer of more than {_MAX_INT_BITS:,} bits")
        if isinstance(op, ast.Add) and _is_sequence(left) and _is_sequence(right):
            self._check_repeat(node, left, 1, len(right), self._measure(right)[0])
        if isinstance(op, ast.Mult):
            for sequence, count in ((left, right), (right, left)):
                if _is_sequence(sequence) and _is_int(count) and count > 1:
                    self._check_repeat(node, sequence, count)
        if isinstance(op, ast.Mod) and isinstance(left, str):
            self._check_printf(node, left, right)

    def _check_repeat(
        self, node: ast.AST, sequence: Any, count: int, more_items: int = 0, more_size: int = 0
    ) -> None:
        """Refuse ``sequence * count`` (+ ``more_items`` elements of ``more_size``) when the
        result would be too long or too large."""
        items = len(sequence) * count + more_items
        if isinstance(sequence, str):
            if items > _MAX_STRING:
                self._too_large(node, f"a string of more than {_MAX_STRING:,} characters")
            return
        if items > _MAX_ITEMS:
            self._too_large(node, f"more than {_MAX_ITEMS:,} elements in one list")
        size = (self._measure(sequence)[0] - 1) * count + more_size
        if size > _MAX_TOTAL:
            self._too_large(node, f"more than {_MAX_TOTAL:,} characters and elements in all")

    def _check_printf(self, node: ast.AST, template: str, args: Any) -> None:
        """Refuse ``template % args`` when its result could exceed `_MAX_STRING`: the sum of
        every conversion's width or precision and the longest text its value can give."""
        positional = list(args) if isinstance(args, tuple) else [args]
        mapping = args if isinstance(args, Mapping) else None
        bound = len(template)
        for match in _PRINTF_SPEC.finditer(template):
            kind = match["type"]
            if kind == "%":
                continue
            numbers = []
            for part in (match["width"], match["precision"]):
                if part == "*":
                    taken = positional.pop(0) if positional else 0
                    numbers.append(abs(taken) if _is_int(taken) else 0)
                elif part:
                    numbers.append(_number_bound(part))
            if mapping is not None and match["key"] is not None:
                value = mapping.get(match["key"], "")
            else:
                value = positional.pop(0) if positional else ""
            widest = max(numbers, default=0)
            if widest > _MAX_STRING:
                self._too_large(node, f"a format width of more than {_MAX_STRING:,}")
            bound += widest + self._text_bound(value, kind)
            if bound > _MAX_STRING:
                self._too_large(node, f"a string of more than {_MAX_STRING:,} characters")

    def _text_bound(self, value: Any, kind: str = "r") -> int:
        """At most how many characters ``format``, ``str``, ``repr`` or a %-conversion of
        ``kind`` make of ``value`` (more than `_MAX_STRING` when it may be larger)."""
        if isinstance(value, str):
            return len(value) if kind == "s" else 10 * len(value) + 2  # repr: \U0001f600
        if isinstance(value, int | float) or value is None:
            return 400 + self._measure(value)[0]  # 1e308 as %f: 309 digits
        if isinstance(value, list | tuple | set | frozenset | dict):
            return 10 * self._measure(value)[0] + 2  # each element's repr and ", "
        return 400

    def _check_spec(self, node: ast.AST, spec: str) -> None:
        """Refuse a format spec (``>2000000000``, ``.2000000000f``) whose width or precision
        alone exceeds `_MAX_STRING`."""
        if any(_number_bound(digits) > _MAX_STRING for digits in re.findall(r"\d+", spec)):
            self._too_large(node, f"a format width of more than {_MAX_STRING:,}")

    def _unary(self, node: ast.UnaryOp) -> Any:
        operand = self._eval(node.operand)
        if isinstance(node.op, ast.Not):
            return not operand
        if isinstance(node.op, ast.USub | ast.UAdd) and _is_number(operand):
            return -operand if isinstance(node.op, ast.USub) else +operand
        if isinstance(node.op, ast.USub | ast.UAdd):
            self._fail(node, f"`{_source_of(node)}` fails: {operand!r} is not a number")
        self._refuse(node, f"the operator `{_source_of(node)}`")

    def _compare(self, node: ast.Compare) -> bool:
        left = self._eval(node.left)
        for op, comparator in zip(node.ops, node.comparators, strict=True):
            function = _COMPARE.get(type(op))
            if function is None:
                self._refuse(node, f"the comparison `{_source_of(node)}`")
            right = self._eval(comparator)
            try:
                if not function(left, right):
                    return False
            except TypeError as error:
                self._fail(node, f"`{_source_of(node)}` fails: {error}")
            left = right
        return True

    def _fstring_part(self, part: ast.expr) -> str:
        if isinstance(part, ast.Constant):
            return str(part.value)
        if isinstance(part, ast.FormattedValue):
            value = self._eval(part.value)
            if part.conversion == ord("r"):
                value = repr(value)
            elif part.conversion == ord("a"):
                value = ascii(value)
            elif part.conversion == ord("s"):
                value = str(value)
            spec = self._eval(part.format_spec) if part.format_spec is not None else ""
            self._check_spec(part, str(spec))
            if self._text_bound(value, "s") > _MAX_STRING:
                self._too_large(part, f"a string of more than {_MAX_STRING:,} characters")
            try:
                return format(value, spec)
            except (TypeError, ValueError) as error:
                self._fail(part, f"the f-string field `{_source_of(part.value)}` fails: {error}")
        self._refuse(part, f"`{_source_of(part)}` in an f-string")

    def _arguments(self, node: ast.Call) -> tuple[list[Any], dict[str, Any]]:
        args = [self._eval(arg) for arg in self._elements(node.args)]
        kwargs: dict[str, Any] = {}
        for keyword in node.keywords:
            if keyword.arg is None:
                self._refuse(keyword.value, "a ** unpacking")
            kwargs[keyword.arg] = self._eval(keyword.value)
        return args, kwargs

    def _call(self, node: ast.Call) -> Any:
        func = node.func
        dotted = _dotted(func)
        if dotted in ("os.environ.get", "os.getenv"):
            args, kwargs = self._arguments(node)
            return self._environment(node, args, kwargs)
        if isinstance(func, ast.Name) and func.id in _CONVERSIONS:
            args, kwargs = self._arguments(node)
            if func.id == "str" and args and self._text_bound(args[0], "s") > _MAX_STRING:
                self._too_large(node, f"a string of more than {_MAX_STRING:,} characters")
            return self._apply(node, _CONVERSIONS[func.id], args, kwargs)
        if isinstance(func, ast.Attribute) and func.attr in _STRING_METHODS:
            receiver = self._eval(func.value)
            if isinstance(receiver, str):
                args, kwargs = self._arguments(node)
                if func.attr == "format":
                    self._check_format(node, receiver)
                    formatter = _BoundedFormatter(
                        lambda spec: self._check_spec(node, spec),
                        lambda value: self._text_bound(value, "s"),
                    )
                    try:
                        return self._apply(node, formatter.format, [receiver, *args], kwargs)
                    except _TooLong:
                        self._too_large(node, f"a string of more than {_MAX_STRING:,} characters")
                if func.attr == "replace":
                    self._check_replace(node, receiver, args)
                return self._apply(node, getattr(receiver, func.attr), args, kwargs)
            self._refuse(node, f"`.{func.attr}()` on {type(receiver).__name__} (not a string)")
        self._refuse(node, f"a call of `{_source_of(func)}()`")

    def _check_replace(self, node: ast.Call, text: str, args: list[Any]) -> None:
        """Refuse ``text.replace(old, new[, count])`` whose result would exceed `_MAX_STRING`."""
        if len(args) < 2 or not isinstance(args[0], str) or not isinstance(args[1], str):
            return  # the call itself fails, with Python's message
        old, new = args[0], args[1]
        times = text.count(old) if old else len(text) + 1
        if len(args) > 2 and _is_int(args[2]) and args[2] >= 0:
            times = min(times, args[2])
        if len(text) + times * (len(new) - len(old)) > _MAX_STRING:
            self._too_large(node, f"a string of more than {_MAX_STRING:,} characters")

    def _check_format(self, node: ast.Call, template: str) -> None:
        # Field names like "{0.__class__}" would reach into objects; only plain names,
        # positions and automatic numbering are allowed.
        try:
            fields = [field for _, field, _, _ in string.Formatter().parse(template)]
        except ValueError as error:
            self._fail(node, f"`{_source_of(node)}` fails: {error}")
        for field in fields:
            if field and not (field.isidentifier() or field.isdigit()):
                self._refuse(node, f"the format field {{{field}}}")

    def _environment(self, node: ast.Call, args: list[Any], kwargs: dict[str, Any]) -> Any:
        if set(kwargs) - {"default"} or not 1 <= len(args) + len(kwargs) <= 2 or not args:
            self._fail(node, f"`{_source_of(node)}` takes a name and an optional default")
        default = args[1] if len(args) == 2 else kwargs.get("default")
        if not isinstance(args[0], str):
            self._fail(node, f"`{_source_of(node)}` needs a string variable name")
        return os.environ.get(args[0], default)

    def _apply(
        self, node: ast.Call, function: Callable[..., Any], args: list[Any], kwargs: dict[str, Any]
    ) -> Any:
        try:
            return function(*args, **kwargs)
        except (TypeError, ValueError, KeyError, IndexError, OverflowError) as error:
            self._fail(node, f"`{_source_of(node)}` fails: {error}")


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_sequence(value: Any) -> bool:
    return isinstance(value, str | list | tuple)


def _number_bound(digits: str) -> int:
    """The number ``digits`` spells, or `_MAX_STRING` + 1 when it is larger (without turning
    thousands of digits into an int, which Python refuses)."""
    digits = digits.lstrip("0") or "0"
    return int(digits) if len(digits) <= len(str(_MAX_STRING)) else _MAX_STRING + 1


def _target_names(statement: ast.stmt) -> str:
    """The variables ``statement`` assigns, as written (``X``, ``A, B``), or ""."""
    targets: list[ast.expr] = []
    if isinstance(statement, ast.Assign):
        targets = statement.targets
    elif isinstance(statement, ast.AnnAssign | ast.AugAssign):
        targets = [statement.target]
    names = [n.id for target in targets for n in ast.walk(target) if isinstance(n, ast.Name)]
    return ", ".join(dict.fromkeys(names))


class _TooLong(Exception):
    """A `_BoundedFormatter` result would exceed `_MAX_STRING`."""


class _BoundedFormatter(string.Formatter):
    """``str.format`` that refuses, field by field, to build more than `_MAX_STRING`
    characters: each field's spec (``check_spec``) and the longest text of its value
    (``bound``) are checked before it is formatted, and the running length after. Field
    names are plain names or positions only."""

    def __init__(self, check_spec: Callable[[str], None], bound: Callable[[Any], int]) -> None:
        self._check_spec = check_spec
        self._bound = bound
        self._length = 0

    def get_field(self, field_name: str, args: Sequence[Any], kwargs: Mapping[str, Any]) -> Any:
        if not (field_name.isidentifier() or field_name.isdigit()):
            raise ValueError(f"the format field {{{field_name}}} is not allowed")
        return super().get_field(field_name, args, kwargs)

    def format_field(self, value: Any, format_spec: str) -> Any:
        self._check_spec(format_spec)
        if self._bound(value) > _MAX_STRING:
            raise _TooLong
        text = format(value, format_spec)
        self._length += len(text)
        if self._length > _MAX_STRING:
            raise _TooLong
        return text


def _dotted(node: ast.expr) -> str | None:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        base = _dotted(node.value)
        return f"{base}.{node.attr}" if base else None
    return None


def _source_of(node: ast.AST) -> str:
    text = ast.unparse(node)
    return text if len(text) <= 60 else text[:57] + "..."


def _expression_kind(node: ast.expr) -> str:
    kinds: dict[type[ast.expr], str] = {
        ast.Lambda: "a lambda",
        ast.ListComp: "a comprehension",
        ast.SetComp: "a comprehension",
        ast.DictComp: "a comprehension",
        ast.GeneratorExp: "a generator expression",
        ast.Subscript: "indexing or slicing",
        ast.Await: "an await",
        ast.Yield: "a yield",
        ast.YieldFrom: "a yield",
        ast.NamedExpr: "an assignment expression",
        ast.Starred: "a * unpacking",
        ast.Slice: "a slice",
    }
    return kinds.get(type(node), f"a {type(node).__name__} expression")


# --- mapping -----------------------------------------------------------------------------


class _Unset:
    """Marks a legacy value that means "leave the field at its default"."""


_UNSET: Any = _Unset()


def _field_annotation(dotted: str) -> Any:
    model: Any = Config
    annotation: Any = None
    for part in dotted.split("."):
        annotation = model.model_fields[part].annotation
        model = annotation
    return annotation


#: Fields whose legacy variable set to 'False' (any case) means "not set", as run.py read it.
_FALSE_MEANS_UNSET = frozenset(
    {
        "storage.source_bucket",
        "storage.workspace_bucket",
        "storage.destination_bucket",
        "storage.upload_flags",
    }
)


def _convert(name: str, dotted: str, value: Any, source: str) -> Any:
    annotation = _field_annotation(dotted)
    if value == "" and annotation is not str:
        return _UNSET  # the family writes '' for "not set"
    if value is None:
        return _UNSET
    if dotted == "aws.assign_ip":
        # DCP's run.py only ever turns the public IP off (ASSIGN_IP = 'False'); with 'True'
        # the fleet file's AssociatePublicIpAddress stands.
        return False if not parse_bool(value, source, name) else _UNSET
    if annotation is bool:
        return parse_bool(value, source, name)
    if dotted in _FALSE_MEANS_UNSET and (
        value is False or (isinstance(value, str) and value.strip().lower() == "false")
    ):
        # DCP's run.py defaults these to 'False' and leaves them out of the task definition
        # when they say false: its workers then use AWS_BUCKET and no flags.
        return _UNSET
    if dotted == "tool.plugins_commit" and (
        value is False or (isinstance(value, str) and value.strip().lower() == "false")
    ):
        return ""  # DCP writes PLUGINS_COMMIT = 'False' for "no particular commit"
    if dotted == "aws.machine_type" and isinstance(value, str):
        return [value]
    if dotted == "recipe.argv" and isinstance(value, str):
        try:
            return shlex.split(value)
        except ValueError as error:
            raise InputError(
                source,
                name,
                f"cannot be split into arguments ({error})",
                "close every quote, or write COMMAND as a list of strings",
            ) from None
    if dotted == "queue.dead_letter_queue" and isinstance(value, str) and value.startswith("arn:"):
        # Older configs name the DLQ by ARN; the queue's name is its last segment.
        return value.rsplit(":", 1)[-1]
    if dotted == "aws.ssh_key_name":
        # No run.py of the family (DCP, DF, DOZC, DS, any version) read SSH_KEY_NAME: the
        # fleet file's KeyName named the key pair, so it stands (`key_name_note` says when
        # SSH_KEY_NAME names another). ds.toml's aws.ssh_key_name still replaces it.
        return _UNSET
    if isinstance(value, tuple | set | frozenset):
        return list(value)
    return value


def parse_bool(value: Any, source: str, name: str) -> bool:
    """A legacy boolean: True/False, 0/1, or a string 'true'/'false'/'yes'/'no'/'1'/'0' in
    any case. Anything else raises `InputError` naming the variable."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str):
        word = value.strip().lower()
        if word in _TRUE:
            return True
        if word in _FALSE:
            return False
    raise InputError(source, name, f"{value!r} is not a boolean", "write True or False")


def _env_string(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, list | tuple | dict | set | frozenset):
        return json.dumps(_jsonable(value))
    return str(value)


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, set | frozenset):
        return [_jsonable(v) for v in sorted(value, key=repr)]
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, str | int | float | bool) or value is None:
        return value
    return str(value)
