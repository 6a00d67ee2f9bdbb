#!/usr/bin/env bash
# Install CellProfiler 5 (headless) into its own virtualenv and link its executable.
#
#   scripts/install-cellprofiler.sh PYTHON BIN_DIR
#
# PYTHON is a Python 3.11 interpreter (e.g. python3.11); BIN_DIR is where the `cellprofiler`
# link goes (e.g. .venv/bin, so the worker finds it next to its own Python).
#
# The virtualenv is <repo>/.venv-cellprofiler (<repo> = this script's folder's parent): the
# tool pins numpy 1.26, scipy 1.10 and scikit-image 0.24, older than the rest of `ds` wants,
# so it gets its own environment, as on AWS it has its own image. Why these exact steps:
# CellProfiler 4.2.x does not install on Python 3.11, the 5.0 nightlies do; their core and
# library come as wheels (--only-binary), and cellprofiler-nightly itself goes in with
# --no-deps because its wxPython (the GUI) and mysqlclient (MySQL access) dependencies are
# source builds a headless run never uses; the rest of its dependencies are installed by
# name below, with matplotlib<3.9, which the ClassifyObjects module needs. So pip's resolver
# then prints "cellprofiler-nightly … requires mysqlclient …, wxPython …, which is not
# installed": that is expected and harmless.
#
# Idempotent: when the virtualenv already holds CellProfiler $VERSION it only (re)links.
set -euo pipefail

if [ "$#" -ne 2 ]; then
    echo "usage: $0 PYTHON BIN_DIR" >&2
    exit 2
fi
PYTHON=$1
BIN_DIR=$2
VERSION=5.0.0.dev784

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV=$REPO/.venv-cellprofiler
TOOL=$VENV/bin/cellprofiler

installed() {
    # True when all three CellProfiler distributions are at $VERSION and the executable exists.
    [ -x "$TOOL" ] && [ -x "$VENV/bin/python" ] && "$VENV/bin/python" - "$VERSION" <<'PY' 2>/dev/null
import sys
from importlib.metadata import version

wanted = sys.argv[1]
names = ("cellprofiler-nightly", "cellprofiler-core-nightly", "cellprofiler-library-nightly")
sys.exit(0 if all(version(name) == wanted for name in names) else 1)
PY
}

if installed; then
    echo "CellProfiler $VERSION is already installed in $VENV"
else
    echo "installing CellProfiler $VERSION into $VENV (about 700 MB, a few minutes)"
    if [ ! -x "$VENV/bin/python" ]; then
        "$PYTHON" -m venv "$VENV"
    fi
    PIP=("$VENV/bin/python" -m pip --disable-pip-version-check --quiet)
    "${PIP[@]}" install --upgrade pip
    "${PIP[@]}" install --only-binary=:all: \
        "cellprofiler-core-nightly==$VERSION" "cellprofiler-library-nightly==$VERSION"
    # --no-deps skips wxPython (the GUI) and mysqlclient (source builds, not used headless).
    "${PIP[@]}" install --no-deps "cellprofiler-nightly==$VERSION"
    "${PIP[@]}" install "docutils==0.15.2" "Jinja2>=3.1.2" "sentry-sdk~=2.8.0" \
        "rapidfuzz>=3.0.0" "matplotlib<3.9"
    if ! installed; then
        echo "error: CellProfiler $VERSION is still not importable from $VENV" >&2
        exit 1
    fi
fi

mkdir -p "$BIN_DIR"
ln -sfn "$TOOL" "$BIN_DIR/cellprofiler"
echo "linked $BIN_DIR/cellprofiler -> $TOOL"
