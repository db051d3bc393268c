#!/usr/bin/env bash
# images/slurm/bootstrap.sh: make this host a Slurm controller, a compute node, or both.
#
#   bootstrap.sh start [--role all|controller|node] [--host NAME] [--addr ADDR] [--controller NAME]
#                      [--controller-addr ADDR] [--nodes "NAME=ADDR ..."] [--cpus N] [--memory MB]
#                      [--ctld-port P] [--slurmd-port P] [--cluster NAME] [--partition NAME] --state DIR
#                      [--overcommit]   (let --cpus exceed the real cores: for benchmarks of tiny jobs)
#                      [--cred-expire S] (AuthInfo cred_expire: also how long a requeued job waits before it
#                                         may start again; Slurm's default, 120)
#                      (--nodes items may be NAME=ADDR:CPUS; the arguments of the last start or configure
#                       are kept in DIR/start.args: the watchdog restarts with those, not with stale ones)
#                      [--watchdog SECONDS]   (start images/common/watchdog.sh: it re-runs this same
#                                              command when a daemon started here has died)
#   bootstrap.sh stop  --state DIR       (stops the watchdog, then the daemons this script started, by their PIDs)
#   bootstrap.sh configure [same options as start]   (render slurm.conf only: bcc runs it on every
#                                         host when the node list changes)
#   bootstrap.sh reload --state DIR      (controller: restart slurmctld when slurm.conf's nodes differ
#                                         from the ones it runs with (Slurm 22.05 cannot add or remove
#                                         nodes otherwise; its state, queued and running jobs included,
#                                         is saved and recovered), then `scontrol reconfigure` so every
#                                         slurmd re-reads its slurm.conf)
#
# Everything lives in the state directory (one per cluster): slurm.conf rendered from
# slurm.conf.tmpl + node.tmpl, a private munge key and socket, slurmctld's state, slurmd's spool,
# logs, pid files and slurm.env (source it: SLURM_CONF for sbatch/squeue/sacct/scontrol).
# Ports default to 16817/16818 (not Slurm's 6817/6818). bcc runs the same script on every host
# of a cluster over SSH: --role controller on one, --role node on the others (same --nodes list,
# same munge key copied into the state directory first).
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
SELF=$HERE/$(basename "$0")
CMD=${1:-start}; shift || true
if [ "$CMD" = restart ]; then   # the watchdog: start again with the arguments of the last start/configure
  [ "${1:-}" = --state ] && [ -f "${2:-}/start.args" ] || { echo "usage: bootstrap.sh restart --state DIR" >&2; exit 2; }
  eval "set -- $(cat "$2/start.args")"; CMD=start
fi
ORIG_ARGS=("$@"); WATCHDOG=0
ROLE=all; HOST=$(hostname); ADDR=127.0.0.1; CTLD_HOST=""; CTLD_ADDR=""; NODELIST=""
CPUS=$(nproc); MEMORY=$(( $(awk '/MemTotal/ {print $2}' /proc/meminfo) / 1024 / 2 ))
CTLD_PORT=16817; SLURMD_PORT=16818; CLUSTER=genefarm; PARTITION=genefarm; STATE=""; OVERCOMMIT=""; CRED_EXPIRE=120
while [ $# -gt 0 ]; do
  case $1 in
    --role) ROLE=$2; shift 2;; --host) HOST=$2; shift 2;; --addr) ADDR=$2; shift 2;;
    --controller) CTLD_HOST=$2; shift 2;; --controller-addr) CTLD_ADDR=$2; shift 2;;
    --nodes) NODELIST=$2; shift 2;; --cpus) CPUS=$2; shift 2;; --memory) MEMORY=$2; shift 2;;
    --ctld-port) CTLD_PORT=$2; shift 2;; --slurmd-port) SLURMD_PORT=$2; shift 2;;
    --cluster) CLUSTER=$2; shift 2;; --partition) PARTITION=$2; shift 2;; --state) STATE=$2; shift 2;;
    --overcommit) OVERCOMMIT=1; shift;; --watchdog) WATCHDOG=$2; shift 2;; --cred-expire) CRED_EXPIRE=$2; shift 2;;
    *) echo "bootstrap.sh: unknown option $1" >&2; exit 2;;
  esac
done
[ -n "$STATE" ] || { echo "bootstrap.sh: --state DIR is required" >&2; exit 2; }
CTLD_HOST=${CTLD_HOST:-$HOST}; CTLD_ADDR=${CTLD_ADDR:-$ADDR}; NODELIST=${NODELIST:-$HOST=$ADDR}
say() { echo "slurm-bootstrap: $*" >&2; }

render() {  # render TEMPLATE VAR... : replace ${VAR} by the variable's value
  local t; t=$(cat "$1"); shift
  for v in "$@"; do t=${t//\$\{$v\}/${!v}}; done
  printf '%s\n' "$t"
}

stop_pidfile() {
  local f=$1 pid
  [ -f "$f" ] || return 0
  pid=$(cat "$f")
  if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
    kill "$pid"
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
    kill -0 "$pid" 2>/dev/null && kill -9 "$pid"
  fi
  rm -f "$f"
}

if [ "$CMD" = stop ]; then
  if [ -f "$STATE/watchdog.pid" ]; then   # the watchdog first, or it would undo the stop
    pid=$(cat "$STATE/watchdog.pid"); kill "$pid" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    rm -f "$STATE/watchdog.pid"
  fi
  exec 9>"$STATE/bootstrap.lock"; flock -w 600 9 || true   # let a restart in progress finish
  for f in "$STATE"/slurmd-*.pid "$STATE"/slurmctld.pid "$STATE"/munged.pid; do stop_pidfile "$f"; done
  say "stopped"; exit 0
fi
wait_for() {  # wait_for SECONDS CMD...
  local n=$1; shift
  for _ in $(seq $((n * 5))); do "$@" >/dev/null 2>&1 && return 0; sleep 0.2; done
  return 1
}

if [ "$CMD" = reload ]; then
  exec 9>"$STATE/bootstrap.lock"; flock -w 600 9 || { say "another bootstrap holds $STATE/bootstrap.lock"; exit 1; }
  export SLURM_CONF=$STATE/slurm.conf
  want=$(sed -n 's/^NodeName=\([^ ]*\).*/\1/p' "$SLURM_CONF" | sort | tr '\n' ' ')
  have=$(sinfo -h -N -o %N 2>/dev/null | sort -u | tr '\n' ' ' || true)
  if [ "$want" != "$have" ]; then
    say "nodes change from [${have% }] to [${want% }]: restarting slurmctld (state saved and recovered)"
    stop_pidfile "$STATE/slurmctld.pid"
    /usr/sbin/slurmctld -f "$SLURM_CONF" 9>&-
    wait_for 30 scontrol ping || { say "slurmctld did not answer after the restart (see $STATE/slurmctld.log)"; exit 1; }
  fi
  scontrol reconfigure
  say "reconfigured"
  exit 0
fi
case $CMD in start|configure) ;; *) echo "usage: bootstrap.sh start|stop|configure|reload [options]" >&2; exit 2;; esac
case $ROLE in all|controller|node) ;; *) echo "bootstrap.sh: --role must be all, controller or node" >&2; exit 2;; esac

missing=()
for p in $(cat "$HERE/packages.txt"); do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  say "installing ${missing[*]}"
  DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=900 install -y -q --no-install-recommends "${missing[@]}" >&2
fi

if [ -f "$STATE/ctld/clustername" ] && [ "$(cat "$STATE/ctld/clustername")" != "$CLUSTER" ]; then
  say "$STATE holds the state of cluster $(cat "$STATE/ctld/clustername"), not $CLUSTER: use a fresh --state"
  exit 2
fi
mkdir -p "$STATE/ctld" "$STATE/munge" "$STATE/munge-key"
# one start (or watchdog restart, reload, or stop) at a time on this host
exec 9>"$STATE/bootstrap.lock"; flock -w 600 9 || { say "another bootstrap holds $STATE/bootstrap.lock"; exit 1; }
chown munge:munge "$STATE/munge" "$STATE/munge-key"; chmod 0755 "$STATE/munge"; chmod 0700 "$STATE/munge-key"
MUNGE_SOCKET=$STATE/munge/munge.socket
runuser -u munge -- test -x "$STATE/munge" || {
  say "the munge user cannot reach $STATE: make it and its parent directories world-searchable (chmod o+x)"; exit 2; }

# 1. munge: a private daemon with its own key and socket (the key is shared by all hosts)
if [ ! -f "$STATE/munge-key/munge.key" ] && [ "$ROLE" = node ]; then
  say "no munge key in $STATE/munge-key/munge.key: copy the controller's key there first (bcc does)"; exit 2
fi
if [ ! -f "$STATE/munge-key/munge.key" ]; then
  dd if=/dev/urandom of="$STATE/munge-key/munge.key" bs=1 count=1024 status=none
fi
chown munge:munge "$STATE/munge-key/munge.key"; chmod 0400 "$STATE/munge-key/munge.key"
if [ "$CMD" = start ] && { ! [ -f "$STATE/munged.pid" ] || ! kill -0 "$(cat "$STATE/munged.pid")" 2>/dev/null; }; then
  rm -f "$STATE/munge/munged.pid"
  runuser -u munge -- /usr/sbin/munged --socket="$MUNGE_SOCKET" --key-file="$STATE/munge-key/munge.key" \
    --pid-file="$STATE/munge/munged.pid" --seed-file="$STATE/munge-key/munge.seed" --log-file="$STATE/munge/munged.log" 9>&-
  for _ in $(seq 50); do [ -s "$STATE/munge/munged.pid" ] && break; sleep 0.1; done
  cp "$STATE/munge/munged.pid" "$STATE/munged.pid"
fi

# 2. slurm.conf from the templates
NODES=""
[ -n "$OVERCOMMIT" ] && NODES="SlurmdParameters=config_overrides"$'\n'
for nd in $NODELIST; do   # NAME=ADDR or NAME=ADDR:CPUS
  NODE=${nd%%=*} NODE_ADDR=${nd#*=} NODE_CPUS=$CPUS
  case $NODE_ADDR in *:*) NODE_CPUS=${NODE_ADDR#*:}; NODE_ADDR=${NODE_ADDR%%:*};; esac
  NODES+=$(NODE=$NODE NODE_ADDR=$NODE_ADDR CPUS=$NODE_CPUS render "$HERE/node.tmpl" NODE NODE_ADDR CPUS MEMORY)$'\n'
done
render "$HERE/slurm.conf.tmpl" CLUSTER CTLD_HOST CTLD_ADDR CTLD_PORT SLURMD_PORT MUNGE_SOCKET CRED_EXPIRE STATE NODES \
  PARTITION > "$STATE/slurm.conf.tmp"
mv "$STATE/slurm.conf.tmp" "$STATE/slurm.conf"
render "$HERE/slurm.env.tmpl" STATE > "$STATE/slurm.env"
export SLURM_CONF=$STATE/slurm.conf
printf '%q ' "${ORIG_ARGS[@]}" > "$STATE/start.args"
if [ "$CMD" = configure ]; then say "rendered $SLURM_CONF"; exit 0; fi

# 3. daemons
if [ "$ROLE" = all ] || [ "$ROLE" = controller ]; then
  if ! [ -f "$STATE/slurmctld.pid" ] || ! kill -0 "$(cat "$STATE/slurmctld.pid")" 2>/dev/null; then
    /usr/sbin/slurmctld -f "$SLURM_CONF" 9>&-
    wait_for 30 scontrol ping || { say "slurmctld did not answer (see $STATE/slurmctld.log)"; exit 1; }
  fi
fi
if [ "$ROLE" = all ] || [ "$ROLE" = node ]; then
  mkdir -p "$STATE/slurmd-$HOST"
  if ! [ -f "$STATE/slurmd-$HOST.pid" ] || ! kill -0 "$(cat "$STATE/slurmd-$HOST.pid")" 2>/dev/null; then
    /usr/sbin/slurmd -f "$SLURM_CONF" -N "$HOST" 9>&-
  fi
  wait_for 60 sh -c "sinfo -h -n $HOST -o %t | grep -qE '^(idle|mix|alloc)'" \
    || { say "node $HOST is not idle (see $STATE/slurmd-$HOST.log)"; sinfo >&2 || true; exit 1; }
fi
# 4. the watchdog (not when the watchdog itself is what runs this start)
if [ "$WATCHDOG" != 0 ] && [ -z "${GF_WATCHDOG:-}" ]; then
  if ! [ -f "$STATE/watchdog.pid" ] || ! kill -0 "$(cat "$STATE/watchdog.pid")" 2>/dev/null; then
    pidfiles=(--pidfile "$STATE/munged.pid")
    { [ "$ROLE" = all ] || [ "$ROLE" = controller ]; } && pidfiles+=(--pidfile "$STATE/slurmctld.pid")
    { [ "$ROLE" = all ] || [ "$ROLE" = node ]; } && pidfiles+=(--pidfile "$STATE/slurmd-$HOST.pid")
    setsid "$HERE/../common/watchdog.sh" --interval "$WATCHDOG" --log "$STATE/watchdog.log" "${pidfiles[@]}" \
      -- "$SELF" restart --state "$STATE" </dev/null >/dev/null 2>&1 9>&- &
    echo $! > "$STATE/watchdog.pid"
    say "watchdog pid $(cat "$STATE/watchdog.pid") checks every ${WATCHDOG}s (log $STATE/watchdog.log)"
  fi
fi
say "ready: source $STATE/slurm.env (cluster $CLUSTER, controller $CTLD_HOST:$CTLD_PORT, partition $PARTITION)"
