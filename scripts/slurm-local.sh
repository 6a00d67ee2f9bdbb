#!/usr/bin/env bash
# A real one-node Slurm cluster on this machine, for the `backend = "slurm"` tests
# (tests/test_slurm.py) and for trying ds on Slurm without a cluster.
#
#   scripts/slurm-local.sh start   install slurm-wlm and munge when missing (apt-get, as root
#                                  or with sudo), then start munged, slurmctld and slurmd with
#                                  their own slurm.conf in $DS_SLURM_DIR; waits until the node
#                                  is idle. Idempotent: daemons already running are kept.
#   scripts/slurm-local.sh env     print `export SLURM_CONF=…` for the clients (sbatch, squeue…)
#   scripts/slurm-local.sh stop    stop the daemons it started, by the PIDs in their pid files
#
# The cluster (see ../../shared/notes/slurm-local.md): one node named `hostname -s` with the
# machine's CPUs (at most 2, as the note measured), partition "debug", no accounting database
# (sacct is disabled: finished jobs are in $DS_SLURM_DIR/jobcomp.txt, jobcomp/filetxt), and
# MaxArraySize=5, so that ds's splitting of large job arrays is exercised. KillWait=2: a job
# over its time limit is killed 2 s after its SIGTERM.
set -euo pipefail

DIR="${DS_SLURM_DIR:-${TMPDIR:-/tmp}/ds-slurm-local-$(id -u)}"
CONF="$DIR/slurm.conf"

say() { echo "slurm-local: $*" >&2; }

sudo_cmd=()
if [[ "$(id -u)" -ne 0 ]]; then
    sudo_cmd=(sudo)
fi

alive() { # alive PIDFILE: the process named in PIDFILE runs
    [[ -s "$1" ]] && kill -0 "$(cat "$1")" 2>/dev/null
}

install_missing() {
    local missing=()
    command -v slurmctld >/dev/null 2>&1 || [[ -x /usr/sbin/slurmctld ]] || missing+=(slurm-wlm)
    command -v munged >/dev/null 2>&1 || [[ -x /usr/sbin/munged ]] || missing+=(munge)
    if [[ ${#missing[@]} -eq 0 ]]; then
        return 0
    fi
    if ! command -v apt-get >/dev/null 2>&1; then
        say "apt-get not found; install ${missing[*]} with your package manager"
        exit 1
    fi
    say "installing ${missing[*]} (apt-get)"
    export DEBIAN_FRONTEND=noninteractive
    "${sudo_cmd[@]}" apt-get update -qq
    "${sudo_cmd[@]}" apt-get install -y -qq "${missing[@]}" >/dev/null
}

start_munge() {
    if munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
        return 0 # a munged answers already (ours or the system's)
    fi
    "${sudo_cmd[@]}" mkdir -p /run/munge
    "${sudo_cmd[@]}" chown munge:munge /run/munge 2>/dev/null || true
    "${sudo_cmd[@]}" /usr/sbin/munged --force 2>/dev/null
    # Remember that we started it: `stop` stops only what `start` started.
    cp /run/munge/munged.pid "$DIR/munged.pid" 2>/dev/null || true
    for _ in $(seq 50); do
        munge -n 2>/dev/null | unmunge >/dev/null 2>&1 && return 0
        sleep 0.1
    done
    say "munged does not answer"
    exit 1
}

write_conf() {
    local host cpus mem
    host="$(hostname -s)"
    cpus="$(nproc)"
    [[ "$cpus" -gt 2 ]] && cpus=2
    # Slurm refuses a node with more RealMemory than it has: 80 % of the free memory, ≤ 20 GB.
    mem="$(awk '/MemAvailable/ {m = int($2 / 1024 * 0.8); if (m > 20000) m = 20000; print m}' /proc/meminfo)"
    mkdir -p "$DIR/state" "$DIR/spool" "$DIR/log"
    cat >"$CONF" <<EOF
ClusterName=dslocal
SlurmctldHost=$host
SlurmUser=root
AuthType=auth/munge
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool
SlurmctldPidFile=$DIR/slurmctld.pid
SlurmdPidFile=$DIR/slurmd.pid
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/linux
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=1000
SchedulerParameters=sched_min_interval=100000,bf_interval=1
MinJobAge=5
KillWait=2
ReturnToService=2
MpiDefault=none
MaxArraySize=5
JobCompType=jobcomp/filetxt
JobCompLoc=$DIR/jobcomp.txt
NodeName=$host CPUs=$cpus RealMemory=$mem State=UNKNOWN
PartitionName=debug Nodes=$host Default=YES MaxTime=INFINITE State=UP
EOF
}

start() {
    install_missing
    mkdir -p "$DIR"
    start_munge
    export SLURM_CONF="$CONF"
    if ! alive "$DIR/slurmctld.pid" || ! alive "$DIR/slurmd.pid"; then
        stop_daemons
        write_conf
        # -c: a fresh cluster, without the jobs a crashed earlier session left behind
        /usr/sbin/slurmctld -c -f "$CONF"
        /usr/sbin/slurmd -f "$CONF"
    fi
    for _ in $(seq 150); do
        if sinfo --noheader --format=%T 2>/dev/null | grep -Eq '^(idle|mixed|allocated)'; then
            say "running ($CONF)"
            return 0
        fi
        sleep 0.2
    done
    say "the node did not become idle; see $DIR/log"
    sinfo >&2 || true
    exit 1
}

stop_daemons() {
    local name pidfile pid
    for name in slurmd slurmctld; do
        pidfile="$DIR/$name.pid"
        if alive "$pidfile"; then
            pid="$(cat "$pidfile")"
            kill "$pid"
            for _ in $(seq 100); do
                kill -0 "$pid" 2>/dev/null || break
                sleep 0.1
            done
            kill -0 "$pid" 2>/dev/null && kill -9 "$pid"
        fi
        rm -f "$pidfile"
    done
}

stop() {
    stop_daemons
    if alive "$DIR/munged.pid"; then
        "${sudo_cmd[@]}" kill "$(cat "$DIR/munged.pid")"
    fi
    rm -f "$DIR/munged.pid"
    say "stopped"
}

case "${1:-}" in
install) install_missing ;;
start) start ;;
stop) stop ;;
env) echo "export SLURM_CONF=$CONF" ;;
*)
    echo "usage: $0 install|start|stop|env" >&2
    exit 2
    ;;
esac
