#!/usr/bin/env bash
# images/common/mounts.sh: mount what `bcc start -m` asked for on this host.
#
#   mounts.sh apply   --mode real|bind --fstab FILE   < LINES
#   mounts.sh release --mode real|bind --fstab FILE
#
# LINES are fstab lines rendered by bcc from images/common/fstab-*.tmpl (one renderer, checked
# by tests). They are kept in FILE between markers (the rest of FILE is untouched), then:
#   real  FILE is /etc/fstab: each line's mount point is created and mounted (`mount DST`):
#         NFS for nas://, s3fs / ossfs (read-only FUSE) for s3:// and oss://
#   bind  test hosts, which share one filesystem and have no NFS in the kernel: a nas:// line
#         (SERVER:/PATH DST nfs4 ...) becomes a bind mount of PATH on DST, read-write; an object
#         store line is written to FILE but not mounted (no FUSE client reaches an object store
#         from a test host), and the script says so
# A mount point apply had to create is recorded in the block ("# made-by-bcc DST TOP", TOP the
# first directory it made); release unmounts what apply mounted, removes those directories when
# they are empty, and removes the block.
set -euo pipefail
CMD=${1:-}; shift || true
MODE=real; FSTAB=/etc/fstab
while [ $# -gt 0 ]; do
  case $1 in
    --mode) MODE=$2; shift 2;; --fstab) FSTAB=$2; shift 2;;
    *) echo "mounts.sh: unknown option $1" >&2; exit 2;;
  esac
done
BEGIN="# genefarm-bcc mounts begin"; END="# genefarm-bcc mounts end"; MADE="# made-by-bcc"
say() { echo "mounts: $*" >&2; }
block() { [ -f "$FSTAB" ] && awk -v b="$BEGIN" -v e="$END" '$0==b {in_=1; next} $0==e {in_=0} in_' "$FSTAB" || true; }

release() {
  local blk src dst type opts rest d top
  blk=$(block)
  while read -r src dst type opts rest; do
    [ -n "${dst:-}" ] && [ "${src:0:1}" != "#" ] || continue
    if mountpoint -q "$dst"; then umount "$dst" && say "unmounted $dst" || say "could not unmount $dst (busy?)"; fi
  done <<<"$blk"
  while read -r line; do
    case $line in "$MADE "*) ;; *) continue;; esac
    read -r d top <<<"${line#"$MADE "}"
    while rmdir "$d" 2>/dev/null && [ "$d" != "$top" ]; do d=$(dirname "$d"); done
  done <<<"$blk"
  if [ -f "$FSTAB" ]; then
    tmp=$(mktemp); awk -v b="$BEGIN" -v e="$END" '$0==b {skip=1; next} $0==e {skip=0; next} !skip' "$FSTAB" >"$tmp"
    cat "$tmp" >"$FSTAB"; rm -f "$tmp"
  fi
}

case $CMD in
  apply)
    lines=$(cat)
    release
    made=""
    while read -r src dst type opts rest; do
      [ -n "${dst:-}" ] || continue
      if [ ! -d "$dst" ]; then
        top=$dst; while [ ! -d "$(dirname "$top")" ]; do top=$(dirname "$top"); done
        mkdir -p "$dst"; made+="$MADE $dst $top"$'\n'
      fi
    done <<<"$lines"
    mkdir -p "$(dirname "$FSTAB")"; touch "$FSTAB"
    { echo "$BEGIN"; [ -n "$lines" ] && printf '%s\n' "$lines"; printf '%s' "$made"; echo "$END"; } >>"$FSTAB"
    while read -r src dst type opts rest; do
      [ -n "${dst:-}" ] || continue
      if [ "$MODE" = real ]; then
        mountpoint -q "$dst" || mount "$dst"; say "mounted $src on $dst ($type)"
      elif [ "$type" = nfs4 ] || [ "$type" = nfs ]; then
        path=${src#*:}
        [ -d "$path" ] || { say "$path (the NAS export, here a shared directory) does not exist"; exit 1; }
        mountpoint -q "$dst" || mount --bind "$path" "$dst"; say "bind-mounted $path on $dst (test host: NAS is a shared directory)"
      else
        say "$src on $dst: written to $FSTAB, not mounted (test host: no FUSE client for object stores here)"
      fi
    done <<<"$lines"
    ;;
  release) release ;;
  *) echo "usage: mounts.sh apply|release --mode real|bind --fstab FILE" >&2; exit 2 ;;
esac
