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

. "$root/egs/common/stages.sh"
. "$root/egs/common/decode_tuned.sh"

if runs 1; then
  echo "== stage 1: prepare ($corpus)"
  python local/prepare.py "$corpus" "$data"
fi
model_stages "$config" "$data/train.jsonl" "$data/valid.jsonl" "$tokenizer" "$exp" "$seed" \
  "$train_opts" "$average" best "$data/text_train.txt" "$data/lm_3gram.arpa"
if runs 6; then
  echo "== stage 6: decode"
  decode_tuned "$exp" "$data" "$beam" "$lm_weights" "$word_bonuses" "$unk_penalties"
fi
if runs 7; then
  echo "== stage 7: report ($exp, test = phrases never seen in training)"
  python "$root/egs/common/report.py" "$exp" --data "$data" --sets valid test
fi
