#!/usr/bin/env bash
# images/common/watchdog.sh: keep a host's scheduler daemons alive.
#
#   watchdog.sh --interval S --log FILE --pidfile F [--pidfile F ...] -- RESTART_CMD...
#
# Every S seconds: when a pid file is missing or names a dead process, log it and run
# RESTART_CMD (the bootstrap script's own `start` with the arguments it was first given: it is
# idempotent and starts only what is not running). Started by images/sge/bootstrap.sh and
# images/slurm/bootstrap.sh with --watchdog S, stopped by their `stop` (by its PID) before the
# daemons, so a deliberate stop is never undone. No systemd needed (test hosts have none).
set -uo pipefail
INTERVAL=5; LOG=/dev/stderr; PIDFILES=()
while [ $# -gt 0 ]; do
  case $1 in
    --interval) INTERVAL=$2; shift 2;; --log) LOG=$2; shift 2;; --pidfile) PIDFILES+=("$2"); shift 2;;
    --) shift; break;;
    *) echo "watchdog.sh: unknown option $1" >&2; exit 2;;
  esac
done
[ $# -gt 0 ] && [ ${#PIDFILES[@]} -gt 0 ] || { echo "usage: watchdog.sh --interval S --log F --pidfile F... -- CMD..." >&2; exit 2; }
log() { echo "$(date -u +%FT%TZ) watchdog[$$]: $*" >>"$LOG"; }
trap 'log "stopping"; exit 0' TERM INT
log "watching ${PIDFILES[*]} every ${INTERVAL}s"
while true; do
  sleep "$INTERVAL" & wait $!
  dead=()
  for f in "${PIDFILES[@]}"; do
    pid=$(cat "$f" 2>/dev/null || true)
    if [ -z "$pid" ] || ! kill -0 "$pid" 2>/dev/null; then dead+=("$(basename "$f" .pid)${pid:+ (pid $pid)}"); fi
  done
  [ ${#dead[@]} -eq 0 ] && continue
  log "not running: ${dead[*]}; restarting"
  if GF_WATCHDOG=1 timeout 300 "$@" >>"$LOG" 2>&1; then log "restarted"; else log "restart failed (exit $?); retrying in ${INTERVAL}s"; fi
done
