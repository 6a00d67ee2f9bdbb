"""What `ds validate` checks for the Slurm backend, before anything is submitted: Slurm's
client commands are on PATH, and the configured partition exists on the cluster (or, with
none configured, the controller answers). Each
problem is one `InputError` (exit 2) naming the fix."""

from __future__ import annotations

import re
import shutil
import subprocess

from distributed_something.errors import InputError
from distributed_something.project import Project

#: the Slurm commands ds runs on the login node (sacct is optional: jobcomp or scontrol
#: tell how jobs ended where the cluster keeps no accounting)
REQUIRED_COMMANDS = ("sbatch", "squeue", "scontrol", "scancel")

_TIMEOUT = 30.0


def slurm_findings(project: Project) -> list[InputError]:
    """Every problem found with this machine's Slurm for ``project`` (empty: none).

    One finding per missing command of `REQUIRED_COMMANDS` (looked up on PATH); when
    ``slurm.partition`` is set and ``scontrol`` is there, one finding if the cluster does
    not know the partition (``scontrol show partition NAME``), naming the ones it has
    (``sinfo``), or if the controller cannot be asked; then one if Slurm would refuse the
    run's jobs as configured (`sbatch --test-only`, which submits nothing). Runs only Slurm
    commands that change nothing.
    """
    source = str(project.config_path)
    findings = [
        InputError(
            source,
            "backend",
            f'backend = "slurm" needs Slurm\'s `{name}` command, which is not on PATH',
            "run ds on a login node of the Slurm cluster, with Slurm's commands on PATH "
            "(e.g. after `module load slurm`)",
        )
        for name in REQUIRED_COMMANDS
        if shutil.which(name) is None
    ]
    partition = project.config.slurm.partition
    if partition and shutil.which("scontrol") is not None:
        problem = _partition_problem(partition)
        if problem is not None:
            findings.append(InputError(source, "slurm.partition", *problem))
    elif not findings:
        problem = _controller_problem()
        if problem is not None:
            findings.append(InputError(source, "backend", *problem))
    if not findings:
        refused = _submission_problem(project)
        if refused is not None:
            findings.append(InputError(source, "slurm", *refused))
    return findings


#: what sbatch says when the controller is busy, not when it refuses the job
_BUSY = ("socket timed out", "unable to contact", "connection refused", "did not answer")


def _submission_problem(project: Project) -> tuple[str, str] | None:
    """(problem, fix) when Slurm would refuse the run's jobs as [slurm] asks for them (an
    account or QOS the user lacks, a time or memory over the partition's limit, a bad
    sbatch_args option), asked with `sbatch --test-only` (which submits nothing); None when
    it would take them, or when the controller does not answer now (not the config's
    fault)."""
    from distributed_something.backends.slurm.compute import sbatch_options

    argv = [
        "sbatch",
        "--test-only",
        f"--job-name=ds-{project.config.app_name}",
        *sbatch_options(project.config),
        "--wrap=true",
    ]
    code, out, err = _ask(argv)
    said = [line.strip() for line in (err or out).strip().splitlines() if line.strip()]
    if code == 0 or any(b in " ".join(said).lower() for b in _BUSY):
        return None
    return (
        f"Slurm would refuse the run's jobs (sbatch --test-only: {'; '.join(said[-3:])})",
        "change what [slurm] asks for (partition, account, qos, time, memory, cpus_per_task, "
        "sbatch_args) to what the cluster allows you: `sacctmgr show assoc user=$USER` "
        "lists your accounts and QOS, `sinfo -s` the partitions and their time limits",
    )


def _controller_problem() -> tuple[str, str] | None:
    """(problem, fix) when the Slurm controller does not answer `scontrol ping` (no
    configuration on this machine, slurmctld down), else None: a run would submit nothing
    and fail on its first Slurm command."""
    code, out, err = _ask(["scontrol", "ping"])
    # One line per controller: a backup that is DOWN beside a primary that is UP is a
    # working cluster.
    if code == 0 and (re.search(r"\bis UP\b", out) or "DOWN" not in out):
        return None
    said = ((err or out).strip().splitlines() or ["no answer"])[-1]
    return (
        f'backend = "slurm" needs the Slurm controller, which does not answer (scontrol ping: '
        f"{said})",
        "run ds on a login node of a running Slurm cluster: this machine's Slurm needs its "
        "slurm.conf (SLURM_CONF, /etc/slurm/slurm.conf) and slurmctld up (`scontrol ping` "
        "must say UP)",
    )


def _partition_problem(partition: str) -> tuple[str, str] | None:
    """(problem, fix) when the cluster has no partition ``partition``, else None."""
    code, out, err = _ask(["scontrol", "show", "partition", partition])
    if code == 0 and f"PartitionName={partition}" in out:
        return None
    message = (err or out).strip().splitlines()
    said = message[-1] if message else f"exit {code}"
    if "not found" not in said.lower():
        return (
            f"the partition {partition!r} cannot be checked: scontrol answered {said!r}",
            "check that the Slurm controller is up and that SLURM_CONF (or "
            "/etc/slurm/slurm.conf) names it (`sinfo` must answer)",
        )
    known = _partitions()
    listed = f"use one of {', '.join(known)}" if known else "use a partition `sinfo` lists"
    return (
        f"the Slurm cluster has no partition {partition!r} (scontrol: {said})",
        f"{listed}, or leave slurm.partition empty for the cluster's default partition",
    )


def _partitions() -> list[str]:
    """The cluster's partition names, as sinfo lists them (the default marked ``*`` by
    sinfo is shown without it)."""
    code, out, _ = _ask(["sinfo", "--noheader", "--format=%P"])
    if code != 0:
        return []
    return list(dict.fromkeys(line.strip().rstrip("*") for line in out.splitlines() if line))


def _ask(argv: list[str]) -> tuple[int, str, str]:
    """Run a read-only Slurm command: (exit code, stdout, stderr); 127 when it cannot run."""
    try:
        done = subprocess.run(
            argv,
            capture_output=True,
            text=True,
            timeout=_TIMEOUT,
            check=False,
            stdin=subprocess.DEVNULL,
        )
    except FileNotFoundError:
        return 127, "", f"{argv[0]} not found"
    except subprocess.TimeoutExpired:
        return 124, "", f"{argv[0]} did not answer within {_TIMEOUT:.0f} s"
    return done.returncode, done.stdout, done.stderr


class SlurmNotReady(InputError):
    """Every `slurm_findings` problem (exit 2): its fields are the first one's, its text one
    ``error:`` line per problem."""

    def __init__(self, findings: list[InputError]) -> None:
        first = findings[0]
        super().__init__(first.source, first.field, first.problem, first.fix)
        self.findings = findings
        self.args = ("\nerror: ".join(str(f) for f in findings),)

    def __str__(self) -> str:
        return str(self.args[0])


def validate_notes(project: Project) -> list[str]:
    """The Slurm backend's `BackendKind.validate_notes`: raises `SlurmNotReady` when
    `slurm_findings` finds anything; no notes otherwise."""
    findings = slurm_findings(project)
    if findings:
        raise SlurmNotReady(findings)
    return []
