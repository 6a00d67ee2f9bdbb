"""Loading ``ds.toml`` configs: defaults, every field, and one clear error per mistake."""

from __future__ import annotations

from pathlib import Path

import pytest

from distributed_something.config import Config, find_config, load_config
from distributed_something.config.model import ClusterConfig, QueueConfig
from distributed_something.errors import InputError

FULL_TOML = """
app_name = "Painting"
backend = "aws"
image = "org/painter:1.2"

[recipe]
name = "command"
argv = ["python", "{input_dir}/paint.py", "{image}"]
output_prefix = "results/{image}"
inputs = ["images/{image}"]

[cluster]
machines = 4
tasks_per_machine = 2
docker_cores = 3
cpu_shares = 2048
memory = 8000
seconds_to_start = 12.5

[queue]
name = "PaintingJobs"
dead_letter_queue = "PaintingDead"
visibility = 600
job_retries = 5

[storage]
bucket = "logs-bucket"
source_bucket = "src-bucket"
workspace_bucket = "ws-bucket"
destination_bucket = "dest-bucket"
upload_flags = "--acl bucket-owner-full-control"

[check_if_done]
enabled = false
expected_number_files = 3
min_file_size_bytes = 10
necessary_string = ".csv"

[aws]
region = "eu-west-1"
profile = "science"
ecs_cluster = "painters"
machine_type = ["m5.large", "m5a.large"]
machine_price = 0.25
ebs_vol_size = 40
assign_ip = true
ssh_key_name = "mykey"
log_group_name = "painting-logs"
auto_monitor = true
create_dashboard = true
clean_dashboard = false
task_role_arn = "arn:aws:iam::123456789012:role/painter"

[tool]
download_files = true
script_download_url = "https://example.org/script.py"

[local]
root = "state"
workers = 6
poll_interval = 0.5
prepare = ["python", "make_inputs.py"]

[env]
COLOUR = "blue"
lower_ok = "yes"
"""


def write(tmp_path: Path, text: str, name: str = "ds.toml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def load_error(tmp_path: Path, text: str) -> InputError:
    with pytest.raises(InputError) as caught:
        load_config(write(tmp_path, text))
    return caught.value


def test_minimal_config_takes_defaults_and_derives_names(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, 'app_name = "Demo"\n'))
    assert config.backend == "local"
    assert config.cluster == ClusterConfig()
    assert config.queue.name == "DemoQueue"
    assert config.queue.dead_letter_queue == "DemoDeadMessages"
    assert config.aws.log_group_name == "Demo"
    assert config.queue.visibility == QueueConfig().visibility
    assert config.env == {}


def test_every_field_is_read(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, FULL_TOML))
    assert config.backend == "aws"
    assert config.image == "org/painter:1.2"
    assert config.recipe.argv == ["python", "{input_dir}/paint.py", "{image}"]
    assert config.recipe.inputs == ["images/{image}"]
    assert (config.cluster.machines, config.cluster.tasks_per_machine) == (4, 2)
    assert config.cluster.effective_cpu_shares == 2048
    assert config.cluster.seconds_to_start == 12.5
    assert config.queue.name == "PaintingJobs"
    assert config.queue.dead_letter_queue == "PaintingDead"
    assert (config.queue.visibility, config.queue.job_retries) == (600, 5)
    assert config.storage.destination_bucket == "dest-bucket"
    assert config.check_if_done.enabled is False
    assert config.check_if_done.expected_number_files == 3
    assert config.aws.machine_type == ["m5.large", "m5a.large"]
    assert config.aws.assign_ip is True
    assert config.aws.clean_dashboard is False
    assert config.aws.log_group_name == "painting-logs"
    assert config.tool.download_files is True
    assert config.local.workers == 6
    assert config.local.prepare == ["python", "make_inputs.py"]
    assert config.env == {"COLOUR": "blue", "lower_ok": "yes"}
    assert config.worker_count == 4 * 2 * 3


def test_find_config_prefers_ds_toml(tmp_path: Path) -> None:
    write(tmp_path, "APP_NAME = 'Legacy'\n", "config.py")
    assert find_config(tmp_path) == tmp_path / "config.py"
    write(tmp_path, 'app_name = "Native"\n')
    assert find_config(tmp_path) == tmp_path / "ds.toml"


def test_find_config_without_any_config(tmp_path: Path) -> None:
    with pytest.raises(InputError) as caught:
        find_config(tmp_path)
    assert str(caught.value).endswith(
        f"no ds.toml or config.py in {tmp_path}. Fix: run it in the project folder, or name "
        "that folder with `-C DIR` (or `--config DIR`); `ds init` starts a new one"
    )


def test_find_config_ignores_a_folder_named_like_a_config(tmp_path: Path) -> None:
    (tmp_path / "ds.toml").mkdir()
    with pytest.raises(InputError):
        find_config(tmp_path)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(InputError) as caught:
        load_config(tmp_path / "nope.toml")
    assert caught.value.source == str(tmp_path / "nope.toml")
    assert "does not exist" in caught.value.problem


def test_unknown_suffix(tmp_path: Path) -> None:
    with pytest.raises(InputError) as caught:
        load_config(write(tmp_path, "app_name: x\n", "ds.yaml"))
    assert "'.yaml' is not a config format" in str(caught.value)


TOML_SYNTAX_FIX = (
    'correct the syntax there: key = value, strings in "quotes", booleans as true/false, '
    "lists in [brackets], sections as [name]"
)
TOML_END_FIX = (
    "finish the last entry: close its string, list, inline table or [section] "
    "(the missing quote, ] or }), or give its key a value"
)


def test_bad_toml_syntax_names_the_line_and_column(tmp_path: Path) -> None:
    error = load_error(tmp_path, 'app_name = "Demo"\n\n[cluster]\nmachines = three\n')
    assert error.field == "line 4, column 12"
    assert str(error) == (
        f"{tmp_path / 'ds.toml'}: line 4, column 12: this is not valid TOML (invalid value). "
        f"Fix: {TOML_SYNTAX_FIX}"
    )


@pytest.mark.parametrize(
    ("text", "where", "problem"),
    [
        ('app_name = "Demo', "line 1, column 17", "unterminated string"),
        ('app_name = "Demo"\nimage = """org/tool\n\n', "line 2, column 20", "unterminated string"),
        ('app_name = "Demo"\n[cluster]\nmachines = ', "line 3, column 11", "invalid value"),
        ('app_name = "Demo"\nenv = {A = "1"', "line 2, column 15", "unclosed inline table"),
    ],
)
def test_toml_ending_inside_an_entry_names_where_the_file_ends(
    tmp_path: Path, text: str, where: str, problem: str
) -> None:
    # tomllib says only "(at end of document)" here; the message must still name a place.
    error = load_error(tmp_path, text)
    assert str(error) == (
        f"{tmp_path / 'ds.toml'}: {where}: this is not valid TOML ({problem}; the file ends "
        f"before that entry is finished). Fix: {TOML_END_FIX}"
    )
    assert "\n" not in str(error)
    assert "end of document" not in str(error)


def test_toml_string_left_open_on_its_line_says_to_close_it(tmp_path: Path) -> None:
    error = load_error(tmp_path, 'app_name = "Demo\nimage = "org/tool:1"\n')
    assert str(error) == (
        f"{tmp_path / 'ds.toml'}: line 1, column 17: this is not valid TOML "
        "(illegal character '\\n'). Fix: close the string on that line with its quote "
        '(only """triple-quoted""" strings may span lines)'
    )


def test_non_utf8_file(tmp_path: Path) -> None:
    path = tmp_path / "ds.toml"
    path.write_bytes(b'app_name = "\xff\xfe"\n')
    with pytest.raises(InputError) as caught:
        load_config(path)
    assert "UTF-8" in caught.value.problem


def test_wrong_type_names_field_value_and_fix(tmp_path: Path) -> None:
    error = load_error(tmp_path, 'app_name = "Demo"\n[cluster]\nmachines = "three"\n')
    assert error.field == "cluster.machines"
    assert '(got "three")' in error.problem
    assert error.fix == "set it to a whole number of machines ≥ 0"
    assert str(error) == (
        f"{tmp_path / 'ds.toml'}: cluster.machines: {error.problem}. "
        "Fix: set it to a whole number of machines ≥ 0"
    )


@pytest.mark.parametrize(
    ("section", "line", "field"),
    [
        ("queue", "visibility = 0", "queue.visibility"),
        ("queue", "visibility = 43201", "queue.visibility"),
        ("queue", "job_retries = 0", "queue.job_retries"),
        ("cluster", "memory = 64", "cluster.memory"),
        ("cluster", "cpu_shares = 100", "cluster.cpu_shares"),
        ("aws", "ebs_vol_size = 8", "aws.ebs_vol_size"),
        ("aws", "machine_price = 0", "aws.machine_price"),
        ("aws", "machine_type = []", "aws.machine_type"),
        ("local", "poll_interval = 61", "local.poll_interval"),
        ("tool", 'script_sha256 = "abc"', "tool.script_sha256"),
    ],
)
def test_out_of_range_values(tmp_path: Path, section: str, line: str, field: str) -> None:
    error = load_error(tmp_path, f'app_name = "Demo"\n[{section}]\n{line}\n')
    assert error.field == field
    assert "(got " in error.problem
    assert error.fix.startswith("set it to ")


def test_range_fix_comes_from_the_field_description(tmp_path: Path) -> None:
    error = load_error(tmp_path, 'app_name = "Demo"\n[queue]\nvisibility = 99999\n')
    description = QueueConfig.model_fields["visibility"].description
    assert error.fix == f"set it to {description}"
    assert "less than or equal to 43200 (got 99999)" in error.problem


def test_wrong_boolean_is_not_coerced_from_arbitrary_text(tmp_path: Path) -> None:
    error = load_error(tmp_path, 'app_name = "Demo"\n[aws]\nassign_ip = "Maybe"\n')
    assert error.field == "aws.assign_ip"
    assert error.fix == "set it to true or false"


def test_unknown_field_suggests_the_closest(tmp_path: Path) -> None:
    error = load_error(tmp_path, 'app_name = "Demo"\n[cluster]\nmachnes = 2\n')
    assert error.field == "cluster.machnes"
    assert error.problem == "unknown field"
    assert error.fix == "remove it (did you mean `machines`?)"


def test_a_misspelt_required_field_is_named_not_only_missing(tmp_path: Path) -> None:
    # `appname` makes `app_name` missing too: the error was "app_name: this required field
    # is missing (and 1 more problem)", the misspelling never shown.
    error = load_error(tmp_path, 'appname = "Demo"\n')
    assert error.field == "appname" and error.problem == "unknown field"
    assert error.fix == "remove it (did you mean `app_name`?) (and 1 more problem)"


def test_unknown_section_suggests_the_closest(tmp_path: Path) -> None:
    error = load_error(tmp_path, 'app_name = "Demo"\n[clustr]\nmachines = 2\n')
    assert error.field == "clustr"
    assert error.fix == "remove it (did you mean `cluster`?)"


@pytest.mark.parametrize(
    ("written", "fix"),
    [
        # SQS's name for it, and the family's config.py name, in the right section
        ("[queue]\nmax_receive_count = 3", "rename it `job_retries`"),
        ("[queue]\nSQS_MESSAGE_VISIBILITY = 60", "rename it `visibility`"),
        # a setting of another section
        ("[queue]\nworkers = 2", "write it as `workers` under [local]"),
        ("[local]\nCLUSTER_MACHINES = 2", "write it as `machines` under [cluster]"),
        ("[queue]\nmemory = 512", "move it under [cluster] or [slurm]"),
        ("[cluster]\ncommand = 1", "write it as `argv` under [recipe]"),
        (
            "[local]\nBACKEND = 1",
            "write it as `backend` at the top of the file, above any [table] header",
        ),
    ],
)
def test_unknown_field_says_where_the_setting_it_means_is(
    tmp_path: Path, written: str, fix: str
) -> None:
    error = load_error(tmp_path, f'app_name = "Demo"\n{written}\n')
    assert error.problem == "unknown field" and error.fix == fix


def test_unknown_field_without_a_close_name(tmp_path: Path) -> None:
    error = load_error(tmp_path, 'app_name = "Demo"\n[queue]\nzzzzzz = 1\n')
    assert error.fix == "remove it"


def test_missing_app_name(tmp_path: Path) -> None:
    error = load_error(tmp_path, 'image = "x"\n')
    assert error.field == "app_name"
    assert error.problem == "this required field is missing"
    assert error.fix == "set it to letters, digits, - and _ (≤ 80)"


def test_bad_app_name_pattern(tmp_path: Path) -> None:
    error = load_error(tmp_path, 'app_name = "my app!"\n')
    assert error.field == "app_name"
    assert '(got "my app!")' in error.problem


def test_bad_backend(tmp_path: Path) -> None:
    error = load_error(tmp_path, 'app_name = "Demo"\nbackend = "gcp"\n')
    assert error.field == "backend"
    assert error.fix == 'set it to "local", "aws" or "slurm"'


def test_list_item_error_names_its_position(tmp_path: Path) -> None:
    error = load_error(tmp_path, 'app_name = "Demo"\n[aws]\nmachine_type = ["m5.large", 3]\n')
    assert error.field == "aws.machine_type[1]"
    assert "(got 3)" in error.problem


def test_section_that_is_not_a_table(tmp_path: Path) -> None:
    error = load_error(tmp_path, 'app_name = "Demo"\ncluster = 3\n')
    assert error.field == "cluster"
    assert error.fix == "write it as a [cluster] table of settings"


def test_more_problems_are_counted(tmp_path: Path) -> None:
    error = load_error(
        tmp_path,
        'app_name = "Demo"\n[cluster]\nmachines = -1\nmemory = 1\n[queue]\nvisibility = 0\n',
    )
    assert error.fix.endswith(" (and 2 more problems)")
    single = load_error(tmp_path, 'app_name = "Demo"\n[cluster]\nmachines = -1\n')
    assert "more problem" not in str(single)


def test_one_more_problem_is_singular(tmp_path: Path) -> None:
    error = load_error(tmp_path, 'app_name = "Demo"\n[cluster]\nmachines = -1\nmemory = 1\n')
    assert error.fix.endswith(" (and 1 more problem)")


@pytest.mark.parametrize("key", ["1BAD", "has-dash", "with space", ""])
def test_invalid_env_names(tmp_path: Path, key: str) -> None:
    error = load_error(tmp_path, f'app_name = "Demo"\n[env]\n"{key}" = "x"\n')
    assert error.field == f"env.{key}"
    assert "is not a valid environment variable name" in error.problem


def test_env_values_must_be_strings(tmp_path: Path) -> None:
    error = load_error(tmp_path, 'app_name = "Demo"\n[env]\nCOUNT = 3\n')
    assert error.field == "env.COUNT"


def test_credentials_in_env_are_refused(tmp_path: Path) -> None:
    error = load_error(tmp_path, 'app_name = "Demo"\n[env]\nAWS_SECRET_ACCESS_KEY = "s3cr3t"\n')
    assert error.field == "env.AWS_SECRET_ACCESS_KEY"
    assert "credentials" in error.problem
    assert "s3cr3t" not in str(error)


def test_derived_name_too_long_is_an_input_error(tmp_path: Path) -> None:
    # app_name is valid alone, but "<app_name>Queue" exceeds the 80-character limit.
    error = load_error(tmp_path, f'app_name = "{"a" * 78}"\n')
    assert error.field == "app_name"
    assert f'"{"a" * 78}Queue"' in error.problem
    assert "shorten it" in error.fix


def test_package_reexports() -> None:
    import distributed_something.config as package

    assert package.Config is Config
    assert set(package.__all__) == {"Config", "load_config", "find_config"}
