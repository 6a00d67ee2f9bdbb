#!/usr/bin/env bash
# Install Debian's chromium for the headless-browser test of the HTML run report
# (tests/test_report_browser.py loads a real report in `chromium --headless` and fails on any
# console error).
#
# Idempotent: when chromium is on PATH it exits 0 at once without touching apt. Otherwise it
# runs `apt-get update` and installs it non-interactively, with sudo when not run as root.
# Check it with
#   chromium --headless --no-sandbox --disable-gpu --dump-dom about:blank
set -euo pipefail

if command -v chromium >/dev/null 2>&1; then
    echo "install-chromium: chromium is already installed"
    exit 0
fi

if ! command -v apt-get >/dev/null 2>&1; then
    echo "install-chromium: apt-get not found; install chromium with your system's package" \
        "manager (the browser test of the HTML report needs it on PATH)" >&2
    exit 1
fi

sudo=()
if [[ "$(id -u)" -ne 0 ]]; then
    if ! command -v sudo >/dev/null 2>&1; then
        echo "install-chromium: not root and sudo is not available; run as root:" \
            "apt-get install -y chromium" >&2
        exit 1
    fi
    sudo=(sudo)
fi

echo "install-chromium: installing chromium"
# Wait for a concurrent apt (another setup script) instead of failing on its lock.
apt=(apt-get -o DPkg::Lock::Timeout=600)
"${sudo[@]}" env DEBIAN_FRONTEND=noninteractive "${apt[@]}" update -qq
"${sudo[@]}" env DEBIAN_FRONTEND=noninteractive "${apt[@]}" install -y -qq \
    --no-install-recommends chromium

if ! command -v chromium >/dev/null 2>&1; then
    echo "install-chromium: chromium was installed but is not on PATH" >&2
    exit 1
fi
echo "install-chromium: done"
