"""AWS provisioning: what `ds setup`, `ds start-cluster` and the teardown create and remove.

Every step records what it made in the run state (``resources["aws"]``) and saves it at once,
so `ds cleanup` / `ds monitor` can always remove everything, even after a crash.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from distributed_something.backends.aws import dashboard as dash
from distributed_something.backends.aws import fleet as spot
from distributed_something.backends.aws import setup as create
from distributed_something.backends.aws.clients import AwsSettings, client
from distributed_something.backends.aws.resources import AwsNames, AwsResources
from distributed_something.backends.aws.schedule import schedule_monitor
from distributed_something.backends.aws.taskenv import task_environment, task_role_arn
from distributed_something.backends.aws.teardown import AwsClients, teardown
from distributed_something.errors import BackendError, InputError
from distributed_something.project import Project
from distributed_something.state import RunState
from distributed_something.ui import info

Save = Callable[[RunState], None]

#: how long start-cluster waits for the first machine before explaining why not
CAPACITY_TIMEOUT_SECONDS = 15 * 60


class AwsProvisioner:
    """The Provisioner of the AWS backend (see `interfaces.provisioner`)."""

    def __init__(
        self,
        project: Project,
        settings: AwsSettings,
        names: AwsNames,
        *,
        capacity_timeout: float = CAPACITY_TIMEOUT_SECONDS,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.project = project
        self.config = project.config
        self.settings = settings
        self.names = names
        self.capacity_timeout = capacity_timeout
        self.clock = clock
        self.sleep = sleep

    def _client(self, service: str) -> Any:
        return client(service, self.settings)

    def _record(self, state: RunState, save: Save, change: Callable[[AwsResources], None]) -> None:
        resources = AwsResources.of(state.resources)
        change(resources)
        resources.into(state.resources)
        save(state)

    def setup(self, state: RunState, save: Save) -> None:
        """Queues, cluster, task definition and a service with 0 tasks (idempotent)."""
        config, names = self.config, self.names
        create.check_setup_inputs(config)
        queue_url, queue_arn, dlq_url, dlq_arn = create.ensure_queues(
            self._client("sqs"), names, config
        )

        def queues(r: AwsResources) -> None:
            r.region = self.settings.region
            r.queue_url, r.queue_arn = queue_url, queue_arn
            r.dead_letter_queue_url, r.dead_letter_queue_arn = dlq_url, dlq_arn

        self._record(state, save, queues)
        ecs = self._client("ecs")
        created = create.ensure_cluster(ecs, names)

        def cluster(r: AwsResources) -> None:
            r.cluster = names.cluster
            r.cluster_created = r.cluster_created or created

        self._record(state, save, cluster)
        env = task_environment(config, queue_url=queue_url, run_id=state.run_id)
        arn = create.register_task_definition(
            ecs,
            names,
            config,
            env,
            task_role_arn=task_role_arn(config, self.settings),
            keep_entrypoint=config.recipe.name is None,
        )

        def taskdef(r: AwsResources) -> None:
            if arn not in r.task_definition_arns:
                r.task_definition_arns.append(arn)

        self._record(state, save, taskdef)
        service = create.ensure_service(ecs, names, names.cluster, arn)

        def svc(r: AwsResources) -> None:
            r.service = service

        self._record(state, save, svc)

    def start(
        self, state: RunState, fleet: dict[str, Any] | None, workers: int, save: Save
    ) -> None:
        """Spot fleet from the user's fleet file, log groups, service tasks; then wait for
        the first machine (clear errors for bad configuration vs. no capacity)."""
        if fleet is None:
            raise InputError(
                "argument",
                "FLEET",
                "the aws backend starts machines from a spot fleet file",
                "run `ds start-cluster files/fleet.json` (the family's exampleFleet.json shape)",
            )
        config, names = self.config, self.names
        groups = create.ensure_log_groups(self._client("logs"), names)
        self._record(state, save, lambda r: setattr(r, "log_groups", groups))
        resources = AwsResources.of(state.resources)
        fleet_id = resources.fleet_request_id
        ec2 = self._client("ec2")
        if fleet_id is None:
            image_id = config.aws.image_id or spot.current_ecs_ami(self._client("ssm"))
            request = spot.build_fleet_request(
                fleet,
                config,
                names,
                user_data=spot.ecs_user_data(names.cluster),
                image_id=image_id,
                # A retried request returns the same fleet instead of a second one.
                client_token=f"{names.app}-{state.run_id}",
            )
            fleet_id = spot.request_fleet(ec2, request)
            self._record(state, save, lambda r: setattr(r, "fleet_request_id", fleet_id))
            info(f"spot fleet {fleet_id} requested ({config.cluster.machines} machines)")
        monitor_file = spot.write_monitor_file(
            self.project.base_dir,
            names,
            fleet_id=fleet_id,
            queue_url=resources.queue_url or "",
            cluster=names.cluster,
            service=resources.service or names.service,
            region=self.settings.region,
            bucket=config.storage.bucket,
            clean_dashboard=config.aws.clean_dashboard,
        )
        info(f"wrote {monitor_file}")
        tasks = config.cluster.machines * config.cluster.tasks_per_machine
        create.set_service_desired(
            self._client("ecs"), names.cluster, resources.service or names.service, tasks
        )
        if config.aws.create_dashboard:
            body = dash.dashboard_body(
                names,
                config,
                region=self.settings.region,
                fleet_id=fleet_id,
                queue_name=names.queue,
                dlq_name=names.dead_letter_queue,
                cluster=names.cluster,
                service=resources.service or names.service,
            )
            dash.put_dashboard(self._client("cloudwatch"), names.dashboard, body)
            self._record(state, save, lambda r: setattr(r, "dashboard", names.dashboard))
        if config.aws.auto_monitor:
            objects = schedule_monitor(
                self._client("events"),
                self._client("lambda"),
                names,
                config,
                region=self.settings.region,
                function=config.aws.monitor_function or f"{names.app}-monitor",
            )
            self._record(state, save, lambda r: r.monitor_objects.update(objects))
            info("the unattended monitor checks this run every minute")
        try:
            spot.wait_for_capacity(
                ec2, fleet_id, timeout=self.capacity_timeout, clock=self.clock, sleep=self.sleep
            )
        except BackendError:
            if spot.fleet_state(ec2, fleet_id).state in (
                "cancelled",
                "cancelled_terminating",
                "failed",
                "missing",
            ):
                # A configuration error cancelled it: the next start-cluster requests anew.
                self._record(state, save, lambda r: setattr(r, "fleet_request_id", None))
            raise

    def teardown(self, state: RunState, save: Save) -> None:
        """Everything recorded, step by step (resumable); the dead-letter queue is kept."""

        def save_resources(resources: AwsResources) -> None:
            resources.into(state.resources)
            save(state)

        teardown(
            AwsClients(self.settings),
            self.names,
            AwsResources.of(state.resources),
            bucket=self.config.storage.bucket,
            run_id=state.run_id,
            save=save_resources,
            clean_dashboard=self.config.aws.clean_dashboard,
        )
