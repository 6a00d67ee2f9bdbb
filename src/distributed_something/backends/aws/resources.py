"""Names of a run's AWS resources, and the record of what was created (in the run state)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

from distributed_something.config.model import Config
from distributed_something.records import META_ROOT

#: The family's run.py exported each log group to ``exportedlogs/<LOG_GROUP_NAME>``.
FAMILY_EXPORT_ROOT = "exportedlogs"


class AwsNames:
    """Every AWS name of an app, derived once from the config (as the family derives them)."""

    def __init__(self, config: Config) -> None:
        app = config.app_name
        self.app = app
        self.queue = config.queue_name
        self.dead_letter_queue = config.dead_letter_queue_name
        self.cluster = config.aws.ecs_cluster
        self.service = f"{app}Service"
        self.task_family = f"{app}Task"
        self.container = f"{app}Container"
        self.log_group = config.aws.log_group_name or app
        #: the per-instance log group (the family's "<LOG_GROUP_NAME>_perInstance")
        self.instance_log_group = f"{self.log_group}_perInstance"
        #: where the containers' own output goes (the awslogs driver): the per-instance
        #: group, as the family's run.py set it, so `log_group` holds only task streams
        self.container_log_group = self.instance_log_group
        self.dashboard = f"{app}Dashboard"
        self.monitor_file = f"files/{app}SpotFleetRequestId.json"
        self.alarm_prefix = f"{app}_"
        self.tag = {"Key": "ds:app", "Value": app}

    @property
    def queue_names(self) -> tuple[str, str]:
        """The job queue and the dead-letter queue: what workers and the monitor use, so
        what `ds aws bootstrap` must grant (a legacy config names its own, e.g.
        ``DeadMessages_Erin``, outside any prefix)."""
        return (self.queue, self.dead_letter_queue)

    @property
    def log_group_names(self) -> tuple[str, str]:
        """The app's log group and its per-instance group (written by workers, exported by
        the monitor's teardown)."""
        return (self.log_group, self.instance_log_group)

    def instance_alarm(self, instance_id: str) -> str:
        """The idle-CPU alarm of one instance."""
        return f"{self.alarm_prefix}{instance_id}"

    def log_export_prefix(self, group: str, run_id: str, *, family: bool) -> str:
        """Where cleanup exports log group ``group`` in the bucket (CloudWatch adds
        ``/<export task id>/<stream>/…`` below it, so runs never overwrite each other).

        ``family`` (the family's image ran its own worker, as with run.py): the family's
        ``exportedlogs/<group>``. Otherwise the run's records area,
        ``_ds/<app>/runs/<run id>/logs-export/<group>``.
        """
        name = group.strip("/")
        if family:
            return f"{FAMILY_EXPORT_ROOT}/{name}"
        return f"{META_ROOT}/{self.app}/runs/{run_id}/logs-export/{name}"


class AwsResources(BaseModel):
    """What setup and start-cluster created, so cleanup is complete and resumable.

    Saved in ``RunState.resources["aws"]`` after every step.
    """

    region: str = ""
    queue_url: str | None = None
    queue_arn: str | None = None
    dead_letter_queue_url: str | None = None
    dead_letter_queue_arn: str | None = None
    cluster: str | None = None
    #: True when setup created the cluster (only such a cluster may be deleted, and only empty)
    cluster_created: bool = False
    task_definition_arns: list[str] = Field(default_factory=list)
    service: str | None = None
    fleet_request_id: str | None = None
    #: when it was requested (epoch seconds): EC2 may not know a new id for a while
    fleet_requested_at: float | None = None
    #: the ClientToken of the spot fleet request being made: recorded before the call, so a
    #: retried start-cluster gets the same request back; cleared once that request is dead,
    #: so the next attempt is a new request (EC2 would return the dead one for the old token)
    fleet_client_token: str | None = None
    log_groups: list[str] = Field(default_factory=list)
    dashboard: str | None = None
    alarms: list[str] = Field(default_factory=list)
    monitor_objects: dict[str, str] = Field(default_factory=dict)
    #: when cleanup deleted the job queue (epoch seconds): SQS keeps the name 60 s more
    queue_deleted_at: float | None = None
    #: cleanup steps already done (teardown resumes after the last one)
    cleaned: list[str] = Field(default_factory=list)
    export_tasks: list[str] = Field(default_factory=list)
    #: whether the run's containers ran the image's own worker (the family's images: no
    #: ``ds worker`` entryPoint), noted by cleanup as it deregisters the task definitions;
    #: their logs are then exported where the family's run.py put them (None: not known)
    family_worker: bool | None = None

    @classmethod
    def of(cls, resources: dict[str, Any]) -> AwsResources:
        """The AWS record inside a run state's ``resources`` (empty when none)."""
        return cls.model_validate(resources.get("aws", {}))

    def into(self, resources: dict[str, Any]) -> None:
        """Store this record into a run state's ``resources``."""
        resources["aws"] = self.model_dump(mode="json")
