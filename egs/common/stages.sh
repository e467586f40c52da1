# Sourced by recipes (after their options): the stages every recipe runs the same way, over the
# CLI. Each prints "== stage N: ..." with the number of the `runs N` that started it.
#   runs N                                      true when N is within --stage .. --stop-stage
#   tokenizer_stage CONFIG TRAIN TOKENIZER      tokenizer of the TRAIN manifest's transcripts
#   train_stage CONFIG TRAIN VALID EXP SEED "KEY=VALUE ..." [ctcasr train options ...]
#                                               EXP started afresh; its time -> train_time.txt
#   average_stage EXP N [SELECT]                model.pt = the mean of the N best epochs
#                                               (SELECT: best, the default, cer, loss or last)
#   lm_stage TEXT LM                            a word 3-gram LM of TEXT (a manifest's
#                                               transcripts, or a text file) -> LM
#   model_stages CONFIG TRAIN VALID TOKENIZER EXP SEED "KEY=VALUE ..." N SELECT TEXT LM
#                [ctcasr train options ...]     stages 2-5 of a recipe: tokenizer, train,
#                                               average, LM
#   prune_model MODEL S OUT                     ctcasr prune of MODEL (sparsity S) -> OUT; its
#                                               report on stderr, on stdout the KEY=VALUE
#                                               overrides (the smaller sizes) that fine-tune OUT
runs() {
  stage_now=$1
  [ "$stage" -le "$1" ] && [ "$stop_stage" -ge "$1" ]
}

tokenizer_stage() {
  echo "== stage $stage_now: tokenizer ($1, training transcripts only -> $3)"
  ctcasr tokenizer --config "$1" --manifest "$2" --out "$3"
}

train_stage() {
  local config=$1 train=$2 valid=$3 exp=$4 seed=$5 opts=$6 start o
  shift 6
  echo "== stage $stage_now: train ($config -> $exp)"
  rm -rf "$exp"
  start=$(date +%s)
  local set_opts=()
  [ -n "$seed" ] && set_opts+=(--set "train.seed=$seed")
  for o in $opts; do set_opts+=(--set "$o"); done
  ctcasr train --config "$config" --train "$train" --valid "$valid" --exp-dir "$exp" \
    "${set_opts[@]}" "$@"
  echo "training took $(( $(date +%s) - start )) s" | tee "$exp/train_time.txt"
}

average_stage() {
  echo "== stage $stage_now: average the $2 best epochs (${3:-best}) -> $1/model.pt"
  ctcasr average "$1" --num "$2" --select "${3:-best}" --out "$1/model.pt"
}

lm_stage() {
  echo "== stage $stage_now: word 3-gram LM of the training transcripts -> $2"
  case "$1" in
    *.jsonl) ctcasr lm --manifest "$1" --order 3 --out "$2" ;;
    *) ctcasr lm --text "$1" --order 3 --out "$2" ;;
  esac
}

model_stages() {
  local config=$1 train=$2 valid=$3 tokenizer=$4 exp=$5 seed=$6 opts=$7 n=$8 select=$9
  local text=${10} lm=${11}
  shift 11
  if runs 2; then tokenizer_stage "$config" "$train" "$tokenizer"; fi
  if runs 3; then
    train_stage "$config" "$train" "$valid" "$exp" "$seed" "tokenizer.path=$tokenizer $opts" "$@"
  fi
  if runs 4; then average_stage "$exp" "$n" "$select"; fi
  if runs 5; then lm_stage "$text" "$lm"; fi
}

prune_model() {
  local said
  said=$(ctcasr prune "$1" --sparsity "$2" -o "$3")
  echo "$said" >&2
  echo "$said" | grep -o -- '--set [^ ]*' | sed 's/^--set //' | tr '\n' ' '
}
