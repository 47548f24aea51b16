#!/usr/bin/env bash
# Robustness on data the defaults were not tuned on (results: benchmarks/results/robustness-sessions-*.txt):
#   bash benchmarks/robustness_sessions.sh > benchmarks/results/robustness-sessions-$(date +%Y%m%d).txt
# A session-shaped log (benchmarks/sessions.py): the default (ease_rank 0: chosen on
# validation) against the former fixed rank (ease_rank = 128), random and temporal splits,
# and with the blend weight chosen (ease_weight_grid); then MovieLens 100k on random splits
# of seeds the tuning never used (set TWOTOWER_ML100K_DIR to read local files).
set -u
cd "$(dirname "$0")/.."
mkdir -p /tmp/rob
TT=.venv/bin/twotower
echo "## $(date -u +%Y-%m-%dT%H:%M:%SZ) $(uname -m), $(nproc) cores; log from: python benchmarks/sessions.py --out /tmp/sessions.csv"
.venv/bin/python benchmarks/sessions.py --out /tmp/sessions.csv
printf '[model]\nease_rank = 128\n' > /tmp/rob/rank128.toml
for split in random temporal; do
  for variant in default rank128; do
    extra=""; [ $variant = rank128 ] && extra="--config /tmp/rob/rank128.toml"
    echo "\$ twotower train --data /tmp/sessions.csv --split $split $extra --out R"
    $TT train --data /tmp/sessions.csv --split $split $extra --out /tmp/rob/r-$split-$variant 2>&1 | grep -v "^twotower: warning\|Warning"
    .venv/bin/python -c "import json; t=json.load(open('/tmp/rob/r-$split-$variant/training.json'))['ease']; print('ease part: rank', t.get('rank', 'fixed'), 'lambda', t['lambda'], [(r['rank'], round(r['recall@10'], 4), round(r['ndcg@10'], 4)) for r in t.get('ranks_tried', [])])"
    echo "\$ twotower evaluate R --baselines"
    $TT evaluate /tmp/rob/r-$split-$variant --baselines 2>/dev/null
  done
done

printf '[model]\nease_weight_grid = [0.2, 0.3, 0.4, 0.5, 0.6, 0.8, 0.9, 0.95]\n' > /tmp/rob/grid.toml
echo "\$ twotower train --data /tmp/sessions.csv --split random --config grid.toml --out R   # grid.toml: [model] ease_weight_grid = [0.2, 0.3, 0.4, 0.5, 0.6, 0.8, 0.9, 0.95]"
$TT train --data /tmp/sessions.csv --split random --config /tmp/rob/grid.toml --out /tmp/rob/r-random-grid 2>&1 | grep -v "^twotower: warning\|Warning"
.venv/bin/python -c "import json; t=json.load(open('/tmp/rob/r-random-grid/training.json'))['ease']; print('ease part: rank', t.get('rank'), 'weight', t.get('weight'))"
echo "\$ twotower evaluate R --baselines"
$TT evaluate /tmp/rob/r-random-grid --baselines 2>/dev/null
echo
echo "## MovieLens 100k, random 80/20 splits of seeds the tuning never used"
for seed in 7 11 123; do
  echo "\$ twotower train --seed $seed --out R"
  $TT train --seed $seed --out /tmp/rob/ml-$seed 2>&1 | grep -v "^twotower: warning\|Warning"
  .venv/bin/python -c "import json; t=json.load(open('/tmp/rob/ml-$seed/training.json'))['ease']; print('ease part: rank', t.get('rank'), 'lambda', t['lambda'])"
  echo "\$ twotower evaluate R --baselines"
  $TT evaluate /tmp/rob/ml-$seed --baselines 2>/dev/null
done
