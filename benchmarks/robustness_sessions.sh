#!/usr/bin/env bash
# Robustness on data the defaults were not tuned on (results: benchmarks/results/robustness-sessions-*.txt):
#   (set -C; bash benchmarks/robustness_sessions.sh > benchmarks/results/robustness-sessions-$(date +%Y%m%d-%H%M%S).txt)
#   (set -C: the shell refuses to write over a file already there, a kept result)
# A session-shaped log (benchmarks/sessions.py): the default (ease_rank 0: chosen on
# validation; the blend weight chosen on validation on a temporal split, and on a random one
# when the EASE part's rank-128 cut keeps under 90%: ease_weight_choice "auto") against
# the default with its fixed weight 0.4
# (ease_weight_grid = []) and against the former fixed rank too (ease_rank = 128), random
# and temporal splits; then MovieLens 100k on random splits of seeds the tuning never used
# (set TWOTOWER_ML100K_DIR to read local files).
set -u
cd "$(dirname "$0")/.."
mkdir -p /tmp/rob
TT=.venv/bin/twotower
echo "## $(date -u +%Y-%m-%dT%H:%M:%SZ) $(uname -m), $(nproc) cores; log from: python benchmarks/sessions.py --out /tmp/sessions.csv"
.venv/bin/python benchmarks/sessions.py --out /tmp/sessions.csv
printf '[model]\nease_weight_grid = []\n' > /tmp/rob/fixed.toml
printf '[model]\nease_weight_grid = []\nease_rank = 128\n' > /tmp/rob/rank128.toml
ease() {  # what the EASE part chose, from the run's training.json
  .venv/bin/python -c "import json; t=json.load(open('$1/training.json'))['ease']; print('ease part: rank', t.get('rank', 'fixed'), 'lambda', t['lambda'], 'weight', t.get('weight', 'fixed'), 'check', t.get('weight_check'), [(r['rank'], round(r['recall@10'], 4), round(r['ndcg@10'], 4)) for r in t.get('ranks_tried', [])])"
}
for split in random temporal; do
  for variant in default fixed rank128; do
    extra=""; [ $variant != default ] && extra="--config /tmp/rob/$variant.toml"
    echo "\$ twotower train --data /tmp/sessions.csv --split $split $extra --out R   # $variant"
    $TT train --data /tmp/sessions.csv --split $split $extra --out /tmp/rob/r-$split-$variant 2>&1 | grep -v "^twotower: warning\|Warning"
    ease /tmp/rob/r-$split-$variant
    echo "\$ twotower evaluate R --baselines"
    $TT evaluate /tmp/rob/r-$split-$variant --baselines 2>/dev/null
  done
done
echo
echo "## MovieLens 100k, random 80/20 splits of seeds the tuning never used"
for seed in 7 11 123; do
  echo "\$ twotower train --seed $seed --out R"
  $TT train --seed $seed --out /tmp/rob/ml-$seed 2>&1 | grep -v "^twotower: warning\|Warning"
  ease /tmp/rob/ml-$seed
  echo "\$ twotower evaluate R --baselines"
  $TT evaluate /tmp/rob/ml-$seed --baselines 2>/dev/null
done
