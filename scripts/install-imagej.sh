#!/usr/bin/env bash
# Install what the `fiji` recipe's "imagej" engine needs on Debian/Ubuntu: ImageJ 1 (Debian's
# `imagej` package, which brings OpenJDK) and a virtual X display (`xvfb-run`, `xauth`).
#
# Idempotent: when /usr/share/java/ij.jar, xvfb-run and xauth are all present it exits 0 at
# once without touching apt. Otherwise it runs `apt-get update` and installs only what is
# missing, non-interactively, with sudo when not run as root.
set -euo pipefail

declare -A PROVIDES=(
    [imagej]=/usr/share/java/ij.jar
    [xvfb]=/usr/bin/xvfb-run
    [xauth]=/usr/bin/xauth
)

missing=()
for package in imagej xvfb xauth; do
    if [[ ! -e "${PROVIDES[$package]}" ]]; then
        missing+=("$package")
    fi
done

if [[ ${#missing[@]} -eq 0 ]]; then
    echo "install-imagej: ImageJ, xvfb-run and xauth are already installed"
    exit 0
fi

if ! command -v apt-get >/dev/null 2>&1; then
    echo "install-imagej: apt-get not found; install ${missing[*]} with your system's package" \
        "manager (the fiji recipe needs /usr/share/java/ij.jar and xvfb-run)" >&2
    exit 1
fi

sudo=()
if [[ "$(id -u)" -ne 0 ]]; then
    if ! command -v sudo >/dev/null 2>&1; then
        echo "install-imagej: not root and sudo is not available; run as root:" \
            "apt-get install -y ${missing[*]}" >&2
        exit 1
    fi
    sudo=(sudo)
fi

echo "install-imagej: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
"${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq
"${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    "${missing[@]}"

for package in "${missing[@]}"; do
    if [[ ! -e "${PROVIDES[$package]}" ]]; then
        echo "install-imagej: $package was installed but ${PROVIDES[$package]} is missing" >&2
        exit 1
    fi
done
echo "install-imagej: done"
