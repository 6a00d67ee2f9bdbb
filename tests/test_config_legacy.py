"""Reading the family's legacy ``config.py`` files without executing them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from distributed_something.config import load_config
from distributed_something.config.environment import config_from_environment
from distributed_something.config.legacy import (
    LEGACY_FIELDS,
    LEGACY_VARIABLE_OF,
    ONLY_ASSIGNMENTS,
    config_warnings,
    legacy_name,
    load_legacy,
    misspelt_variables,
    read_variables,
)
from distributed_something.config.model import Config
from distributed_something.errors import InputError
from family_templates import DCP_TEMPLATE, DF_TEMPLATE, DOZC_TEMPLATE, filled

# The family's config.py files as shipped (tests/family_templates.py). Earlier DF and DOZC
# releases named the dead-letter queue by its ARN; ds reads the queue name from it.
DCP_CONFIG = DCP_TEMPLATE
DF_CONFIG = DF_TEMPLATE
DOZC_CONFIG = filled(
    DOZC_TEMPLATE,
    {"SQS_DEAD_LETTER_QUEUE": "'arn:aws:sqs:some-region:111111100000:DeadMessages'"},
)

# Every variable of docs/design.md §3.
DESIGN_VARIABLES = [
    "APP_NAME",
    "DOCKERHUB_TAG",
    "AWS_REGION",
    "AWS_PROFILE",
    "SSH_KEY_NAME",
    "AWS_BUCKET",
    "SOURCE_BUCKET",
    "WORKSPACE_BUCKET",
    "DESTINATION_BUCKET",
    "UPLOAD_FLAGS",
    "ECS_CLUSTER",
    "CLUSTER_MACHINES",
    "TASKS_PER_MACHINE",
    "MACHINE_TYPE",
    "MACHINE_PRICE",
    "EBS_VOL_SIZE",
    "ASSIGN_IP",
    "DOCKER_CORES",
    "CPU_SHARES",
    "MEMORY",
    "SECONDS_TO_START",
    "SQS_QUEUE_NAME",
    "SQS_MESSAGE_VISIBILITY",
    "SQS_DEAD_LETTER_QUEUE",
    "JOB_RETRIES",
    "LOG_GROUP_NAME",
    "AUTO_MONITOR",
    "CREATE_DASHBOARD",
    "CLEAN_DASHBOARD",
    "CHECK_IF_DONE_BOOL",
    "EXPECTED_NUMBER_FILES",
    "MIN_FILE_SIZE_BYTES",
    "NECESSARY_STRING",
    "DOWNLOAD_FILES",
    "ALWAYS_CONTINUE",
    "USE_PLUGINS",
    "UPDATE_PLUGINS",
    "PLUGINS_COMMIT",
    "INSTALL_REQUIREMENTS",
    "REQUIREMENTS",
    "SCRIPT_DOWNLOAD_URL",
]


def write(tmp_path: Path, text: str, name: str = "config.py") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def legacy(tmp_path: Path, body: str) -> Config:
    return load_legacy(write(tmp_path, "APP_NAME = 'Demo'\n" + body))


def legacy_error(tmp_path: Path, body: str) -> InputError:
    with pytest.raises(InputError) as caught:
        legacy(tmp_path, body)
    return caught.value


# --- the family's files --------------------------------------------------------------------


def test_distributed_cellprofiler_config(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, DCP_CONFIG))
    assert config.app_name == "DistributedCP"
    assert config.image == "cellprofiler/distributed-cellprofiler:2.2.0_4.2.8"
    assert config.aws.log_group_name == "DistributedCP"
    assert config.aws.region == "us-east-1"
    assert config.aws.profile == "default"
    # The template's placeholder: the fleet file's KeyName stands, as with run.py.
    assert config.aws.ssh_key_name == ""
    assert config.storage.bucket == "your-bucket-name"
    assert config.storage.source_bucket == "bucket-name"
    assert config.storage.upload_flags == ""
    assert config.aws.ecs_cluster == "default"
    assert config.cluster.machines == 3
    assert config.aws.machine_type == ["m5.xlarge"]
    assert config.aws.machine_price == 0.20
    assert config.aws.ebs_vol_size == 30
    assert config.aws.assign_ip is None  # 'True': run.py leaves the fleet file's value
    assert config.cluster.docker_cores == 4
    assert config.cluster.cpu_shares == 4 * 1024
    assert config.cluster.memory == 15000
    assert config.cluster.seconds_to_start == 180
    assert config.queue.name == "DistributedCPQueue"
    assert config.queue.visibility == 60
    assert config.queue.dead_letter_queue == "user_DeadMessages"
    assert config.queue.job_retries == 3
    assert (config.aws.auto_monitor, config.aws.create_dashboard) == (True, True)
    assert config.aws.clean_dashboard is True
    assert config.check_if_done.enabled is False
    assert config.check_if_done.expected_number_files == 7
    assert config.check_if_done.min_file_size_bytes == 1
    assert config.tool.download_files is False
    assert config.tool.always_continue is False
    assert config.tool.use_plugins is False
    assert config.tool.plugins_commit == ""  # 'False' means "no particular commit"
    assert config.env == {}


def test_distributed_fiji_config(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, DF_CONFIG))
    assert config.app_name == "DistributedFiji"
    assert config.tool.script_download_url == "https://some/url/with/a/script.y"
    assert config.cluster.memory == 4096
    assert config.cluster.cpu_shares is None
    # Not set in DF, whose workers never skip a task: off, as in the family.
    assert config.check_if_done.enabled is False
    assert config.queue.name == "DistributedFijiQueue"
    assert config.aws.machine_type == ["m4.xlarge"]


def test_distributed_omezarrcreator_config(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, DOZC_CONFIG))
    assert config.app_name == "DistributedBioFormats2Raw"
    assert config.cluster.cpu_shares == 1024
    assert config.cluster.docker_cores == 1
    assert config.queue.visibility == 4 * 60 * 60
    assert config.queue.dead_letter_queue == "DeadMessages"  # the ARN's queue name
    assert config.aws.ebs_vol_size == 600
    assert config.check_if_done.enabled is False


def test_every_design_variable_has_a_model_field() -> None:
    assert set(DESIGN_VARIABLES) <= set(LEGACY_FIELDS)
    for name, dotted in LEGACY_FIELDS.items():
        model: object = Config
        for part in dotted.split("."):
            fields = model.model_fields  # type: ignore[attr-defined]
            assert part in fields, f"{name} → {dotted}"
            model = fields[part].annotation
        assert LEGACY_VARIABLE_OF[dotted] == name


def test_native_extras(tmp_path: Path) -> None:
    config = legacy(
        tmp_path,
        "BACKEND = 'aws'\nRECIPE = 'command'\nCOMMAND = ['python', 'run.py', '{image}']\n"
        "OUTPUT_PREFIX = 'out/{image}'\nINPUTS = ('in/{image}',)\nLOCAL_WORKERS = 2\n",
    )
    assert config.backend == "aws"
    assert config.recipe.name == "command"
    assert config.recipe.argv == ["python", "run.py", "{image}"]
    assert config.recipe.output_prefix == "out/{image}"
    assert config.recipe.inputs == ["in/{image}"]
    assert config.local.workers == 2


def test_command_string_is_split_like_a_shell_would(tmp_path: Path) -> None:
    config = legacy(tmp_path, "COMMAND = \"python run.py '{input_dir}/a b.txt'\"\n")
    assert config.recipe.argv == ["python", "run.py", "{input_dir}/a b.txt"]


def test_single_machine_type_string_becomes_a_list(tmp_path: Path) -> None:
    assert legacy(tmp_path, "MACHINE_TYPE = 'c5.xlarge'\n").aws.machine_type == ["c5.xlarge"]


# --- booleans ----------------------------------------------------------------------------


@pytest.mark.parametrize("text", ["True", "'True'", "'true'", "'TRUE'", "'yes'", "'1'", "1"])
def test_true_booleans(tmp_path: Path, text: str) -> None:
    assert legacy(tmp_path, f"CHECK_IF_DONE_BOOL = {text}\n").check_if_done.enabled is True


@pytest.mark.parametrize("text", ["False", "'False'", "'false'", "'No'", "'0'", "0", "' false '"])
def test_false_booleans(tmp_path: Path, text: str) -> None:
    assert legacy(tmp_path, f"CHECK_IF_DONE_BOOL = {text}\n").check_if_done.enabled is False


def test_bad_boolean_message(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write(tmp_path, "APP_NAME = 'Demo'\nCHECK_IF_DONE_BOOL = 'Maybe'\n")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(InputError) as caught:
        load_config(Path("config.py"))
    assert str(caught.value) == (
        "config.py: CHECK_IF_DONE_BOOL: 'Maybe' is not a boolean. Fix: write True or False"
    )


@pytest.mark.parametrize("text", ["2", "'on'", "[]", "0.5"])
def test_other_bad_booleans(tmp_path: Path, text: str) -> None:
    error = legacy_error(tmp_path, f"USE_PLUGINS = {text}\n")
    assert error.field == "USE_PLUGINS"
    assert error.problem.endswith("is not a boolean")


def test_none_boolean_means_unset(tmp_path: Path) -> None:
    assert legacy(tmp_path, "AUTO_MONITOR = None\n").aws.auto_monitor is False


# --- derived values, defaults, empty strings -------------------------------------------


def test_derived_values(tmp_path: Path) -> None:
    config = legacy(
        tmp_path,
        "SQS_QUEUE_NAME = APP_NAME + 'Queue'\nDOCKER_CORES = 2\n"
        "CPU_SHARES = DOCKER_CORES * 1024\nSECONDS_TO_START = 3*60\n",
    )
    assert config.queue.name == "DemoQueue"
    assert config.cluster.cpu_shares == 2048
    assert config.cluster.seconds_to_start == 180


def test_defaults_when_unset(tmp_path: Path) -> None:
    config = load_legacy(write(tmp_path, "APP_NAME = 'Solo'\n"))
    assert config.queue.name == "SoloQueue"
    assert config.queue.dead_letter_queue == "SoloDeadMessages"
    assert config.aws.log_group_name == "Solo"
    # A family config.py was written for AWS: that is its default backend; the family's
    # workers skip nothing unless CHECK_IF_DONE_BOOL says so; run.py dead-lettered a task
    # after 10 receives unless JOB_RETRIES says otherwise.
    assert config == Config(
        app_name="Solo",
        backend="aws",
        check_if_done={"enabled": False},
        queue={"job_retries": 10},
    )
    local = load_legacy(write(tmp_path, "APP_NAME = 'Solo'\nBACKEND = 'local'\n"))
    assert local.backend == "local"


@pytest.mark.parametrize(
    ("variable", "attribute"),
    [
        ("EXPECTED_NUMBER_FILES", ("check_if_done", "expected_number_files")),
        ("CPU_SHARES", ("cluster", "cpu_shares")),
        ("AWS_PROFILE", ("aws", "profile")),
        ("LOCAL_WORKERS", ("local", "workers")),
    ],
)
def test_empty_string_means_unset(
    tmp_path: Path, variable: str, attribute: tuple[str, str]
) -> None:
    config = legacy(tmp_path, f"{variable} = ''\n")
    assert getattr(getattr(config, attribute[0]), attribute[1]) is None


def test_empty_string_keeps_default_of_required_numbers(tmp_path: Path) -> None:
    assert legacy(tmp_path, "MEMORY = ''\n").cluster.memory == Config(app_name="x").cluster.memory


def test_empty_string_is_a_value_for_text_fields(tmp_path: Path) -> None:
    assert legacy(tmp_path, "NECESSARY_STRING = ''\n").check_if_done.necessary_string == ""


# --- env ---------------------------------------------------------------------------------


def test_extra_upper_case_variables_land_in_env(tmp_path: Path) -> None:
    config = legacy(
        tmp_path,
        "MY_FLAG = True\nTHRESHOLD = 0.5\nCHANNELS = ['DNA', 'RNA']\n"
        "OPTIONS = {'a': 1, 'b': [True, None]}\nPAIR = (1, 2)\nNOTHING = None\n"
        "helper = 'ignored'\nMixedCase = 'ignored'\n_PRIVATE = 'ignored'\nNAME2 = 'x'\n",
    )
    assert config.env == {
        "MY_FLAG": "True",
        "THRESHOLD": "0.5",
        "CHANNELS": '["DNA", "RNA"]',
        "OPTIONS": json.dumps({"a": 1, "b": [True, None]}),
        "PAIR": "[1, 2]",
        "NAME2": "x",
    }


def test_lower_case_helpers_feed_upper_case_variables(tmp_path: Path) -> None:
    config = legacy(tmp_path, "base = 'exp'\nDESTINATION_BUCKET = base + '-out'\n")
    assert config.storage.destination_bucket == "exp-out"
    assert "base" not in config.env


def test_credentials_are_refused(tmp_path: Path) -> None:
    error = legacy_error(tmp_path, "AWS_ACCESS_KEY_ID = 'AKIAEXAMPLE'\n")
    assert error.field == "AWS_ACCESS_KEY_ID"
    assert "AKIAEXAMPLE" not in str(error)


# --- the safe evaluator ----------------------------------------------------------------


def test_supported_expressions(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DS_TEST_BUCKET", "from-env")
    monkeypatch.delenv("DS_TEST_UNSET", raising=False)
    path = write(
        tmp_path,
        '"""A docstring."""\n'
        "import os\n"
        "from os import path\n"
        "APP_NAME: str = 'Demo'\n"
        "A, (B, C) = 1, [2, 3]\n"
        "X = Y = -A + B * C ** 2 // 3 % 5 - 7 / 2\n"
        "N = 10\n"
        "N += 5\n"
        "S = f'{APP_NAME}-{N:03d}-{A!r}'\n"
        "F = '{}_{name}'.format(APP_NAME, name='x').upper().lower().replace('_', '+').strip()\n"
        "T = str(N) + str(int('7')) + str(float(2)) + str(bool(0)) + str(len([1, 2]))\n"
        "E = os.environ.get('DS_TEST_BUCKET', 'dflt')\n"
        "G = os.getenv('DS_TEST_UNSET', 'dflt')\n"
        "H = os.getenv('DS_TEST_UNSET')\n"
        "K = os.environ.get('DS_TEST_UNSET', default='kw')\n"
        "Q = 'big' if N > 10 and not False else 'small'\n"
        "R = A in [1, 2] or N\n"
        "D = {'k': [1, 2], 'z': {1, 2}}\n"
        "P = '%s!' % APP_NAME\n"
        "print('bare expressions are ignored')\n"
        "pass\n",
    )
    values = read_variables(path)
    assert values["A"] == 1 and values["B"] == 2 and values["C"] == 3
    assert values["X"] == values["Y"] == -1 + 2 * 3**2 // 3 % 5 - 7 / 2
    assert values["N"] == 15
    assert values["S"] == "Demo-015-1"
    assert values["F"] == "demo+x"
    assert values["T"] == "1572.0False2"
    assert values["E"] == "from-env"
    assert values["G"] == "dflt"
    assert values["H"] is None
    assert values["K"] == "kw"
    assert values["Q"] == "big"
    assert values["R"] is True
    assert values["D"] == {"k": [1, 2], "z": {1, 2}}
    assert values["P"] == "Demo!"
    assert next(iter(values)) == "APP_NAME"


def test_environment_feeds_config_fields(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DS_TEST_MACHINES", "7")
    config = legacy(tmp_path, "import os\nCLUSTER_MACHINES = int(os.getenv('DS_TEST_MACHINES'))\n")
    assert config.cluster.machines == 7


@pytest.mark.parametrize(
    ("body", "line", "kind"),
    [
        ("def helper():\n    return 1\n", 2, "a function definition"),
        ("class Settings:\n    pass\n", 2, "a class definition"),
        ("for i in range(3):\n    X = i\n", 2, "a for loop"),
        ("while False:\n    pass\n", 2, "a while loop"),
        ("if True:\n    X = 1\n", 2, "an if statement"),
        ("with open('x') as f:\n    pass\n", 2, "a with statement"),
        ("try:\n    X = 1\nexcept Exception:\n    pass\n", 2, "a try statement"),
        ("del APP_NAME\n", 2, "a del statement"),
        ("assert True\n", 2, "an assert statement"),
        ("X = 1\nY = open('/etc/passwd').read()\n", 3, "a call of `open('/etc/passwd').read()`"),
        ("X = exec('1')\n", 2, "a call of `exec()`"),
        ("import os\nX = os.system('true')\n", 3, "a call of `os.system()`"),
        ("import os\nX = os.sep\n", 3, "attribute access `os.sep`"),
        ("X = APP_NAME.real\n", 2, "attribute access `APP_NAME.real`"),
        ("X = [1, 2][0]\n", 2, "`[1, 2][0]` (indexing or slicing)"),
        ("X = lambda: 1\n", 2, "`lambda: 1` (a lambda)"),
        ("X = [i for i in (1, 2)]\n", 2, "`[i for i in (1, 2)]` (a comprehension)"),
        ("X = [*APP_NAME]\n", 2, "a * unpacking"),
        ("X = {**{}}\n", 2, "a ** unpacking"),
        ("X = 3 @ 4\n", 2, "the operator in `3 @ 4`"),
        ("X = ~3\n", 2, "the operator `~3`"),
        ("X = 1 is 1\n", 2, "the comparison `1 is 1`"),
        ("X = [1].append(2)\n", 2, "a call of `[1].append()`"),
        ("X = 'a'.join(['b'])\n", 2, "a call of `'a'.join()`"),
        ("X = [1].lower()\n", 2, "`.lower()` on list (not a string)"),
        ("X = '{0.__class__}'.format(1)\n", 2, "the format field {0.__class__}"),
        ("APP_NAME.attr = 1\n", 2, "an assignment to an attribute or item"),
        ("D = {}\nD['k'] = 1\n", 3, "an assignment to an attribute or item"),
        ("A, *B = 1, 2\n", 2, "a starred assignment"),
    ],
)
def test_unsupported_statements(tmp_path: Path, body: str, line: int, kind: str) -> None:
    error = legacy_error(tmp_path, body)
    assert error.field == f"line {line}"
    assert error.problem == f"{kind} is not allowed"
    assert error.fix == ONLY_ASSIGNMENTS
    assert error.source == str(tmp_path / "config.py")


def test_refused_code_is_never_run(tmp_path: Path) -> None:
    marker = tmp_path / "marker"
    with pytest.raises(InputError):
        legacy(tmp_path, f"X = open({str(marker)!r}, 'w')\n")
    # A bare expression is skipped, not evaluated: the config loads and nothing is created.
    config = legacy(tmp_path, f"open({str(marker)!r}, 'w')\n")
    assert config.app_name == "Demo"
    assert not marker.exists()


def test_unsupported_statement_message(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write(tmp_path, "APP_NAME = 'Demo'\n\ndef f():\n    pass\n")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(InputError) as caught:
        load_config(Path("config.py"))
    assert str(caught.value) == (
        "config.py: line 3: a function definition is not allowed. Fix: config.py may only "
        "assign values; compute it elsewhere and write the result"
    )


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        ("X = UNDEFINED + 1\n", "`UNDEFINED` is used before it is assigned"),
        ("X = 1 / 0\n", "`1 / 0` fails: division by zero"),
        ("X = 'a' - 1\n", "`'a' - 1` fails"),
        ("X = -'a'\n", "is not a number"),
        ("X = int('seven')\n", "`int('seven')` fails"),
        ("X = 'a' < 1\n", "fails"),
        ("X = 10 ** 100000\n", "is too large"),
        ("X = 'a' * 10 ** 9\n", "is too large"),
        ("X = f'{APP_NAME:d}'\n", "the f-string field `APP_NAME` fails"),
        ("A, B = 1, 2, 3\n", "cannot unpack"),
        ("X = {[1]: 2}\n", "cannot be a dict key"),
        ("import os\nX = os.getenv()\n", "takes a name and an optional default"),
        ("import os\nX = os.getenv(3)\n", "needs a string variable name"),
    ],
)
def test_failing_expressions(tmp_path: Path, body: str, needle: str) -> None:
    error = legacy_error(tmp_path, body)
    assert needle in error.problem
    assert error.field is not None and error.field.startswith("line ")


def test_syntax_error_names_the_line(tmp_path: Path) -> None:
    error = legacy_error(tmp_path, "X = 1\nY = [1, 2\n")
    assert error.field is not None and error.field.startswith("line ")
    assert "not valid Python" in error.problem


def test_missing_legacy_file(tmp_path: Path) -> None:
    with pytest.raises(InputError) as caught:
        load_legacy(tmp_path / "config.py")
    assert "does not exist" in caught.value.problem


# --- model errors named by the legacy variable -----------------------------------------


def test_range_error_names_the_variable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write(tmp_path, "APP_NAME = 'Demo'\nSQS_MESSAGE_VISIBILITY = 0\n")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(InputError) as caught:
        load_config(Path("config.py"))
    message = str(caught.value)
    assert message.startswith("config.py: SQS_MESSAGE_VISIBILITY: ")
    assert "(got 0)" in message
    assert message.endswith(
        "Fix: set it to the base lease in whole seconds, 1 to 43200 (workers extend it while busy)"
    )


def test_wrong_type_names_the_variable_and_shows_python(tmp_path: Path) -> None:
    error = legacy_error(tmp_path, "CLUSTER_MACHINES = 'three'\n")
    assert error.field == "CLUSTER_MACHINES"
    assert "(got 'three')" in error.problem


def test_list_item_error_names_the_variable_and_position(tmp_path: Path) -> None:
    error = legacy_error(tmp_path, "MACHINE_TYPE = ['m5.large', 3]\n")
    assert error.field == "MACHINE_TYPE[1]"


def test_missing_app_name(tmp_path: Path) -> None:
    with pytest.raises(InputError) as caught:
        load_legacy(write(tmp_path, "CLUSTER_MACHINES = 2\n"))
    assert caught.value.field == "APP_NAME"
    assert caught.value.problem == "this required field is missing"


def test_bad_queue_name(tmp_path: Path) -> None:
    error = legacy_error(tmp_path, "SQS_QUEUE_NAME = 'has spaces'\n")
    assert error.field == "SQS_QUEUE_NAME"


def test_long_app_name_names_app_name(tmp_path: Path) -> None:
    with pytest.raises(InputError) as caught:
        load_legacy(write(tmp_path, f"APP_NAME = '{'a' * 75}'\n"))
    assert caught.value.field == "APP_NAME"


def test_legacy_name() -> None:
    assert legacy_name(("queue", "visibility")) == "SQS_MESSAGE_VISIBILITY"
    assert legacy_name(("aws", "machine_type", 2)) == "MACHINE_TYPE[2]"
    assert legacy_name(("env", "MY_VAR")) == "MY_VAR"
    assert legacy_name(("local", "nonexistent")) == "local.nonexistent"


# --- family defaults, the backend switch, misspellings ------------------------------------


def test_check_if_done_is_off_unless_the_config_says_so(tmp_path: Path) -> None:
    # The family's workers skip nothing unless CHECK_IF_DONE_BOOL is 'True'; ds.toml checks by
    # default.
    assert legacy(tmp_path, "EXPECTED_NUMBER_FILES = 7\n").check_if_done.enabled is False
    assert legacy(tmp_path, "CHECK_IF_DONE_BOOL = 'True'\n").check_if_done.enabled is True
    toml = write(tmp_path, 'app_name = "Demo"\n', "ds.toml")
    assert load_config(toml).check_if_done.enabled is True
    env = {"APP_NAME": "Demo", "SQS_QUEUE_URL": "https://sqs/q"}
    from_env = config_from_environment(env)
    assert from_env is not None and from_env.check_if_done.enabled is False
    on = config_from_environment({**env, "CHECK_IF_DONE_BOOL": "True"})
    assert on is not None and on.check_if_done.enabled is True


def test_the_backend_switch_overrides_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, "APP_NAME = 'Demo'\nBACKEND = 'aws'\n")
    assert load_config(path).backend == "aws"
    assert load_config(path, backend="local").backend == "local"
    assert load_config(write(tmp_path, "APP_NAME = 'Demo'\n"), backend="local").backend == "local"
    toml = write(tmp_path, 'app_name = "Demo"\nbackend = "local"\n', "ds.toml")
    assert load_config(toml, backend="aws").backend == "aws"


@pytest.mark.parametrize(
    ("name", "known"),
    [
        ("SQS_MESSAGE_VISIBILTY", "SQS_MESSAGE_VISIBILITY"),  # a letter left out
        ("CHECK_IF_DONE_BOOLL", "CHECK_IF_DONE_BOOL"),  # one too many
        ("EXPECTED_NUMBER_FILSE", "EXPECTED_NUMBER_FILES"),  # two swapped
        ("DOCKER_CORE", "DOCKER_CORES"),
        ("AWS_REGOIN", "AWS_REGION"),
        ("MEMORI", "MEMORY"),  # one replaced
    ],
)
def test_a_variable_one_edit_from_a_legacy_one_is_reported(name: str, known: str) -> None:
    assert misspelt_variables([name]) == [(name, known)]


def test_other_variables_are_not_reported() -> None:
    names = [*LEGACY_FIELDS, "MY_SETTING", "DOCKER_CORES_X", "REGION", "lower_case_helper"]
    assert misspelt_variables(names) == []


def test_config_warnings(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "APP_NAME = 'Demo'\nSQS_MESSAGE_VISIBILTY = 60\nSSH_KEY_NAME = 'your-key-file.pem'\n",
    )
    misspelt = (
        f"{path}: SQS_MESSAGE_VISIBILTY: did you mean SQS_MESSAGE_VISIBILITY? (as written it "
        "only sets an environment variable)"
    )
    # SSH_KEY_NAME is not read (as run.py never read it): nothing to warn about here.
    assert config_warnings(path) == [misspelt]
    assert config_warnings(path, backend="local") == [misspelt]
    assert config_warnings(write(tmp_path, 'app_name = "x"\n', "ds.toml")) == []
