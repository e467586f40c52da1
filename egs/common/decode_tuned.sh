# Sourced by recipes: decoding with the LM weight, word bonus and OOV penalty chosen on valid.
#   decode_tuned EXP DATA BEAM "LM_WEIGHTS" "WORD_BONUSES" "UNK_PENALTIES" ["MORE_TEST_SETS"]
# decodes DATA/valid.jsonl and DATA/test.jsonl greedily, DATA/test.jsonl with prefix beam BEAM,
# DATA/valid.jsonl with beam + DATA/lm_3gram.arpa for every (weight, bonus, penalty), and
# DATA/test.jsonl with the best of those on valid (written to EXP/lm_tuning.txt); each of
# MORE_TEST_SETS (names of DATA/NAME.jsonl) as test, with the same choice. Each decode
# goes to EXP/decode_{set}_{tag}/ (hyp.txt, summary.json, ...).
decode_one() {  # decode_one EXP DATA SET TAG [ctcasr decode options]
  local exp=$1 data=$2 set=$3 tag=$4; shift 4
  ctcasr decode --checkpoint "$exp/model.pt" --manifest "$data/$set.jsonl" \
    --out-dir "$exp/decode_${set}_$tag" "$@" > /dev/null
}

decode_tuned() {
  local exp=$1 data=$2 beam=$3 weights=$4 bonuses=$5 penalties=$6 more=${7:-} w b u best t
  decode_one "$exp" "$data" valid greedy
  decode_one "$exp" "$data" test greedy
  decode_one "$exp" "$data" test beam --decoder beam --beam-size "$beam"
  for w in $weights; do
    for b in $bonuses; do
      for u in $penalties; do
        decode_one "$exp" "$data" valid "lm${w}_bonus${b}_unk$u" --decoder beam \
          --beam-size "$beam" --lm "$data/lm_3gram.arpa" --lm-weight "$w" --word-bonus "$b" \
          --unk-penalty="$u"
      done
    done
  done
  best=$(python - "$exp" <<'PY'
import json, sys
from pathlib import Path

runs = sorted(Path(sys.argv[1]).glob("decode_valid_lm*_bonus*_unk*/summary.json"))
best = min(runs, key=lambda p: (json.loads(p.read_text())["wer"], str(p)))
name = best.parent.name.removeprefix("decode_valid_lm")
print(name.replace("_bonus", " ").replace("_unk", " "))
PY
)
  read -r w b u <<< "$best"
  echo "LM weight $w, word bonus $b, unk penalty $u (best on valid)" | tee "$exp/lm_tuning.txt"
  for t in test $more; do
    [ "$t" = test ] || decode_one "$exp" "$data" "$t" greedy
    [ "$t" = test ] || decode_one "$exp" "$data" "$t" beam --decoder beam --beam-size "$beam"
    decode_one "$exp" "$data" "$t" beam_lm --decoder beam --beam-size "$beam" \
      --lm "$data/lm_3gram.arpa" --lm-weight "$w" --word-bonus "$b" --unk-penalty="$u"
  done
}
