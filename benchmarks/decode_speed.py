"""Decoding speed and WER of each decoder on the same recorded log-probs.

    .venv/bin/python benchmarks/decode_speed.py [--checkpoint egs/yesno/exp/lstm/model.pt]
        [--manifest egs/yesno/data/test.jsonl] [--train egs/yesno/data/train.jsonl] [--beam 10]

The model runs once over the manifest; its log-probs are kept and every decoder decodes the same
tensors (so the times are decoding only). The word LM (3-gram Kneser-Ney) is trained on the
``--train`` manifest's transcripts. pyctcdecode and torchaudio's flashlight decoder
(``torchaudio.models.decoder.ctc_decoder``) are timed too when installed, at the same beam size.
Prints ms of decoding per second of audio and the WER.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from ctcasr.data.dataset import ASRDataset
from ctcasr.data.manifest import read_manifest
from ctcasr.decode import DecodeOptions, make_decoder
from ctcasr.decode.runner import load_recognizer
from ctcasr.lm import train_kneser_ney
from ctcasr.scoring import score


def record(ckpt: Path, manifest: Path):
    rec = load_recognizer(ckpt)
    utts = read_manifest(manifest)
    ds = ASRDataset(utts, rec.config.data.features)
    out = []
    with torch.no_grad():
        for i in range(len(ds)):
            feats = ds[i][1].unsqueeze(0)
            lp, n = rec.model(feats, torch.tensor([feats.shape[1]]))
            out.append(lp[0, : n[0]])
    return rec, utts, out


def run(name, decode_one, logps, refs, audio_s):
    decode_one(logps[0])  # warm-up
    t0 = time.perf_counter()
    hyps = [decode_one(lp) for lp in logps]
    dt = time.perf_counter() - t0
    s = score(refs, hyps)[0]
    print(f"| {name} | {1000 * dt / audio_s:.2f} | {s.wer:.2f} | {s.cer:.2f} |", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--checkpoint", type=Path, default=Path("egs/yesno/exp/lstm/model.pt"))
    ap.add_argument("--manifest", type=Path, default=Path("egs/yesno/data/test.jsonl"))
    ap.add_argument("--train", type=Path, default=Path("egs/yesno/data/train.jsonl"))
    ap.add_argument("--beam", type=int, default=10)
    ap.add_argument("--lm-weight", type=float, default=0.5)
    ap.add_argument("--word-bonus", type=float, default=0.0)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    if not args.checkpoint.exists():
        raise SystemExit(f"{args.checkpoint}: not found (run the recipe first, e.g. make yesno)")
    torch.set_num_threads(args.threads)
    rec, utts, logps = record(args.checkpoint, args.manifest)
    tok = rec.tokenizer
    refs = [u.text for u in utts]
    audio_s = sum(u.duration for u in utts)
    lm_path = Path(tempfile.mkdtemp()) / "lm.arpa"
    train_kneser_ney([u.text for u in read_manifest(args.train)], 3).write_arpa(lm_path)
    print(f"{len(utts)} utterances, {audio_s:.1f} s of audio, vocab {tok.vocab_size}, "
          f"beam {args.beam}, {args.threads} thread(s); LM: 3-gram KN on {args.train}")
    print("| decoder | ms per audio second | WER % | CER % |")
    print("| --- | --- | --- | --- |")

    def ours(name: str, opts: DecodeOptions):
        dec = make_decoder(name, opts, tok)
        return lambda lp: tok.decode(dec(lp[None], torch.tensor([lp.shape[0]]))[0][0].tokens)

    run("greedy", ours("greedy", DecodeOptions()), logps, refs, audio_s)
    run("ctcasr beam", ours("beam", DecodeOptions(beam=args.beam)), logps, refs, audio_s)
    run("ctcasr beam, topk 5", ours("beam", DecodeOptions(beam=args.beam, topk=5)), logps, refs,
        audio_s)
    lm_opts = DecodeOptions(beam=args.beam, lm=str(lm_path), lm_weight=args.lm_weight,
                            word_bonus=args.word_bonus)
    run("ctcasr beam + 3-gram LM", ours("beam", lm_opts), logps, refs, audio_s)
    pieces = [tok.id_to_piece(i) for i in range(tok.vocab_size)]
    try:
        from pyctcdecode import build_ctcdecoder
    except ImportError:
        print("| pyctcdecode | not installed | | |")
    else:
        labels = ["" if i == 0 else (" " if p == "▁" else p) for i, p in enumerate(pieces)]
        dec = build_ctcdecoder(labels)
        run("pyctcdecode", lambda lp: dec.decode(lp.numpy(), beam_width=args.beam), logps, refs,
            audio_s)
    try:
        from torchaudio.models.decoder import ctc_decoder
        fl = ctc_decoder(lexicon=None, tokens=["-", *pieces[1:]], beam_size=args.beam,
                         blank_token="-", sil_token="▁")
    except Exception as e:  # noqa: BLE001 - flashlight-text missing or unusable
        print(f"| torchaudio flashlight | unavailable ({type(e).__name__}) | | |")
    else:
        def flashlight(lp):
            res = fl(lp[None].contiguous())[0][0]
            return tok.decode([int(t) for t in res.tokens if int(t) != 0])

        run("torchaudio flashlight", flashlight, logps, refs, audio_s)


if __name__ == "__main__":
    main()
