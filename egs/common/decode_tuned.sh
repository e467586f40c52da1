# Sourced by recipes: the LM settings chosen on valid and stored in the model, then the test sets.
#   decode_tuned EXP DATA BEAM "LM_WEIGHTS" "WORD_BONUSES" "UNK_PENALTIES" ["MORE_TEST_SETS"]
# `ctcasr tune-lm` decodes DATA/valid.jsonl with beam BEAM + DATA/lm_3gram.arpa at every
# (weight, bonus, penalty) and writes the best into EXP/model.pt with the LM (and the choice to
# EXP/lm_tuning.txt, the grid to EXP/lm_tuning.tsv): the model then decodes that way wherever it
# goes (decode, transcribe, serve, export). DATA/valid.jsonl is decoded greedily; DATA/test.jsonl
# and each of MORE_TEST_SETS (names of DATA/NAME.jsonl) greedily, with the beam alone, and as
# the model carries (beam + LM). Each decode goes to EXP/decode_{set}_{tag}/ (hyp.txt,
# summary.json, ...).
decode_one() {  # decode_one EXP DATA SET TAG [ctcasr decode options]
  local exp=$1 data=$2 set=$3 tag=$4; shift 4
  ctcasr decode --checkpoint "$exp/model.pt" --manifest "$data/$set.jsonl" \
    --out-dir "$exp/decode_${set}_$tag" "$@" > /dev/null
}

decode_tuned() {
  local exp=$1 data=$2 beam=$3 weights=$4 bonuses=$5 penalties=$6 more=${7:-} t
  ctcasr tune-lm "$exp/model.pt" --valid "$data/valid.jsonl" --lm "$data/lm_3gram.arpa" \
    --beam-size "$beam" --lm-weights "$weights" --word-bonuses "$bonuses" \
    --unk-penalties="$penalties"
  decode_one "$exp" "$data" valid greedy --decoder greedy
  for t in test $more; do
    decode_one "$exp" "$data" "$t" greedy --decoder greedy
    decode_one "$exp" "$data" "$t" beam --decoder beam --lm none
    decode_one "$exp" "$data" "$t" beam_lm
  done
}
