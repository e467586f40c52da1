"""Decoding speed and WER: ctcasr's beam search against pyctcdecode and flashlight, on real models.

    .venv/bin/python benchmarks/decode_speed.py [--model NAME CKPT MANIFEST LM_TEXT]...
        [--beams 10 32 64] [--lm both|no|yes] [--word-bonus [NAME=]BONUS ...]
        [--max-utts 0] [--decoders ...] [--threads 1] [--json FILE]

Each model runs once over (the first ``--max-utts`` of) its manifest; its log-probs are kept and
every decoder decodes the same tensors, so the times are decoding only. The word LM (3-gram
Kneser-Ney, ``ctcasr lm``) is trained on LM_TEXT (one sentence per line, or a manifest's texts)
and written as one ARPA file that all three decoders read, with the same weight, word bonus and
OOV penalty. Without ``--model``: every recipe model that exists (yesno, speechocean characters,
speechocean SentencePiece 256 / 1000).

Decoders (the same beam for all):
- ``ctcasr``: the whole set in length-sorted batches of ``--batch`` utterances;
  ``ctcasr-1``: one utterance at a time (at beam 32 only);
- ``pyctcdecode``: ``decode`` one utterance at a time (no process pool), its own pruning
  defaults; the LM through its KenLM binding;
- ``flashlight``: torchaudio's ``ctc_decoder`` (flashlight-text); lexicon-free without the LM,
  with the LM a lexicon of the LM's words (flashlight's word-LM mode: it can only output those).

The OOV penalty is ctcasr's ``--unk-penalty`` (natural log, added once per unknown word, not
weighted): pyctcdecode adds its ``unk_score_offset`` to the log10 LM score before the weight, so
it gets ``unk_penalty / (lm_weight * ln 10)``, which gives the same total for every hypothesis.
``-inf`` (only the LM's words, as the recipes' grid allows) empties pyctcdecode's beams (it
raises); it and the score column get ``UNK_FLOOR`` (-1000 nats) instead.

Prints one table (ms of decoding per second of audio, WER, CER, and ``score``: the mean over
utterances of what the search maximises, CTC log-probability of the hypothesis (all alignments)
+ LM weight x ln P + word bonus per word + OOV penalty per unknown word; higher is a better
search at these weights, whatever the WER. For SentencePiece models it is the score of the
text's canonical encoding, a lower bound when a decoder spelt it with other pieces.
``--json FILE`` also writes the rows as objects with the keys decoder, model, vocab, beam, lm,
lm_weight, word_bonus, unk_penalty (``"-inf"`` as a string), ms_per_audio_s, wer, cer, score
(null where it is NaN).
``--lm-weight``, ``--word-bonus`` and ``--unk-penalty`` take one value for every model or
``NAME=VALUE`` for one (the same for every decoder): each model at its own validation grid's
choice, e.g. ``--lm-weight 0.5 so-sp256=0.3``, ``--unk-penalty -5 so-char=-inf`` (argparse
reads a bare ``-inf`` after the first value as an option: name it, or give it alone with ``=``).
Peers that are not installed get a row saying so: ``make bench-decode`` installs them.
"""

from __future__ import annotations

import argparse
import json
import math
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F

from ctcasr.checkpoint import load_model
from ctcasr.data.dataset import ASRDataset
from ctcasr.data.manifest import read_manifest
from ctcasr.decode import DecodeOptions, make_decoder
from ctcasr.lm import NGramLM, train_kneser_ney
from ctcasr.lm.ngram import BOS, EOS
from ctcasr.scoring import score
from ctcasr.tokenizer import SPACE

DECODERS = ["ctcasr", "ctcasr-1", "pyctcdecode", "flashlight"]
UNK_FLOOR = -1000.0  # an unknown word's cost where -inf cannot be used (pyctcdecode, the score)
WEIGHTS = {"lm_weight": 0.5, "word_bonus": 1.0, "unk_penalty": -5.0}  # per model: --lm-weight ...
RECIPES = [  # name, checkpoint, test manifest, LM text
    ("yesno", "egs/yesno/exp/lstm/model.pt", "egs/yesno/data/test.jsonl",
     "egs/yesno/data/train.jsonl"),
    ("so-char", "egs/speechocean/exp/lstm/model.pt", "egs/speechocean/data/test.jsonl",
     "egs/speechocean/data/text_train.txt"),
    ("so-sp256", "egs/speechocean/exp/sp256/model.pt", "egs/speechocean/data/test.jsonl",
     "egs/speechocean/data/text_train.txt"),
    ("so-sp1000", "egs/speechocean/exp/sp1000/model.pt", "egs/speechocean/data/test.jsonl",
     "egs/speechocean/data/text_train.txt"),
]


def record(ckpt: Path, manifest: Path, max_utts: int):
    rec = load_model(ckpt)
    utts = read_manifest(manifest)[: max_utts or None]
    ds = ASRDataset(utts, rec.config.data.features)
    out = []
    with torch.no_grad():
        for i in range(len(ds)):
            feats = ds[i][1].unsqueeze(0)
            lp, n = rec.model(feats, torch.tensor([feats.shape[1]]))
            out.append(lp[0, : n[0]].contiguous())
    return rec.tokenizer, utts, out


def lm_sentences(path: Path) -> list[str]:
    if path.suffix == ".jsonl":
        return [u.text for u in read_manifest(path)]
    return [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def is_char(pieces: list[str]) -> bool:
    """A character tokenizer's pieces (``▁`` is the space), not SentencePiece's."""
    return all(len(p) == 1 for p in pieces[1:] if not p.startswith("<"))


def timed(decode: Callable, logps) -> tuple[list[str], float]:
    decode(logps[:2])  # warm-up (ctcasr builds its LM tables here)
    t0 = time.perf_counter()
    hyps = decode(logps)
    return hyps, time.perf_counter() - t0


def ctcasr_decoder(tok, opts: DecodeOptions, batch: int) -> Callable:
    dec = make_decoder("beam", opts, tok)

    def run(logps) -> list[str]:
        order = sorted(range(len(logps)), key=lambda i: logps[i].shape[0])
        out = [""] * len(logps)
        for s in range(0, len(order), batch):
            idx = order[s : s + batch]
            lens = torch.tensor([logps[i].shape[0] for i in idx])
            padded = torch.nn.utils.rnn.pad_sequence([logps[i] for i in idx], batch_first=True)
            for i, nb in zip(idx, dec(padded, lens), strict=True):
                out[i] = tok.decode(nb[0].tokens)
        return out

    return run


def pyctcdecode_decoder(tok, beam: int, lm: Path | None, a) -> Callable[[], list[str]] | str:
    try:
        from pyctcdecode import build_ctcdecoder
    except ImportError:
        return "not installed (make bench-decode)"
    pieces = [tok.id_to_piece(i) for i in range(tok.vocab_size)]
    labels = ["" if i == 0 else (" " if p == SPACE and is_char(pieces) else p)
              for i, p in enumerate(pieces)]
    try:
        unk_offset = unk_cost(a.unk_penalty) / (a.lm_weight * math.log(10))
        dec = build_ctcdecoder(labels, kenlm_model_path=str(lm) if lm else None, alpha=a.lm_weight,
                               beta=a.word_bonus, unk_score_offset=unk_offset)
    except Exception as e:  # noqa: BLE001 - kenlm missing or the labels refused
        return f"unavailable ({type(e).__name__}: {e})"[:120]
    return lambda logps: [dec.decode(lp.numpy(), beam_width=beam) for lp in logps]


def flashlight_decoder(tok, beam: int, lm: Path | None, words: list[str], a, tmp: Path
                       ) -> Callable | str:
    try:
        from torchaudio.models.decoder import ctc_decoder
    except Exception as e:  # noqa: BLE001
        return f"unavailable ({type(e).__name__})"
    pieces = [tok.id_to_piece(i) for i in range(tok.vocab_size)]
    char = is_char(pieces)
    tokens = ["-", *pieces[1:]]
    lexicon = None
    if lm is not None:
        lexicon = tmp / f"lexicon_{tok.vocab_size}.txt"
        with lexicon.open("w", encoding="utf-8") as f:
            for w in words:
                spelled = [c for c in w] + [SPACE] if char else \
                    [tok.id_to_piece(i) for i in tok.encode(w)]
                if all(p in pieces for p in spelled):
                    f.write(f"{w}\t{' '.join(spelled)}\n")
    try:
        fl = ctc_decoder(lexicon=str(lexicon) if lexicon else None, tokens=tokens,
                         lm=str(lm) if lm else None, beam_size=beam, blank_token="-",
                         sil_token=SPACE if char else "-", unk_word="<unk>",
                         lm_weight=a.lm_weight, word_score=a.word_bonus,
                         unk_score=a.unk_penalty)
    except Exception as e:  # noqa: BLE001 - flashlight-text missing or unusable
        return f"unavailable ({type(e).__name__}: {e})"[:120]

    def run(logps):
        out = []
        for lp in logps:
            res = fl(lp[None].float())[0][0]
            out.append(" ".join(res.words) if lexicon else
                       tok.decode([int(t) for t in res.tokens if 0 < int(t) < tok.vocab_size]))
        return out

    return run


def unk_cost(unk_penalty: float) -> float:
    """The OOV penalty where -inf cannot be used: floored at ``UNK_FLOOR``."""
    return max(unk_penalty, UNK_FLOOR)


def search_score(tok, lm: NGramLM | None, a, logp: torch.Tensor, text: str) -> float:
    """What the beam search maximises, for ``text`` as the hypothesis of ``logp [T, V]`` (NaN
    for a text the tokens cannot spell: flashlight's ``<unk>``)."""
    try:
        ids = tok.encode(text)
    except ValueError:
        return math.nan
    ctc = -F.ctc_loss(logp.double(), torch.tensor(ids), torch.tensor([logp.shape[0]]),
                      torch.tensor([len(ids)]), reduction="sum").item() if ids \
        else logp[:, 0].double().sum().item()
    if lm is None:
        return ctc
    words = text.split()
    ctx = [BOS, *words]
    fused = sum(a.lm_weight * lm.log_prob(ctx[: i + 1], w) + a.word_bonus
                + (0.0 if w in lm.vocab else unk_cost(a.unk_penalty)) for i, w in enumerate(words))
    return ctc + fused + a.lm_weight * lm.log_prob(ctx, EOS)


def bench_model(name: str, ckpt: Path, manifest: Path, lm_text: Path, a, tmp: Path,
                rows: list[dict]) -> None:
    """Every decoder, beam and LM setting on one model's recorded log-probs: print and collect."""
    tok, utts, logps = record(ckpt, manifest, a.max_utts)
    refs = [u.text for u in utts]
    audio_s = sum(u.duration for u in utts)
    sents = lm_sentences(lm_text)
    lm_path = tmp / f"{name}.arpa"
    train_kneser_ney(sents, 3).write_arpa(lm_path)
    words = sorted({w for s in sents for w in s.split()})
    arpa = NGramLM.read_arpa(lm_path)  # as the decoders see it (ARPA's rounding included)

    def row(decoder: str, beam: int, lm: bool, result) -> None:
        head = f"| {name} | {tok.vocab_size} | {len(utts)} | {audio_s:.0f} | {decoder} | " \
               f"{beam} | {'yes' if lm else 'no'} |"
        if isinstance(result, str):
            print(f"{head} {result} | | | |", flush=True)
            return
        hyps, secs = result
        s = score(refs, hyps)[0]
        ms = 1000 * secs / audio_s
        obj = sum(search_score(tok, arpa if lm else None, a, lp, h)
                  for lp, h in zip(logps, hyps, strict=True)) / len(hyps)
        print(f"{head} {ms:.2f} | {s.wer:.2f} | {s.cer:.2f} | {obj:.3f} |", flush=True)
        rows.append({"decoder": decoder, "model": name, "vocab": tok.vocab_size, "beam": beam,
                     "lm": lm, **{k: (json_float(getattr(a, k)) if lm else None) for k in WEIGHTS},
                     "ms_per_audio_s": round(ms, 3), "wer": round(s.wer, 2),
                     "cer": round(s.cer, 2), "score": None if math.isnan(obj) else round(obj, 3)})

    for beam in a.beams:
        for lm in {"both": (False, True), "no": (False,), "yes": (True,)}[a.lm]:
            lm_file = lm_path if lm else None
            opts = DecodeOptions(beam=beam, prune=a.prune, beam_prune=a.beam_prune,
                                 lm=str(lm_file) if lm else None,
                                 lm_weight=a.lm_weight, word_bonus=a.word_bonus,
                                 unk_penalty=a.unk_penalty)
            if "ctcasr" in a.decoders:
                row("ctcasr", beam, lm, timed(ctcasr_decoder(tok, opts, a.batch), logps))
            if "ctcasr-1" in a.decoders and beam == 32:
                row("ctcasr-1", beam, lm, timed(ctcasr_decoder(tok, opts, 1), logps))
            if "pyctcdecode" in a.decoders:
                dec = pyctcdecode_decoder(tok, beam, lm_file, a)
                row("pyctcdecode", beam, lm, dec if isinstance(dec, str) else timed(dec, logps))
            if "flashlight" in a.decoders:
                dec = flashlight_decoder(tok, beam, lm_file, words, a, tmp)
                row("flashlight", beam, lm, dec if isinstance(dec, str) else timed(dec, logps))


def json_float(x: float) -> float | str:
    return x if math.isfinite(x) else str(x)


def per_model(flag: str, items: list[str], ap: argparse.ArgumentParser) -> dict[str, float]:
    """``["1", "so-sp256=2"]`` -> ``{"": 1.0, "so-sp256": 2.0}`` ("": every other model)."""
    out = {}
    for item in items:
        name, _, value = item.rpartition("=")
        try:
            out[name] = float(value)
        except ValueError:
            ap.error(f"{flag} {item!r}: need VALUE or NAME=VALUE, VALUE a number")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--model", nargs=4, action="append", metavar=("NAME", "CKPT", "MANIFEST",
                                                                  "LM_TEXT"))
    ap.add_argument("--beams", type=int, nargs="+", default=[10, 32, 64])
    ap.add_argument("--max-utts", type=int, default=0, help="0: the whole manifest")
    ap.add_argument("--batch", type=int, default=64)
    for key, default in WEIGHTS.items():
        ap.add_argument("--" + key.replace("_", "-"), nargs="+", default=[str(default)],
                        metavar="[NAME=]VALUE", help="the same for every decoder: one value for "
                        "all models, NAME=VALUE for one (its validation grid's choice)")
    ap.add_argument("--prune", type=float, default=DecodeOptions.prune,
                    help="ctcasr's --prune (default: ctcasr decode's)")
    ap.add_argument("--beam-prune", type=float, default=DecodeOptions.beam_prune,
                    help="ctcasr's --beam-prune (default: ctcasr decode's)")
    ap.add_argument("--lm", choices=["both", "no", "yes"], default="both",
                    help="rows without the word LM, with it, or both")
    ap.add_argument("--decoders", nargs="+", choices=DECODERS, default=DECODERS)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", type=Path)
    a = ap.parse_args()
    weights = {k: {"": WEIGHTS[k]} | per_model("--" + k.replace("_", "-"), getattr(a, k), ap)
               for k in WEIGHTS}
    torch.set_num_threads(a.threads)
    models = a.model or [m for m in RECIPES if Path(m[1]).exists()]
    if not models:
        raise SystemExit("no model: run a recipe first (make yesno, make speechocean) or --model")
    tmp = Path(tempfile.mkdtemp())
    rows: list[dict] = []
    print(f"{a.threads} thread(s); LM: 3-gram KN; " + "; ".join(
        f"{k}: {weights[k]}" for k in WEIGHTS))
    cols = ["model", "vocab", "utts", "audio s", "decoder", "beam", "LM", "ms per audio s",
            "WER %", "CER %", "score"]
    print("| " + " | ".join(cols) + " |\n" + "| --- " * len(cols) + "|")
    for name, ckpt, manifest, lm_text in models:
        for k in WEIGHTS:
            setattr(a, k, weights[k].get(name, weights[k][""]))
        bench_model(name, Path(ckpt), Path(manifest), Path(lm_text), a, tmp, rows)
    if a.json:
        a.json.write_text(json.dumps(rows, indent=1) + "\n")


if __name__ == "__main__":
    main()
