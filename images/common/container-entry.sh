#!/usr/bin/env bash
# images/common/container-entry.sh SCHEDULER ROLE [bootstrap options]: a container's main process.
# Runs the scheduler's bootstrap (daemons + its watchdog), then stays in the foreground while the
# watchdog lives; SIGTERM stops the daemons cleanly (bootstrap.sh stop).
set -euo pipefail
SCHED=${1:?scheduler: sge or slurm}; ROLE=${2:?role}; shift 2
HERE=$(cd "$(dirname "$0")/.." && pwd)
STATE=${GENEFARM_STATE:-/var/lib/genefarm-node/container/$SCHED}
mkdir -p "$STATE"; chmod 755 "$(dirname "$STATE")" "$STATE"
"$HERE/$SCHED/bootstrap.sh" start --role "$ROLE" --state "$STATE" --watchdog "${GENEFARM_WATCHDOG:-5}" "$@"
trap '"$HERE/$SCHED/bootstrap.sh" stop --state "$STATE"; exit 0' TERM INT
while kill -0 "$(cat "$STATE/watchdog.pid")" 2>/dev/null; do sleep 5 & wait $!; done
echo "container-entry: the watchdog is gone: exiting" >&2
exit 1
