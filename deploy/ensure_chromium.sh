#!/usr/bin/env bash
# Make sure a Chromium for the console's browser tests (tests/test_console_browser.py) is on this machine:
# Debian's `chromium` package, driven by Playwright pointed at /usr/bin/chromium (Playwright's own browser
# download is never used). `make test` runs this before the suite.
#
#   chromium on PATH (or MOESAIC_CHROMIUM set)   -> nothing to do
#   root with apt-get                            -> apt-get install chromium (no recommends)
#   otherwise                                    -> a note with the command to type; the browser tests skip,
#                                                   saying why (exit 0: the rest of the suite still runs)
set -euo pipefail

if [ -n "${MOESAIC_CHROMIUM:-}" ] || command -v chromium >/dev/null 2>&1; then
  exit 0
fi

install_command="apt-get update && apt-get install -y --no-install-recommends chromium"

if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
  echo "chromium is not installed; installing Debian's package (the console's browser tests drive it)"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  if apt-get install -y -qq --no-install-recommends chromium >/dev/null && command -v chromium >/dev/null 2>&1; then
    echo "installed $(chromium --version 2>/dev/null || echo chromium)"
    exit 0
  fi
  echo "could not install chromium; the browser tests will skip. By hand: $install_command" >&2
  exit 0
fi

cat >&2 <<NOTE
chromium is not installed, and this user cannot install it (not root, or no apt-get): the console's browser
tests will skip. To run them, install Debian's Chromium (or point MOESAIC_CHROMIUM at a Chromium binary):

    sudo sh -c '$install_command'
NOTE
exit 0
