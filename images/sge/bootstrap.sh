#!/usr/bin/env bash
# images/sge/bootstrap.sh: make this host an SGE (Son of Grid Engine) qmaster, exec host, or both.
#
#   bootstrap.sh start   [--role all|master|exec] [--host NAME] [--master NAME] [--slots N]
#                        [--qmaster-port P] [--execd-port P] [--state DIR] [--queue genefarm.q] [--pe smp]
#                        [--cell NAME]   (default: the package's cell "default"; another name makes a
#                                         private cell spooled under DIR: test runs that share a machine
#                                         then share nothing, not even the spool database)
#                        [--hostgroup @NAME]  (multi-host: the queue runs on this hostgroup, made empty
#                                         here and filled by bcc's reconciler; a --role master host is then
#                                         not an exec host itself)
#                        [--watchdog SECONDS] (start images/common/watchdog.sh: it re-runs this same
#                                         command when a daemon started here has died)
#   bootstrap.sh stop    --state DIR [--cell NAME]  (stops the daemons this script started, by their
#                                         PIDs; a private cell is removed)
#   bootstrap.sh preseed [--master NAME]  (debconf answers only: before installing the packages by other means)
#
# Idempotent: packages are installed only when missing, objects are modified when they exist.
# Config is rendered from the *.tmpl files beside this script. Writes DIR/sge.env (source it to
# use qsub/qstat/qacct/DRMAA against this cell) and DIR/*.pid. Ports default to 16444/16445
# (not SGE's 6444/6445, so a system SGE and a test cell do not collide). bcc runs this same
# script over SSH on each host of a cluster (--role master on one, --role exec on the others,
# with the same --cell, --state path and ports: an exec host makes the cell's common directory
# it needs when the cell is not on a shared filesystem).
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
SELF=$HERE/$(basename "$0")
CMD=${1:-start}; shift || true
ORIG_ARGS=("$@")
HOSTGROUP=""; WATCHDOG=0
ROLE=all; HOST=$(hostname); MASTER=""; SLOTS=$(nproc); QPORT=16444; EPORT=16445
STATE=/var/run/genefarm-sge; QUEUE=genefarm.q; PE=smp; CELL=default
while [ $# -gt 0 ]; do
  case $1 in
    --role) ROLE=$2; shift 2;; --host) HOST=$2; shift 2;; --master) MASTER=$2; shift 2;;
    --slots) SLOTS=$2; shift 2;; --qmaster-port) QPORT=$2; shift 2;; --execd-port) EPORT=$2; shift 2;;
    --state) STATE=$2; shift 2;; --queue) QUEUE=$2; shift 2;; --pe) PE=$2; shift 2;;
    --cell) CELL=$2; shift 2;; --hostgroup) HOSTGROUP=$2; shift 2;; --watchdog) WATCHDOG=$2; shift 2;;
    *) echo "bootstrap.sh: unknown option $1" >&2; exit 2;;
  esac
done
MASTER=${MASTER:-$HOST}
export SGE_ROOT=/var/lib/gridengine SGE_CELL=$CELL SGE_QMASTER_PORT=$QPORT SGE_EXECD_PORT=$EPORT
COMMON=$SGE_ROOT/$SGE_CELL/common
mkdir -p "$STATE"
say() { echo "sge-bootstrap: $*" >&2; }

render() {  # render TEMPLATE VAR... : replace ${VAR} by the variable's value
  local t; t=$(cat "$1"); shift
  for v in "$@"; do t=${t//\$\{$v\}/${!v}}; done
  printf '%s\n' "$t"
}

descendants() {  # descendants PID: every process below PID, parents first
  local p
  for p in $(ps -eo pid=,ppid= | awk -v p="$1" '$2 == p {print $1}'); do echo "$p"; descendants "$p"; done
}

stop() {
  # the watchdog first (by its PID), or it would start again what is being stopped
  if [ -f "$STATE/watchdog.pid" ]; then
    pid=$(cat "$STATE/watchdog.pid"); kill "$pid" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    rm -f "$STATE/watchdog.pid"
  fi
  exec 9>"$STATE/bootstrap.lock"; flock -w 600 9 || true   # let a restart in progress finish
  # SIGTERM is a controlled shutdown; give it time (a SIGKILLed qmaster can leave its spool
  # database needing recovery)
  for f in "$STATE"/execd.pid "$STATE"/qmaster.pid; do
    [ -f "$f" ] || continue
    pid=$(cat "$f")
    if [ "$f" = "$STATE/execd.pid" ] && kill -0 "$pid" 2>/dev/null; then
      # an execd that stops leaves its jobs running (their sge_shepherd outlives it): end them first
      # (a job bcc rescheduled elsewhere is one of them: suspended until now)
      left=$(descendants "$pid" | tr '\n' ' ')
      if [ -n "${left// /}" ]; then say "killing the job processes still under execd: $left"; kill -KILL $left 2>/dev/null || true; fi
    fi
    if kill -0 "$pid" 2>/dev/null; then
      kill "$pid"
      for _ in $(seq 300); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
      kill -0 "$pid" 2>/dev/null && { say "pid $pid did not stop in 60 s: killing it"; kill -9 "$pid"; }
    fi
    rm -f "$f"
  done
  if [ "$CELL" != default ] && [ -f "$STATE/cell" ] && [ "$(cat "$STATE/cell")" = "$CELL" ]; then
    rm -rf "${SGE_ROOT:?}/$CELL" "$STATE/cell"
  fi
  say "stopped"
}

preseed() {  # the answers the packages' configuration asks for, given before they are installed
  printf '%s\n' "gridengine-common shared/gridengineconfig boolean true" \
    "gridengine-common shared/gridenginecell string default" \
    "gridengine-common shared/gridenginemaster string $MASTER" | debconf-set-selections
}

if [ "$CMD" = stop ]; then stop; exit 0; fi
if [ "$CMD" = preseed ]; then preseed; exit 0; fi
[ "$CMD" = start ] || { echo "usage: bootstrap.sh start|stop|preseed [options]" >&2; exit 2; }
case $ROLE in all|master|exec) ;; *) echo "bootstrap.sh: --role must be all, master or exec" >&2; exit 2;; esac
# one start (or watchdog restart, or stop) at a time on this host
exec 9>"$STATE/bootstrap.lock"; flock -w 600 9 || { say "another bootstrap holds $STATE/bootstrap.lock"; exit 1; }

# 1. packages (debconf answers first: the package configures the cell from them)
missing=()
for p in $(cat "$HERE/packages.txt"); do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  say "installing ${missing[*]}"
  preseed
  DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=900 install -y -q --no-install-recommends "${missing[@]}" >&2
fi

# 2. a private cell: its own bootstrap, spool database, qmaster and execd spool directories under STATE
SPOOL_QMASTER=/var/spool/gridengine/qmaster; SPOOL_EXECD=/var/spool/gridengine/execd
if [ "$CELL" != default ]; then
  SPOOL=$STATE/spool
  SPOOL_QMASTER=$SPOOL/qmaster; SPOOL_EXECD=$SPOOL/execd
  if [ "$ROLE" = exec ] && [ ! -f "$COMMON/bootstrap" ]; then
    # an exec host of a multi-host cell (no shared cell directory): only what sge_execd reads
    say "making the common directory of cell $CELL for an exec host"
    mkdir -p "$COMMON"
    SPOOL=$SPOOL render "$HERE/bootstrap.tmpl" SPOOL > "$COMMON/bootstrap"
    chown -R sgeadmin:sgeadmin "$SGE_ROOT/$CELL"
    echo "$CELL" > "$STATE/cell"       # made here: `stop` removes it again
  fi
  if [ "$ROLE" = exec ]; then
    mkdir -p "$SPOOL_EXECD"; chown sgeadmin:sgeadmin "$SPOOL" "$SPOOL_EXECD"; chmod o+x "$STATE"
  fi
  if [ "$ROLE" != exec ] && [ ! -f "$COMMON/spooldb-made" ]; then
    say "making private cell $CELL (spool in $SPOOL)"
    mkdir -p "$COMMON" "$SPOOL_QMASTER" "$SPOOL_EXECD" "$SPOOL/spooldb"
    echo "$CELL" > "$STATE/cell"
    SPOOL=$SPOOL render "$HERE/bootstrap.tmpl" SPOOL > "$COMMON/bootstrap"
    sed -e "s|^execd_spool_dir .*|execd_spool_dir        $SPOOL_EXECD|" \
      /usr/share/gridengine/default-configuration > "$STATE/configuration"
    chown -R sgeadmin:sgeadmin "$SGE_ROOT/$CELL" "$SPOOL"
    chmod o+x "$STATE"
    runuser -u sgeadmin -- env SGE_ROOT="$SGE_ROOT" SGE_CELL="$CELL" sh -c "
      /usr/lib/gridengine/spoolinit berkeleydb libspoolb '$SPOOL/spooldb' init &&
      /usr/lib/gridengine/spooldefaults configuration '$STATE/configuration' &&
      /usr/lib/gridengine/spooldefaults complexes /usr/share/gridengine/util/resources/centry &&
      /usr/lib/gridengine/spooldefaults usersets /usr/share/gridengine/util/resources/usersets &&
      /usr/lib/gridengine/spooldefaults managers sgeadmin" >/dev/null
    touch "$COMMON/spooldb-made"
  fi
fi

# 3. names: the host resolves to 127.0.0.1 whose reverse name is localhost on single-host set-ups
if [ "$(getent hosts "$HOST" | awk '{print $1; exit}')" = 127.0.0.1 ]; then
  echo "$HOST localhost" > "$COMMON/host_aliases"
fi
echo "$MASTER" > "$COMMON/act_qmaster"
chown sgeadmin:sgeadmin "$COMMON/act_qmaster" "$COMMON/host_aliases" 2>/dev/null || true   # qmaster rewrites them

QMASTER_PORT=$QPORT EXECD_PORT=$EPORT DRMAA_LIBRARY_PATH=/usr/lib/gridengine-drmaa/lib/libdrmaa.so.1.0 \
  render "$HERE/settings.tmpl" SGE_ROOT SGE_CELL QMASTER_PORT EXECD_PORT DRMAA_LIBRARY_PATH > "$STATE/sge.env"

wait_for() {  # wait_for SECONDS CMD...
  local n=$1; shift
  for _ in $(seq $((n * 5))); do "$@" >/dev/null 2>&1 && return 0; sleep 0.2; done
  return 1
}

# 4. qmaster and the cell's configuration
if [ "$ROLE" = all ] || [ "$ROLE" = master ]; then
  if ! qstat >/dev/null 2>&1; then
    /usr/sbin/sge_qmaster 9>&-
    wait_for 30 qconf -sh || { say "qmaster did not answer on port $QPORT"; exit 1; }
    cp "$SPOOL_QMASTER/qmaster.pid" "$STATE/qmaster.pid"
  fi
  tmp=$(mktemp -d)
  # jobs run as root on test hosts; the scheduler reacts in a second instead of fifteen
  qconf -sconf | sed -e 's/^min_uid .*/min_uid 0/' -e 's/^min_gid .*/min_gid 0/' \
    -e 's/flush_time=[0-9:]*/flush_time=00:00:01/' > "$tmp/global"
  qconf -Mconf "$tmp/global" >/dev/null 2>&1 || true
  qconf -ssconf | sed -e 's/^schedule_interval .*/schedule_interval 0:0:1/' \
    -e 's/^flush_submit_sec .*/flush_submit_sec 1/' -e 's/^flush_finish_sec .*/flush_finish_sec 1/' > "$tmp/sched"
  qconf -Msconf "$tmp/sched" >/dev/null
  for h in $HOST $MASTER; do qconf -ah "$h" >/dev/null 2>&1 || true; qconf -as "$h" >/dev/null 2>&1 || true; done
  HOSTS=$HOST
  if [ -z "$HOSTGROUP" ] || [ "$ROLE" = all ]; then
    COMPLEX=NONE HOST=$HOST render "$HERE/exechost.tmpl" HOST COMPLEX > "$tmp/exechost"
    qconf -Ae "$tmp/exechost" >/dev/null 2>&1 || qconf -Me "$tmp/exechost" >/dev/null
  fi
  if [ -n "$HOSTGROUP" ]; then
    if ! qconf -shgrp "$HOSTGROUP" >/dev/null 2>&1; then
      MEMBERS=NONE; [ "$ROLE" = all ] && MEMBERS=$HOST
      MEMBERS=$MEMBERS render "$HERE/hostgroup.tmpl" HOSTGROUP MEMBERS > "$tmp/hgrp"
      qconf -Ahgrp "$tmp/hgrp" >/dev/null
    fi
    HOSTS=$HOSTGROUP
  fi
  PE=$PE render "$HERE/pe.tmpl" PE > "$tmp/pe"
  qconf -Ap "$tmp/pe" >/dev/null 2>&1 || qconf -Mp "$tmp/pe" >/dev/null
  render "$HERE/queue.tmpl" QUEUE HOSTS PE SLOTS > "$tmp/queue"
  qconf -Aq "$tmp/queue" >/dev/null 2>&1 || qconf -Mq "$tmp/queue" >/dev/null
  rm -rf "$tmp"
fi

# 5. the exec daemon (after min_uid is set: set later, the queue goes into error state)
if [ "$ROLE" = all ] || [ "$ROLE" = exec ]; then
  if ! [ -f "$STATE/execd.pid" ] || ! kill -0 "$(cat "$STATE/execd.pid")" 2>/dev/null; then
    qmod -c "$QUEUE@$HOST" >/dev/null 2>&1 || true
    # the spool directory is named after the name the qmaster knows the host by: the host's
    # name, or localhost where host_aliases maps it there (single-host set-ups)
    # (or its canonical name from the resolver); other hosts' spool directories are left alone
    names="$HOST $(getent hosts "$HOST" | awk '{print $2; exit}')"
    grep -qx "$HOST localhost" "$COMMON/host_aliases" 2>/dev/null && names=localhost
    for n in $names; do rm -f "$SPOOL_EXECD/$n/execd.pid"; done
    /usr/sbin/sge_execd 9>&-
    execd_pid() { for n in $names; do [ -s "$SPOOL_EXECD/$n/execd.pid" ] && { cat "$SPOOL_EXECD/$n/execd.pid"; return 0; }; done; return 1; }
    wait_for 30 execd_pid || { say "execd did not start (no execd.pid under $SPOOL_EXECD/{${names// /,}})"; exit 1; }
    execd_pid > "$STATE/execd.pid"
  fi
  # the host is up when qhost reports its load
  wait_for 60 sh -c "qhost -h $HOST | awk 'NR>3 && \$4 != \"-\" {ok=1} END {exit !ok}'" \
    || { say "exec host $HOST did not report to the qmaster"; exit 1; }
  qmod -e "$QUEUE@$HOST" >/dev/null 2>&1 || true
fi

# 6. the watchdog (not when the watchdog itself is what runs this start)
if [ "$WATCHDOG" != 0 ] && [ -z "${GF_WATCHDOG:-}" ]; then
  if ! [ -f "$STATE/watchdog.pid" ] || ! kill -0 "$(cat "$STATE/watchdog.pid")" 2>/dev/null; then
    pidfiles=()
    { [ "$ROLE" = all ] || [ "$ROLE" = master ]; } && pidfiles+=(--pidfile "$STATE/qmaster.pid")
    { [ "$ROLE" = all ] || [ "$ROLE" = exec ]; } && pidfiles+=(--pidfile "$STATE/execd.pid")
    setsid "$HERE/../common/watchdog.sh" --interval "$WATCHDOG" --log "$STATE/watchdog.log" "${pidfiles[@]}" \
      -- "$SELF" start "${ORIG_ARGS[@]}" </dev/null >/dev/null 2>&1 9>&- &
    echo $! > "$STATE/watchdog.pid"
    say "watchdog pid $(cat "$STATE/watchdog.pid") checks every ${WATCHDOG}s (log $STATE/watchdog.log)"
  fi
fi
say "ready: source $STATE/sge.env (qmaster $MASTER:$QPORT, queue $QUEUE, pe $PE, $SLOTS slots on $HOST)"
