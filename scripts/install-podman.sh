#!/usr/bin/env bash
# Install what the container tests need on Debian/Ubuntu: podman (the engine; no Docker daemon
# runs on these machines), runc (the runtime scripts/containers.conf selects: Debian's default
# crun cannot set its rlimits here), debootstrap (builds the local Debian base image, since
# no image registry is reachable) and catatonit (podman's --init: the task definition asks ECS
# for an init process, linuxParameters.initProcessEnabled).
#
# Idempotent: when podman, runc, debootstrap and catatonit are all on PATH it exits 0 at once without
# touching apt. Otherwise it runs `apt-get update` and installs only what is missing,
# non-interactively, with sudo when not run as root. Podman must be started with
# CONTAINERS_CONF=scripts/containers.conf (the tests do); then check it with
#   CONTAINERS_CONF=scripts/containers.conf podman info
set -euo pipefail

missing=()
for package in podman runc debootstrap catatonit; do
    if ! command -v "$package" >/dev/null 2>&1 && [[ ! -x "/usr/sbin/$package" ]]; then
        missing+=("$package")
    fi
done

if [[ ${#missing[@]} -eq 0 ]]; then
    echo "install-podman: podman, runc, debootstrap and catatonit are already installed"
    exit 0
fi

if ! command -v apt-get >/dev/null 2>&1; then
    echo "install-podman: apt-get not found; install ${missing[*]} with your system's package" \
        "manager (the container tests need podman, runc and debootstrap)" >&2
    exit 1
fi

sudo=()
if [[ "$(id -u)" -ne 0 ]]; then
    if ! command -v sudo >/dev/null 2>&1; then
        echo "install-podman: not root and sudo is not available; run as root:" \
            "apt-get install -y ${missing[*]}" >&2
        exit 1
    fi
    sudo=(sudo)
fi

echo "install-podman: installing ${missing[*]}"
# Wait for a concurrent apt (another setup script) instead of failing on its lock.
apt=(apt-get -o DPkg::Lock::Timeout=600)
"${sudo[@]}" env DEBIAN_FRONTEND=noninteractive "${apt[@]}" update -qq
"${sudo[@]}" env DEBIAN_FRONTEND=noninteractive "${apt[@]}" install -y -qq "${missing[@]}"

for package in "${missing[@]}"; do
    if ! command -v "$package" >/dev/null 2>&1 && [[ ! -x "/usr/sbin/$package" ]]; then
        echo "install-podman: $package was installed but is not on PATH" >&2
        exit 1
    fi
done
echo "install-podman: done"
