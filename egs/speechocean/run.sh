#!/usr/bin/env bash
# Read English from many speakers (speechocean762: 117 training speakers, Mandarin L1, children
# and adults), tested on 63 speakers never heard in training.
#
#   egs/speechocean/run.sh [--corpus DIR] [--extra arctic|none] [--arctic DIR]
#                          [--config conf/lstm_phone.yaml] [--exp NAME] [--average 5]
#                          [--select cer|loss|best|last]
#                          [--beam 32] [--lm-weights "0.3 0.5 0.8"] [--word-bonuses "0 1 2"]
#                          [--unk-penalties "0 -5 -inf"] [--chunk-sizes "4 8 16"] [--left-chunks -1]
#                          [--seed N] [--train-opts "KEY=VALUE ..."] [--init CKPT]
#                          [--prune "0.25 0.5"] [--prune-epochs 8] [--realign true]
#                          [--train-manifest FILE] [--stage N] [--stop-stage N]
#
# Stages: 1 prepare (ctcasr import-kaldi of train/ and test/, text normalisation, a validation
# set of 8 whole training speakers, 4 children and 4 adults; --extra arctic, the default, adds all of CMU ARCTIC, one US-English voice, 1.23 h,
# to training: without it CTC stays on its blank/vowel plateau for many epochs, see
# docs/experiments.md), 2 tokenizer (training transcripts only), 3 train, 4 average (model.pt = the mean of
# the N epochs with the lowest validation CER: --select cer; WER stays near 80-100 % here and
# ranks epochs by noise, and the validation loss turns up from epoch ~14 while the CER still
# falls: measured in docs/experiments.md), 5 LM (3-gram on the training
# transcripts only), 6 decode: greedy, beam, beam + LM with weight / bonus / OOV penalty chosen on
# valid (-inf = only words of the training text, as a lexicon decoder), 7 report by speaker
# (overall, children, adults, median and 90th-percentile speaker), 8 pruning (with --prune),
# 9 pronunciations realigned (with --realign true).
# --init CKPT: training starts from CKPT's weights (ctcasr train --init, its tokenizer kept).
# --prune "S ...": stage 8, for each sparsity S, `ctcasr prune` of EXP/model.pt (S of every
# layer's LSTM units, or of a Conformer's feed-forward channels, out by weight norm), fine-tuned
# for --prune-epochs by this recipe (stages 3-7, --init, the smaller size as a --train-opts
# override) into EXP_pruneP (P: S in percent), ending in its report (docs/inference.md).
# --realign true: stage 9, a phone model only: `ctcasr realign` of EXP/model.pt chooses, for
# each training word token with several CMUdict pronunciations, the one the audio supports
# (written as the(2), ...) into DATA/TRAIN_realigned_NAME.jsonl; the recipe then trains again
# from scratch on it (stages 3-7, --train-manifest) into EXP_realigned (docs/training.md).
# --train-manifest FILE: train on FILE instead of the prepared training manifest.
# --chunk-sizes "N ...": a streaming model (conf/conformer_chunked_phone.yaml) is also decoded on
# test with attention in chunks of N output frames (ctcasr decode --chunk-size; --left-chunks of
# left context, -1 all), greedy, beam and beam + LM at the settings valid chose with full context.
# Corpora: without --corpus (--arctic), $CTCASR_DATA/speechocean762 (arctic) when that exists, else
# downloaded once (ctcasr download speechocean762).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
[ -x "$root/.venv/bin/ctcasr" ] && export PATH="$root/.venv/bin:$PATH"

corpus=""
extra=arctic
arctic=""
config=conf/lstm_phone.yaml  # phones + lexicon + SC-CTC: WER with the LM 44.4 %, characters (conf/lstm.yaml) 50.6 %
exp=""
average=5
select=cer
beam=32
lm_weights="0.3 0.5 0.8"
word_bonuses="0 1 2"
unk_penalties="0 -5 -inf"
chunk_sizes=""
left_chunks=-1
seed=""
train_opts=""
init=""
prune=""
prune_epochs=8  # measured: 0.5 after 8 epochs at the parent's WER (docs/inference.md)
realign=false
train_manifest=""
stage=1
stop_stage=9
. "$root/egs/common/parse_options.sh"
cd "$here"
corpus=${corpus:-download}
arctic=${arctic:-download}
case "$extra" in arctic|none) ;; *) echo "error: --extra must be arctic or none, not '$extra'" >&2; exit 1;; esac
data=data
train=$data/train.jsonl
[ "$extra" = arctic ] && train=$data/train_arctic.jsonl
prepared=$train
train=${train_manifest:-$train}
name=$(basename "$config" .yaml)
exp=exp/${exp:-$name}
tokenizer=$data/tokenizer_$name.json

. "$root/egs/common/stages.sh"
. "$root/egs/common/decode_tuned.sh"

if runs 1; then
  echo "== stage 1: prepare ($corpus)"
  python local/prepare.py "$corpus" "$data"
  if [ "$extra" = arctic ]; then
    echo "-- all of ARCTIC ($arctic) joins training (its speaker is in neither valid nor test)"
    python ../arctic/local/prepare.py "$arctic" "$data/arctic" --valid-percent 0 --test-percent 0
    cat "$data/train.jsonl" "$data/arctic/train.jsonl" > "$train"
  fi
fi
init_opts=()
[ -n "$init" ] && init_opts=(--init "$init" --set train.init_tokenizer=true)
model_stages "$config" "$train" "$data/valid.jsonl" "$tokenizer" "$exp" "$seed" "$train_opts" \
  "$average" "$select" "$data/text_train.txt" "$data/lm_3gram.arpa" "${init_opts[@]}"
if runs 6; then
  echo "== stage 6: decode"
  decode_tuned "$exp" "$data" "$beam" "$lm_weights" "$word_bonuses" "$unk_penalties"
  for chunk in $chunk_sizes; do
    c=(--chunk-size "$chunk" --left-chunks "$left_chunks")
    decode_one "$exp" "$data" test "chunk${chunk}_greedy" "${c[@]}" --decoder greedy
    decode_one "$exp" "$data" test "chunk${chunk}_beam" "${c[@]}" --decoder beam --lm none
    decode_one "$exp" "$data" test "chunk${chunk}_beam_lm" "${c[@]}"
  done
fi
if runs 7; then
  echo "== stage 7: report ($exp; test = 63 speakers never heard in training)"
  [ -f "$exp/lm_tuning.txt" ] && cat "$exp/lm_tuning.txt"
  python local/report.py "$exp" --data "$data"
fi
if [ -n "$prune" ] && runs 8; then
  for sparsity in $prune; do
    pct=$(python -c "print(round(100 * float('$sparsity')))")
    pruned=$exp/pruned$pct.pt
    echo "== stage 8: pruning $sparsity of $exp/model.pt -> $pruned, fine-tuned for" \
      "$prune_epochs epochs into ${exp}_prune$pct"
    sets=$(prune_model "$exp/model.pt" "$sparsity" "$pruned")
    "$here/run.sh" --config "$config" --extra "$extra" --exp "$(basename "$exp")_prune$pct" \
      --init "$pruned" --train-opts "$train_opts train.epochs=$prune_epochs $sets" \
      --average "$average" --select "$select" --beam "$beam" --lm-weights "$lm_weights" \
      --word-bonuses "$word_bonuses" --unk-penalties "$unk_penalties" \
      ${seed:+--seed "$seed"} --stage 3 --stop-stage 7
  done
fi
if [ "$realign" = true ] && runs 9; then
  realigned=$data/$(basename "$prepared" .jsonl)_realigned_$name.jsonl
  echo "== stage 9: pronunciations chosen by $exp/model.pt -> $realigned, then trained again" \
    "into ${exp}_realigned"
  ctcasr realign "$exp/model.pt" "$prepared" -o "$realigned"
  "$here/run.sh" --config "$config" --extra "$extra" --exp "$(basename "$exp")_realigned" \
    --train-manifest "$realigned" --train-opts "$train_opts" \
    --average "$average" --select "$select" --beam "$beam" --lm-weights "$lm_weights" \
    --word-bonuses "$word_bonuses" --unk-penalties "$unk_penalties" \
    ${seed:+--seed "$seed"} --stage 3 --stop-stage 7
fi
