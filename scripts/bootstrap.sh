#!/usr/bin/env bash
# Installs everything the sandbox and the tests need on a fresh Debian/Ubuntu machine:
# system packages (swtpm, tpm2-tools, libtss2 for tpm2-pytss) and a virtualenv in .venv
# with the project and the extras named in $1 (default: agent,test,sandbox).
# Idempotent: a second run only checks.
set -euo pipefail
cd "$(dirname "$0")/.."
extras="${1:-agent,test,sandbox}"
PY="${PYTHON:-python3}"

apt_pkgs=(swtpm swtpm-tools tpm2-tools libtss2-dev pkg-config gcc openssh-server openssh-client)
missing=()
for p in "${apt_pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "bootstrap: installing system packages: ${missing[*]}"
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi

if [ ! -x .venv/bin/python ]; then
  echo "bootstrap: creating .venv"
  "$PY" -m venv .venv
fi
stamp=".venv/.installed-$(cat pyproject.toml | sha256sum | cut -c1-16)-${extras//,/_}"
if [ ! -f "$stamp" ]; then
  echo "bootstrap: installing osm-trustmgr[$extras] into .venv"
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip install -q -e ".[$extras]"
  rm -f .venv/.installed-*
  touch "$stamp"
fi

# charmcraft validates charms/trust-proxy/charmcraft.yaml offline (tests/charm/test_charmcraft.py). It pins its
# own pydantic and craft-* libraries, so it gets a virtualenv of its own instead of sharing the project's.
CHARMCRAFT_VERSION=4.5.0
if [[ ",$extras," == *",test,"* ]] && ! .venv/charmcraft/bin/charmcraft version 2>/dev/null | grep -q "$CHARMCRAFT_VERSION"; then
  echo "bootstrap: installing charmcraft $CHARMCRAFT_VERSION into .venv/charmcraft"
  "$PY" -m venv .venv/charmcraft
  .venv/charmcraft/bin/python -m pip install -q "charmcraft==$CHARMCRAFT_VERSION"
fi
