#!/usr/bin/env bash
# A local one-node SLURM cluster on this machine, for trying famr-run's SLURM launcher
# (hydra/launcher=slurm) without a real cluster. docs/scaling.md, "A local cluster".
#
# Usage: scripts/slurm_local.sh start|stop|status
#   start   install slurm-wlm, slurmdbd, munge and mariadb-server with apt-get when missing (needs
#           root), write a one-node configuration for this machine into the state directory, start
#           munged, a private MariaDB server, slurmdbd (so that sacct answers), slurmctld and slurmd
#           from it (as root), wait until the node is idle, print how to use it
#   stop    stop exactly the daemons that start started (by their recorded PIDs); idempotent
#   status  say whether each recorded daemon runs, and print sinfo
#
# Environment:
#   FAMR_SLURM_DIR      state directory (default: $HOME/.famr-slurm); never put it inside the repo
#   FAMR_SLURM_PORT     slurmctld's port (default 6817); slurmd gets the next one, slurmdbd the one after
#   FAMR_SLURM_TIMEOUT  seconds start waits for the node to become idle (default 60)
set -euo pipefail

STATE_DIR=${FAMR_SLURM_DIR:-$HOME/.famr-slurm}
CTLD_PORT=${FAMR_SLURM_PORT:-6817}
DBD_PORT=$((CTLD_PORT + 2))
TIMEOUT=${FAMR_SLURM_TIMEOUT:-60}
PARTITION=local
DAEMONS=(munged mariadbd slurmdbd slurmctld slurmd) # start order; stop goes backwards

CONF=$STATE_DIR/slurm.conf
RUN_DIR=$STATE_DIR/run
LOG_DIR=$STATE_DIR/log
MUNGE_DIR=$STATE_DIR/munge
MUNGE_KEY=$MUNGE_DIR/munge.key
MUNGE_SOCKET=$MUNGE_DIR/munge.socket.2
ACCT_DIR=$STATE_DIR/accounting
DBD_CONF=$STATE_DIR/slurmdbd.conf
DB_DIR=$STATE_DIR/mariadb
DB_SOCKET=$RUN_DIR/mariadbd.sock

die() {
    echo "slurm_local.sh: $*" >&2
    exit 1
}

usage() {
    echo "usage: $0 start|stop|status (one of them, nothing else)" >&2
    exit 2
}

pid_file() { echo "$RUN_DIR/$1.pid"; }

# The PID recorded for daemon $1 if that process still runs and is that daemon; empty otherwise
# (a stale file, or a PID the system has since given to another program).
running_pid() {
    local file pid comm
    file=$(pid_file "$1")
    [[ -s $file ]] || return 0
    pid=$(tr -dc '0-9' <"$file")
    [[ -n $pid ]] || return 0
    comm=$(cat "/proc/$pid/comm" 2>/dev/null) || return 0
    [[ $comm == "$1" ]] && echo "$pid"
    return 0
}

need_root() {
    [[ $(id -u) -eq 0 ]] || die "$1 needs root (the daemons run as root): run it with sudo or as root"
}

install_packages() {
    local missing=()
    command -v slurmctld >/dev/null && command -v slurmd >/dev/null && command -v sinfo >/dev/null ||
        missing+=(slurm-wlm)
    command -v slurmdbd >/dev/null || missing+=(slurmdbd)
    command -v munged >/dev/null || missing+=(munge)
    command -v mariadbd >/dev/null && command -v mariadb-install-db >/dev/null || missing+=(mariadb-server)
    [[ ${#missing[@]} -eq 0 ]] && return 0
    command -v apt-get >/dev/null ||
        die "${missing[*]} missing and no apt-get here: install SLURM and munge with this system's package manager"
    echo "Installing ${missing[*]} with apt-get ..."
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q >/dev/null
    apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null
}

# The node line: slurmd -C's view of this machine (CPUs, topology, RealMemory), else nproc and free.
node_line() {
    local line
    line=$(slurmd -C 2>/dev/null | grep '^NodeName=' || true)
    if [[ -z $line ]]; then
        line="NodeName=$(hostname -s) CPUs=$(nproc) RealMemory=$(free -m | awk '/^Mem:/ {print $2}')"
    fi
    echo "$line"
}

write_config() {
    local node host cpus mem
    node=$(node_line)
    host=$(sed -E 's/^NodeName=([^ ]+).*/\1/' <<<"$node")
    cpus=$(grep -oE 'CPUs=[0-9]+' <<<"$node" | cut -d= -f2)
    mem=$(grep -oE 'RealMemory=[0-9]+' <<<"$node" | cut -d= -f2)
    [[ -n $host && -n $cpus && -n $mem ]] || die "could not read this machine's CPUs and memory (slurmd -C, nproc, free)"

    cat >"$CONF" <<EOF
# Written by scripts/slurm_local.sh start: a one-node SLURM cluster on $host.
# Regenerated on every start; use it with: export SLURM_CONF=$CONF
ClusterName=famr-local
SlurmctldHost=$host(127.0.0.1)
SlurmctldPort=$CTLD_PORT
SlurmdPort=$((CTLD_PORT + 1))
SlurmUser=root
SlurmdUser=root

# munge with our own key and socket, so a system munged (if any) is neither needed nor disturbed
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$MUNGE_SOCKET

StateSaveLocation=$STATE_DIR/spool/slurmctld
SlurmdSpoolDir=$STATE_DIR/spool/slurmd
SlurmctldPidFile=$(pid_file slurmctld)
SlurmdPidFile=$(pid_file slurmd)
SlurmctldLogFile=$LOG_DIR/slurmctld.log
SlurmdLogFile=$LOG_DIR/slurmd.log

# no cgroups needed (works in containers)
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
MpiDefault=none
SwitchType=switch/none
ReturnToService=2

# jobs share the node by core and memory
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=$((mem / cpus))

# accounting through slurmdbd (and our MariaDB), so that sacct answers; 22.05 has no text-file
# accounting storage, and with accounting_storage/none sacct only says "accounting storage is disabled".
# Finished jobs are also written to a text file (sacct -c reads that one).
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
AccountingStoragePort=$((CTLD_PORT + 2))
# for slurmdbd connections this names the munge socket (else the clients look for the system one)
AccountingStoragePass=$MUNGE_SOCKET
JobCompType=jobcomp/filetxt
JobCompLoc=$ACCT_DIR/jobcomp.txt

$node NodeAddr=127.0.0.1 State=UNKNOWN
PartitionName=$PARTITION Nodes=$host Default=YES MaxTime=INFINITE State=UP
EOF

    # slurmdbd finds this file next to $SLURM_CONF; it must be private to SlurmUser
    (
        umask 077
        cat >"$DBD_CONF" <<EOF
# Written by scripts/slurm_local.sh start. slurmdbd stores accounting in the MariaDB server that
# start runs on the unix socket $DB_SOCKET (root logs in by socket authentication, no password).
AuthType=auth/munge
AuthInfo=socket=$MUNGE_SOCKET
DbdHost=localhost
DbdPort=$((CTLD_PORT + 2))
SlurmUser=root
StorageType=accounting_storage/mysql
StorageHost=localhost
StorageUser=root
StorageLoc=slurm_acct_db
PidFile=$(pid_file slurmdbd)
LogFile=$LOG_DIR/slurmdbd.log
EOF
    )
    chmod 600 "$DBD_CONF"
}

start_munged() {
    if [[ ! -s $MUNGE_KEY ]]; then
        if command -v mungekey >/dev/null; then
            mungekey --create --keyfile="$MUNGE_KEY"
        else
            dd if=/dev/urandom of="$MUNGE_KEY" bs=1024 count=1 status=none
        fi
    fi
    chmod 400 "$MUNGE_KEY"
    # --force: munged refuses to run as root (and in some directories) without it
    munged --force --socket="$MUNGE_SOCKET" --key-file="$MUNGE_KEY" --pid-file="$(pid_file munged)" \
        --log-file="$LOG_DIR/munged.log" --seed-file="$MUNGE_DIR/munged.seed"
}

wait_for_pid() {
    local i
    for ((i = 0; i < 50; i++)); do
        [[ -n $(running_pid "$1") ]] && return 0
        sleep 0.2
    done
    die "$1 did not start; see $LOG_DIR/$1.log (then run: $0 stop)"
}

# Until something listens on 127.0.0.1:$1 ($2 names it in the error): a PID file appears before the port opens.
wait_for_port() {
    local i
    for ((i = 0; i < 150; i++)); do
        (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
        sleep 0.2
    done
    die "$2 did not listen on port $1 within 30 s; see $LOG_DIR/$2.log (then run: $0 stop)"
}

# A MariaDB server of our own: data in $DB_DIR, unix socket only (no TCP port).
start_mariadbd() {
    if [[ ! -d $DB_DIR/mysql ]]; then
        mariadb-install-db --user=root --datadir="$DB_DIR" --auth-root-authentication-method=socket \
            --skip-test-db >"$LOG_DIR/mariadb-install.log" 2>&1 ||
            die "mariadb-install-db failed; see $LOG_DIR/mariadb-install.log"
    fi
    setsid mariadbd --no-defaults --user=root --datadir="$DB_DIR" --socket="$DB_SOCKET" \
        --pid-file="$(pid_file mariadbd)" --skip-networking --innodb-buffer-pool-size=64M \
        --innodb-lock-wait-timeout=900 \
        --log-error="$LOG_DIR/mariadbd.log" </dev/null >/dev/null 2>&1 &
    local i
    for ((i = 0; i < 150; i++)); do
        mariadb-admin --no-defaults --socket="$DB_SOCKET" -u root ping >/dev/null 2>&1 && return 0
        sleep 0.2
    done
    die "MariaDB did not answer within 30 s; see $LOG_DIR/mariadbd.log (then run: $0 stop)"
}

cmd_start() {
    need_root start
    local d running=()
    for d in "${DAEMONS[@]}"; do
        [[ -n $(running_pid "$d") ]] && running+=("$d")
    done
    if [[ ${#running[@]} -eq ${#DAEMONS[@]} ]]; then
        echo "Already running (state in $STATE_DIR)."
        print_usage_hint
        return 0
    elif [[ ${#running[@]} -gt 0 ]]; then
        die "only ${running[*]} of ${DAEMONS[*]} run: run '$0 stop' first, then start"
    fi

    install_packages
    mkdir -p "$RUN_DIR" "$LOG_DIR" "$MUNGE_DIR" "$ACCT_DIR" "$DB_DIR" "$STATE_DIR/spool/slurmctld" "$STATE_DIR/spool/slurmd"
    chmod 755 "$STATE_DIR" # clients (any user) read slurm.conf
    chmod 700 "$MUNGE_DIR" # the munge key stays private
    write_config
    export SLURM_CONF=$CONF

    start_munged
    wait_for_pid munged
    start_mariadbd
    wait_for_pid mariadbd
    MYSQL_UNIX_PORT=$DB_SOCKET slurmdbd
    wait_for_pid slurmdbd
    # slurmctld gives up for good when slurmdbd does not answer yet (a fresh database takes a moment to set up)
    wait_for_port "$DBD_PORT" slurmdbd
    slurmctld -f "$CONF"
    wait_for_pid slurmctld
    slurmd -f "$CONF"
    wait_for_pid slurmd

    local i state=""
    for ((i = 0; i < TIMEOUT; i++)); do
        state=$(sinfo -h -p "$PARTITION" -o '%t' 2>/dev/null | head -n1 || true)
        [[ $state == idle ]] && break
        sleep 1
    done
    if [[ $state != idle ]]; then
        echo "slurm_local.sh: the node is not idle after ${TIMEOUT}s (state: '${state:-no answer}')." >&2
        sinfo -R 2>/dev/null >&2 || true
        echo "Logs: $LOG_DIR. Stopping the daemons again." >&2
        cmd_stop >&2
        exit 1
    fi
    echo "Local SLURM cluster up: node $(sinfo -h -o '%N' | head -n1), partition '$PARTITION', state in $STATE_DIR."
    print_usage_hint
}

print_usage_hint() {
    cat <<EOF
Use it from any shell on this machine:
    export SLURM_CONF=$CONF
    sinfo; srun -N1 hostname; sbatch --wrap 'sleep 1'; squeue; sacct
famr-run (no GPU here, so drop famr's GPU default and fit the node):
    famr-run -m hydra/launcher=slurm hydra.launcher.gpus_per_node=null hydra.launcher.cpus_per_task=1 hydra.launcher.mem_gb=2 ...
Stop it: $0 stop
EOF
}

cmd_stop() {
    local d pid i stopped=0
    # backwards: slurmd, slurmctld, slurmdbd, mariadbd, then munged (the others need it while they shut down)
    for d in slurmd slurmctld slurmdbd mariadbd munged; do
        pid=$(running_pid "$d")
        if [[ -z $pid ]]; then
            rm -f "$(pid_file "$d")"
            continue
        fi
        kill -0 "$pid" 2>/dev/null || need_root stop
        kill -TERM "$pid" 2>/dev/null || true
        for ((i = 0; i < 150; i++)); do
            [[ -d /proc/$pid ]] || break
            sleep 0.2
        done
        if [[ -d /proc/$pid ]]; then
            echo "$d ($pid) ignored SIGTERM for 30 s; sending SIGKILL"
            kill -KILL "$pid" 2>/dev/null || true
        fi
        rm -f "$(pid_file "$d")"
        echo "stopped $d ($pid)"
        stopped=1
    done
    [[ $stopped -eq 1 ]] || echo "Nothing to stop (no daemon of $STATE_DIR runs)."
    return 0
}

cmd_status() {
    local d pid all=1
    for d in "${DAEMONS[@]}"; do
        pid=$(running_pid "$d")
        if [[ -n $pid ]]; then
            echo "$d: running (pid $pid)"
        else
            echo "$d: not running"
            all=0
        fi
    done
    if [[ $all -eq 1 && -f $CONF ]]; then
        SLURM_CONF=$CONF sinfo || true
        echo "export SLURM_CONF=$CONF"
    else
        echo "(not all daemons run: no sinfo; '$0 start' starts them)"
        return 3
    fi
}

[[ $# -eq 1 ]] || usage
case $1 in
start) cmd_start ;;
stop) cmd_stop ;;
status) cmd_status ;;
*) usage ;;
esac
