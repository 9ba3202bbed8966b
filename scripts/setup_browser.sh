#!/usr/bin/env bash
# The test set-up's browser: report.html's browser test needs a Chromium. Playwright's own browser download
# is unreachable offline, so it comes from the system's package manager (Debian/Ubuntu: chromium) when we may
# install packages. Only `make test` runs this: a user's `make run` installs no system package.
set -euo pipefail
if ! command -v chromium >/dev/null 2>&1 && ! command -v chromium-browser >/dev/null 2>&1; then
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo -n"
  if command -v apt-get >/dev/null 2>&1 && $SUDO true 2>/dev/null; then
    echo "frpo-bench test set-up: installing chromium (apt-get) for the report's browser test"
    $SUDO apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q chromium >/dev/null
  else
    echo "frpo-bench test set-up: no chromium and no way to install it here; the report's browser test will be skipped"
  fi
fi
