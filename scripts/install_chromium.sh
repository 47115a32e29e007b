#!/bin/sh
# Install Debian's chromium for the browser test of `vireid serve` (tests/serve/test_serve_browser.py).
# Needs root (or passwordless sudo) and apt; otherwise says what to do and fails.
set -e
if [ "$(id -u)" = "0" ]; then SUDO=""; elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then SUDO="sudo -n"; else
  echo "the browser test needs chromium: install it (e.g. 'sudo apt-get install chromium') and run make test again" >&2
  exit 1
fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "the browser test needs chromium and this machine has no apt-get: install chromium with your package manager" >&2
  exit 1
fi
echo "installing chromium for the browser test (apt-get)..."
$SUDO apt-get install -y -q chromium >/dev/null 2>&1 || { $SUDO apt-get update -q >/dev/null && $SUDO apt-get install -y -q chromium >/dev/null; }
command -v chromium >/dev/null 2>&1
