#!/usr/bin/env bash
# images/slurm/bootstrap.sh: make this host a Slurm controller, a compute node, or both.
#
#   bootstrap.sh start [--role all|controller|node] [--host NAME] [--addr ADDR] [--controller NAME]
#                      [--controller-addr ADDR] [--nodes "NAME=ADDR ..."] [--cpus N] [--memory MB]
#                      [--ctld-port P] [--slurmd-port P] [--cluster NAME] [--partition NAME] --state DIR
#                      [--overcommit]   (let --cpus exceed the real cores: for benchmarks of tiny jobs)
#   bootstrap.sh stop  --state DIR       (stops the daemons this script started, by their PIDs)
#
# Everything lives in the state directory (one per cluster): slurm.conf rendered from
# slurm.conf.tmpl + node.tmpl, a private munge key and socket, slurmctld's state, slurmd's spool,
# logs, pid files and slurm.env (source it: SLURM_CONF for sbatch/squeue/sacct/scontrol).
# Ports default to 16817/16818 (not Slurm's 6817/6818). bcc runs the same script on every host
# of a cluster over SSH: --role controller on one, --role node on the others (same --nodes list,
# same munge key copied into the state directory first).
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
CMD=${1:-start}; shift || true
ROLE=all; HOST=$(hostname); ADDR=127.0.0.1; CTLD_HOST=""; CTLD_ADDR=""; NODELIST=""
CPUS=$(nproc); MEMORY=$(( $(awk '/MemTotal/ {print $2}' /proc/meminfo) / 1024 / 2 ))
CTLD_PORT=16817; SLURMD_PORT=16818; CLUSTER=genefarm; PARTITION=genefarm; STATE=""; OVERCOMMIT=""
while [ $# -gt 0 ]; do
  case $1 in
    --role) ROLE=$2; shift 2;; --host) HOST=$2; shift 2;; --addr) ADDR=$2; shift 2;;
    --controller) CTLD_HOST=$2; shift 2;; --controller-addr) CTLD_ADDR=$2; shift 2;;
    --nodes) NODELIST=$2; shift 2;; --cpus) CPUS=$2; shift 2;; --memory) MEMORY=$2; shift 2;;
    --ctld-port) CTLD_PORT=$2; shift 2;; --slurmd-port) SLURMD_PORT=$2; shift 2;;
    --cluster) CLUSTER=$2; shift 2;; --partition) PARTITION=$2; shift 2;; --state) STATE=$2; shift 2;;
    --overcommit) OVERCOMMIT=1; shift;;
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
  for f in "$STATE"/slurmd-*.pid "$STATE"/slurmctld.pid "$STATE"/munged.pid; do stop_pidfile "$f"; done
  say "stopped"; exit 0
fi
[ "$CMD" = start ] || { echo "usage: bootstrap.sh start|stop [options]" >&2; exit 2; }

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
chown munge:munge "$STATE/munge" "$STATE/munge-key"; chmod 0755 "$STATE/munge"; chmod 0700 "$STATE/munge-key"
MUNGE_SOCKET=$STATE/munge/munge.socket
runuser -u munge -- test -x "$STATE/munge" || {
  say "the munge user cannot reach $STATE: make it and its parent directories world-searchable (chmod o+x)"; exit 2; }

# 1. munge: a private daemon with its own key and socket (the key is shared by all hosts)
if [ ! -f "$STATE/munge-key/munge.key" ]; then
  dd if=/dev/urandom of="$STATE/munge-key/munge.key" bs=1 count=1024 status=none
fi
chown munge:munge "$STATE/munge-key/munge.key"; chmod 0400 "$STATE/munge-key/munge.key"
if ! [ -f "$STATE/munged.pid" ] || ! kill -0 "$(cat "$STATE/munged.pid")" 2>/dev/null; then
  runuser -u munge -- /usr/sbin/munged --socket="$MUNGE_SOCKET" --key-file="$STATE/munge-key/munge.key" \
    --pid-file="$STATE/munge/munged.pid" --seed-file="$STATE/munge-key/munge.seed" --log-file="$STATE/munge/munged.log"
  for _ in $(seq 50); do [ -s "$STATE/munge/munged.pid" ] && break; sleep 0.1; done
  cp "$STATE/munge/munged.pid" "$STATE/munged.pid"
fi

# 2. slurm.conf from the templates
NODES=""
[ -n "$OVERCOMMIT" ] && NODES="SlurmdParameters=config_overrides"$'\n'
for nd in $NODELIST; do
  NODE=${nd%%=*} NODE_ADDR=${nd#*=}
  NODES+=$(NODE=$NODE NODE_ADDR=$NODE_ADDR render "$HERE/node.tmpl" NODE NODE_ADDR CPUS MEMORY)$'\n'
done
render "$HERE/slurm.conf.tmpl" CLUSTER CTLD_HOST CTLD_ADDR CTLD_PORT SLURMD_PORT MUNGE_SOCKET STATE NODES PARTITION \
  > "$STATE/slurm.conf.tmp"
mv "$STATE/slurm.conf.tmp" "$STATE/slurm.conf"
render "$HERE/slurm.env.tmpl" STATE > "$STATE/slurm.env"
export SLURM_CONF=$STATE/slurm.conf

wait_for() {  # wait_for SECONDS CMD...
  local n=$1; shift
  for _ in $(seq $((n * 5))); do "$@" >/dev/null 2>&1 && return 0; sleep 0.2; done
  return 1
}

# 3. daemons
if [ "$ROLE" = all ] || [ "$ROLE" = controller ]; then
  if ! [ -f "$STATE/slurmctld.pid" ] || ! kill -0 "$(cat "$STATE/slurmctld.pid")" 2>/dev/null; then
    /usr/sbin/slurmctld -f "$SLURM_CONF"
    wait_for 30 scontrol ping || { say "slurmctld did not answer (see $STATE/slurmctld.log)"; exit 1; }
  fi
fi
if [ "$ROLE" = all ] || [ "$ROLE" = node ]; then
  mkdir -p "$STATE/slurmd-$HOST"
  if ! [ -f "$STATE/slurmd-$HOST.pid" ] || ! kill -0 "$(cat "$STATE/slurmd-$HOST.pid")" 2>/dev/null; then
    /usr/sbin/slurmd -f "$SLURM_CONF" -N "$HOST"
  fi
  wait_for 60 sh -c "sinfo -h -n $HOST -o %t | grep -qE '^(idle|mix|alloc)'" \
    || { say "node $HOST is not idle (see $STATE/slurmd-$HOST.log)"; sinfo >&2 || true; exit 1; }
fi
say "ready: source $STATE/slurm.env (cluster $CLUSTER, controller $CTLD_HOST:$CTLD_PORT, partition $PARTITION)"
