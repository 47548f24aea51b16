#!/usr/bin/env bash
# Probe: the EASE part's search over (lambda, recency weighting), coordinate (the default,
# ModelConfig.ease_search) against joint, on the test split each run holds out:
# MovieLens 100k temporal (seeds 0-5) and random (seeds 0-2), and the session-shaped log
# (benchmarks/sessions.py), random and temporal. Prints each run's test metrics and the
# EASE part's choice (lambda, half-life, floor, rank, blend weight).
#   (set -C; TWOTOWER_ML100K_DIR=... bash benchmarks/probes/ease_search.sh \
#       > benchmarks/results/probe-ease-search-$(date +%Y%m%d-%H%M%S).txt)
#   (set -C: the shell refuses to write over a file already there, a kept result)
set -u
cd "$(dirname "$0")/../.."
d=$(mktemp -d)
TT=.venv/bin/twotower
printf '[model]\nease_search = "joint"\n' > $d/joint.toml
echo "## $(date -u +%Y-%m-%dT%H:%M:%SZ) $(uname -m), $(nproc) cores, commit $(git rev-parse --short HEAD)"
.venv/bin/python benchmarks/sessions.py --out $d/sessions.csv
run() {  # name, train args...
  name=$1; shift
  for search in coordinate joint; do
    extra=""; [ $search = joint ] && extra="--config $d/joint.toml"
    rm -rf $d/r  # a failed run leaves no earlier run's choice to report
    line=$($TT train "$@" $extra --out $d/r 2>&1 | grep '^test:')
    chose=$(.venv/bin/python -c "import json; t=json.load(open('$d/r/training.json'))['ease']; print('lambda', t['lambda'], 'half_life', t['half_life'], 'floor', t['floor'], 'rank', t.get('rank', 'fixed'), 'weight', t.get('weight', 'fixed'), 'settings', len(t['tried']))")
    echo "$name | $search | $line | $chose"
  done
}
for seed in 0 1 2 3 4 5; do run "MovieLens temporal, seed $seed" --split temporal --seed $seed; done
for seed in 0 1 2; do run "MovieLens random, seed $seed" --seed $seed; done
for split in random temporal; do run "sessions $split" --data $d/sessions.csv --split $split; done
rm -rf "$d"
