#!/usr/bin/env bash
# Common Voice, any language: train on its train split, tune on dev, test on test. Common Voice
# puts each speaker in one split only, so the test speakers are voices training never heard.
#
#   egs/commonvoice/run.sh --corpus DIR | --url URL [--lang en] [--text-norm english|unicode|none]
#                          [--config conf/lstm_cpu.yaml] [--exp NAME] [--average 5] [--beam 20]
#                          [--lm-weights "0.3 0.5 0.8"] [--word-bonuses "0 1 2"]
#                          [--unk-penalties "0 -inf"] [--seed N] [--train-opts "KEY=VALUE ..."]
#                          [--stage N] [--stop-stage N]
#
# DIR: one language's folder of a Common Voice release (cv-corpus-*/LANG: train.tsv, dev.tsv,
# test.tsv, clips/). Common Voice is downloaded from Mozilla's site after accepting its terms,
# which gives a link: --url LINK fetches and unpacks it into download/ (the archive's LANG folder
# is then found there). --text-norm defaults to english for --lang en*, else unicode (lower case,
# punctuation off, any script: ctcasr.data.text).
# Stages: 1 data (`ctcasr import commonvoice` of train, dev -> valid, test), 2 tokenizer
# (training transcripts), 3 train, 4 average (the N best epochs by validation WER), 5 LM (3-gram
# on the training transcripts), 6 decode: greedy, beam, beam + LM with the weight / bonus / OOV
# penalty chosen on valid, 7 report (WER / CER, and how many test speakers training heard).
# Configs: conf/lstm_cpu.yaml (BiLSTM, characters, a few hours on 2 CPU cores),
# conf/conformer_gpu.yaml (Conformer, one GPU, for the large languages).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
[ -x "$root/.venv/bin/ctcasr" ] && export PATH="$root/.venv/bin:$PATH"

corpus=""
url=""
lang=en
text_norm=""
config=conf/lstm_cpu.yaml
exp=""
average=5
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
[ -n "$text_norm" ] || { [[ "$lang" == en* ]] && text_norm=english || text_norm=unicode; }
data=data/$lang
name=$(basename "$config" .yaml)
exp=exp/${exp:-${lang}_$name}
tokenizer=$data/tokenizer_$name.json

. "$root/egs/common/stages.sh"

if runs 1; then
  if [ -z "$corpus" ]; then
    if [ -z "$url" ]; then
      echo "$0: give --corpus cv-corpus-*/$lang, or --url with the download link Common Voice's" \
           "site gives after accepting its terms" >&2
      exit 2
    fi
    python -m ctcasr.data.download --dest download --what "Common Voice ($lang)" "$url"
    corpus=$(find download -mindepth 2 -maxdepth 2 -type d -name "$lang" | sort | tail -n 1)
    [ -n "$corpus" ] || { echo "$0: no $lang folder in the archive (download/*/$lang)" >&2; exit 1; }
  fi
  echo "== stage 1: data ($corpus, text: $text_norm)"
  for pair in train:train dev:valid test:test; do
    ctcasr import commonvoice "$corpus" --split "${pair%%:*}" --text-norm "$text_norm" \
      -o "$data/${pair##*:}.jsonl"
  done
fi
model_stages "$config" "$data/train.jsonl" "$data/valid.jsonl" "$tokenizer" "$exp" "$seed" \
  "$train_opts" "$average" best "$data/train.jsonl" "$data/lm_3gram.arpa"
if runs 6; then
  echo "== stage 6: decode"
  . "$root/egs/common/decode_tuned.sh"
  decode_tuned "$exp" "$data" "$beam" "$lm_weights" "$word_bonuses" "$unk_penalties"
fi
if runs 7; then
  echo "== stage 7: report ($exp; Common Voice's test speakers are not in train)"
  python "$root/egs/common/report.py" "$exp" --data "$data" --sets test
fi
