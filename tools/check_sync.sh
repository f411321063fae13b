#!/usr/bin/env bash
# Fails if the notebooks are not clean, the library is not what nbdev_export makes of them,
# or README.md is not what nbs/index.ipynb renders to. Run from the repository root.
set -euo pipefail
snapshot() { find nbs ml_hpc README.md -type f -not -path '*/__pycache__/*' -not -path '*/.ipynb_checkpoints/*' | sort | xargs sha1sum; }
before=$(snapshot)
nbdev_clean >/dev/null
nbdev_export
python tools/render_readme.py
after=$(snapshot)
if [ "$before" != "$after" ]; then
  echo "out of sync: these files change when notebooks are cleaned, exported and the README rendered:"
  diff <(echo "$before") <(echo "$after") | grep '^[<>]' | awk '{print "  " $3}' | sort -u
  echo "HINT: run 'make check' (it has now regenerated them) and commit the result"
  exit 1
fi
echo "notebooks clean, library exported, README in sync"
