#!/usr/bin/env bash
# A one-node SLURM cluster with accounting (slurmdbd + MariaDB) on this machine: for the SLURM
# tests (tests/test_slurm.py) and for trying `hydra/launcher=slurm` without a real cluster.
# Debian/Ubuntu, run as root; needs no systemd (every daemon is started and stopped here).
#
#   bash scripts/slurm-local.sh up       install (apt) if needed, configure, start, wait for an idle node
#   bash scripts/slurm-local.sh status   the daemons and the node; exit 0 only when the node takes jobs
#   bash scripts/slurm-local.sh down     cancel the jobs left, stop the daemons by their pid files
#
# `up` is idempotent: it starts only what is not running. State lives in the standard places:
# /etc/slurm (config), /var/spool/slurmctld and /var/spool/slurmd (state), /run/slurm (pid files),
# /var/log/slurm (logs), /var/lib/mysql (the accounting database), /run/munge, /etc/munge/munge.key.
# CPUs and memory are taken from `slurmd -C`; there are no GPUs (gres), so run GPU jobs with
# `hydra.launcher.gpus_per_node=0` here. Environment: SLURM_LOCAL_WAIT_S (readiness timeout per
# daemon, default 60), SLURM_LOCAL_PARTITION (default "debug").
set -euo pipefail

PACKAGES=(slurm-wlm munge slurmdbd mariadb-server)
CONF_DIR=/etc/slurm
SLURM_CONF=$CONF_DIR/slurm.conf
DBD_CONF=$CONF_DIR/slurmdbd.conf
RUN_DIR=/run/slurm
LOG_DIR=/var/log/slurm
CTLD_SPOOL=/var/spool/slurmctld
SLURMD_SPOOL=/var/spool/slurmd
MUNGE_DIR=/run/munge
MUNGE_KEY=/etc/munge/munge.key
MYSQL_RUN=/run/mysqld
MYSQL_LOG=/var/log/mysql/mariadbd.log
CLUSTER=localcluster
PARTITION=${SLURM_LOCAL_PARTITION:-debug}
WAIT_S=${SLURM_LOCAL_WAIT_S:-60}

# name  pid file  log file (the order daemons start in; `down` stops them in reverse)
DAEMONS=(munged mariadbd slurmdbd slurmctld slurmd)
declare -A PIDFILE=(
  [munged]=$MUNGE_DIR/munged.pid
  [mariadbd]=$MYSQL_RUN/mysqld.pid
  [slurmdbd]=$RUN_DIR/slurmdbd.pid
  [slurmctld]=$RUN_DIR/slurmctld.pid
  [slurmd]=$RUN_DIR/slurmd.pid
)
declare -A LOGFILE=(
  [munged]=/var/log/munge/munged.log
  [mariadbd]=$MYSQL_LOG
  [slurmdbd]=$LOG_DIR/slurmdbd.log
  [slurmctld]=$LOG_DIR/slurmctld.log
  [slurmd]=$LOG_DIR/slurmd.log
)

say() { echo "slurm-local: $*"; }
die() { echo "slurm-local: error: $*" >&2; exit 1; }

# die with the last lines of a daemon's log
die_log() {
  local name=$1; shift
  echo "slurm-local: error: $*" >&2
  if [ -s "${LOGFILE[$name]}" ]; then
    echo "--- last lines of ${LOGFILE[$name]} ---" >&2
    tail -n 25 "${LOGFILE[$name]}" >&2
  fi
  exit 1
}

# The pid in a daemon's pid file, if that process is alive and is that daemon.
daemon_pid() {
  local name=$1 file=${PIDFILE[$1]} pid
  [ -s "$file" ] || return 1
  pid=$(tr -dc 0-9 <"$file")
  [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null || return 1
  [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = "$name" ] || return 1
  echo "$pid"
}

running() { daemon_pid "$1" >/dev/null; }

# wait_for SECONDS CMD...: until CMD succeeds (quietly); 1 on timeout
wait_for() {
  local deadline=$((SECONDS + $1)); shift
  until "$@" >/dev/null 2>&1; do
    [ "$SECONDS" -lt "$deadline" ] || return 1
    sleep 0.2
  done
}

node_name() { sed -n 's/^NodeName=\([^ ]*\).*/\1/p' "$SLURM_CONF" 2>/dev/null | head -n1; }

node_state() { sinfo -h -n "$1" -o %t 2>/dev/null | head -n1; }

node_usable() {
  local state
  state=$(node_state "$1")
  [[ $state =~ ^(idle|mix|alloc|comp)$ ]]
}

munge_ok() { munge -n | unmunge; }
ctld_ok() { scontrol ping | grep -q "is UP"; }

# -- up --------------------------------------------------------------------------------

install_packages() {
  local missing=()
  for bin in slurmctld slurmd slurmdbd munged mariadbd; do
    [ -x "/usr/sbin/$bin" ] || missing+=("$bin")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  command -v apt-get >/dev/null || die "${missing[*]} not installed and no apt-get here: install ${PACKAGES[*]}"
  say "installing ${PACKAGES[*]} (apt, --no-install-recommends)"
  mkdir -p "$LOG_DIR"
  local log=$LOG_DIR/apt-install.log
  if ! { DEBIAN_FRONTEND=noninteractive apt-get update -q \
         && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${PACKAGES[@]}"; } \
       >"$log" 2>&1; then
    tail -n 25 "$log" >&2
    die "apt-get could not install ${PACKAGES[*]} (full output: $log)"
  fi
  for bin in "${missing[@]}"; do
    [ -x "/usr/sbin/$bin" ] || die "/usr/sbin/$bin still missing after apt-get install"
  done
}

# Write $2 to $1 (mode $3) only if it differs; returns 0 if the file changed.
write_if_changed() {
  local file=$1 content=$2 mode=$3
  if [ -f "$file" ] && [ "$(cat "$file")" = "$content" ]; then
    chmod "$mode" "$file"; chown root:root "$file"
    return 1
  fi
  local tmp
  tmp=$(mktemp "$file.XXXXXX")
  printf '%s\n' "$content" >"$tmp"
  chmod "$mode" "$tmp"; chown root:root "$tmp"
  mv -f "$tmp" "$file"
}

dbd_password() {
  local pass=""
  [ -f "$DBD_CONF" ] && pass=$(sed -n 's/^StoragePass=//p' "$DBD_CONF" | head -n1)
  [ -n "$pass" ] || pass=$(head -c 48 /dev/urandom | base64 | tr -dc 'A-Za-z0-9' | head -c 24)
  echo "$pass"
}

write_configs() {
  local detected node host
  detected=$(slurmd -C 2>/dev/null | head -n1) || true
  [[ $detected == NodeName=* ]] || die "\`slurmd -C\` printed no node line (got: ${detected:-nothing})"
  node=${detected%% *}; node=${node#NodeName=}
  host=$(hostname -s)
  mkdir -p "$CONF_DIR"
  local slurm_conf
  slurm_conf="# Written by cifarzoo's scripts/slurm-local.sh: a one-node test cluster (no systemd, no cgroups).
ClusterName=$CLUSTER
SlurmctldHost=$host(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=cred_expire=10
CredType=cred/munge
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
AccountingStoragePort=6819
JobCompType=jobcomp/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
MpiDefault=none
SwitchType=switch/none
MailProg=/bin/true
ReturnToService=2
SchedulerParameters=sched_interval=5,bf_interval=5
SlurmctldPort=6817
SlurmdPort=6818
StateSaveLocation=$CTLD_SPOOL
SlurmdSpoolDir=$SLURMD_SPOOL
SlurmctldPidFile=${PIDFILE[slurmctld]}
SlurmdPidFile=${PIDFILE[slurmd]}
SlurmctldLogFile=${LOGFILE[slurmctld]}
SlurmdLogFile=${LOGFILE[slurmd]}
$detected NodeAddr=127.0.0.1 State=UNKNOWN
PartitionName=$PARTITION Nodes=$node Default=YES MaxTime=INFINITE State=UP"
  local dbd_conf
  dbd_conf="# Written by cifarzoo's scripts/slurm-local.sh (slurmdbd requires mode 600, owner root).
AuthType=auth/munge
DbdHost=localhost
DbdPort=6819
SlurmUser=root
PidFile=${PIDFILE[slurmdbd]}
LogFile=${LOGFILE[slurmdbd]}
StorageType=accounting_storage/mysql
StorageHost=localhost
StorageUser=slurm
StoragePass=$(dbd_password)
StorageLoc=slurm_acct_db"
  if write_if_changed "$SLURM_CONF" "$slurm_conf" 644; then
    say "wrote $SLURM_CONF (node: $detected)"
    # daemons started with another config: restart them with this one
    for name in slurmd slurmctld; do
      if running "$name"; then stop_daemon "$name"; fi
    done
  fi
  if write_if_changed "$DBD_CONF" "$dbd_conf" 600; then
    say "wrote $DBD_CONF"
    if running slurmdbd; then stop_daemon slurmdbd; fi
  fi
  return 0
}

start_munge() {
  install -d -o munge -g munge -m 0755 "$MUNGE_DIR"
  install -d -o munge -g munge -m 0700 /var/log/munge /var/lib/munge
  if [ ! -s "$MUNGE_KEY" ]; then
    install -d -o munge -g munge -m 0700 /etc/munge
    if command -v mungekey >/dev/null; then
      mungekey --create --keyfile="$MUNGE_KEY" >/dev/null
    else
      head -c 1024 /dev/urandom >"$MUNGE_KEY"
    fi
    chown munge:munge "$MUNGE_KEY"; chmod 0400 "$MUNGE_KEY"
  fi
  if ! running munged; then
    say "starting munged"
    runuser -u munge -- /usr/sbin/munged </dev/null >/dev/null 2>&1 \
      || die_log munged "munged did not start"
  fi
  wait_for "$WAIT_S" munge_ok || die_log munged "munge does not answer (munge -n | unmunge)"
}

start_mariadb() {
  install -d -o mysql -g mysql -m 0755 "$MYSQL_RUN"
  install -d -o mysql -g adm -m 2750 "$(dirname "$MYSQL_LOG")"
  if [ ! -d /var/lib/mysql/mysql ]; then
    say "initialising /var/lib/mysql"
    mariadb-install-db --user=mysql --datadir=/var/lib/mysql >>"$MYSQL_LOG" 2>&1 \
      || die_log mariadbd "mariadb-install-db failed"
  fi
  if ! running mariadbd; then
    say "starting mariadbd"
    setsid /usr/sbin/mariadbd --user=mysql --pid-file="${PIDFILE[mariadbd]}" \
      </dev/null >>"$MYSQL_LOG" 2>&1 &
  fi
  wait_for "$WAIT_S" mariadb-admin ping || die_log mariadbd "MariaDB does not answer (mariadb-admin ping)"
  local pass
  pass=$(sed -n 's/^StoragePass=//p' "$DBD_CONF")
  mariadb -u root <<SQL || die_log mariadbd "could not create the slurm database user"
CREATE USER IF NOT EXISTS 'slurm'@'localhost' IDENTIFIED BY '$pass';
ALTER USER 'slurm'@'localhost' IDENTIFIED BY '$pass';
GRANT ALL ON slurm_acct_db.* TO 'slurm'@'localhost';
SQL
}

# start_slurm_daemon NAME PROBE...: daemonizing slurm daemons
start_slurm_daemon() {
  local name=$1; shift
  if ! running "$name"; then
    say "starting $name"
    "/usr/sbin/$name" </dev/null >>"${LOGFILE[$name]}" 2>&1 || die_log "$name" "$name did not start"
  fi
  wait_for "$WAIT_S" "$@" || die_log "$name" "$name is not ready ($*)"
}

up() {
  [ "$(id -u)" -eq 0 ] || die "run as root (it installs packages and starts system daemons)"
  if [ -f "$SLURM_CONF" ] && status_ok; then
    say "already up: node $(node_name) is $(node_state "$(node_name)")"
    return 0
  fi
  local start=$SECONDS
  install_packages
  install -d -m 0755 "$RUN_DIR" "$LOG_DIR" "$CTLD_SPOOL" "$SLURMD_SPOOL"
  write_configs
  start_munge
  start_mariadb
  start_slurm_daemon slurmdbd sacctmgr -n list cluster
  start_slurm_daemon slurmctld ctld_ok
  local node
  node=$(node_name)
  start_slurm_daemon slurmd sinfo -h -n "$node"
  if ! wait_for "$WAIT_S" node_usable "$node"; then
    echo "slurm-local: error: node $node is '$(node_state "$node")', not idle" >&2
    sinfo -R >&2 || true
    die_log slurmd "the node does not take jobs"
  fi
  say "up in $((SECONDS - start)) s: cluster $CLUSTER, partition $PARTITION, node $node is $(node_state "$node")"
}

# -- status ---------------------------------------------------------------------------

status_ok() {
  for name in "${DAEMONS[@]}"; do running "$name" || return 1; done
  node_usable "$(node_name)"
}

status() {
  local ok=0 pid
  for name in "${DAEMONS[@]}"; do
    if pid=$(daemon_pid "$name"); then
      echo "$name: running (pid $pid)"
    else
      echo "$name: stopped"; ok=1
    fi
  done
  local node
  node=$(node_name)
  if [ -z "$node" ]; then
    echo "node: no $SLURM_CONF"; return 1
  fi
  local state
  state=$(node_state "$node") || true
  echo "node $node: ${state:-unknown}"
  node_usable "$node" || ok=1
  if [ "$ok" -eq 0 ]; then squeue 2>/dev/null || true; fi
  return "$ok"
}

# -- down -----------------------------------------------------------------------------

stop_daemon() {
  local name=$1 pid
  pid=$(daemon_pid "$name") || { rm -f "${PIDFILE[$name]}"; return 0; }
  say "stopping $name (pid $pid)"
  kill -TERM "$pid" 2>/dev/null || true
  local deadline=$((SECONDS + 30))
  while kill -0 "$pid" 2>/dev/null; do
    if [ "$SECONDS" -ge "$deadline" ]; then
      echo "slurm-local: $name (pid $pid) ignored SIGTERM for 30 s; sending SIGKILL" >&2
      kill -KILL "$pid" 2>/dev/null || true
      sleep 0.5
      break
    fi
    sleep 0.1
  done
  if [ -s "${PIDFILE[$name]}" ] && [ "$(tr -dc 0-9 <"${PIDFILE[$name]}")" = "$pid" ]; then
    rm -f "${PIDFILE[$name]}"
  fi
}

cancel_jobs() {
  if ! running slurmctld || ! command -v squeue >/dev/null; then return 0; fi
  local jobs
  jobs=$(squeue -h -o %A 2>/dev/null | sort -u | tr '\n' ' ') || return 0
  [ -n "${jobs// /}" ] || return 0
  say "cancelling jobs left: $jobs"
  # shellcheck disable=SC2086
  scancel $jobs 2>/dev/null || true
  # jobs get SIGTERM, then SIGKILL after KillWait (30 s); let them end before slurmd goes
  wait_for 45 bash -c '[ -z "$(squeue -h -o %A 2>/dev/null)" ]' \
    || echo "slurm-local: warning: jobs still listed after 45 s: $(squeue -h -o %A | tr '\n' ' ')" >&2
}

down() {
  [ "$(id -u)" -eq 0 ] || die "run as root"
  cancel_jobs
  local i
  for ((i = ${#DAEMONS[@]} - 1; i >= 0; i--)); do
    stop_daemon "${DAEMONS[i]}"
  done
  local left=()
  for name in "${DAEMONS[@]}"; do
    if running "$name"; then left+=("$name"); fi
  done
  [ ${#left[@]} -eq 0 ] || die "still running: ${left[*]}"
  say "down"
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  status) status ;;
  *) echo "usage: $0 up|down|status" >&2; exit 2 ;;
esac
