#!/usr/bin/env bash
# Makes a local stand-in for the Dockerfile's base image (python:3.11-slim-bookworm), which no
# registry here can serve: a Debian bookworm root from debootstrap with Debian's Python 3.11,
# imported into the local container storage. It is made once per machine (the storage lies outside
# any checkout) and reused by every later build. The root also trusts this machine's own
# certificate authorities, for pip and apt behind an intercepting proxy, as a company's base
# image would.
# Usage: standin_base.sh [TAG]    (needs root, debootstrap and podman)
set -euo pipefail
TAG="${1:-localhost/bus-base:3.11-slim-bookworm}"
MIRROR="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"

if podman image exists "$TAG"; then
  exit 0
fi
root="$(mktemp -d)"
trap 'rm -rf "$root"' EXIT
echo "making the stand-in base image $TAG with debootstrap (about a minute, once per machine)"
debootstrap --variant=minbase --include=python3,python3-venv,python-is-python3,ca-certificates \
  bookworm "$root" "$MIRROR" >"$root.log" 2>&1 || { tail -20 "$root.log"; exit 1; }
rm -f "$root.log"
if compgen -G '/usr/local/share/ca-certificates/*.crt' >/dev/null; then
  cp /usr/local/share/ca-certificates/*.crt "$root/usr/local/share/ca-certificates/"
  chroot "$root" update-ca-certificates >/dev/null
fi
# pip reads its own CA bundle unless told otherwise; the official image's pip behaves the same.
printf '[global]\ncert = /etc/ssl/certs/ca-certificates.crt\n' >"$root/etc/pip.conf"
rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/*
tar -C "$root" -c . | podman import \
  --change 'CMD ["python3"]' \
  --change 'LABEL org.opencontainers.image.description="stand-in for python:3.11-slim-bookworm, made by debootstrap for tests"' \
  - "$TAG" >/dev/null
echo "made $TAG"
