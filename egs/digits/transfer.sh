#!/usr/bin/env bash
# The main job (`make digits`): a short English model first (the speechocean recipe with
# conf/lstm_short.yaml: 3 epochs, 118 voices), then connected digits fine-tuned from it for 3
# epochs (run.sh with conf/lstm16k_ft.yaml and --init), the LM settings chosen on valid, ending
# in the digits WER table (seen speakers, unseen george, speechocean's accented digit strings).
# The corpora are found in $CTCASR_DATA or downloaded once (docs/data.md). About 15 minutes on
# 2 cores; the spread over seeds: docs/results.md.
#
#   egs/digits/transfer.sh [--seed N] [--exp NAME] [--english-config conf/lstm_short.yaml]
#                          [--english-exp NAME] [--english-opts "KEY=VALUE ..."]
#                          [--config conf/lstm16k_ft.yaml] [--epochs 3] [--train-opts "..."]
#                          [--prune "0.25 0.5"] [--prune-epochs 3] [--stage N]
#
# --seed N (train.seed of both trainings; default: the configs' own, 1) also names the runs:
# egs/speechocean/exp/lstm_short_seedN and egs/digits/exp/transfer_short_seedN unless --exp /
# --english-exp name them. --english-opts and --train-opts are `ctcasr train --set` overrides of
# the two trainings. The English model is trained only when its model.pt does not exist.
# --prune "S ...": stage 3, for each sparsity S, `ctcasr prune` of the digits model (S of every
# layer's LSTM units out, by weight norm) fine-tuned for --prune-epochs with the same recipe
# (run.sh --init, the smaller hidden_size as a --set override) into egs/digits/exp/EXP_pruneP
# (P: S in percent), ending in its WER table (docs/inference.md, "Pruning").
# Stages: 1 the English model, 2 the digits recipe (its own stages 1-5), 3 pruning (--prune).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
. "$root/egs/common/stages.sh"  # (prune_model)

seed=""
exp=""
english_config=conf/lstm_short.yaml
english_exp=""
english_opts=""
config=conf/lstm16k_ft.yaml
epochs=3
train_opts=""
prune=""
prune_epochs=3
stage=1
. "$root/egs/common/parse_options.sh"
[ -x "$root/.venv/bin/ctcasr" ] && export PATH="$root/.venv/bin:$PATH"

suffix=${seed:+_seed$seed}
english=${english_exp:-$(basename "$english_config" .yaml)$suffix}
exp=${exp:-transfer_short$suffix}
model=egs/speechocean/exp/$english/model.pt
seed_opts=()
[ -n "$seed" ] && seed_opts=(--seed "$seed")

if [ "$stage" -le 1 ]; then
  if [ -f "$root/$model" ]; then
    echo "== English model: $model exists, kept"
  else
    echo "== English model: egs/speechocean/run.sh --config $english_config -> $model"
    "$root/egs/speechocean/run.sh" --config "$english_config" --exp "$english" \
      --stop-stage 3 --train-opts "$english_opts" "${seed_opts[@]}"
  fi
fi
if [ "$stage" -le 2 ]; then
  echo "== digits fine-tuned from $model -> egs/digits/exp/$exp"
  "$here/run.sh" --config "$config" --init "../../$model" --epochs "$epochs" --exp "$exp" \
    --train-opts "$train_opts" "${seed_opts[@]}"
fi
if [ "$stage" -le 3 ]; then
  for sparsity in $prune; do
    pct=$(python -c "print(round(100 * float('$sparsity')))")
    pruned=egs/digits/exp/$exp/pruned$pct.pt
    echo "== pruning $sparsity of egs/digits/exp/$exp/model.pt -> $pruned, fine-tuned into egs/digits/exp/${exp}_prune$pct"
    sets=$(cd "$root" && prune_model "egs/digits/exp/$exp/model.pt" "$sparsity" "$pruned")
    "$here/run.sh" --config "$config" --init "../../$pruned" --epochs "$prune_epochs" \
      --exp "${exp}_prune$pct" --train-opts "$train_opts $sets" "${seed_opts[@]}"
  done
fi
