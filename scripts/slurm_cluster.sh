#!/usr/bin/env bash
# slurm_cluster.sh — a real one-node SLURM cluster on this machine, for tests and for
# trying `snakemake --profile profiles/slurm` without an HPC account.
#
#   scripts/slurm_cluster.sh install   apt-get install munge slurmctld slurmd slurm-client
#   scripts/slurm_cluster.sh start     write slurm.conf for THIS host, start munged,
#                                      slurmctld, slurmd; wait until the node is idle
#   scripts/slurm_cluster.sh stop      stop the three daemons
#   scripts/slurm_cluster.sh status    daemons + sinfo; exit 0 only if the node answers
#   scripts/slurm_cluster.sh restart   stop, then start
#
# Must run as root (it writes /etc/slurm and /etc/munge and starts daemons).
# No systemd needed: the daemons are started directly and detach from the caller
# (stdin/stdout/stderr are not inherited, so a CI step that captures output does
# not hang). Every subcommand is idempotent.
#
# Tunables (environment):
#   SLURM_CLUSTER_TIMEOUT   seconds to wait for the node to become idle (default 60)
#   SLURM_CLUSTER_CPUS      advertise this many CPUs instead of the real count
#                           (oversubscribes the machine; uses config_overrides)
#   SLURM_CLUSTER_MEM_MB    advertise this RealMemory (MB) instead of the real value
#   SLURM_CLUSTER_FORCE=1   overwrite a slurm.conf this script did not write
#
# Documentation: docs/slurm.md
set -euo pipefail

CONF_DIR=/etc/slurm
CONF=$CONF_DIR/slurm.conf
MARKER="# written by motifpipe scripts/slurm_cluster.sh"
CLUSTER_NAME=motifpipe
PARTITION=debug
STATE_DIR=/var/spool/slurmctld
SPOOL_DIR=/var/spool/slurmd
LOG_DIR=/var/log/slurm
CTLD_PID=/run/slurmctld.pid
SLURMD_PID=/run/slurmd.pid
MUNGE_KEY=/etc/munge/munge.key
MUNGE_SOCKET_DIR=/run/munge
MUNGE_PID=$MUNGE_SOCKET_DIR/munged.pid
TIMEOUT=${SLURM_CLUSTER_TIMEOUT:-60}
PACKAGES=(munge slurmctld slurmd slurm-client)

log() { printf 'slurm_cluster: %s\n' "$*" >&2; }
die() {
    printf 'slurm_cluster: error: %s\n' "$*" >&2
    exit 1
}

need_root() {
    [[ $(id -u) -eq 0 ]] || die "'$1' must run as root (it manages system daemons)"
}

# A pid file names a live process whose command is $2.
pid_alive() {
    local pidfile=$1 name=$2 pid
    [[ -s $pidfile ]] || return 1
    pid=$(<"$pidfile")
    [[ $pid =~ ^[0-9]+$ ]] || return 1
    [[ -r /proc/$pid/comm ]] || return 1
    [[ $(</proc/"$pid"/comm) == "$name" ]] || return 1
    # a killed daemon not yet reaped by PID 1 is a zombie: dead
    local stat
    stat=$(</proc/"$pid"/stat) 2>/dev/null || return 1
    stat=${stat##*) }
    [[ ${stat%% *} != Z ]]
}

node_name() { hostname -s; }

# ---------------------------------------------------------------------- install
cmd_install() {
    need_root install
    local missing=() p
    for p in "${PACKAGES[@]}"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' ||
            missing+=("$p")
    done
    if ((${#missing[@]} == 0)); then
        log "already installed: ${PACKAGES[*]}"
        return 0
    fi
    log "installing: ${missing[*]}"
    # Keep package maintainer scripts from trying to start the daemons with the
    # packaged (empty) configuration: `start` does that with a real one.
    local made_policy=0
    if [[ ! -e /usr/sbin/policy-rc.d ]]; then
        printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
        chmod 755 /usr/sbin/policy-rc.d
        made_policy=1
    fi
    local rc=0
    export DEBIAN_FRONTEND=noninteractive
    local apt_opts=(-y -q --no-install-recommends -o Dpkg::Options::=--force-confdef
        -o Dpkg::Options::=--force-confold)
    if ! apt-get install "${apt_opts[@]}" "${missing[@]}" </dev/null; then
        log "apt-get install failed; running apt-get update and retrying"
        apt-get update -q </dev/null && apt-get install "${apt_opts[@]}" "${missing[@]}" </dev/null || rc=$?
    fi
    ((made_policy)) && rm -f /usr/sbin/policy-rc.d
    ((rc == 0)) || die "apt-get install ${missing[*]} failed (exit $rc)"
    log "installed: $(slurmctld -V 2>/dev/null || echo '?'), $(munged -V 2>&1 | head -1)"
}

# ------------------------------------------------------------------ slurm.conf
# `slurmd -C` prints what slurmd will report when it registers, e.g.
#   NodeName=vm CPUs=2 Boards=1 SocketsPerBoard=1 CoresPerSocket=2 ThreadsPerCore=1 RealMemory=24105
# Using exactly those values keeps the node from being drained for "Low RealMemory"
# or a CPU count mismatch.
hw_field() { sed -n "s/.*\b$1=\([0-9]*\).*/\1/p" <<<"$HW" | head -1; }

write_conf() {
    local node cpus mem sockets cores threads overrides="" defmem
    node=$(node_name)
    HW=$(slurmd -C 2>/dev/null | head -1) || true
    [[ $HW == NodeName=* ]] || die "'slurmd -C' did not describe this machine (got: ${HW:-nothing})"
    cpus=$(hw_field CPUs)
    sockets=$(hw_field SocketsPerBoard)
    cores=$(hw_field CoresPerSocket)
    threads=$(hw_field ThreadsPerCore)
    mem=$(hw_field RealMemory)
    [[ -n $cpus && -n $mem ]] || die "could not read CPUs/RealMemory from: $HW"
    local topology="SocketsPerBoard=$sockets CoresPerSocket=$cores ThreadsPerCore=$threads"
    if [[ -n ${SLURM_CLUSTER_CPUS:-} ]]; then
        cpus=$SLURM_CLUSTER_CPUS
        topology="SocketsPerBoard=1 CoresPerSocket=$cpus ThreadsPerCore=1"
        overrides="SlurmdParameters=config_overrides"
    fi
    if [[ -n ${SLURM_CLUSTER_MEM_MB:-} ]]; then
        mem=$SLURM_CLUSTER_MEM_MB
        overrides="SlurmdParameters=config_overrides"
    fi
    # Without a default, a job that gives no --mem gets the whole node's memory
    # and jobs then run one at a time.
    defmem=$((mem / cpus / 2))
    ((defmem > 2048)) && defmem=2048
    ((defmem < 100)) && defmem=100

    mkdir -p "$CONF_DIR"
    local tmp
    tmp=$(mktemp "$CONF_DIR/.slurm.conf.XXXXXX")
    cat >"$tmp" <<EOF
$MARKER
# One-node test cluster for host '$node' ($(date -u +%Y-%m-%dT%H:%MZ)). Regenerated by
# 'start'; edit the script, not this file.
ClusterName=$CLUSTER_NAME
SlurmctldHost=$node(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CryptoType=crypto/munge
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=$defmem
ReturnToService=2
# snakemake-executor-plugin-slurm polls with 'squeue' here (no accounting, so no
# sacct): finished jobs must stay visible to squeue for >= 3 x its first poll delay.
MinJobAge=300
SchedulerType=sched/backfill
SlurmctldPidFile=$CTLD_PID
SlurmdPidFile=$SLURMD_PID
StateSaveLocation=$STATE_DIR
SlurmdSpoolDir=$SPOOL_DIR
SlurmctldLogFile=$LOG_DIR/slurmctld.log
SlurmdLogFile=$LOG_DIR/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
SlurmctldTimeout=120
SlurmdTimeout=300
InactiveLimit=0
KillWait=30
Waittime=0
${overrides}
NodeName=$node NodeAddr=127.0.0.1 CPUs=$cpus $topology RealMemory=$mem State=UNKNOWN
PartitionName=$PARTITION Nodes=$node Default=YES MaxTime=INFINITE State=UP
EOF
    chmod 644 "$tmp"
    if [[ -f $CONF ]] && cmp -s <(grep -v '^# One-node' "$CONF") <(grep -v '^# One-node' "$tmp"); then
        rm -f "$tmp"
        CONF_CHANGED=0
    else
        mv -f "$tmp" "$CONF"
        CONF_CHANGED=1
        log "wrote $CONF (node $node, CPUs=$cpus, RealMemory=$mem MB)"
    fi
}

# ----------------------------------------------------------------------- munge
ensure_munge_key() {
    getent passwd munge >/dev/null || die "user 'munge' missing: run '$0 install' first"
    mkdir -p /etc/munge /var/lib/munge /var/log/munge "$MUNGE_SOCKET_DIR"
    if [[ ! -s $MUNGE_KEY ]]; then
        if command -v mungekey >/dev/null; then
            mungekey --create --keyfile="$MUNGE_KEY" --force
        else
            dd if=/dev/urandom of="$MUNGE_KEY" bs=1 count=1024 status=none
        fi
        log "created $MUNGE_KEY"
    fi
    chown munge:munge /etc/munge "$MUNGE_KEY" /var/lib/munge /var/log/munge "$MUNGE_SOCKET_DIR"
    chmod 700 /etc/munge
    chmod 400 "$MUNGE_KEY"
    chmod 755 "$MUNGE_SOCKET_DIR"
}

# Start a daemon detached from the caller: new session, no inherited stdio.
spawn() {
    setsid "$@" </dev/null >>"$LOG_DIR/startup.log" 2>&1
}

start_munged() {
    if pid_alive "$MUNGE_PID" munged && munge -n </dev/null | unmunge >/dev/null 2>&1; then
        return 0
    fi
    ensure_munge_key
    rm -f "$MUNGE_PID"
    # munged refuses stale sockets from a killed instance only with --force
    runuser -u munge -- setsid /usr/sbin/munged --force </dev/null >>"$LOG_DIR/startup.log" 2>&1 ||
        die "munged failed to start; see /var/log/munge/munged.log"
    local i
    for ((i = 0; i < 50; i++)); do
        munge -n </dev/null 2>/dev/null | unmunge >/dev/null 2>&1 && {
            log "munged up"
            return 0
        }
        sleep 0.2
    done
    die "munged started but 'munge -n | unmunge' fails; see /var/log/munge/munged.log"
}

start_slurmctld() {
    if pid_alive "$CTLD_PID" slurmctld; then
        # Node and partition lines are only re-read on restart. State (queued and
        # running jobs) is saved in $STATE_DIR and survives it.
        ((CONF_CHANGED)) || return 0
        stop_pidfile "$CTLD_PID" slurmctld
    fi
    spawn /usr/sbin/slurmctld || die "slurmctld failed to start; see $LOG_DIR/slurmctld.log"
    local i
    for ((i = 0; i < 50; i++)); do
        scontrol ping 2>/dev/null | grep -q 'is UP' && {
            log "slurmctld up"
            return 0
        }
        sleep 0.2
    done
    tail -n 20 "$LOG_DIR/slurmctld.log" >&2 || true
    die "slurmctld did not answer 'scontrol ping' within 10 s; see $LOG_DIR/slurmctld.log"
}

start_slurmd() {
    if pid_alive "$SLURMD_PID" slurmd; then
        if ((CONF_CHANGED)); then
            # slurmd re-reads hardware and node lines only on restart
            stop_pidfile "$SLURMD_PID" slurmd
        else
            return 0
        fi
    fi
    spawn /usr/sbin/slurmd -N "$(node_name)" || die "slurmd failed to start; see $LOG_DIR/slurmd.log"
    log "slurmd started"
}

wait_idle() {
    local node state="" reason="" deadline
    node=$(node_name)
    deadline=$((SECONDS + TIMEOUT))
    while ((SECONDS < deadline)); do
        state=$(sinfo -h -N -n "$node" -o '%T' 2>/dev/null | head -1 || true)
        case $state in
            idle | mixed | allocated | completing)
                # slurmctld keeps a node 'idle' for SlurmdTimeout after slurmd
                # died; ask the local slurmd itself too.
                if scontrol show slurmd >/dev/null 2>&1; then
                    log "node $node is $state"
                    return 0
                fi
                ;;
            down* | drain* | fail*)
                # ReturnToService=2 clears most of these once slurmd registers;
                # a node left down by an earlier run needs a nudge.
                scontrol update nodename="$node" state=resume >/dev/null 2>&1 || true
                ;;
        esac
        sleep 1
    done
    reason=$(scontrol show node "$node" 2>/dev/null | grep -oE 'Reason=.*' || true)
    {
        echo "--- sinfo"
        sinfo -N -l 2>&1 || true
        echo "--- $LOG_DIR/slurmd.log (tail)"
        tail -n 15 "$LOG_DIR/slurmd.log" 2>/dev/null || true
        echo "--- $LOG_DIR/slurmctld.log (tail)"
        tail -n 15 "$LOG_DIR/slurmctld.log" 2>/dev/null || true
    } >&2
    die "node $node not idle after ${TIMEOUT}s (state: '${state:-no answer}' ${reason})"
}

cmd_start() {
    need_root start
    if ! command -v slurmctld >/dev/null || ! command -v munged >/dev/null; then
        die "SLURM/munge not installed: run '$0 install' first"
    fi
    if [[ -f $CONF ]] && ! grep -qF "$MARKER" "$CONF" && [[ ${SLURM_CLUSTER_FORCE:-0} != 1 ]]; then
        die "$CONF exists and was not written by this script; set SLURM_CLUSTER_FORCE=1 to overwrite"
    fi
    mkdir -p "$STATE_DIR" "$SPOOL_DIR" "$LOG_DIR"
    CONF_CHANGED=0
    write_conf
    start_munged
    start_slurmctld
    start_slurmd
    wait_idle
    sinfo
}

# ------------------------------------------------------------------------ stop
stop_pidfile() {
    local pidfile=$1 name=$2 pid i
    pid_alive "$pidfile" "$name" || {
        rm -f "$pidfile"
        return 0
    }
    pid=$(<"$pidfile")
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < 100; i++)); do
        [[ -d /proc/$pid ]] || {
            rm -f "$pidfile"
            log "$name stopped"
            return 0
        }
        sleep 0.1
    done
    log "$name (pid $pid) ignored SIGTERM for 10 s; sending SIGKILL"
    kill -KILL "$pid" 2>/dev/null || true
    rm -f "$pidfile"
}

cmd_stop() {
    need_root stop
    stop_pidfile "$SLURMD_PID" slurmd
    stop_pidfile "$CTLD_PID" slurmctld
    stop_pidfile "$MUNGE_PID" munged
}

# ---------------------------------------------------------------------- status
cmd_status() {
    local rc=0 d
    for d in "munged:$MUNGE_PID" "slurmctld:$CTLD_PID" "slurmd:$SLURMD_PID"; do
        if pid_alive "${d#*:}" "${d%%:*}"; then
            printf '%-10s running (pid %s)\n' "${d%%:*}" "$(<"${d#*:}")"
        else
            printf '%-10s not running\n' "${d%%:*}"
            rc=3
        fi
    done
    if command -v sinfo >/dev/null && sinfo -h >/dev/null 2>&1; then
        sinfo -N -l
        squeue 2>/dev/null || true
    else
        echo "sinfo: controller not answering"
        rc=3
    fi
    return $rc
}

usage() {
    sed -n '2,22p' "$0" | sed 's/^# \{0,1\}//'
}

case ${1:-} in
    install) cmd_install ;;
    start) cmd_start ;;
    stop) cmd_stop ;;
    restart)
        cmd_stop
        cmd_start
        ;;
    status) cmd_status ;;
    -h | --help | help) usage ;;
    *)
        usage >&2
        exit 2
        ;;
esac
