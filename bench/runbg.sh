#!/bin/bash
# Run configs/NAME.toml in the background from a snapshot of HEAD, so later edits to the working tree
# cannot change a long run halfway (the stage cache would mix code versions). Output: runs/NAME
# (shared through a link), log appended to runs/NAME.log. Rerunning resumes from the stage cache.
#   bash bench/runbg.sh rotten_tomatoes-whole
set -euo pipefail
name=$1
root=$(cd "$(dirname "$0")/.." && pwd)
tree=/tmp/runtree-$name
rm -rf "$tree" && mkdir -p "$tree" "$root/runs"
(cd "$root" && git archive HEAD | tar -x -C "$tree")
ln -s "$root/runs" "$tree/runs"
cd "$tree"
nohup "$root/.venv/bin/python" -m jaxsel.cli run --config "configs/$name.toml" --out "$root/runs/$name" \
  >> "$root/runs/$name.log" 2>&1 &
echo "started $name (pid $!), log: runs/$name.log"
