#!/usr/bin/env bash
# ensure-apt.sh PKG...: install the Debian packages that are missing; does nothing when all are there.
# The same script bcc runs on the hosts it bootstraps.
exec "$(dirname "$0")/../images/common/packages.sh" "$@"
