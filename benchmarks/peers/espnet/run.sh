#!/usr/bin/env bash
# ESPnet2 on the speechocean762 split, under the budget of `make speechocean` (issue 39).
#
#   bash benchmarks/peers/espnet/run.sh [--budget-s 3495] [--exp DIR] [--espnet-beam 10]
#                                       [--data egs/speechocean/data] [--stage N]
#
# Needs the speechocean recipe's data (manifests and the 3-gram LM: egs/speechocean/run.sh
# --stop-stage 5, or a full `make speechocean`) and the project's .venv for uv, lm_decode.py
# and the report. ESPnet goes into its own .venv-espnet, from its own hashed lock
# (requirements.txt, resolved with uv's --override overrides.txt: espnet 202511 pins
# setuptools<74, torch 2.14.1 needs >=77; the lock holds torch's, and installs with --no-deps),
# never into .venv.
#  1 install  .venv-espnet (time and disk are printed; `uv pip check` shows the one override)
#  2 data     prepare.py: ESPnet's Kaldi-style dirs (wav.scp, text, utt2spk) and char tokens
#  3 train    ESPnet's own python -m espnet2.bin.asr_train (collect_stats, training until the
#             budget, n-best averaging): conf/train_ctc_conformer.yaml
#  4 decode   greedy, and ESPnet's own CTC beam search (--espnet-beam N, 0: skip); beam 32 and
#             beam 32 + the recipe's 3-gram LM with ctcasr's decoder over ESPnet's posteriors
#             (weights tuned on valid, as the recipe does)
#  5 report   egs/speechocean/local/report.py: WER / CER overall, children, adults, by speaker
set -euo pipefail
root=$(cd "$(dirname "$0")/../../.." && pwd)
here=$root/benchmarks/peers/espnet
budget=3495  # seconds: the training time of the speechocean default (docs/results.md)
exp=$root/benchmarks/peers/exp/espnet
espnet_beam=10
stage=1
data=$root/egs/speechocean/data
while [ $# -gt 0 ]; do
  case $1 in
    --budget-s) budget=$2; shift 2 ;;
    --exp) exp=$2; shift 2 ;;
    --espnet-beam) espnet_beam=$2; shift 2 ;;
    --data) data=$(cd "$2" && pwd); shift 2 ;;
    --stage) stage=$2; shift 2 ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
done
for f in train_arctic.jsonl valid.jsonl test.jsonl lm_3gram.arpa; do
  [ -f "$data/$f" ] || { echo "missing $data/$f: run egs/speechocean/run.sh --stop-stage 5" >&2; exit 1; }
done
venv=$root/.venv-espnet
mkdir -p "$exp"

if [ "$stage" -le 1 ]; then
  echo "== 1 install .venv-espnet"
  start=$(date +%s)
  # pyworld (an ESPnet dependency) has no wheel for this platform: uv builds it with a C/C++
  # compiler, from Debian's packages when missing and this is a root shell with apt-get
  if ! command -v g++ >/dev/null && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "installing gcc and g++ (Debian) to build pyworld"
    timeout 60 apt-get update -q >/dev/null
    DEBIAN_FRONTEND=noninteractive timeout 300 apt-get install -y -q --no-install-recommends \
      gcc g++ python3-dev >/dev/null
  fi
  [ -x "$venv/bin/python" ] || "$root/.venv/bin/uv" venv -q --python 3.11 "$venv"
  "$root/.venv/bin/uv" pip install --quiet --python "$venv/bin/python" --require-hashes --no-deps \
    -r "$here/requirements.txt"
  echo "install: $(( $(date +%s) - start )) s, $(du -sh "$venv" | cut -f1)"
  "$root/.venv/bin/uv" pip check --python "$venv/bin/python" || true  # the setuptools override
fi
if [ "$stage" -le 2 ]; then
  echo "== 2 data"
  "$venv/bin/python" "$here/prepare.py" --train "$data/train_arctic.jsonl" \
    --valid "$data/valid.jsonl" --test "$data/test.jsonl" --out "$exp/data"
fi
if [ "$stage" -le 3 ]; then
  echo "== 3 train ($budget s budget -> $exp)"
  "$venv/bin/python" "$here/train.py" --data "$exp/data" --config "$here/conf/train_ctc_conformer.yaml" \
    --out "$exp" --budget-s "$budget"
fi
if [ "$stage" -le 4 ]; then
  echo "== 4 decode: greedy, ESPnet's beam $espnet_beam; ctcasr's beam (+ LM) over ESPnet's posteriors"
  "$venv/bin/python" "$here/posteriors.py" --data "$exp/data" --exp "$exp" --espnet-beam "$espnet_beam"
  sed 's/ /\t/' "$exp/data/valid/text" > "$exp/ref_valid.txt"
  "$root/.venv/bin/python" "$root/benchmarks/peers/lm_decode.py" "$exp/logp_valid.pt" \
    "$exp/logp_test.pt" --lm "$data/lm_3gram.arpa" --ref-valid "$exp/ref_valid.txt" --out "$exp"
fi
echo "== 5 report (test = 63 speakers never heard in training)"
cat "$exp/summary.json"; echo
"$root/.venv/bin/python" "$root/egs/speechocean/local/report.py" "$exp" --data "$data"
