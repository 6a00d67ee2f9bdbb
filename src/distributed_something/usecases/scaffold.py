"""`ds init`: a new project folder with a commented ds.toml and a job file to edit."""

from __future__ import annotations

import re
from pathlib import Path

from distributed_something.config.model import NAME_PATTERN
from distributed_something.errors import InputError

DS_TOML = """\
# Distributed-Something run config. Reference: docs/configuration.md
app_name = "{app_name}"
backend = "local"            # "slurm": sbatch job arrays (docs/slurm.md); "aws": SQS + ECS Spot + S3

[recipe]
name = "command"
# One task = this argv with {{fields}} from the job file (never run through a shell).
# Built-ins: {{python}} {{input_dir}} {{output_dir}} {{work_dir}} {{task_id}}
argv = ["{{python}}", "-c", "import sys; open(sys.argv[1] + '/hello.txt', 'w').write(sys.argv[2])", "{{output_dir}}", "hello {{name}}"]
inputs = []                  # storage keys to download into {{input_dir}}, e.g. ["images/{{name}}.tif"]
output_prefix = "results/{{name}}"

[cluster]
machines = 1
tasks_per_machine = 1
docker_cores = 2             # worker processes per container (locally: per machine)

[queue]
visibility = 60              # base lease in seconds; workers extend it while busy
job_retries = 3              # receives before a task is dead-lettered
"""

JOB_JSON = """\
{
  "_comment": "Shared keys go at the top level; each element of groups is one task.",
  "groups": [
    {"name": "first"},
    {"name": "second"},
    {"name": "third"}
  ]
}
"""


def app_name_for(folder: Path) -> str:
    """An app name from a folder's name: its letters, digits, - and _, every other run of
    characters (spaces, dots) made one "-" ("my proj.v2" → "my-proj-v2"); "MyApp" when
    nothing is left."""
    name = re.sub(r"[^A-Za-z0-9_-]+", "-", folder.resolve().name).strip("-")
    return name or "MyApp"


def init_project(folder: Path, app_name: str, *, force: bool = False) -> list[Path]:
    """Write ds.toml and job.json into ``folder``; refuse to overwrite unless ``force``, and
    an app name the config would refuse (`InputError` naming ``--app-name``)."""
    if not re.fullmatch(NAME_PATTERN, app_name):
        raise InputError(
            "argument",
            "--app-name",
            f"{app_name!r} is not an app name: letters, digits, - and _ only, at most 80",
            f"e.g. --app-name {app_name_for(Path(app_name or 'MyApp'))}",
        )
    files = {folder / "ds.toml": DS_TOML.format(app_name=app_name), folder / "job.json": JOB_JSON}
    existing = [p for p in files if p.exists()]
    if existing and not force:
        raise InputError(
            str(existing[0]), None, "already exists", "pick another folder or pass --force"
        )
    folder.mkdir(parents=True, exist_ok=True)
    for path, text in files.items():
        path.write_text(text)
    return list(files)
