"""AWS provisioning: what `ds setup`, `ds start-cluster` and the teardown create and remove.

Every step records what it made in the run state (``resources["aws"]``) and saves it at once,
so `ds cleanup` / `ds monitor` can always remove everything, even after a crash.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any

from distributed_something.backends.aws import dashboard as dash
from distributed_something.backends.aws import fleet as spot
from distributed_something.backends.aws import setup as create
from distributed_something.backends.aws.clients import AwsClients, AwsSettings, client
from distributed_something.backends.aws.image_check import family_worker_note
from distributed_something.backends.aws.machine_fit import machine_fit
from distributed_something.backends.aws.name_limits import check_run_names
from distributed_something.backends.aws.policy_check import coverage_warning
from distributed_something.backends.aws.resources import AwsNames, AwsResources
from distributed_something.backends.aws.role_check import check_task_role
from distributed_something.backends.aws.schedule import monitor_function_arn, schedule_monitor
from distributed_something.backends.aws.taskenv import task_environment, task_role_arn
from distributed_something.backends.aws.teardown import teardown
from distributed_something.config.model import ECS_AMI_ROOT_GIB
from distributed_something.errors import BackendError, InputError
from distributed_something.platforms import image_platform_warning, local_image_platform
from distributed_something.project import Project
from distributed_something.state import RunState, clear_workers_failing
from distributed_something.ui import info

Save = Callable[[RunState], None]


def _setting(name: str, value: str | None) -> Callable[[AwsResources], None]:
    """A change of the record setting ``name`` to ``value`` (bound now, not at the call)."""

    def change(resources: AwsResources) -> None:
        setattr(resources, name, value)

    return change


def _forget_fleet(resources: AwsResources) -> None:
    """The run has no live fleet request: the next start-cluster makes a new one."""
    resources.fleet_request_id = None
    resources.fleet_requested_at = None
    resources.fleet_client_token = None


def _requested(fleet_id: str, at: float) -> Callable[[AwsResources], None]:
    """Record the fleet request ``fleet_id`` made at ``at`` (epoch seconds)."""

    def change(resources: AwsResources) -> None:
        resources.fleet_request_id, resources.fleet_requested_at = fleet_id, at

    return change


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
        #: the instance types of aws.machine_type as EC2 describes them (`_instance_facts`)
        self._machines: dict[str, spot.InstanceFacts] | None = None

    def _client(self, service: str) -> Any:
        return client(service, self.settings)

    def _record(self, state: RunState, save: Save, change: Callable[[AwsResources], None]) -> None:
        resources = AwsResources.of(state.resources)
        change(resources)
        resources.into(state.resources)
        save(state)

    @property
    def _legacy(self) -> bool:
        """Whether the run's config is a legacy config.py (else a ds.toml)."""
        return self.project.config_path.suffix == ".py"

    def check_inputs(self) -> None:
        """What setup checks before creating anything, beyond `create.check_setup_inputs`:
        the root volume of a ds.toml (`spot.check_root_volume`), and that a task role taken
        from the AWS profile trusts ecs-tasks.amazonaws.com (`check_task_role`; a role that
        cannot be read is a warning), and that the image, when a local engine has it, is of
        the instances' architecture (`platforms.image_platform_warning`: a warning). Raises
        `InputError`."""
        config = self.config
        source = str(self.project.config_path)
        check_run_names(config, source=source)
        create.check_task_definition_fits(config, self.settings, source=source)
        # A worker larger than every machine is refused here; start-cluster warns of the rest.
        # A config.py without MACHINE_TYPE takes its machines from the fleet file, which
        # start-cluster reads: the fit is checked there (the family images are amd64).
        if not self._types_from_fleet:
            facts = self._instance_facts(self._client("ec2"))
            self._machine_fit(facts)
            # Only a warning: the local copy may be older than the one pushed under that tag.
            architecture = image_platform_warning(
                config.image,
                local_image_platform(config.image),
                {t: f.architecture for t, f in facts.items()},
            )
            if architecture:
                info(f"[yellow]warning:[/] {architecture}")
        spot.check_root_volume(
            config,
            legacy=self._legacy,
            source=source,
            ec2=self._client("ec2") if config.aws.image_id else None,
        )
        if not config.aws.task_role_arn:
            role = task_role_arn(config, self.settings)
            if role:
                warning = check_task_role(
                    self._client("iam"),
                    role,
                    source=f"AWS profile {self._profile_name()}",
                    field="role_arn (the task role, as aws.task_role_arn is unset)",
                )
                if warning:
                    info(f"[yellow]warning:[/] {warning}")
        coverage = coverage_warning(config, self.settings)
        if coverage:
            info(f"[yellow]warning:[/] {coverage}")
        family = family_worker_note(config)
        if family:  # said at validate too; setup and start-cluster are where money is spent
            info(f"[yellow]warning:[/] {family}")

    @property
    def _types_from_fleet(self) -> bool:
        """Whether the instance types come from the fleet file: a config.py without
        MACHINE_TYPE (DCP's before 2.0), as its run.py sent the file's (`with_fleet_machines`)."""
        return self._legacy and "machine_type" not in self.config.aws.model_fields_set

    def _instance_facts(self, ec2: Any) -> dict[str, spot.InstanceFacts]:
        """`fleet.instance_facts` of ``aws.machine_type``, read once per provisioner (`ds run`
        checks them at setup and uses them at start-cluster)."""
        if self._machines is None:
            self._machines = spot.instance_facts(ec2, list(self.config.aws.machine_type))
        return self._machines

    def _machine_fit(self, facts: dict[str, spot.InstanceFacts]) -> list[str]:
        """`machine_fit.machine_fit` of the config on ``facts``: its warnings; raises
        `InputError` when a worker fits on no type of ``aws.machine_type``."""
        return machine_fit(self.config, facts, source=str(self.project.config_path))

    @property
    def _monitor_function(self) -> str:
        """The unattended monitor's function (`ds aws bootstrap` names it after the app)."""
        return self.config.aws.monitor_function or f"{self.names.app}-monitor"

    def _profile_name(self) -> str:
        return self.settings.profile or os.environ.get("AWS_PROFILE") or "default"

    def setup(self, state: RunState, save: Save, previous: RunState | None = None) -> None:
        """Queues, cluster, task definition and a service with 0 tasks (idempotent).
        `check_inputs` runs first: nothing is created when it fails. A new run following
        one whose cleanup deleted its queue less than a minute ago waits until SQS lets
        the name be taken again (`create.queue_name_wait`): until then the old queue may
        still answer, and tasks sent to it would vanish with it."""
        config, names = self.config, self.names
        create.check_setup_inputs(config)
        self.check_inputs()
        if previous is not None:
            deleted_at = AwsResources.of(previous.resources).queue_deleted_at
            wait = create.queue_name_wait(deleted_at, time.time())
            if wait > 0:
                info(
                    f"waiting {wait:.0f} s: the previous run's queue was deleted "
                    f"{time.time() - (deleted_at or 0):.0f} s ago, and SQS keeps a deleted "
                    "queue's name for 60 s (tasks sent meanwhile would be lost with it)"
                )
                self.sleep(wait)
        queue_url, queue_arn, dlq_url, dlq_arn = create.ensure_queues(
            self._client("sqs"), names, config, sleep=self.sleep
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
        if self._legacy:
            unnamed = self._types_from_fleet and not spot.fleet_instance_types(fleet)
            machines = spot.with_fleet_machines(self.config, fleet)
            aws = machines.aws
            if unnamed:
                # run.py would have failed: neither says which machines.
                info(
                    "[yellow]warning:[/] neither config.py (MACHINE_TYPE) nor the fleet file "
                    "(InstanceType) names instance types: ds's default "
                    f"{', '.join(aws.machine_type)} is used, at most ${aws.machine_price:g}/h"
                )
            elif machines is not self.config:
                info(
                    f"instance types {', '.join(aws.machine_type)} at most "
                    f"${aws.machine_price:g}/h, from the fleet file (config.py sets no "
                    "MACHINE_TYPE / MACHINE_PRICE), as run.py sent them"
                )
            if machines is not self.config:
                self.config = machines
                self._machines = None
        config, names = self.config, self.names
        spot.check_launch_specifications(config, fleet, source=str(self.project.config_path))
        if clear_workers_failing(state):
            save(state)  # the unattended monitor may start workers again
            info("the unattended monitor had stopped this run's workers (they kept failing)")
        groups = create.ensure_log_groups(self._client("logs"), names)
        self._record(state, save, lambda r: setattr(r, "log_groups", groups))
        resources = AwsResources.of(state.resources)
        fleet_id = resources.fleet_request_id
        ec2 = self._client("ec2")
        if fleet_id is None:
            if config.aws.auto_monitor:
                # Before machines are paid for: without it the run would have no monitor.
                monitor_function_arn(self._client("lambda"), self._monitor_function)
            fleet_id = self._request_fleet(state, save, ec2, fleet)
            info(f"spot fleet {fleet_id} requested ({config.cluster.machines} machines)")
        else:
            # An edited fleet file (other instance types, say) would otherwise seem used.
            info(
                f"the run's spot fleet {fleet_id} is kept: a fleet file is read when the run "
                "first requests machines (`ds cleanup`, then `ds run`, to use a changed one)"
            )
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
            # A config.py's dashboard is named APP_NAME, as every family run.py named it
            # (bookmarks keep working); a ds.toml's is "<app>Dashboard".
            dashboard = names.app if self._legacy else names.dashboard
            dash.put_dashboard(self._client("cloudwatch"), dashboard, body)
            self._record(state, save, lambda r: setattr(r, "dashboard", dashboard))
        if config.aws.auto_monitor:
            objects = schedule_monitor(
                self._client("events"),
                self._client("lambda"),
                names,
                config,
                region=self.settings.region,
                function=self._monitor_function,
            )
            self._record(state, save, lambda r: r.monitor_objects.update(objects))
            info("the unattended monitor checks this run every minute")
        requested_at = AwsResources.of(state.resources).fleet_requested_at
        try:
            spot.wait_for_capacity(
                ec2,
                fleet_id,
                timeout=self.capacity_timeout,
                clock=self.clock,
                sleep=self.sleep,
                unseen_grace=spot.unseen_grace(requested_at, time.time()),
            )
        except BackendError:
            if spot.fleet_state(ec2, fleet_id).state in (
                "cancelled",
                "cancelled_terminating",
                "failed",
                "missing",
            ):
                # A configuration error cancelled it: the next start-cluster requests anew,
                # with a new token (the old one would return this dead request).
                self._record(state, save, _forget_fleet)
            raise

    def _images(self, ec2: Any) -> tuple[dict[str, str | None], int | None]:
        """{instance type: AMI} for ``aws.machine_type`` and the root snapshot size (GiB) the
        volume must reach (None: unknown). Says which types a worker may not fit on, or fits
        on fewer times than ``cluster.tasks_per_machine`` (`machine_fit`).

        ``aws.image_id`` for every type when set (an InputError when a type's architecture is
        not the image's); otherwise the current ECS-optimized AMI of each type's architecture
        (arm64 for Graviton types, `spot.instance_facts`), None where SSM has none
        (the fleet file's ImageId is kept).
        """
        config = self.config
        types = list(config.aws.machine_type)
        machines = self._instance_facts(ec2)
        for warning in self._machine_fit(machines):
            info(f"[yellow]warning:[/] {warning}")
        architectures = {t: fact.architecture for t, fact in machines.items()}
        if config.aws.image_id:
            facts = spot.describe_image(ec2, config.aws.image_id)
            wrong = [t for t in types if facts.architecture not in (None, architectures[t])]
            if wrong:
                raise InputError(
                    str(self.project.config_path),
                    "aws.image_id",
                    f"{config.aws.image_id} is an {facts.architecture} image but "
                    f"{', '.join(wrong)} {'is' if len(wrong) == 1 else 'are'} "
                    f"{architectures[wrong[0]]}",
                    "list instance types of the image's architecture in aws.machine_type, or "
                    "unset aws.image_id (each type then gets the ECS AMI of its architecture)",
                )
            return {t: config.aws.image_id for t in types}, facts.root_gib
        ssm = self._client("ssm")
        by_arch: dict[str, str | None] = {}
        required: int | None = None
        for arch in sorted(set(architectures.values())):
            image = spot.current_ecs_ami(ssm, variant="arm64" if arch == "arm64" else "")
            by_arch[arch] = image
            if image:
                # The ECS AMIs' snapshot is ECS_AMI_ROOT_GIB; believe DescribeImages when it
                # answers (a future AMI may be larger).
                size = spot.describe_image(ec2, image).root_gib or ECS_AMI_ROOT_GIB
                required = max(required or 0, size)
        return {t: by_arch[architectures[t]] for t in types}, required

    def _request_fleet(self, state: RunState, save: Save, ec2: Any, fleet: dict[str, Any]) -> str:
        """Request the run's spot fleet; record and return its id.

        The ClientToken is recorded in the run state before the call, so a start-cluster
        retried after a crash between the call and the recording gets the same request back
        instead of a second fleet. When EC2 says the token was used with other parameters
        (the config changed since that crash), the earlier request — never recorded — is
        cancelled and a new token used.
        """
        config, names = self.config, self.names
        type_images, required = self._images(ec2)
        size, warning = spot.root_volume_size(
            config, required, legacy=self._legacy, source=str(self.project.config_path)
        )
        if warning:
            info(f"[yellow]warning:[/] {warning}")
        for attempt in range(2):
            token = AwsResources.of(state.resources).fleet_client_token
            if token is None:
                token = spot.client_token(names.app)
                self._record(state, save, _setting("fleet_client_token", token))
            request = spot.build_fleet_request(
                fleet,
                config,
                names,
                user_data=spot.ecs_user_data(names.cluster),
                image_id=None,
                client_token=token,
                type_images=type_images,
                root_size=size,
            )
            try:
                requested = spot.request_fleet(ec2, request)
            except spot.TokenInUse:
                if attempt:
                    raise
                earlier = spot.fleet_with_token(ec2, token)
                if earlier is not None:
                    info(f"cancelling spot fleet {earlier}, requested with other settings")
                    spot.cancel_fleet(ec2, earlier)
                self._record(state, save, _forget_fleet)
                continue
            self._record(state, save, _requested(requested, time.time()))
            return requested
        raise AssertionError("unreachable")

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
