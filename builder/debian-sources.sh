#!/usr/bin/env bash
# Prints the Debian package sources the live system is built from, one "deb URI SUITE main" line
# each, for mmdebstrap. Called by build-rootfs.sh and build-iso.sh (for the cache key).
#
# The mirror is never hard-coded: it is whatever this build machine's apt uses for its own Debian
# release (so a machine behind a local mirror or a snapshot service builds from the same place),
# or DEBIAN_SOURCES when set (lines separated by newlines or '|', e.g.
# "deb http://mirror.example/debian bookworm main|deb http://mirror.example/debian-security
# bookworm-security main"). Third-party repositories of the build machine are left out: only
# suites of the Debian release named in /etc/os-release are taken.
set -euo pipefail

if [ -n "${DEBIAN_SOURCES:-}" ]; then
    tr '|' '\n' <<<"$DEBIAN_SOURCES" | sed '/^[[:space:]]*$/d'
    exit 0
fi

. /etc/os-release
codename=${VERSION_CODENAME:?/etc/os-release has no VERSION_CODENAME: set DEBIAN_SOURCES}

# apt's own view of its sources (deb822 and one-line formats alike), one line per index.
lines=$(apt-get indextargets --format '$(REPO_URI) $(RELEASE) $(COMPONENT)' 'Created-By: Packages' \
    | awk -v c="$codename" '$2 == c || $2 ~ "^" c "-(updates|security)$"' | sort -u)
if [ -z "$lines" ]; then
    echo "build machine's apt knows no $codename sources (run apt-get update, or set DEBIAN_SOURCES)" >&2
    exit 1
fi
# Only main: the live system holds no contrib or non-free software.
awk '$3 == "main" { print "deb " $1 " " $2 " main" }' <<<"$lines"
