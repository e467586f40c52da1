#!/usr/bin/env bash
# yesno end to end: prepare -> train -> decode, ending in the test WER.
#
#   egs/yesno/run.sh [--corpus DIR] [--config conf/lstm.yaml] [--exp NAME] [--seed N] [--train-opts "KEY=VALUE ..."] [--stage N] [--stop-stage N]
#
# Stages: 1 prepare manifests, 2 train, 3 decode (greedy, and prefix beam search with a word
# 3-gram LM trained on the train transcripts).
# Corpus: without --corpus, $CTCASR_DATA/yesno when that exists, else downloaded once from OpenSLR
# (ctcasr download yesno).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
[ -x "$root/.venv/bin/ctcasr" ] && export PATH="$root/.venv/bin:$PATH"

corpus=""
config=conf/lstm.yaml
exp=""
seed=""
train_opts=""
stage=1
stop_stage=3
. "$root/egs/common/parse_options.sh"
cd "$here"
corpus=${corpus:-download}
exp=exp/${exp:-$(basename "$config" .yaml)}

. "$root/egs/common/stages.sh"

if runs 1; then
  echo "== stage 1: prepare ($corpus)"
  python local/prepare.py "$corpus" data
fi
if runs 2; then
  train_stage "$config" data/train.jsonl data/valid.jsonl "$exp" "$seed" "$train_opts"
fi
if runs 3; then
  echo "== stage 3: decode"
  ctcasr decode --checkpoint "$exp/model.pt" --manifest data/test.jsonl --out-dir "$exp/decode_test"
  lm_stage data/train.jsonl data/lm_3gram.arpa
  # the model carries beam 10 + the LM from here on (one setting: yesno's valid set is 4 files)
  ctcasr tune-lm "$exp/model.pt" --valid data/valid.jsonl --lm data/lm_3gram.arpa \
    --lm-weights 0.5 --word-bonuses 0 --unk-penalties 0
  ctcasr decode --checkpoint "$exp/model.pt" --manifest data/test.jsonl --out-dir "$exp/decode_test_beam_lm" \
    --timestamps
  echo "greedy:      $(head -1 "$exp/decode_test/summary.txt")"
  echo "beam + LM:   $(head -1 "$exp/decode_test_beam_lm/summary.txt")"
fi
