#!/usr/bin/env bash
# Make sure `redis-server` (Debian's package, 7.0.x) is on this machine: the test suite starts its own servers
# on 127.0.0.1 from that binary. `make test` runs this before the suite.
#
#   found on PATH          -> nothing to do
#   root with apt-get      -> apt-get update + apt-get install redis-server (no service is started)
#   otherwise              -> stop with the one command to type, exit 1
#
# `make serve` does not need Redis: without a `redis.url` in the service config the cache, rate limits and journal
# stay in process, and the start-up line says so.
set -euo pipefail

if command -v redis-server >/dev/null 2>&1; then
  exit 0
fi

install_command="apt-get update && apt-get install -y redis-server"

if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
  echo "redis-server is not installed; installing Debian's package (the test suite runs its own servers from it)"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  # policy-rc.d-less containers may fail to start the system service; the binary is what the tests need
  apt-get install -y -qq --no-install-recommends redis-server >/dev/null
  if command -v redis-server >/dev/null 2>&1; then
    echo "installed $(redis-server --version | cut -d' ' -f1-3)"
    exit 0
  fi
  echo "apt-get finished but redis-server is still not on PATH; install it by hand: $install_command" >&2
  exit 1
fi

if command -v apt-get >/dev/null 2>&1; then
  hint="sudo sh -c '$install_command'"
elif command -v brew >/dev/null 2>&1; then
  hint="brew install redis"
elif command -v dnf >/dev/null 2>&1; then
  hint="sudo dnf install -y redis"
else
  hint="install Redis 7 with your system's package manager so that redis-server is on PATH"
fi
cat >&2 <<EOF
redis-server is not installed, and this user cannot install it (not root, or no apt-get).
The test suite runs real Redis servers on 127.0.0.1. Install it, then run make test again:

    $hint

(make serve does not need it: without Redis the service keeps its stores in process.)
EOF
exit 1
