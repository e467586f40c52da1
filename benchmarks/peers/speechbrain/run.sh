#!/usr/bin/env bash
# SpeechBrain on the speechocean762 split, under the budget of `make speechocean` (issue 19).
#
#   bash benchmarks/peers/speechbrain/run.sh [--budget-s 3495] [--exp DIR] [--rnn LSTM|LiGRU]
#
# Needs the speechocean recipe's data (manifests and the 3-gram LM: egs/speechocean/run.sh
# --stop-stage 5, or a full `make speechocean`) and the project's .venv (`make venv`) for uv,
# lm_decode.py and the report. SpeechBrain goes into its own .venv-sb, from a hashed lock
# (benchmarks/peers/speechbrain/requirements.txt), never into .venv.
#  1 install  .venv-sb (time and disk are printed)
#  2 train    SpeechBrain's CRDNN + CTC (hparams.yaml) until the time budget; best valid CER
#  3 decode   greedy (SpeechBrain's ctc_greedy_decode); beam 32 and beam 32 + the recipe's
#             3-gram LM with ctcasr's decoder over SpeechBrain's posteriors (weights tuned on
#             valid, as the recipe does)
#  4 report   egs/speechocean/local/report.py: WER / CER overall, children, adults, by speaker
set -euo pipefail
root=$(cd "$(dirname "$0")/../../.." && pwd)
here=$root/benchmarks/peers/speechbrain
budget=3495  # seconds: the training time of the speechocean default (docs/results.md)
exp=$root/benchmarks/peers/exp/speechbrain
rnn=LSTM  # the recipe's LiGRU trains at a quarter of LSTM's speed on 2 CPU cores (docs)
while [ $# -gt 0 ]; do
  case $1 in
    --budget-s) budget=$2; shift 2 ;;
    --exp) exp=$2; shift 2 ;;
    --rnn) rnn=$2; shift 2 ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
done
data=$root/egs/speechocean/data
for f in train_arctic.jsonl valid.jsonl test.jsonl lm_3gram.arpa; do
  [ -f "$data/$f" ] || { echo "missing $data/$f: run egs/speechocean/run.sh --stop-stage 5" >&2; exit 1; }
done

echo "== 1 install .venv-sb"
start=$(date +%s)
[ -x "$root/.venv-sb/bin/python" ] || "$root/.venv/bin/uv" venv -q --python 3.11 "$root/.venv-sb"
"$root/.venv/bin/uv" pip install --quiet --python "$root/.venv-sb/bin/python" --require-hashes \
  -r "$here/requirements.txt"
echo "install: $(( $(date +%s) - start )) s, $(du -sh "$root/.venv-sb" | cut -f1)"

echo "== 2 train ($budget s budget -> $exp)"
"$root/.venv-sb/bin/python" "$here/train.py" --hparams "$here/hparams.yaml" --out "$exp" \
  --train "$data/train_arctic.jsonl" --valid "$data/valid.jsonl" --test "$data/test.jsonl" \
  --budget-s "$budget" --overrides "rnn_class: !name:speechbrain.nnet.RNN.$rnn"

echo "== 3 beam search (+ LM) over SpeechBrain's posteriors"
python3 -c "import json, sys
for l in open(sys.argv[1]):
    r = json.loads(l); print(r['id'], r['text'], sep='\t')" "$data/valid.jsonl" > "$exp/ref_valid.txt"
"$root/.venv/bin/python" "$root/benchmarks/peers/lm_decode.py" "$exp/logp_valid.pt" \
  "$exp/logp_test.pt" --lm "$data/lm_3gram.arpa" --ref-valid "$exp/ref_valid.txt" --out "$exp"

echo "== 4 report (test = 63 speakers never heard in training)"
cat "$exp/summary.json"; echo
"$root/.venv/bin/python" "$root/egs/speechocean/local/report.py" "$exp" --data "$data"
