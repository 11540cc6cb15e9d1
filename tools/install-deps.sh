#!/usr/bin/env bash
# install-deps.sh — installs every Debian package ringbeat builds, tests and benchmarks with.
set -euo pipefail
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update
$SUDO apt-get install -y --no-install-recommends \
  build-essential g++ clang libclang-rt-14-dev cmake pkg-config ca-certificates \
  liburing-dev libssl-dev openssl libjemalloc-dev libbenchmark-dev libcmocka-dev libsystemd-dev \
  libmicrohttpd-dev libhiredis-dev redis-server redis-tools haproxy \
  chromium nodejs node-ws python3-websockets \
  python3 gnuplot-nox iproute2 iptables conntrack systemd procps
