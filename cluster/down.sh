#!/usr/bin/env bash
# `make cluster-down`: stop what `make cluster-up` started, in reverse order. Idempotent; the
# state under $CLUSTER_DIR (databases, artifacts, logs) stays for the next `make cluster-up`
# (remove the folder to start from nothing).
set -uo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
STATE="$(realpath -m "${CLUSTER_DIR:-$(dirname "$HERE")/.cluster}")"

stop() {  # stop NAME PIDFILE: SIGTERM, then wait up to 30 s, then SIGKILL
    local name=$1 file=$2 pid
    [[ -f $file ]] || return 0
    pid="$(cat "$file")"
    if kill -0 "$pid" 2>/dev/null; then
        kill "$pid" 2>/dev/null
        for _ in $(seq 120); do kill -0 "$pid" 2>/dev/null || break; sleep 0.25; done
        kill -0 "$pid" 2>/dev/null && kill -9 "$pid" 2>/dev/null
        echo "cluster-down: stopped $name"
    fi
    rm -f "$file"
}

[[ -d $STATE ]] || { echo "cluster-down: nothing to stop (no $STATE)"; exit 0; }
# Cancel every job first: a job's processes would otherwise outlive slurmd.
command -v scancel >/dev/null && [[ -f $STATE/slurm/slurmctld.pid ]] && scancel --full -u root 2>/dev/null
stop "the MLflow server" "$STATE/mlflow.pid"
stop slurmd "$STATE/slurm/slurmd.pid"
stop slurmctld "$STATE/slurm/slurmctld.pid"
stop slurmdbd "$STATE/slurm/slurmdbd.pid"
stop MariaDB "$STATE/mariadb/mariadb.pid"
if [[ -f $STATE/postgres/postmaster.pid ]]; then
    bin="$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)"
    runuser -u postgres -- "$bin/pg_ctl" -D "$STATE/postgres" -m fast -w stop >/dev/null 2>&1 \
        && echo "cluster-down: stopped PostgreSQL"
fi
[[ -L /etc/slurm/slurm.conf && "$(readlink /etc/slurm/slurm.conf)" == "$STATE/slurm/slurm.conf" ]] \
    && rm -f /etc/slurm/slurm.conf
echo "cluster-down: down (state kept in $STATE)"
