#!/usr/bin/env bash
# `make cluster-up`: a one-node cluster on this machine, from Debian's packages: PostgreSQL, an
# MLflow server on it that also serves the artifacts, and SLURM with accounting (munge,
# slurmdbd on MariaDB, slurmctld, slurmd) so that `sacct` answers. Idempotent: what runs
# already is left running. Every file it writes is under $CLUSTER_DIR (default .cluster/),
# except /etc/slurm/slurm.conf, a link to the one there (sbatch and sacct read it), and
# munge's socket in /run/munge. `make cluster-down` stops it all; the state stays for the next
# `make cluster-up`. Needs root and apt-get (or the packages installed).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(dirname "$HERE")"
STATE="$(realpath -m "${CLUSTER_DIR:-$ROOT/.cluster}")"
PG_PORT="${CLUSTER_PG_PORT:-5433}"
DB_PORT="${CLUSTER_DB_PORT:-3307}"
MLFLOW_PORT="${CLUSTER_MLFLOW_PORT:-5055}"
MLFLOW="${CLUSTER_MLFLOW:-$ROOT/.venv/bin/mlflow}"
NODE="$(hostname -s)"
PACKAGES=(slurm-wlm slurmdbd munge mariadb-server postgresql)
PG_BIN=""

fail() { echo "cluster-up: $*" >&2; exit 3; }
say() { echo "cluster-up: $*"; }

wait_for() {  # wait_for SECONDS WHAT COMMAND...: retry COMMAND until it succeeds
    local seconds=$1 what=$2; shift 2
    for _ in $(seq $((seconds * 4))); do "$@" >/dev/null 2>&1 && return 0; sleep 0.25; done
    fail "$what did not come up in ${seconds} s (logs in $STATE/log/)"
}

running() { [[ -f $1 ]] && kill -0 "$(cat "$1")" 2>/dev/null; }

port_free() {  # port_free PORT NAME VARIABLE: fail in one line when another process holds it
    if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then
        fail "port $1 for $2 is taken by another process (another cluster-up in another folder?): stop it (make cluster-down there), or set $3"
    fi
}

install_packages() {
    local missing=()
    for p in "${PACKAGES[@]}"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
    done
    ((${#missing[@]} == 0)) && return 0
    [[ $EUID -eq 0 ]] || fail "needs root to install ${missing[*]} (run it as root, or install them)"
    command -v apt-get >/dev/null || fail "needs apt-get to install ${missing[*]} (a Debian or Ubuntu machine)"
    say "installing ${missing[*]} (apt-get)"
    # Debian's packages would start their own daemons: this cluster starts its own, from $STATE.
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"; } \
        > "$STATE/log/apt.log" 2>&1 || fail "apt-get install ${missing[*]} failed (see $STATE/log/apt.log)"
}

start_munge() {
    mkdir -p /run/munge && chown munge:munge /run/munge
    [[ -S /run/munge/munge.socket.2 ]] && munge -n >/dev/null 2>&1 && return 0
    runuser -u munge -- /usr/sbin/munged --force
    wait_for 10 munged munge -n
}

start_postgres() {
    local data="$STATE/postgres" pg="$PG_BIN"
    mkdir -p "$data" && chown postgres:postgres "$data" && chmod 700 "$data"
    if [[ ! -f $data/PG_VERSION ]]; then
        echo postgres > "$data.pw" && chown postgres "$data.pw"
        runuser -u postgres -- "$pg/initdb" -D "$data" -A scram-sha-256 -U postgres \
            --pwfile="$data.pw" >"$STATE/log/initdb.log" 2>&1 \
            || { rm -f "$data.pw"; fail "initdb failed (see $STATE/log/initdb.log)"; }
        rm -f "$data.pw"
    fi
    touch "$STATE/log/postgres.log" && chown postgres "$STATE/log/postgres.log"
    if ! runuser -u postgres -- "$pg/pg_ctl" -D "$data" status >/dev/null 2>&1; then
        port_free "$PG_PORT" PostgreSQL CLUSTER_PG_PORT
        runuser -u postgres -- "$pg/pg_ctl" -D "$data" -w -t 30 -l "$STATE/log/postgres.log" \
            -o "-p $PG_PORT -k $data -c listen_addresses=127.0.0.1" start >/dev/null \
            || fail "PostgreSQL did not start (see $STATE/log/postgres.log)"
    fi
    # The MLflow store: user sbert (password sbert) owns database mlflow.
    local psql=(env PGPASSWORD=postgres "$pg/psql" -h 127.0.0.1 -p "$PG_PORT" -U postgres -qtA)
    "${psql[@]}" -c "select 1 from pg_roles where rolname='sbert'" | grep -q 1 \
        || "${psql[@]}" -c "create user sbert password 'sbert'"
    "${psql[@]}" -c "select 1 from pg_database where datname='mlflow'" | grep -q 1 \
        || "${psql[@]}" -c "create database mlflow owner sbert"
}

start_mariadb() {
    local data="$STATE/mariadb"
    if [[ ! -d $data/mysql ]]; then
        mkdir -p "$data" && chown mysql:mysql "$data"
        mysql_install_db --user=mysql --datadir="$data" --auth-root-authentication-method=socket \
            >"$STATE/log/mariadb-install.log" 2>&1 || fail "mysql_install_db failed (see $STATE/log/mariadb-install.log)"
    fi
    chown mysql:mysql "$data"
    touch "$STATE/log/mariadb.log" && chown mysql "$STATE/log/mariadb.log"
    if ! running "$data/mariadb.pid"; then
        port_free "$DB_PORT" MariaDB CLUSTER_DB_PORT
        /usr/sbin/mariadbd --user=mysql --datadir="$data" --port="$DB_PORT" \
            --bind-address=127.0.0.1 --socket="$data/mariadb.sock" --pid-file="$data/mariadb.pid" \
            --log-error="$STATE/log/mariadb.log" --innodb-buffer-pool-size=64M >/dev/null 2>&1 &
        wait_for 30 MariaDB mysqladmin --socket="$data/mariadb.sock" ping
    fi
    mysql --socket="$data/mariadb.sock" -e "create user if not exists 'slurm'@'127.0.0.1' identified by 'slurm';
        grant all on slurm_acct_db.* to 'slurm'@'127.0.0.1';"
}

write_slurm_conf() {
    local conf="$STATE/slurm"
    mkdir -p "$conf" "$STATE/slurm/ctld" "$STATE/slurm/d"
    sed -e "s|@NODE@|$NODE|g" -e "s|@STATE@|$STATE|g" -e "s|@CPUS@|$(nproc)|g" \
        -e "s|@MEMORY@|$(( $(awk '/MemTotal/ {print $2}' /proc/meminfo) / 1024 * 9 / 10 ))|g" \
        "$HERE/slurm.conf" > "$conf/slurm.conf"
    sed -e "s|@STATE@|$STATE|g" -e "s|@DB_PORT@|$DB_PORT|g" "$HERE/slurmdbd.conf" > "$conf/slurmdbd.conf"
    chmod 600 "$conf/slurmdbd.conf"
    mkdir -p /etc/slurm
    if [[ -e /etc/slurm/slurm.conf && ! -L /etc/slurm/slurm.conf ]]; then
        fail "/etc/slurm/slurm.conf exists and is not this cluster's: this machine has a SLURM of its own; use it, or move that file away"
    fi
    local other
    other="$(readlink /etc/slurm/slurm.conf 2>/dev/null || true)"
    if [[ -n $other && $other != "$conf/slurm.conf" ]] && scontrol ping >/dev/null 2>&1; then
        fail "another one-node cluster is up ($other): stop it first (make cluster-down in its folder)"
    fi
    ln -sfn "$conf/slurm.conf" /etc/slurm/slurm.conf
}

start_slurm() {
    local conf="$STATE/slurm"
    if ! running "$conf/slurmdbd.pid"; then
        /usr/sbin/slurmdbd  # reads slurmdbd.conf beside $SLURM_CONF
        wait_for 30 slurmdbd sacctmgr -n list cluster
    fi
    sacctmgr -n list cluster format=cluster | grep -qw local || sacctmgr -i add cluster local >/dev/null
    if ! running "$conf/slurmctld.pid"; then
        /usr/sbin/slurmctld -f "$conf/slurm.conf"
        wait_for 30 slurmctld scontrol ping
    fi
    if ! running "$conf/slurmd.pid"; then
        /usr/sbin/slurmd -f "$conf/slurm.conf"
    fi
    wait_for 30 "slurmd (node $NODE idle)" bash -c "sinfo -h -N -o %t | grep -Eq '^(idle|mix|alloc)'"
    scontrol update nodename="$NODE" state=resume >/dev/null 2>&1 || true
}

start_mlflow() {
    local pid="$STATE/mlflow.pid"
    mkdir -p "$STATE/artifacts"
    if ! running "$pid"; then
        [[ -x $MLFLOW ]] || fail "no mlflow at $MLFLOW: run make install first"
        port_free "$MLFLOW_PORT" "the MLflow server" CLUSTER_MLFLOW_PORT
        MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false nohup "$MLFLOW" server \
            --backend-store-uri "postgresql://sbert:sbert@127.0.0.1:$PG_PORT/mlflow" \
            --serve-artifacts --artifacts-destination "$STATE/artifacts" \
            --host 127.0.0.1 --port "$MLFLOW_PORT" --workers 2 \
            >"$STATE/log/mlflow.log" 2>&1 &
        echo $! > "$pid"
    fi
    for _ in $(seq 480); do
        curl -sf "http://127.0.0.1:$MLFLOW_PORT/health" >/dev/null 2>&1 && return 0
        running "$pid" || fail "the MLflow server ended: $(grep -v '^\s' "$STATE/log/mlflow.log" | tail -1) (see $STATE/log/mlflow.log)"
        sleep 0.25
    done
    fail "the MLflow server did not come up in 120 s (see $STATE/log/mlflow.log)"
}

main() {
    mkdir -p "$STATE/log"
    install_packages
    PG_BIN="$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)"
    start_munge
    start_postgres
    start_mariadb
    write_slurm_conf
    export SLURM_CONF="$STATE/slurm/slurm.conf"
    start_slurm
    start_mlflow
    cat > "$STATE/env" <<EOF
export MLFLOW_TRACKING_URI=http://127.0.0.1:$MLFLOW_PORT
export SBERT_EXP_CLUSTER_POSTGRES=postgresql://sbert:sbert@127.0.0.1:$PG_PORT/mlflow
EOF
    say "up: PostgreSQL 127.0.0.1:$PG_PORT, MLflow http://127.0.0.1:$MLFLOW_PORT (artifacts in $STATE/artifacts), SLURM partition debug on $NODE with accounting; source $STATE/env"
}

main "$@"
