#!/usr/bin/env bash
# A single-node SLURM on this machine, for bigdens' SLURM tests and for trying profiles.
#
#   bash cluster_configs/local-slurm/slurm.sh start    # install (Debian, root) if needed, start, wait until ready
#   bash cluster_configs/local-slurm/slurm.sh status   # exit 0 when a job can run
#   bash cluster_configs/local-slurm/slurm.sh stop     # stop the daemons started here (by PID)
#
# No systemd: munged runs as the munge user, slurmctld and slurmd as root, each with a
# PID file under $STATE. Idempotent: `start` on a running cluster only checks it.
set -euo pipefail

STATE=${BIGDENS_SLURM_STATE:-/var/lib/bigdens-slurm}
CONF=/etc/slurm/slurm.conf
HOST=$(hostname -s)

log() { echo "local-slurm: $*" >&2; }

alive() {  # alive PIDFILE: true if the process runs and is not a zombie (kill -0 is fooled by zombies)
    local pid
    [[ -f $1 ]] || return 1
    pid=$(cat "$1")
    [[ -r /proc/$pid/stat ]] || return 1
    [[ $(awk '{print $3}' "/proc/$pid/stat") != Z ]]
}

install() {
    if command -v slurmctld >/dev/null && command -v munged >/dev/null && command -v sbatch >/dev/null; then
        return
    fi
    if [[ $(id -u) != 0 ]] || ! command -v apt-get >/dev/null; then
        log "slurm-wlm and munge are not installed and this is not root with apt-get: cannot install"
        exit 3
    fi
    log "installing slurm-wlm and munge (Debian packages)"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >/dev/null
    apt-get install -y -qq --no-install-recommends slurm-wlm munge >/dev/null
}

write_conf() {
    local cpus mem
    cpus=$(nproc)
    # RealMemory above what slurmd measures drains the node: stay at 85 % of MemTotal.
    mem=$(awk '/MemTotal/ {print int($2 / 1024 * 0.85)}' /proc/meminfo)
    mkdir -p /etc/slurm "$STATE"/{ctld,d,log}
    cat >"$CONF" <<EOF
ClusterName=bigdens-local
SlurmctldHost=$HOST(127.0.0.1)
AuthType=auth/munge
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
SchedulerType=sched/backfill
ReturnToService=2
MailProg=/bin/true
SlurmUser=root
SlurmdUser=root
StateSaveLocation=$STATE/ctld
SlurmdSpoolDir=$STATE/d
SlurmctldPidFile=$STATE/slurmctld.pid
SlurmdPidFile=$STATE/slurmd.pid
SlurmctldLogFile=$STATE/log/slurmctld.log
SlurmdLogFile=$STATE/log/slurmd.log
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
MinJobAge=30
KillWait=5
SlurmctldTimeout=30
SlurmdTimeout=30
NodeName=$HOST NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem State=UNKNOWN
PartitionName=debug Nodes=$HOST Default=YES MaxTime=INFINITE State=UP OverSubscribe=NO
EOF
}

start_munge() {
    if alive "$STATE/munged.pid"; then return; fi
    mkdir -p /etc/munge /run/munge /var/log/munge /var/lib/munge
    if [[ ! -s /etc/munge/munge.key ]]; then
        dd if=/dev/urandom bs=1 count=1024 of=/etc/munge/munge.key status=none
    fi
    chown -R munge:munge /etc/munge /run/munge /var/log/munge /var/lib/munge
    chmod 0700 /etc/munge /var/log/munge /var/lib/munge
    chmod 0400 /etc/munge/munge.key
    chmod 0755 /run/munge
    su -s /bin/sh munge -c "munged --force --pid-file=/run/munge/munged.pid"
    for _ in $(seq 50); do [[ -s /run/munge/munged.pid ]] && break; sleep 0.1; done
    cp /run/munge/munged.pid "$STATE/munged.pid"
    # munge -n hangs ~2 s per call while munged is down: bound it.
    timeout 5 munge -n >/dev/null || { log "munged did not start"; exit 4; }
}

start_slurm() {
    if ! alive "$STATE/slurmctld.pid"; then
        slurmctld -c -f "$CONF"
    fi
    if ! alive "$STATE/slurmd.pid"; then
        slurmd -N "$HOST" -f "$CONF"
    fi
}

ready() {
    timeout 5 sinfo -h -o '%T' 2>/dev/null | grep -qE '^(idle|mixed|allocated)'
}

case "${1:-start}" in
start)
    install
    mkdir -p "$STATE"
    if ready; then log "already running"; exit 0; fi
    write_conf
    start_munge
    start_slurm
    for _ in $(seq 120); do
        if ready; then
            log "ready: $(sinfo -h -o '%N %c CPUs %m MB %T')"
            exit 0
        fi
        # A node left 'down' or 'drained' by an earlier run comes back here.
        timeout 5 scontrol update NodeName="$HOST" State=RESUME >/dev/null 2>&1 || true
        sleep 0.5
    done
    log "SLURM did not become ready; see $STATE/log/"
    exit 5
    ;;
status)
    ready
    ;;
stop)
    for name in slurmd slurmctld munged; do
        if alive "$STATE/$name.pid"; then
            kill "$(cat "$STATE/$name.pid")" 2>/dev/null || true
        fi
    done
    for _ in $(seq 50); do
        alive "$STATE/slurmd.pid" || alive "$STATE/slurmctld.pid" || alive "$STATE/munged.pid" || break
        sleep 0.1
    done
    rm -f "$STATE"/{slurmd,slurmctld,munged}.pid
    log "stopped"
    ;;
*)
    echo "usage: $0 start|status|stop" >&2
    exit 2
    ;;
esac
