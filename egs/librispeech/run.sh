#!/usr/bin/env bash
# LibriSpeech (read audiobooks, 16 kHz): train on a training subset, test on speakers never heard
# in training (LibriSpeech's dev and test speakers are not in any training subset).
#
#   egs/librispeech/run.sh [--size mini|100|960] [--corpus DIR] [--config conf/...yaml]
#                          [--exp NAME] [--average 10] [--beam 20] [--lm-weights "0.3 0.5 0.8"]
#                          [--word-bonuses "0 1 2"] [--unk-penalties "0 -inf"] [--seed N]
#                          [--train-opts "KEY=VALUE ..."] [--stage N] [--stop-stage N]
#
# --size picks the data and the default config:
#   mini: Mini LibriSpeech (OpenSLR 31): train-clean-5 (5 h, 29 speakers); dev-clean-2 split by
#         speaker into valid and test halves. conf/lstm_cpu.yaml (a BiLSTM for 2 CPU cores).
#   100:  train-clean-100; valid dev-clean; test test-clean and test-other.
#         conf/conformer_100h.yaml (one GPU).
#   960:  train-clean-100 + train-clean-360 + train-other-500; the same valid and tests.
#         conf/conformer_960h.yaml (8 GPUs; under torchrun: see docs/training.md).
# Stages: 1 data (each split fetched from OpenSLR into DIR unless there, then `ctcasr import
# librispeech`), 2 tokenizer (training transcripts), 3 train, 4 average (the N best epochs by
# validation WER), 5 LM (3-gram on the training transcripts), 6 decode: greedy, beam, beam + LM
# with the weight / bonus / OOV penalty chosen on valid, 7 report (WER / CER per test set, and how
# many test speakers training heard: none).
# DIR: a folder holding LibriSpeech/SPLIT/ (or LibriSpeech/ itself); default $CTCASR_DATA when it
# holds LibriSpeech/, else $CTCASR_DOWNLOADS/librispeech (~/.cache/ctcasr/corpora/librispeech),
# where missing splits are downloaded.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
[ -x "$root/.venv/bin/ctcasr" ] && export PATH="$root/.venv/bin:$PATH"

size=mini
corpus=""
config=""
exp=""
average=10
beam=20
lm_weights="0.3 0.5 0.8"
word_bonuses="0 1 2"
unk_penalties="0 -inf"
seed=""
train_opts=""
stage=1
stop_stage=7
. "$root/egs/common/parse_options.sh"
cd "$here"
case "$size" in
  mini) resource=31; train_sets="train-clean-5"; valid_set=dev-clean-2; tests="";
        config=${config:-conf/lstm_cpu.yaml} ;;
  100)  resource=12; train_sets="train-clean-100"; valid_set=dev-clean;
        tests="test-clean:test test-other:test_other"; config=${config:-conf/conformer_100h.yaml} ;;
  960)  resource=12; train_sets="train-clean-100 train-clean-360 train-other-500";
        valid_set=dev-clean; tests="test-clean:test test-other:test_other";
        config=${config:-conf/conformer_960h.yaml} ;;
  *) echo "$0: --size must be mini, 100 or 960" >&2; exit 2 ;;
esac
if [ -z "$corpus" ]; then
  if [ -n "${CTCASR_DATA:-}" ] && [ -d "$CTCASR_DATA/LibriSpeech" ]; then corpus=$CTCASR_DATA
  else corpus=${CTCASR_DOWNLOADS:-$HOME/.cache/ctcasr/corpora}/librispeech; fi
fi
[ "$(basename "$corpus")" = LibriSpeech ] && corpus=$(dirname "$corpus")
data=data/$size
name=$(basename "$config" .yaml)
exp=exp/${exp:-${size}_$name}
tokenizer=$data/tokenizer_$name.json

. "$root/egs/common/stages.sh"

if runs 1; then
  echo "== stage 1: data ($corpus/LibriSpeech)"
  mkdir -p "$data"
  splits="$train_sets $valid_set"
  for t in $tests; do splits="$splits ${t%%:*}"; done
  for s in $splits; do
    if [ ! -d "$corpus/LibriSpeech/$s" ]; then
      python -m ctcasr.data.download --dest "$corpus" --what "LibriSpeech $s" \
        "https://www.openslr.org/resources/$resource/$s.tar.gz" \
        "https://us.openslr.org/resources/$resource/$s.tar.gz"
    fi
    ctcasr import librispeech "$corpus/LibriSpeech" --split "$s" -o "$data/$s.jsonl"
  done
  for s in $train_sets; do cat "$data/$s.jsonl"; done > "$data/train.jsonl"
  if [ "$size" = mini ]; then  # no test set: dev-clean-2's speakers in two halves
    python local/split_speakers.py "$data/$valid_set.jsonl" "$data/valid.jsonl" "$data/test.jsonl"
  else
    cp "$data/$valid_set.jsonl" "$data/valid.jsonl"
    for t in $tests; do cp "$data/${t%%:*}.jsonl" "$data/${t##*:}.jsonl"; done
  fi
fi
model_stages "$config" "$data/train.jsonl" "$data/valid.jsonl" "$tokenizer" "$exp" "$seed" \
  "$train_opts" "$average" best "$data/train.jsonl" "$data/lm_3gram.arpa"
extra=""
for t in $tests; do [ "${t##*:}" = test ] || extra="$extra ${t##*:}"; done
if runs 6; then
  echo "== stage 6: decode"
  . "$root/egs/common/decode_tuned.sh"
  decode_tuned "$exp" "$data" "$beam" "$lm_weights" "$word_bonuses" "$unk_penalties" "$extra"
fi
if runs 7; then
  echo "== stage 7: report ($exp; test speakers are not in training)"
  python "$root/egs/common/report.py" "$exp" --data "$data" --sets test $extra
fi
