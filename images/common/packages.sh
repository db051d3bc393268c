#!/usr/bin/env bash
# images/common/packages.sh PKG...: install the Debian packages that are missing; does nothing when all
# are there. Runs on every host bcc bootstraps, and is what `make test` uses too (scripts/ensure-apt.sh).
# The package lists are refreshed only when an install from the current ones fails.
set -euo pipefail
missing=()
for p in "$@"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0
echo "packages: installing ${missing[*]}" >&2
SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get -o DPkg::Lock::Timeout=900 install -y -q --no-install-recommends "${missing[@]}" >&2 || {
  $SUDO apt-get -o DPkg::Lock::Timeout=900 update -q >&2
  $SUDO apt-get -o DPkg::Lock::Timeout=900 install -y -q --no-install-recommends "${missing[@]}" >&2; }
