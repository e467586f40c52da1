#!/usr/bin/env bash
# English read speech (CMU ARCTIC, one speaker, 1.2 h), tested on phrases never seen in training.
#
#   egs/arctic/run.sh [--corpus DIR] [--config conf/lstm.yaml] [--exp NAME] [--average 5]
#                     [--beam 20] [--lm-weights "0.3 0.5 0.8"] [--word-bonuses "0 1 2"]
#                     [--unk-penalties "-inf"] [--seed N] [--train-opts "KEY=VALUE ..."] [--stage N] [--stop-stage N]
#
# Stages: 1 prepare (normalised text, split by phrase),
# 2 tokenizer (trained on the training transcripts only), 3 train, 4 average (model.pt = the mean
# of the N epochs with the best validation WER), 5 LM (3-gram on the training transcripts only),
# 6 decode: greedy, prefix beam, and beam + LM with the weight, word bonus and OOV penalty chosen
# on valid (-inf: only words of the training text; see docs/experiments.md for why that is the default),
# 7 report (a WER/CER table of the unseen-phrase test set).
# Corpus: without --corpus, $CTCASR_DATA/arctic when that exists, else downloaded once (ctcasr
# download arctic).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
[ -x "$root/.venv/bin/ctcasr" ] && export PATH="$root/.venv/bin:$PATH"

corpus=""
config=conf/lstm.yaml
exp=""
average=5
beam=20
lm_weights="0.3 0.5 0.8"
word_bonuses="0 1 2"
unk_penalties="-inf"
seed=""
train_opts=""
stage=1
stop_stage=7
. "$root/egs/common/parse_options.sh"
cd "$here"
corpus=${corpus:-download}
data=data
name=$(basename "$config" .yaml)
exp=exp/${exp:-$name}
tokenizer=$data/tokenizer_$name.json

if [ "$stage" -le 1 ] && [ "$stop_stage" -ge 1 ]; then
  echo "== stage 1: prepare ($corpus)"
  python local/prepare.py "$corpus" "$data"
fi
if [ "$stage" -le 2 ] && [ "$stop_stage" -ge 2 ]; then
  echo "== stage 2: tokenizer ($config, training transcripts only -> $tokenizer)"
  ctcasr tokenizer --config "$config" --manifest "$data/train.jsonl" --out "$tokenizer"
fi
if [ "$stage" -le 3 ] && [ "$stop_stage" -ge 3 ]; then
  echo "== stage 3: train ($config -> $exp)"
  rm -rf "$exp"
  start=$(date +%s)
  set_opts=()
  [ -n "$seed" ] && set_opts=(--set "train.seed=$seed")
  for o in $train_opts; do set_opts+=(--set "$o"); done
  ctcasr train --config "$config" --train "$data/train.jsonl" --valid "$data/valid.jsonl" \
    --exp-dir "$exp" --set "tokenizer.path=$tokenizer" "${set_opts[@]}"
  echo "training took $(( $(date +%s) - start )) s" | tee "$exp/train_time.txt"
fi
if [ "$stage" -le 4 ] && [ "$stop_stage" -ge 4 ]; then
  echo "== stage 4: average the $average best epochs -> $exp/model.pt"
  ctcasr average "$exp" --num "$average" --select best --out "$exp/model.pt"
fi
if [ "$stage" -le 5 ] && [ "$stop_stage" -ge 5 ]; then
  echo "== stage 5: word 3-gram LM on the training transcripts"
  ctcasr lm --text "$data/text_train.txt" --order 3 --out "$data/lm_3gram.arpa"
fi
if [ "$stage" -le 6 ] && [ "$stop_stage" -ge 6 ]; then
  echo "== stage 6: decode"
  . "$root/egs/common/decode_tuned.sh"
  decode_tuned "$exp" "$data" "$beam" "$lm_weights" "$word_bonuses" "$unk_penalties"
fi
if [ "$stage" -le 7 ] && [ "$stop_stage" -ge 7 ]; then
  echo "== stage 7: report ($exp, test = phrases never seen in training)"
  printf "| test set | decoder | WER %% | CER %% | words |\n| --- | --- | --- | --- | --- |\n"
  python - "$exp" "$beam" <<'PY'
import json, sys
from pathlib import Path

exp, beam = Path(sys.argv[1]), sys.argv[2]
tuned = (exp / "lm_tuning.txt").read_text().split(" (")[0] if (exp / "lm_tuning.txt").exists() else ""
names = [("valid_greedy", "valid", "greedy"), ("test_greedy", "test", "greedy"),
         ("test_beam", "test", f"beam {beam}"),
         ("test_beam_lm", "test", f"beam {beam} + 3-gram LM ({tuned})")]
for d, split, decoder in names:
    p = exp / f"decode_{d}" / "summary.json"
    if p.exists():
        s = json.loads(p.read_text())
        print(f"| {split} | {decoder} | {s['wer']:.2f} | {s['cer']:.2f} | {s['words']} |")
PY
fi
