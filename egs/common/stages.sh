# Sourced by recipes: the stages every recipe runs the same way, over the CLI.
#   tokenizer_stage CONFIG DATA TOKENIZER      tokenizer of DATA/train.jsonl's transcripts
#   train_stage CONFIG DATA EXP TOKENIZER SEED "KEY=VALUE ..."
#                                              train on DATA/train.jsonl, validate on valid.jsonl
#                                              (EXP is started afresh; its time -> train_time.txt)
#   average_stage EXP N                        model.pt = the mean of the N best epochs (WER)
#   lm_stage DATA                              DATA/lm_3gram.arpa from the training transcripts
tokenizer_stage() {
  echo "== stage 2: tokenizer ($1, training transcripts only -> $3)"
  ctcasr tokenizer --config "$1" --manifest "$2/train.jsonl" --out "$3"
}

train_stage() {
  local config=$1 data=$2 exp=$3 tokenizer=$4 seed=$5 opts=$6 start o
  echo "== stage 3: train ($config -> $exp)"
  rm -rf "$exp"
  start=$(date +%s)
  local set_opts=(--set "tokenizer.path=$tokenizer")
  [ -n "$seed" ] && set_opts+=(--set "train.seed=$seed")
  for o in $opts; do set_opts+=(--set "$o"); done
  ctcasr train --config "$config" --train "$data/train.jsonl" --valid "$data/valid.jsonl" \
    --exp-dir "$exp" "${set_opts[@]}"
  echo "training took $(( $(date +%s) - start )) s" | tee "$exp/train_time.txt"
}

average_stage() {
  echo "== stage 4: average the $2 best epochs -> $1/model.pt"
  ctcasr average "$1" --num "$2" --select best --out "$1/model.pt"
}

lm_stage() {
  echo "== stage 5: word 3-gram LM on the training transcripts"
  ctcasr lm --manifest "$1/train.jsonl" --order 3 --out "$1/lm_3gram.arpa"
}
