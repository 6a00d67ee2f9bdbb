"""The Distributed-Something family's own files, as their repositories ship them, for tests.

The ``config.py`` templates of Distributed-CellProfiler, Distributed-Fiji and
Distributed-OmeZarrCreator, their example job files and the fleet file they share; `filled`
puts in the values a user fills in, and `project` writes a project folder as a user has it.
One copy, imported by every test that needs the family's files.
"""

# ruff: noqa: E501 (the family's templates are kept as shipped, long comments included)

from __future__ import annotations

import csv
import json
import re
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

# config.py of Distributed-CellProfiler (17388b3), Distributed-Fiji (448d1ba) and
# Distributed-OMEZarrCreator (d4d16dd), as shipped (one trailing blank of DF's stripped).
DCP_TEMPLATE = """\
# Constants (User configurable)

APP_NAME = 'DistributedCP'                # Used to generate derivative names unique to the application.
LOG_GROUP_NAME = APP_NAME

# DOCKER REGISTRY INFORMATION:
DOCKERHUB_TAG = 'cellprofiler/distributed-cellprofiler:2.2.0_4.2.8'

# AWS GENERAL SETTINGS:
AWS_REGION = 'us-east-1'
AWS_PROFILE = 'default'                 # The same profile used by your AWS CLI installation
SSH_KEY_NAME = 'your-key-file.pem'      # Expected to be in ~/.ssh
AWS_BUCKET = 'your-bucket-name'         # Bucket to use for logging
SOURCE_BUCKET = 'bucket-name'           # Bucket to download image files from
WORKSPACE_BUCKET = 'bucket-name'        # Bucket to download non-image files from
DESTINATION_BUCKET = 'bucket-name'      # Bucket to upload files to
UPLOAD_FLAGS = ''                       # Any flags needed for upload to destination bucket

# EC2 AND ECS INFORMATION:
ECS_CLUSTER = 'default'
CLUSTER_MACHINES = 3
TASKS_PER_MACHINE = 1
MACHINE_TYPE = ['m5.xlarge']
MACHINE_PRICE = 0.20
EBS_VOL_SIZE = 30                       # In GB.  Minimum allowed is 22.
DOWNLOAD_FILES = 'False'
ASSIGN_IP = 'True'                     # If false, will overwrite setting in Fleet file

# DOCKER INSTANCE RUNNING ENVIRONMENT:
DOCKER_CORES = 4                        # Number of CellProfiler processes to run inside a docker container
CPU_SHARES = DOCKER_CORES * 1024        # ECS computing units assigned to each docker container (1024 units = 1 core)
MEMORY = 15000                           # Memory assigned to the docker container in MB
SECONDS_TO_START = 3*60                 # Wait before the next CP process is initiated to avoid memory collisions

# SQS QUEUE INFORMATION:
SQS_QUEUE_NAME = APP_NAME + 'Queue'
SQS_MESSAGE_VISIBILITY = 1*60           # Timeout (secs) for messages in flight (average time to be processed)
SQS_DEAD_LETTER_QUEUE = 'user_DeadMessages'
JOB_RETRIES = 3            # Number of times to retry a job before sending it to DEAD_LETTER_QUEUE

# MONITORING
AUTO_MONITOR = 'True'

# CLOUDWATCH DASHBOARD CREATION
CREATE_DASHBOARD = 'True'           # Create a dashboard in Cloudwatch for run
CLEAN_DASHBOARD = 'True'            # Automatically remove dashboard at end of run with Monitor

# REDUNDANCY CHECKS
CHECK_IF_DONE_BOOL = 'False'  #True or False- should it check if there are a certain number of non-empty files and delete the job if yes?
EXPECTED_NUMBER_FILES = 7    #What is the number of files that trigger skipping a job?
MIN_FILE_SIZE_BYTES = 1      #What is the minimal number of bytes an object should be to "count"?
NECESSARY_STRING = ''        #Is there any string that should be in the file name to "count"?

# CELLPROFILER SETTINGS
ALWAYS_CONTINUE = 'False'     # Whether or not to run CellProfiler with the --always-continue flag, which will keep CellProfiler from crashing if it errors

# PLUGINS
USE_PLUGINS = 'False'          # True to use any plugin from CellProfiler-plugins repo
UPDATE_PLUGINS = 'False'       # True to download updates from CellProfiler-plugins repo
PLUGINS_COMMIT = 'False'       # What commit or version tag do you want to check out? If not, set to False.
INSTALL_REQUIREMENTS = 'False' # True to install REQUIREMENTS defined below. Requirements should have all plugin dependencies.
REQUIREMENTS = ''       # Flag to use with install (current) or path within the CellProfiler-plugins repo to a requirements file (deprecated).
"""

DF_TEMPLATE = """\
# Constants (User configurable)

APP_NAME = 'DistributedFiji'                # Used to generate derivative names unique to the application.
LOG_GROUP_NAME = APP_NAME

# DOCKER REGISTRY INFORMATION:
DOCKERHUB_TAG = 'cellprofiler/distributed-fiji:latest'

# AWS GENERAL SETTINGS:
AWS_REGION = 'us-east-1'
AWS_PROFILE = 'default'                 # The same profile used by your AWS CLI installation
SSH_KEY_NAME = 'your-key-file.pem'      # Expected to be in ~/.ssh
AWS_BUCKET = 'your-bucket-name'

# EC2 AND ECS INFORMATION:
ECS_CLUSTER = 'default'
CLUSTER_MACHINES = 3
TASKS_PER_MACHINE = 1
MACHINE_TYPE = ['m4.xlarge']
MACHINE_PRICE = 0.10
EBS_VOL_SIZE = 30                       # In GB.  Minimum allowed is 22.
DOWNLOAD_FILES = 'False'

# DOCKER INSTANCE RUNNING ENVIRONMENT:
MEMORY = 4096                           # Memory assigned to the docker container in MB
SCRIPT_DOWNLOAD_URL = 'https://some/url/with/a/script.y'

# SQS QUEUE INFORMATION:
SQS_QUEUE_NAME = APP_NAME + 'Queue'
SQS_MESSAGE_VISIBILITY = 1*60           # Timeout (secs) for messages in flight (average time to be processed)
SQS_DEAD_LETTER_QUEUE = 'user_DeadMessages'

# MONITORING
AUTO_MONITOR = 'True'

# CLOUDWATCH DASHBOARD CREATION
CREATE_DASHBOARD = 'True'           # Create a dashboard in Cloudwatch for run
CLEAN_DASHBOARD = 'True'            # Automatically remove dashboard at end of run with Monitor

# REDUNDANCY CHECKS
EXPECTED_NUMBER_FILES = 7    #What is the number of files that trigger skipping a job?
MIN_FILE_SIZE_BYTES = 1      #What is the minimal number of bytes an object should be to "count"?
NECESSARY_STRING = ''        #Is there any string that should be in the file name to "count"?
"""

DOZC_TEMPLATE = """\
# Constants (User configurable)

APP_NAME = 'DistributedBioFormats2Raw'                # Used to generate derivative names unique to the application.
LOG_GROUP_NAME = APP_NAME

# DOCKER REGISTRY INFORMATION:
DOCKERHUB_TAG = 'erinweisbart/distributed-bioformats2raw:0.0.19'

# AWS GENERAL SETTINGS:
AWS_REGION = 'us-east-1'
AWS_PROFILE = 'default'                 # The same profile used by your AWS CLI installation
SSH_KEY_NAME = 'your-key-file.pem'      # Expected to be in ~/.ssh
AWS_BUCKET = 'your-bucket-name'         # Bucket to use for logging

# EC2 AND ECS INFORMATION:
ECS_CLUSTER = 'default'
CLUSTER_MACHINES = 1                    # Set to <= number of plates you have to process
TASKS_PER_MACHINE = 1
MACHINE_TYPE = ['c5.xlarge']
MACHINE_PRICE = 0.10
EBS_VOL_SIZE = 600                      # In GB.  Make large enough for your source images + .ome.zarr

# DOCKER INSTANCE RUNNING ENVIRONMENT:
CPU_SHARES = 1024        # ECS computing units assigned to each docker container (1024 units = 1 core)
MEMORY = 7500                           # Memory assigned to the docker container in MB

# SQS QUEUE INFORMATION:
SQS_QUEUE_NAME = APP_NAME + 'Queue'
SQS_MESSAGE_VISIBILITY = 4*60*60        # Timeout (secs) for messages in flight (average time to be processed)
SQS_DEAD_LETTER_QUEUE = 'user_DeadMessages'

# MONITORING
AUTO_MONITOR = 'True'

# CLOUDWATCH DASHBOARD CREATION
CREATE_DASHBOARD = 'True'           # Create a dashboard in Cloudwatch for run
CLEAN_DASHBOARD = 'True'            # Automatically remove dashboard at end of run with Monitor

# REDUNDANCY CHECKS
CHECK_IF_DONE_BOOL = 'False'  #True or False - should it check if there is already a .zarr file and delete the job if yes?
"""

# DCP's example_project/files/exampleJob.json for the ExampleFly demo, as shipped but for the
# number of groups (CellProfiler takes ~20 s per position on these machines).
DCP_JOB: dict[str, Any] = {
    "_comment1": "Paths in this file are relative to the root of your S3 bucket",
    "pipeline": "demo_project_folder/workspace/ExampleFly.cppipe",
    "data_file": "demo_project_folder/workspace/load_data.csv",
    "input": "demo_project_folder/workspace/",
    "output": "demo_project_folder/output",
    "output_structure": "Metadata_Position",
    "_comment2": "The following groups are tasks, and each will be run in parallel",
    "groups": [
        {"Metadata": "Metadata_Position=2"},
        {"Metadata": "Metadata_Position=76"},
        {"Metadata": "Metadata_Position=218"},
    ],
}
# DF's and DOZC's files/exampleJob.json (their shapes; comments left out).
DF_JOB: dict[str, Any] = {
    "output_file_location": "projects/output/",
    "shared_metadata": {"input_file_location": "/home/ubuntu/bucket/projects/input"},
    "groups": [{"Well": "A1", "Plate": "Plate_1"}, {"Well": "A2", "Plate": "Plate_1"}],
}
DOZC_JOB: dict[str, Any] = {
    "input_bucket": "SOURCE_BUCKET",
    "input_location": "projects/PROJECTNAME/BATCHNAME/images/",
    "path_to_metadata": "Images/Index.idx.xml",
    "output_bucket": "DESTINATION_BUCKET",
    "output_location": "projects/PROJECTNAME/BATCHNAME/images_zarr/",
    "upload_flags": False,
    "plates": ["PLATEA", "PLATEB"],
}
# The family's files/exampleFleet_us-east-1.json (the same in all three repositories).
FAMILY_FLEET: dict[str, Any] = {
    "IamFleetRole": "arn:aws:iam::XXXXXXXXXXXXX:role/aws-ec2-spot-fleet-tagging-role",
    "AllocationStrategy": "lowestPrice",
    "TerminateInstancesWithExpiration": True,
    "LaunchSpecifications": [
        {
            "ImageId": "ami-fad25980",
            "KeyName": "your_key_file_name",
            "IamInstanceProfile": {
                "Arn": "arn:aws:iam::XXXXXXXXXXXX:instance-profile/ecsInstanceRole"
            },
            "BlockDeviceMappings": [
                {
                    "DeviceName": "/dev/xvda",
                    "Ebs": {
                        "DeleteOnTermination": True,
                        "VolumeType": "gp2",
                        "VolumeSize": 8,
                        "SnapshotId": "snap-04007a196c0f3f398",
                    },
                },
                {
                    "DeviceName": "/dev/xvdcz",
                    "Ebs": {"DeleteOnTermination": True, "VolumeType": "gp2"},
                },
            ],
            "NetworkInterfaces": [
                {
                    "DeviceIndex": 0,
                    "SubnetId": "subnet-WWWWWWWW",
                    "DeleteOnTermination": True,
                    "AssociatePublicIpAddress": True,
                    "Groups": ["sg-ZZZZZZZZZ"],
                }
            ],
        }
    ],
    "Type": "maintain",
}

# What a user fills in before a first run; every other line stays as shipped.
DCP_FILLED = {
    "SSH_KEY_NAME": "'lab-key.pem'",
    "AWS_BUCKET": "'lab-logs'",
    "SOURCE_BUCKET": "'lab-images'",
    "WORKSPACE_BUCKET": "'lab-workspace'",
    "DESTINATION_BUCKET": "'lab-results'",
}
DF_FILLED = {
    "SSH_KEY_NAME": "'lab-key.pem'",
    "AWS_BUCKET": "'lab-bucket'",
    "SCRIPT_DOWNLOAD_URL": "'https://example.org/scripts/stitch.py'",
}
DOZC_FILLED = {"SSH_KEY_NAME": "'lab-key.pem'", "AWS_BUCKET": "'lab-bucket'"}

FAMILIES = {
    "dcp": (DCP_TEMPLATE, DCP_FILLED, DCP_JOB, "cellprofiler"),
    "df": (DF_TEMPLATE, DF_FILLED, DF_JOB, "fiji"),
    "dozc": (DOZC_TEMPLATE, DOZC_FILLED, DOZC_JOB, "omezarr"),
}


def filled(template: str, values: dict[str, str]) -> str:
    """``template`` with the value of each ``NAME = …`` line in ``values`` replaced (its
    comment kept), as a user edits it."""
    text = template
    for name, value in values.items():
        pattern = re.compile(rf"^({name} = )(\S+)", re.MULTILINE)
        text, count = pattern.subn(lambda m, v=value: m.group(1) + v, text)
        assert count == 1, name
    return text


def project(
    folder: Path,
    family: str = "dcp",
    *,
    edit: Callable[[str], str] = lambda text: text,
    job: dict[str, Any] | None = None,
) -> Path:
    """A family project folder: config.py, files/exampleJob.json, files/exampleFleet.json."""
    template, values, default_job, _ = FAMILIES[family]
    (folder / "files").mkdir(parents=True, exist_ok=True)
    (folder / "config.py").write_text(edit(filled(template, values)))
    (folder / "files" / "exampleJob.json").write_text(json.dumps(job or default_job, indent=1))
    (folder / "files" / "exampleFleet.json").write_text(json.dumps(FAMILY_FLEET, indent=1))
    return folder


#: The ExampleFly position the DCP runs use (`stage_dcp_example`): Metadata_Position=2.
DCP_EXAMPLE_PREFIX = "demo_project_folder/output/2"


def stage_dcp_example(buckets: Path, data: Path) -> None:
    """The user's bucket contents for `DCP_JOB`'s first group: the ExampleFly pipeline and
    LoadData CSV in ``lab-workspace`` and position 2's images in ``lab-images``, under
    ``buckets`` (where a local or Slurm run keeps the config's buckets as folders); ``data``
    is the shared ``examplefly`` folder."""
    workspace = buckets / "lab-workspace" / "demo_project_folder" / "workspace"
    workspace.mkdir(parents=True, exist_ok=True)
    for name in ("ExampleFly.cppipe", "load_data.csv"):
        shutil.copyfile(data / "workspace" / name, workspace / name)
    images = buckets / "lab-images" / "demo_project_folder" / "images"
    images.mkdir(parents=True, exist_ok=True)
    for image in (data / "images").glob("01_POS002_*.TIF"):
        shutil.copyfile(image, images / image.name)


def check_dcp_example_outputs(task: dict[str, Any], buckets: Path) -> None:
    """The report's one task of a `stage_dcp_example` run lists CellProfiler's four tables,
    and its Image table (read back from ``lab-results``) measured position 2's nuclei."""
    tables = ("Cells.csv", "Cytoplasm.csv", "Image.csv", "Nuclei.csv")
    assert sorted(task["outputs"]) == [f"{DCP_EXAMPLE_PREFIX}/{table}" for table in tables]
    with (buckets / "lab-results" / DCP_EXAMPLE_PREFIX / "Image.csv").open(newline="") as fh:
        (row,) = list(csv.DictReader(fh))
    assert row["FileName_OrigBlue"] == "01_POS002_D.TIF"
    assert float(row["Count_Nuclei"]) > 50
