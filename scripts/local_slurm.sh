#!/usr/bin/env bash
# A one-node Slurm cluster on this machine, for trying and testing `--executor slurm`.
#   scripts/local_slurm.sh start|stop|status
# State (configs, logs, PIDs, MariaDB data) lives under $DSTLAB_SLURM_DIR (default: a new temporary
# directory, printed by `start`). Needs root and Debian's slurm-wlm, munge, slurmdbd and
# mariadb-server. `stop` kills exactly the PIDs `start` recorded, never by name.
# $DSTLAB_SLURM_PORT (default 6817) and the next three ports are slurmctld's, slurmd's, slurmdbd's
# and MariaDB's. After `start`, point the Slurm commands at this cluster: export SLURM_CONF=$DSTLAB_SLURM_DIR/slurm.conf
set -euo pipefail

cmd=${1:-}
D=${DSTLAB_SLURM_DIR:-}
CLUSTER=dstlab

die() { echo "local_slurm.sh: $*" >&2; exit 1; }

wait_for() {  # wait_for SECONDS WHAT COMMAND...: poll until COMMAND succeeds
  local limit=$1 what=$2; shift 2
  local end=$((SECONDS + limit))
  until "$@" >/dev/null 2>&1; do
    ((SECONDS < end)) || die "$what did not come up within ${limit}s (logs in $D/log)"
    sleep 0.2
  done
}

record() { echo "$2" >"$D/pids/$1"; }

start_daemon() {  # start_daemon NAME COMMAND...: run in the background, record its PID
  local name=$1; shift
  "$@" >>"$D/log/$name.out" 2>&1 &
  record "$name" $!
}

start() {
  [[ $(id -u) == 0 ]] || die "needs root (the daemons run as root, munge and mysql)."
  for tool in munged slurmctld slurmd slurmdbd mariadbd sacctmgr; do
    command -v "$tool" >/dev/null || [[ -x /usr/sbin/$tool ]] \
      || die "$tool is missing; install with: apt-get install -y slurm-wlm munge slurmdbd mariadb-server"
  done
  if [[ -z $D ]]; then D=$(mktemp -d /tmp/dstlab-slurm.XXXXXX); fi
  mkdir -p "$D"
  D=$(cd "$D" && pwd)
  chmod 755 "$D"  # mktemp makes it private; MariaDB runs as mysql and must reach its datadir
  runuser -u mysql -- test -x "$D" \
    || die "$D must be reachable by the mysql user (choose a DSTLAB_SLURM_DIR outside private folders)."
  if [[ -d $D/pids ]] && [[ -n $(ls -A "$D/pids") ]]; then
    die "$D already holds a running cluster (stop it first: DSTLAB_SLURM_DIR=$D $0 stop)."
  fi
  # state (job ids, accounting) survives a stop and start of the same directory: wiped, job
  # ids would restart at 1 and a reused study directory would mistake new jobs for old ones
  local fresh=1
  [[ -d $D/mysql/mysql ]] && fresh=0
  mkdir -p "$D/pids" "$D/state" "$D/spool" "$D/log" "$D/run"
  local host; host=$(hostname -s)
  local cpus; cpus=$(nproc)
  local mem; mem=$(awk '/MemAvailable/ {print int($2 / 1024) - 1024}' /proc/meminfo)
  ((mem > 512)) || mem=512

  # 1. munge: a private daemon on its own socket (daemonises itself; its PID file names it).
  # The system's socket is shared: a second cluster reusing it would lose authentication the
  # moment the first one stopped the daemon it started.
  local sock=$D/munge/munge.socket.2
  install -d -m 755 -o munge -g munge "$D/munge"
  runuser -u munge -- /usr/sbin/munged --socket="$sock" --pid-file="$D/munge/munged.pid" \
    --log-file="$D/munge/munged.log" --seed-file="$D/munge/munged.seed" \
    2>>"$D/log/munged.out" || die "munged did not start (see $D/log/munged.out and $D/munge/munged.log)"
  wait_for 5 "munged's PID file" test -s "$D/munge/munged.pid"
  record munged "$(cat "$D/munge/munged.pid")"
  wait_for 10 munged bash -c "munge -S '$sock' -n | unmunge -S '$sock'"

  # 2. accounting: a private MariaDB and slurmdbd (submitit polls job states with sacct)
  install -d -o mysql -g mysql "$D/mysql" "$D/run/mysql"
  if ((fresh)); then
    mariadb-install-db --user=mysql --datadir="$D/mysql" --skip-test-db \
      --auth-root-authentication-method=socket >>"$D/log/mariadb-install.out" 2>&1 \
      || die "mariadb-install-db failed (see $D/log/mariadb-install.out)"
  fi
  local base=${DSTLAB_SLURM_PORT:-6817}
  local port=$((base + 3))
  start_daemon mariadbd mariadbd --no-defaults --user=mysql --datadir="$D/mysql" \
    --socket="$D/run/mysql/mysql.sock" --bind-address=127.0.0.1 --port="$port" \
    --innodb-buffer-pool-size=64M --skip-name-resolve
  wait_for 60 mariadbd mariadb --socket="$D/run/mysql/mysql.sock" -e "SELECT 1"
  mariadb --socket="$D/run/mysql/mysql.sock" <<SQL
CREATE USER IF NOT EXISTS 'slurm'@'127.0.0.1' IDENTIFIED BY 'dstlab';
CREATE USER IF NOT EXISTS 'slurm'@'localhost' IDENTIFIED BY 'dstlab';
GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1';
GRANT ALL ON slurm_acct_db.* TO 'slurm'@'localhost';
FLUSH PRIVILEGES;
SQL
  cat >"$D/slurmdbd.conf" <<CONF
AuthType=auth/munge
AuthInfo=socket=$sock
DbdAddr=127.0.0.1
DbdPort=$((base + 2))
DbdHost=localhost
SlurmUser=root
LogFile=$D/log/slurmdbd.log
PidFile=$D/run/slurmdbd.pid
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=$port
StorageUser=slurm
StoragePass=dstlab
StorageLoc=slurm_acct_db
CONF
  chmod 600 "$D/slurmdbd.conf"

  cat >"$D/slurm.conf" <<CONF
ClusterName=$CLUSTER
SlurmctldHost=$host(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
# default 120 s: a requeued job would wait that long before it can start again
AuthInfo=cred_expire=10,socket=$sock
CryptoType=crypto/munge
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=127.0.0.1
AccountingStoragePort=$((base + 2))
# for MUNGE, the socket that authenticates with slurmdbd (clients and daemons alike)
AccountingStoragePass=$sock
SlurmctldPort=$base
SlurmdPort=$((base + 1))
JobAcctGatherType=jobacct_gather/linux
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
ReturnToService=2
StateSaveLocation=$D/state
SlurmdSpoolDir=$D/spool
SlurmctldPidFile=$D/run/slurmctld.pid
SlurmdPidFile=$D/run/slurmd.pid
SlurmctldLogFile=$D/log/slurmctld.log
SlurmdLogFile=$D/log/slurmd.log
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=5,bf_interval=5
# seconds from SIGTERM to SIGKILL when a job is cancelled or requeued (submitit ignores SIGTERM)
KillWait=2
MinJobAge=300
MailProg=/bin/true
NodeName=$host NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem State=UNKNOWN
PartitionName=debug Nodes=$host Default=YES MaxTime=INFINITE State=UP
CONF
  export SLURM_CONF=$D/slurm.conf  # slurmdbd reads slurmdbd.conf from the same folder
  start_daemon slurmdbd slurmdbd -D
  wait_for 30 slurmdbd sacctmgr -n list cluster
  sacctmgr -i add cluster "$CLUSTER" >>"$D/log/sacctmgr.out" 2>&1 || true

  # 3. the controller and the one node
  start_daemon slurmctld slurmctld -D -i -f "$D/slurm.conf"
  wait_for 30 slurmctld scontrol ping
  start_daemon slurmd slurmd -D -N "$host" -f "$D/slurm.conf"
  wait_for 60 "the node" bash -c '[[ $(sinfo -h -o %T) == idle ]]'
  echo "$D" >"$D/dir"
  echo "Slurm is up: one node ($host, $cpus CPUs), partition debug. State in $D."
  echo "export SLURM_CONF=$D/slurm.conf DSTLAB_SLURM_DIR=$D"
}

job_processes() {  # this cluster's jobs: every slurmstepd its slurmd started (their
  # environment names this cluster's slurm.conf) and everything below them
  local conf="SLURM_CONF=$D/slurm.conf" pid ppid roots=() found=()
  for pid in $(pgrep -x slurmstepd); do
    tr '\0' '\n' <"/proc/$pid/environ" 2>/dev/null | grep -qxF "$conf" && roots+=("$pid")
  done
  ((${#roots[@]})) || return 0
  found=("${roots[@]}")
  local grew=1
  while ((grew)); do  # add children until nothing new
    grew=0
    while read -r pid ppid; do
      [[ " ${found[*]} " == *" $ppid "* && " ${found[*]} " != *" $pid "* ]] || continue
      found+=("$pid"); grew=1
    done < <(ps -eo pid=,ppid=)
  done
  echo "${found[@]}"
}

stop() {
  [[ -n $D && -d $D/pids ]] || die "no cluster recorded; set DSTLAB_SLURM_DIR to the directory start printed."
  # a job's processes outlive slurmd (a suspended one stays frozen): SIGKILL ends them, stopped
  # or not; found before slurmd goes, while its slurmsteps still name the cluster
  local jobs; jobs=$(job_processes)
  # shellcheck disable=SC2086
  [[ -z $jobs ]] || kill -KILL $jobs 2>/dev/null || true
  local names=(slurmd slurmctld slurmdbd mariadbd munged) pids=() name pid
  for name in "${names[@]}"; do  # each PID is the one start recorded
    [[ -f $D/pids/$name ]] || continue
    pid=$(cat "$D/pids/$name")
    kill -TERM "$pid" 2>/dev/null && pids+=("$pid")
  done
  for _ in $(seq 100); do  # up to 10 s, then SIGKILL whatever is left
    local alive=()
    for pid in "${pids[@]}"; do kill -0 "$pid" 2>/dev/null && alive+=("$pid"); done
    ((${#alive[@]})) || break
    sleep 0.1
  done
  for pid in "${pids[@]}"; do kill -KILL "$pid" 2>/dev/null || true; done
  for name in "${names[@]}"; do rm -f "$D/pids/$name"; done
  echo "Slurm stopped ($D)."
}

status() {
  [[ -n $D && -d $D/pids ]] || { echo "no cluster recorded under ${D:-\$DSTLAB_SLURM_DIR}"; exit 1; }
  local down=0
  for name in munged mariadbd slurmdbd slurmctld slurmd; do
    local file=$D/pids/$name
    if [[ -f $file ]] && kill -0 "$(cat "$file")" 2>/dev/null; then
      echo "$name: running (pid $(cat "$file"))"
    elif [[ -f $file ]]; then
      echo "$name: dead (pid $(cat "$file"))"; down=1
    else
      echo "$name: not started by this script"
    fi
  done
  SLURM_CONF=$D/slurm.conf sinfo -h -o "node %N: %T" 2>/dev/null || down=1
  exit $down
}

case $cmd in
  start) start ;;
  stop) stop ;;
  status) status ;;
  *) echo "usage: $0 start|stop|status  (state under \$DSTLAB_SLURM_DIR)" >&2; exit 2 ;;
esac
