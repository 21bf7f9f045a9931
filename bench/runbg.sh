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
usage="usage: bash bench/runbg.sh NAME [SEEDS]  (runs configs/NAME.toml; SEEDS: comma-separated, e.g. 3,4)"
if [ $# -lt 1 ] || [ $# -gt 2 ] || [[ $1 == -* ]]; then
  echo "$usage" >&2
  [[ ${1:-} == -h || ${1:-} == --help ]] && exit 0 || exit 2
fi
name=$1
seeds=${2:-}
root=$(cd "$(dirname "$0")/.." && pwd)
if ! git -C "$root" cat-file -e "HEAD:configs/$name.toml" 2>/dev/null; then  # the run reads HEAD's copy
  echo "bench/runbg.sh: error: no configs/$name.toml committed at HEAD" >&2
  exit 2
fi
if [ -n "$seeds" ] && ! [[ $seeds =~ ^[0-9]+(,[0-9]+)*$ ]]; then
  echo "bench/runbg.sh: error: SEEDS must be comma-separated whole numbers, got '$seeds'" >&2
  exit 2
fi
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
