#!/usr/bin/env bash
# Backdoor durability (issue 9, docs/results.md) on configs/papers/durability_fmnist.toml, 3 seeds,
# resumable, then the tables (scripts/durability_table.py):
#   OUT/durability:       backdoor, neurotoxin, dba and DBA's trigger centralised, 4 attackers a
#                         round in rounds 11-30, measured to round 70;
#   OUT/durability_boost: dba and central with each attacker's update scaled by 2.5;
#   OUT/durability_one:   backdoor and neurotoxin with one attacker a round, rounds 11-40, to 80.
# About 30 minutes on 2 cores. Needs `apt-get install dataset-fashion-mnist`.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-runs}
BIN=${BIN:-target/release/fedkit}
SEEDS=${SEEDS:-3}
CFG=configs/papers/durability_fmnist.toml
[ -x "$BIN" ] || cargo build --release -p fedkit-cli
# Every attacker stamps the whole four-bar pattern that DBA splits into pieces.
central='{ use = "backdoor", on = "malicious", target = 7, shape = "pattern", size = 4 }'
dba='{ use = "dba", on = "malicious", target = 7 }'
# Four attackers, each scaled by 2.5, together replace the model (gamma = n / m).
boost='{ use = "model_replacement", on = "malicious", boost = 2.5 }'
"$BIN" matrix "$CFG" --attacks backdoor,neurotoxin,dba --attack "central=[$central]" \
  --defenses mean --seeds "$SEEDS" --out "$OUT/durability" -q
"$BIN" matrix "$CFG" --attack "dba_boost=[$dba, $boost]" --attack "central_boost=[$central, $boost]" \
  --defenses mean --seeds "$SEEDS" --out "$OUT/durability_boost" -q
"$BIN" matrix "$CFG" --attacks backdoor,neurotoxin --set threat.per_round_min=1 --set threat.stop_round=40 \
  --set rounds=80 --defenses mean --seeds "$SEEDS" --out "$OUT/durability_one" -q
python3 scripts/durability_table.py "$OUT/durability" 30
python3 scripts/durability_table.py "$OUT/durability_boost" 30
python3 scripts/durability_table.py "$OUT/durability_one" 40
