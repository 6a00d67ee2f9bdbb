"""`ds init`: a new project folder with a commented ds.toml and a job file to edit."""

from __future__ import annotations

import re
from pathlib import Path

from distributed_something.config.model import NAME_PATTERN
from distributed_something.errors import InputError

#: The lines every template shares: the run's name and backend (first), and how many
#: workers, how long a lease and how many tries (last).
_HEAD = """\
# Distributed-Something run config. Reference: docs/configuration.md{recipe_doc}
app_name = "{{app_name}}"
backend = "local"            # "slurm": sbatch job arrays (docs/slurm.md); "aws": SQS + ECS Spot + S3
"""

_TAIL = """
[cluster]
machines = 1
tasks_per_machine = 1
docker_cores = 2             # worker processes per container (locally: per machine)

[queue]
visibility = {visibility:<16}# base lease in seconds; workers extend it while busy
job_retries = 3              # tries before a task is dead-lettered
"""

_COMMAND = """
[recipe]
name = "command"
# One task = this argv with {{fields}} from the job file (never run through a shell).
# Built-ins: {{python}} {{input_dir}} {{output_dir}} {{work_dir}} {{task_id}}
argv = ["{{python}}", "-c", "import sys; open(sys.argv[1] + '/hello.txt', 'w').write(sys.argv[2])", "{{output_dir}}", "hello {{name}}"]
inputs = []                  # storage keys to download into {{input_dir}}, e.g. ["images/{{name}}.tif"]
output_prefix = "results/{{name}}"
"""

_CELLPROFILER = """
[recipe]
# Distributed-CellProfiler's job files (job.json): per group, the pipeline, the LoadData CSV
# and the images are downloaded, `cellprofiler -c -r -p … -g <Metadata>` runs, and the
# outputs are uploaded to <output>/<output_structure> only if CellProfiler completed.
name = "cellprofiler"
# engine = "imageio"         # read TIFFs without Bio-Formats (no Java download)
# executable = "cellprofiler"  # default: on PATH, or next to ds's own Python

# Where job.json's keys are: empty means the one bucket (locally .ds/<app_name>/buckets/default;
# on AWS set bucket). DCP's WORKSPACE_BUCKET, SOURCE_BUCKET and DESTINATION_BUCKET:
[storage]
bucket = ""
workspace_bucket = ""
source_bucket = ""
destination_bucket = ""

[check_if_done]
# A group counts as done (skipped when submitted again) once its output folder holds this
# many files; the family's EXPECTED_NUMBER_FILES.
expected_number_files = 1
"""

_FIJI = """
[recipe]
# Distributed-Fiji's job files (job.json): one run of the script per group, given DF's
# argument string (input='…', output='…' and the group's and shared_metadata's values).
name = "fiji"
script = "scripts/my_macro.ijm"   # its key in the workspace bucket (or tool.script_download_url)
inputs = ["images/{{Position}}.tif"]  # keys each task downloads into its `input` folder
# engine = "imagej"          # default: "imagej" locally (ImageJ 1), "fiji" on AWS

[storage]
bucket = ""                  # empty: the one local bucket; on AWS your S3 bucket

[check_if_done]
expected_number_files = 1    # done once the task's output folder holds this many files
"""

_OMEZARR = """
[recipe]
# Distributed-OmeZarrCreator's job files (job.json): one OME-Zarr per plate, from every file
# under input_location/<plate>/ of input_bucket, written to output_location/<plate>.ome.zarr/.
name = "omezarr"
# engine = "builtin"         # default: "builtin" locally (TIFF files), "bioformats2raw" on AWS

[storage]
bucket = "my-bucket"         # the bucket job.json names (locally: .ds/<app_name>/buckets/my-bucket)
"""

_JOB_COMMAND = """\
{
  "_comment": "Shared keys go at the top level; each element of groups is one task.",
  "groups": [
    {"name": "first"},
    {"name": "second"},
    {"name": "third"}
  ]
}
"""

_JOB_CELLPROFILER = """\
{
  "_comment1": "A Distributed-CellProfiler job file. Paths are keys in the bucket: put the pipeline, the LoadData CSV and the images there first.",
  "pipeline": "project/workspace/analysis.cppipe",
  "data_file": "project/workspace/load_data.csv",
  "input": "project/workspace/",
  "output": "project/output",
  "output_structure": "Metadata_Plate-Metadata_Well",
  "_comment2": "Each group is one task: CellProfiler runs on the LoadData rows its Metadata selects.",
  "groups": [
    {"Metadata": "Metadata_Plate=Plate1,Metadata_Well=A01"},
    {"Metadata": "Metadata_Plate=Plate1,Metadata_Well=A02"}
  ]
}
"""

_JOB_FIJI = """\
{
  "_comment1": "A Distributed-Fiji job file: one task per group; each writes under output_file_location + its group's values joined with '-'.",
  "output_file_location": "results/",
  "_comment2": "shared_metadata and each group reach the script as one argument string; they also fill recipe.inputs.",
  "shared_metadata": {"sigma": "2"},
  "groups": [
    {"Position": "001"},
    {"Position": "002"}
  ]
}
"""

_JOB_OMEZARR = """\
{
  "_comment": "A Distributed-OmeZarrCreator job file: shared keys, and one task per plate.",
  "input_bucket": "my-bucket",
  "input_location": "images/",
  "path_to_metadata": false,
  "output_bucket": "my-bucket",
  "output_location": "images_zarr/",
  "upload_flags": false,
  "resolutions": 3,
  "tile_width": 512,
  "tile_height": 512,
  "target-min-size": false,
  "additional_flags": false,
  "plates": ["Plate1", "Plate2"]
}
"""


def _toml(recipe_doc: str, body: str, visibility: int) -> str:
    """A ds.toml template: `_HEAD`, ``body`` (whose {{fields}} `init_project`'s format turns
    into {fields}) and `_TAIL`, with the recipe's page and its lease filled in."""
    head = _HEAD.format(recipe_doc=f", {recipe_doc}" if recipe_doc else "")
    return head + body + _TAIL.format(visibility=visibility)


#: recipe → (ds.toml template, whose {app_name} `init_project` fills; job.json).
TEMPLATES: dict[str, tuple[str, str]] = {
    "command": (_toml("", _COMMAND, 60), _JOB_COMMAND),
    "cellprofiler": (_toml("docs/recipes/cellprofiler.md", _CELLPROFILER, 120), _JOB_CELLPROFILER),
    "fiji": (_toml("docs/recipes/fiji.md", _FIJI, 60), _JOB_FIJI),
    "omezarr": (_toml("docs/recipes/omezarr.md", _OMEZARR, 120), _JOB_OMEZARR),
}


def app_name_for(folder: Path) -> str:
    """An app name from a folder's name: its letters, digits, - and _, every other run of
    characters (spaces, dots) made one "-" ("my proj.v2" → "my-proj-v2"); "MyApp" when
    nothing is left."""
    name = re.sub(r"[^A-Za-z0-9_-]+", "-", folder.resolve().name).strip("-")
    return name or "MyApp"


def init_project(
    folder: Path, app_name: str, *, force: bool = False, recipe: str = "command"
) -> list[Path]:
    """Write ds.toml and job.json for ``recipe`` (a key of `TEMPLATES`) into ``folder``;
    refuse to overwrite unless ``force``, and an app name the config would refuse
    (`InputError` naming ``--app-name``)."""
    if not re.fullmatch(NAME_PATTERN, app_name):
        raise InputError(
            "argument",
            "--app-name",
            f"{app_name!r} is not an app name: letters, digits, - and _ only, at most 80",
            f"e.g. --app-name {app_name_for(Path(app_name or 'MyApp'))}",
        )
    config, job = TEMPLATES[recipe]
    files = {folder / "ds.toml": config.format(app_name=app_name), folder / "job.json": job}
    existing = [p for p in files if p.exists()]
    if existing and not force:
        raise InputError(
            str(existing[0]), None, "already exists", "pick another folder or pass --force"
        )
    folder.mkdir(parents=True, exist_ok=True)
    for path, text in files.items():
        path.write_text(text)
    return list(files)
