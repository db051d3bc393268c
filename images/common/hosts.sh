#!/usr/bin/env bash
# images/common/hosts.sh FILE "NAME=ADDR ...": write the cluster's names into a hosts file.
#
# The lines live in a block between two markers; the rest of FILE is kept. FILE is rewritten in
# place (not renamed over), so a bind-mounted /etc/hosts (test hosts have their own) stays the
# file the host reads. An empty list removes the block.
set -euo pipefail
FILE=${1:?usage: hosts.sh FILE "NAME=ADDR ..."}; ENTRIES=${2-}
BEGIN="# genefarm-bcc begin (managed by bcc: edits inside this block are lost)"; END="# genefarm-bcc end"
touch "$FILE"
tmp=$(mktemp)
awk -v b="$BEGIN" -v e="$END" '$0==b {skip=1; next} $0==e {skip=0; next} !skip' "$FILE" >"$tmp"
if [ -n "$ENTRIES" ]; then
  {
    echo "$BEGIN"
    for kv in $ENTRIES; do
      name=${kv%%=*} addr=${kv#*=}
      case $addr in *[!0-9.]*|"") echo "hosts.sh: bad address '$addr' for $name" >&2; rm -f "$tmp"; exit 2;; esac
      printf '%s %s\n' "$addr" "$name"
    done
    echo "$END"
  } >>"$tmp"
fi
cat "$tmp" >"$FILE"
rm -f "$tmp"
