#!/usr/bin/env bash
# mypy --strict on the runtime core. The top-level folders install as switchboard.<folder>
# through setuptools' package-dir mapping, which mypy cannot follow, so we check a shadow tree
# of symlinks with the installed names.
set -euo pipefail
cd "$(dirname "$0")/.."
shadow=.typecheck/switchboard
rm -rf .typecheck && mkdir -p "$shadow"
cp switchboard/__init__.py "$shadow/"
for d in actors supervisor protocols storage providers; do ln -s "../../$d" "$shadow/$d"; done
cd .typecheck
exec ../.venv/bin/mypy --strict --cache-dir ../.mypy_cache \
  -p switchboard.actors -p switchboard.supervisor -p switchboard.protocols -p switchboard.storage \
  -p switchboard.providers
