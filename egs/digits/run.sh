#!/usr/bin/env bash
# Connected digits from FSDD, tested on seen speakers and on a speaker never heard in training.
#
#   egs/digits/run.sh [--corpus DIR] [--config conf/conformer.yaml] [--test-speakers george]
#                     [--speechocean DIR|none] [--speechocean-train true|false]
#                     [--init CKPT] [--init-tokenizer true|false] [--epochs N] [--exp NAME]
#                     [--average 5] [--seed N] [--train-opts "KEY=VALUE ..."]
#                     [--lm-weights "0.3 0.5 0.8"] [--word-bonuses "0 1"]
#                     [--chunk-sizes "2 4 8"] [--left-chunks -1] [--stage N] [--stop-stage N]
#
# Stages: 1 prepare, 2 train, 3 average (model.pt = the mean of the N epochs with the best
# validation WER), 4 a word 3-gram LM of the training transcripts, its weight and word bonus
# chosen on valid with beam 10 (ctcasr tune-lm; the vocabulary is closed, ten words: the
# penalty -inf lets the beam output only them) and stored in model.pt, which then decodes that
# way by default (transcribe, serve); every test set decoded greedily and with beam + LM,
# 5 report (a WER table).
# Corpora: without --corpus, FSDD is $CTCASR_DATA/fsdd when that exists, else downloaded once
# (v1.0.10; ctcasr download fsdd); speechocean762 likewise (--speechocean DIR: a copy; none: not
# used). speechocean762 gives a second unseen-speaker test of accented children and adults (its
# test/ digit strings), and (--speechocean-train true, the default) more training voices: its
# train/ digit strings (77 strings, 26 speakers; measured: a third of the errors off the
# accented test).
# --init CKPT fine-tunes from another model (ctcasr train --init): e.g. the speechocean English
# model with conf/lstm16k_ft.yaml (the same network and features, FSDD read at 16 kHz). Its
# tokenizer (and output layer) is kept unless --init-tokenizer false: then the config's
# tokenizer is trained here and the output layer starts afresh.
# --epochs N overrides the config's train.epochs.
# --chunk-sizes "N ...": a chunked-attention model (conf/conformer_chunked.yaml) is also decoded
# with attention in chunks of N output frames (ctcasr decode --chunk-size; --left-chunks of left
# context, -1 all), one more result per size (decode_SET_chunkN_*).
# `make digits` (the main job, egs/digits/transfer.sh) runs this with --init from a 3-epoch
# English model (egs/speechocean/conf/lstm_short.yaml) and conf/lstm16k_ft.yaml for 3 epochs.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
[ -x "$root/.venv/bin/ctcasr" ] && export PATH="$root/.venv/bin:$PATH"

corpus=""
config=conf/conformer.yaml
test_speakers=george
speechocean=""
speechocean_train=true
init=""
init_tokenizer=true
epochs=""
exp=""
average=5
seed=""
train_opts=""
chunk_sizes=""
left_chunks=-1
lm_weights="0.3 0.5 0.8"
word_bonuses="0 1"
stage=1
stop_stage=5
. "$root/egs/common/parse_options.sh"
cd "$here"
corpus=${corpus:-download}
so_opts=()
suffix=""
if [ "$speechocean" != none ]; then
  so_opts=(--speechocean "${speechocean:-download}")
  if [ "$speechocean_train" = true ]; then so_opts+=(--speechocean-train); suffix=_so; fi
fi
data=data/unseen_${test_speakers//,/_}$suffix
exp=exp/${exp:-$(basename "$config" .yaml)_unseen_${test_speakers//,/_}$suffix}

. "$root/egs/common/stages.sh"

if runs 1; then
  echo "== stage 1: prepare ($corpus, unseen: $test_speakers)"
  python local/prepare.py "$corpus" "$data" --test-speakers "$test_speakers" "${so_opts[@]}"
fi
if runs 2; then
  init_opts=()
  [ -n "$init" ] && init_opts=(--init "$init" --set "train.init_tokenizer=$init_tokenizer")
  [ -n "$epochs" ] && init_opts+=(--set "train.epochs=$epochs")
  train_stage "$config" "$data/train.jsonl" "$data/valid.jsonl" "$exp" "$seed" "$train_opts" \
    "${init_opts[@]}"
fi
if runs 3; then average_stage "$exp" "$average"; fi
if runs 4; then
  lm_stage "$data/train.jsonl" "$data/lm_3gram.arpa"
  echo "== stage 4: the LM's settings chosen on valid (kept in $exp/model.pt), decode"
  ctcasr tune-lm "$exp/model.pt" --valid "$data/valid.jsonl" --lm "$data/lm_3gram.arpa" \
    --beam-size 10 --lm-weights "$lm_weights" --word-bonuses "$word_bonuses" --unk-penalties=-inf
  for set in test test_unseen test_speechocean; do
    [ -f "$data/$set.jsonl" ] || continue
    for chunk in 0 $chunk_sizes; do
      tag="" chunk_opts=()
      [ "$chunk" != 0 ] && tag=_chunk$chunk chunk_opts=(--chunk-size "$chunk" --left-chunks "$left_chunks")
      ctcasr decode --checkpoint "$exp/model.pt" --manifest "$data/$set.jsonl" "${chunk_opts[@]}" \
        --out-dir "$exp/decode_${set}${tag}_greedy" --decoder greedy
      ctcasr decode --checkpoint "$exp/model.pt" --manifest "$data/$set.jsonl" "${chunk_opts[@]}" \
        --out-dir "$exp/decode_${set}${tag}_beam_lm"
    done
  done
fi
if runs 5; then
  echo "== stage 5: report ($exp)"
  printf "| test set | decoder | WER %% | CER %% | words |\n| --- | --- | --- | --- | --- |\n"
  for d in "$exp"/decode_*/; do
    [ -f "$d/summary.json" ] || continue
    python - "$d" <<'PY'
import json, sys
from pathlib import Path

d = Path(sys.argv[1])
s = json.loads((d / "summary.json").read_text())
name = d.name.removeprefix("decode_")
tuning = d.parent / "lm_tuning.txt"
lm = tuning.read_text().split(" (")[0] if tuning.exists() else ""
for tag, decoder in (("_greedy", "greedy"), ("_beam_lm", f"beam 10 + 3-gram LM ({lm})")):
    if name.endswith(tag):
        print(f"| {name[: -len(tag)]} | {decoder} | {s['wer']:.2f} | {s['cer']:.2f} | {s['words']} |")
PY
  done
fi
