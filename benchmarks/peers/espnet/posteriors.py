#!/usr/bin/env python3
"""A trained ESPnet2 CTC model's posteriors and decodes on valid and test (run in .venv-espnet).

    posteriors.py --data DIR --exp DIR [--espnet-beam 10]

Loads ``EXP/model/config.yaml`` + ``valid.cer_ctc.ave.pth`` through ESPnet's own ``Speech2Text``
and, one utterance at a time (as ESPnet's inference runs), writes for valid and test:
  - ``EXP/logp_<set>.pt``: the CTC log-posteriors (``ids``, ``logp`` [T, V], ``labels`` with the
    blank first and ``<space>`` as " "; ``<unk>`` and ``<sos/eos>``, which CTC never emits, are
    left out and the rest renormalised), for ctcasr's beam + LM (benchmarks/peers/lm_decode.py);
  - ``EXP/decode_<set>_greedy/hyp.txt``: best path, blanks and repeats removed;
  - with ``--espnet-beam N`` (N > 0), test only: ``EXP/decode_test_peer_beam/hyp.txt``, ESPnet's
    own beam search on a CTC-only model (its CTC prefix scorer, no LM).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import soundfile
import torch
from espnet2.bin.asr_inference import Speech2Text


def read_dir(d: Path) -> list[tuple[str, str]]:
    return [tuple(line.split(" ", 1)) for line in (d / "wav.scp").read_text().splitlines()]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--exp", type=Path, required=True)
    ap.add_argument("--espnet-beam", type=int, default=0)
    a = ap.parse_args()
    torch.set_grad_enabled(False)
    s2t = Speech2Text(asr_train_config=a.exp / "model/config.yaml",
                      asr_model_file=a.exp / "model/valid.cer_ctc.ave.pth", device="cpu",
                      ctc_weight=1.0, lm_weight=0.0, beam_size=max(a.espnet_beam, 1), nbest=1)
    model = s2t.asr_model.eval()
    tokens = list(s2t.asr_train_args.token_list)
    keep = [i for i, t in enumerate(tokens) if t not in ("<unk>", "<sos/eos>")]
    labels = [" " if tokens[i] == "<space>" else tokens[i] for i in keep]
    assert labels[0] == "<blank>", labels
    n_params = sum(p.numel() for p in model.parameters())
    for split in ("valid", "test"):
        ids, logps, hyps = [], [], []
        for uid, path in read_dir(a.data / split):
            wav, _ = soundfile.read(path, dtype="float32")
            x = torch.from_numpy(wav)[None]
            enc, enc_len = model.encode(x, torch.tensor([x.shape[1]]))
            lp = model.ctc.log_softmax(enc)[0, : enc_len[0]][:, keep]
            lp = lp - lp.logsumexp(-1, keepdim=True)
            best = lp.argmax(-1).unique_consecutive().tolist()
            hyps.append(f"{uid}\t{' '.join(''.join(labels[i] for i in best if i).split())}")
            ids.append(uid)
            logps.append(lp.clone())
        torch.save({"ids": ids, "logp": logps, "labels": labels}, a.exp / f"logp_{split}.pt")
        (a.exp / f"decode_{split}_greedy").mkdir(exist_ok=True)
        (a.exp / f"decode_{split}_greedy/hyp.txt").write_text("\n".join(hyps) + "\n")
        print(f"{split}: {len(ids)} utterances", flush=True)
    summary = {"params": n_params}
    if a.espnet_beam > 0:
        start, hyps = time.monotonic(), []
        for uid, path in read_dir(a.data / "test"):
            wav, _ = soundfile.read(path, dtype="float32")
            text = s2t(torch.from_numpy(wav))[0][0]
            hyps.append(f"{uid}\t{' '.join(text.split())}")
        (a.exp / "decode_test_peer_beam").mkdir(exist_ok=True)
        (a.exp / "decode_test_peer_beam/hyp.txt").write_text("\n".join(hyps) + "\n")
        summary["espnet_beam_s"] = round(time.monotonic() - start)
    path = a.exp / "summary.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), **summary}, indent=1) + "\n")
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
