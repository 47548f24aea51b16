#!/usr/bin/env bash
# Robustness on two more log shapes (benchmarks/shapes.py; results:
# benchmarks/results/robustness-shapes-*.txt):
#   (set -C; bash benchmarks/robustness_shapes.sh > benchmarks/results/robustness-shapes-$(date +%Y%m%d-%H%M%S).txt)
#   (set -C: the shell refuses to write over a file already there, a kept result)
# An e-commerce log (string ids, Zipf popularity, 46% repeated purchases) and a news log
# (articles read only in the days after they appear); the default model against the
# baselines on its random and per-user temporal splits, and the news log on a global time
# cutoff too.
set -u
cd "$(dirname "$0")/.."
mkdir -p /tmp/rob
TT=.venv/bin/twotower
for shape in ecom news; do
  echo "## $(date -u +%Y-%m-%dT%H:%M:%SZ) $(uname -m), $(nproc) cores; log: python benchmarks/shapes.py $shape /tmp/$shape.csv --seed 0"
  .venv/bin/python benchmarks/shapes.py $shape /tmp/$shape.csv --seed 0
  splits="random temporal"; [ $shape = news ] && splits="random temporal global-temporal"
  for split in $splits; do
    echo "\$ twotower train --data /tmp/$shape.csv --split $split --out R"
    /usr/bin/time -f "wall %e s, peak RSS %M KB" $TT train --data /tmp/$shape.csv --split $split --out /tmp/rob/$shape-$split 2>&1 | grep -v "^twotower: warning\|Warning\|so far"
    .venv/bin/python -c "import json; t=json.load(open('/tmp/rob/$shape-$split/training.json'))['ease']; print('ease part: rank', t.get('rank'), 'lambda', t['lambda'], 'half-life', t['half_life'], 'floor', t['floor'], 'weight', t.get('weight', 'fixed'), 'check', t.get('weight_check'))"
    echo "\$ twotower evaluate R --baselines"
    $TT evaluate /tmp/rob/$shape-$split --baselines 2>&1 | grep -v "so far"
    echo
  done
done
