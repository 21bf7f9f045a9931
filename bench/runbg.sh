#!/bin/bash
# Run configs/NAME.toml in the background from a snapshot of HEAD, so later edits to the working tree
# cannot change a long run halfway (the stage cache would mix code versions). Output: runs/NAME
# (shared through a link), log appended to runs/NAME.log. Rerunning resumes from the stage cache.
# An optional second argument runs only those seeds (comma-separated) into runs/NAME-sSEEDS, for a
# run split over sessions or machines; bench/merge.py joins the parts' results. The parts share one
# stage folder, runs/NAME/stages (unless the config names its own), so a later part reuses the
# embedding and clustering, and the -16th and -instance configs find them where they look.
#   bash bench/runbg.sh rotten_tomatoes-whole
#   bash bench/runbg.sh rotten_tomatoes-whole 3,4
set -euo pipefail
name=$1
seeds=${2:-}
root=$(cd "$(dirname "$0")/.." && pwd)
tree=/tmp/runtree-$name${seeds:+-s$seeds}
out=$name${seeds:+-s${seeds//,/-}}
rm -rf "$tree" && mkdir -p "$tree" "$root/runs"
(cd "$root" && git archive HEAD | tar -x -C "$tree")
ln -s "$root/runs" "$tree/runs"
cd "$tree"
if [ -n "$seeds" ]; then
  sed -i "s/^seeds = .*/seeds = [$seeds]/" "configs/$name.toml"
  grep -q "^seeds = \[$seeds\]" "configs/$name.toml"
  grep -q "^stages = " "configs/$name.toml" ||
    sed -i "s|^seeds = .*|&\nstages = \"runs/$name/stages\"|" "configs/$name.toml"
fi
nohup "$root/.venv/bin/python" -m jaxsel run --config "configs/$name.toml" --out "$root/runs/$out" \
  >> "$root/runs/$out.log" 2>&1 &
echo "started $out (pid $!), log: runs/$out.log"
