"""The run config: one typed model for `ds.toml` and legacy `config.py` alike.

Every legacy variable of docs/design.md §3 has a home here (see `config.legacy.LEGACY_FIELDS`).
Each field's ``description`` doubles as the fix shown when its value is wrong, so it says
what a valid value looks like.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

NAME_PATTERN = r"^[A-Za-z0-9_-]{1,80}$"
#: ECS CreateCluster's clusterName (botocore's model states no pattern; moto takes any)
ECS_CLUSTER_PATTERN = r"^[A-Za-z0-9_-]{1,255}$"
#: CloudWatch Logs CreateLogGroup's logGroupName (moto takes any); its length is checked with
#: the names derived from it (backends/aws/name_limits.py)
LOG_GROUP_PATTERN = r"^[\.\-_/#A-Za-z0-9]+$"

#: The root snapshot of the ECS-optimized Amazon Linux 2023 AMIs, in GiB: a smaller root
#: volume makes every launch fail ("volume size is smaller than the snapshot").
ECS_AMI_ROOT_GIB = 30


class Section(BaseModel):
    """A config section: unknown fields are errors (they are usually typos)."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class RecipeConfig(Section):
    """Which recipe turns a task into a command, and the `command` recipe's templates."""

    name: str | None = Field(
        default=None,
        description='a recipe name: "command", "cellprofiler", "fiji" or "omezarr"',
    )
    argv: list[str] = Field(
        default_factory=list,
        description='a list of strings, e.g. ["python", "{input_dir}/run.py", "{image}"]',
    )
    output_prefix: str = Field(
        default="",
        description='a storage key prefix template, e.g. "results/{image}"',
    )
    inputs: list[str] = Field(
        default_factory=list,
        description='a list of storage key templates to download, e.g. ["images/{image}"]',
    )
    executable: str = Field(
        default="",
        description="the tool to run (a name on PATH or a path); empty: the recipe's default",
    )
    engine: str = Field(
        default="",
        description='how a tool recipe runs: fiji: "fiji" or "imagej"; omezarr: '
        '"bioformats2raw" or "builtin"; empty: the recipe\'s default',
    )
    script: str = Field(
        default="",
        description="fiji: the storage key of the script or macro to run (when "
        "tool.script_download_url is not set)",
    )
    timeout: float | None = Field(
        default=None,
        gt=0,
        description="seconds a task may run before its whole process group is killed "
        "(cause `timeout`), > 0; unset: no limit",
    )


class ClusterConfig(Section):
    """How many workers run, and what each container gets."""

    machines: int = Field(default=1, ge=0, description="a whole number of machines ≥ 0")
    tasks_per_machine: int = Field(
        default=1, ge=1, description="a whole number of containers per machine ≥ 1"
    )
    docker_cores: int = Field(
        default=1, ge=1, description="a whole number of worker processes per container ≥ 1"
    )
    cpu_shares: int | None = Field(
        default=None, ge=128, description="ECS CPU units per container (1024 = one core), ≥ 128"
    )
    memory: int = Field(default=4096, ge=128, description="memory per container in MB, ≥ 128")
    seconds_to_start: float = Field(
        default=0, ge=0, description="seconds between starting a container's worker processes"
    )

    @property
    def effective_cpu_shares(self) -> int:
        """CPU units per container; defaults to one core per worker process."""
        return self.cpu_shares if self.cpu_shares is not None else self.docker_cores * 1024


#: The failure causes whose retrying `queue.retry.retry_on` decides (`interrupted` and `lost`
#: are always retried and never use up a retry; see worker/causes.py).
RetryCause = Literal["exit", "signal", "timeout", "memory", "not_found", "upload", "tool"]


class RetryConfig(Section):
    """Which failed attempts are retried (up to `queue.job_retries`), by cause and exit code;
    the others go to the dead letters at once."""

    retry_on: dict[RetryCause, bool] = Field(
        default_factory=dict,
        description="a table of cause = true/false, causes: exit, signal, timeout, memory, "
        "not_found, upload, tool (unset causes keep their default)",
    )
    never_retry_exit_codes: list[int] = Field(
        default_factory=list,
        description="a list of exit codes never retried, e.g. [2, 127]",
    )


class QueueConfig(Section):
    """The job queue and its dead-letter queue."""

    name: str | None = Field(
        default=None, pattern=NAME_PATTERN, description="letters, digits, - and _ (≤ 80)"
    )
    dead_letter_queue: str | None = Field(
        default=None, pattern=NAME_PATTERN, description="letters, digits, - and _ (≤ 80)"
    )
    visibility: int = Field(
        default=60,
        ge=1,
        le=43200,
        description="the base lease in whole seconds, 1 to 43200 (workers extend it while busy)",
    )
    job_retries: int = Field(
        default=3,
        ge=1,
        le=1000,
        description="how many times a task is received before it is dead-lettered, 1 to 1000",
    )
    retry: RetryConfig = Field(default_factory=RetryConfig)


class StorageConfig(Section):
    """Buckets: logs/state, sources, workspace files and outputs."""

    bucket: str = Field(default="", description="the bucket name for logs, state and outputs")
    source_bucket: str = Field(default="", description="the bucket holding input images")
    workspace_bucket: str = Field(default="", description="the bucket holding pipelines/scripts")
    destination_bucket: str = Field(default="", description="the bucket outputs are written to")
    upload_flags: str = Field(
        default="", description='extra upload flags, e.g. "--acl bucket-owner-full-control"'
    )


class CheckIfDoneConfig(Section):
    """When a received task counts as already done (and is skipped)."""

    enabled: bool = Field(default=True, description="true or false")
    expected_number_files: int | None = Field(
        default=None,
        ge=1,
        description="how many output objects mark a task done (≥ 1), or leave it unset to "
        "rely on the done marker alone",
    )
    min_file_size_bytes: int = Field(
        default=1, ge=0, description="the smallest output size in bytes that counts (≥ 0)"
    )
    necessary_string: str = Field(
        default="", description="a string output names must contain to count, or empty"
    )


class AwsConfig(Section):
    """AWS-only settings (used when ``backend = "aws"``)."""

    region: str = Field(default="us-east-1", description='an AWS region, e.g. "us-east-1"')
    profile: str | None = Field(default=None, description="an AWS CLI profile name")
    ecs_cluster: str = Field(
        default="default",
        pattern=ECS_CLUSTER_PATTERN,
        description="an ECS cluster name: letters, digits, - and _ (≤ 255)",
    )
    machine_type: list[str] = Field(
        default_factory=lambda: ["m5.large"],
        min_length=1,
        description='a list of EC2 instance types, e.g. ["m5.large", "m5a.large"]',
    )
    machine_price: float = Field(
        default=0.10, gt=0, description="the maximum spot price in USD per hour, > 0"
    )
    ebs_vol_size: int = Field(
        default=ECS_AMI_ROOT_GIB,
        ge=22,
        description="the EBS volume size in GB: ≥ 30 for the ECS-optimized AL2023 AMI (its "
        "root snapshot); a legacy config's smaller value is raised to the snapshot's size",
    )
    # Unset: the fleet file's AssociatePublicIpAddress stands (docs/configuration.md).
    assign_ip: bool | None = Field(default=None, description="true or false")
    ssh_key_name: str = Field(default="", description="an EC2 key pair name, or empty")

    @field_validator("ssh_key_name")
    @classmethod
    def _key_pair_name(cls, value: str) -> str:
        # The family's templates name the key file (`your-key-file.pem`); EC2 wants the pair.
        return value.removesuffix(".pem")

    log_group_name: str | None = Field(
        default=None,
        pattern=LOG_GROUP_PATTERN,
        description="a CloudWatch log group name: letters, digits and . - _ / #",
    )
    auto_monitor: bool = Field(default=False, description="true or false")
    monitor_function: str | None = Field(
        default=None,
        description="the monitor Lambda's name (`ds aws bootstrap --prefix P` makes "
        "P-monitor; default: <app_name>-monitor)",
    )
    create_dashboard: bool = Field(default=False, description="true or false")
    clean_dashboard: bool = Field(default=True, description="true or false")
    task_role_arn: str | None = Field(default=None, description="an IAM role ARN for the tasks")
    image_id: str | None = Field(
        default=None,
        pattern=r"^ami-[0-9a-f]{8,17}$",
        description="an AMI id (ami-…) to use instead of the current ECS-optimized Amazon "
        "Linux 2023 AMI, or unset",
    )
    idle_shutdown_minutes: float = Field(
        default=3.0,
        ge=0,
        allow_inf_nan=False,
        description="a number of minutes ≥ 0 that a machine's workers must all have been "
        "idle before it terminates itself (0 turns the idle shutdown off)",
    )


class ToolConfig(Section):
    """Settings of the family's tools (CellProfiler plugins, Fiji scripts, downloads)."""

    download_files: bool = Field(default=False, description="true or false")
    always_continue: bool = Field(default=False, description="true or false")
    use_plugins: bool = Field(default=False, description="true or false")
    update_plugins: bool = Field(default=False, description="true or false")
    plugins_commit: str = Field(default="", description="a commit or tag of the plugins repo")
    install_requirements: bool = Field(default=False, description="true or false")
    requirements_file: str = Field(default="", description="a path in the plugins repository")
    requirements: str = Field(default="", description="flags for the requirements install")
    script_download_url: str = Field(
        default="", description="an http(s):// URL of the script, ending in its file name"
    )
    script_sha256: str = Field(
        default="",
        pattern=r"^([0-9a-fA-F]{64})?$",
        description="the script's sha256 as 64 hex digits, or empty",
    )


class LocalConfig(Section):
    """Local-backend settings."""

    root: str = Field(
        default=".ds", description="a folder (relative to the config) for queue, bucket, logs"
    )
    workers: int | None = Field(
        default=None, ge=1, description="a cap on local worker processes (≥ 1), or unset"
    )
    poll_interval: float = Field(
        default=0.2, gt=0, le=60, description="seconds between polls of an empty queue (0–60]"
    )
    prepare: list[str] = Field(
        default_factory=list,
        description="an argv run once by `ds setup` (e.g. to generate inputs), or empty",
    )


class SlurmConfig(Section):
    """Slurm-backend settings (used when ``backend = "slurm"``).

    What each Slurm job asks for, how many run at once, and the folder on the shared
    filesystem that holds the run's storage and queue. Each Slurm job is one element of a
    job array running one `ds worker` over a slice of ``tasks_per_job`` tasks (scheduling
    an element costs about a second, so short tasks are grouped)."""

    shared_dir: str = Field(
        default="",
        description="a folder on the cluster's shared filesystem, seen by the login and the "
        "compute nodes (relative to the config); empty: <local.root>/<app_name>/slurm",
    )
    partition: str = Field(default="", description='a Slurm partition, e.g. "short", or empty')
    account: str = Field(default="", description="a Slurm account to charge, or empty")
    qos: str = Field(default="", description="a Slurm QOS, or empty")
    time: str = Field(
        default="",
        pattern=r"^([0-9]+(-[0-9]{1,2})?(:[0-9]{1,2}){0,2})?$",
        description='the time limit of each Slurm job in sbatch\'s format ("90", "1:30:00", '
        '"2-00:00:00"), or empty for the partition\'s default',
    )
    memory: str = Field(
        default="",
        pattern=r"^([0-9]+[KMGT]?)?$",
        description='the memory of each Slurm job as sbatch --mem takes it ("4G", "4000M"), '
        "or empty for the cluster's default",
    )
    cpus_per_task: int = Field(
        default=1, ge=1, description="CPUs per Slurm job (sbatch --cpus-per-task), ≥ 1"
    )
    max_jobs: int | None = Field(
        default=None,
        ge=1,
        description="how many Slurm jobs (array elements) run at once, ≥ 1; unset: machines "
        "× tasks_per_machine × docker_cores",
    )
    tasks_per_job: int = Field(
        default=10, ge=1, description="how many tasks one Slurm job (array element) runs, ≥ 1"
    )
    sbatch_args: list[str] = Field(
        default_factory=list,
        description='extra sbatch arguments, one list item each, e.g. ["--constraint=avx2"]',
    )


class Config(Section):
    """A whole run config."""

    # The loader reports a derived queue name over 80 characters against app_name.
    app_name: str = Field(pattern=NAME_PATTERN, description="letters, digits, - and _ (≤ 80)")
    backend: Literal["local", "aws", "slurm"] = Field(
        default="local", description='"local", "aws" or "slurm"'
    )
    image: str = Field(default="", description='a container image, e.g. "org/tool:1.0"')
    recipe: RecipeConfig = Field(default_factory=RecipeConfig)
    cluster: ClusterConfig = Field(default_factory=ClusterConfig)
    queue: QueueConfig = Field(default_factory=QueueConfig)
    storage: StorageConfig = Field(default_factory=StorageConfig)
    check_if_done: CheckIfDoneConfig = Field(default_factory=CheckIfDoneConfig)
    aws: AwsConfig = Field(default_factory=AwsConfig)
    tool: ToolConfig = Field(default_factory=ToolConfig)
    local: LocalConfig = Field(default_factory=LocalConfig)
    slurm: SlurmConfig = Field(default_factory=SlurmConfig)
    env: dict[str, str] = Field(
        default_factory=dict,
        description="a table of extra environment variables (names: letters, digits and _, "
        "not starting with a digit)",
    )

    @model_validator(mode="after")
    def _derive_names(self) -> Config:
        # Same derivations as the family's config.py files.
        if self.queue.name is None:
            self.queue.name = f"{self.app_name}Queue"
        if self.queue.dead_letter_queue is None:
            self.queue.dead_letter_queue = f"{self.app_name}DeadMessages"
        if self.aws.log_group_name is None:
            self.aws.log_group_name = self.app_name
        return self

    @property
    def queue_name(self) -> str:
        """The job queue's name (derived from the app name when unset)."""
        return self.queue.name or f"{self.app_name}Queue"

    @property
    def dead_letter_queue_name(self) -> str:
        """The dead-letter queue's name (derived from the app name when unset)."""
        return self.queue.dead_letter_queue or f"{self.app_name}DeadMessages"

    @property
    def worker_count(self) -> int:
        """Worker processes in all: machines × tasks per machine × processes per container."""
        return self.cluster.machines * self.cluster.tasks_per_machine * self.cluster.docker_cores
