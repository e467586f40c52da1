"""Issue 8: ``ctcasr export`` to TorchScript and ONNX, and int8 quantisation.

Every encoder exports to both formats; the exported file's log-probs match the checkpoint's
model (within 1e-4) on padded batches of lengths it was not traced with, and greedy decoding
gives the same text. ONNX tests need onnxruntime (the ``onnx`` extra, part of ``dev``).
"""

from __future__ import annotations

import subprocess
import sys

import pytest
import test_transcribe
import torch
from test_transcribe import SR, make_checkpoint, run, write_utterances

import ctcasr
from ctcasr.decode import greedy_search
from ctcasr.decode.runner import load_recognizer
from ctcasr.errors import CtcasrError
from ctcasr.infer import open_engine
from ctcasr.infer.engine import EagerEngine, info_from_recognizer
from ctcasr.infer.export import check_export, export

FORMATS = ["torchscript",
           pytest.param("onnx", marks=pytest.mark.skipif(
               not __import__("importlib").util.find_spec("onnxruntime"),
               reason="onnxruntime not installed (pip install 'ctcasr[onnx]')"))]
trained = test_transcribe.trained  # the trained tiny Conformer (trained once per session)
VARIANTS = [("lstm", {}), ("gru", {}), ("conformer", {}), ("transformer", {}),
            ("lstm", {"impl": "packed"}), ("transformer", {"pos_enc": "abs"})]


def noise_batch(sr: int, seconds: list[float], seed: int = 3) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [0.1 * torch.randn(round(s * sr), generator=g) for s in seconds]


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("encoder, conf", VARIANTS, ids=lambda v: str(v) if v else "")
def test_export_matches_the_checkpoint(encoder, conf, fmt, tmp_path):
    ckpt = make_checkpoint(tmp_path / "m.pt", encoder, utterance_cmn=encoder == "conformer",
                           **conf)
    out, diff = export(ckpt, fmt)
    assert out == tmp_path / ("m.onnx" if fmt == "onnx" else "m.ts") and diff < 1e-4
    engine = open_engine(out)
    assert engine.kind == fmt and engine.info.encoder == encoder
    rec = load_recognizer(ckpt)
    eager = EagerEngine(rec.model, info_from_recognizer(rec), rec.device)
    # batch sizes and lengths the export was not traced with (it was traced on 2 x 200 frames)
    for seconds in ([2.7], [0.35, 4.1, 1.0, 0.9], [engine.min_samples / SR]):
        waves = noise_batch(SR, seconds)
        got, want = engine.log_probs(waves), eager.log_probs(waves)
        for g, w in zip(got, want, strict=True):
            assert g.shape == w.shape
            assert (g - w).abs().max() < 1e-4
            lens = torch.tensor([g.shape[0]])
            assert greedy_search(g[None], lens)[0][0].tokens == \
                greedy_search(w[None], lens)[0][0].tokens


@pytest.mark.parametrize("fmt", FORMATS)
def test_exported_and_int8_models_transcribe_like_the_checkpoint(trained, fmt, tmp_path):
    refs = write_utterances(tmp_path / "audio", 6, seed=1100)
    want = [t.text for t in ctcasr.load(trained).transcribe(list(refs))]
    assert want == list(refs.values())
    for int8 in (False, True):
        out, diff = export(trained, fmt, tmp_path / f"m{int8}.{fmt}", int8=int8)
        asr = ctcasr.load(out, int8=int8)
        assert asr.engine.info.int8 == int8
        assert [t.text for t in asr.transcribe(list(refs))] == want
        assert diff < (1.0 if int8 else 1e-4)  # int8: against the float model
    assert [t.text for t in ctcasr.load(trained, int8=True).transcribe(list(refs))] == want


def test_torchscript_int8_is_the_quantised_eager_model(trained):
    """The TorchScript int8 export is a trace of the torch.ao-quantised model: same numbers."""
    out, _ = export(trained, "torchscript", trained.with_name("q.ts"), int8=True)
    assert check_export(open_engine(out, int8=True), open_engine(trained, int8=True)) < 1e-5


def test_torchscript_export_runs_without_ctcasr(trained, tmp_path):
    out, _ = export(trained, "torchscript", tmp_path / "m.ts")
    wave = noise_batch(SR, [1.5])[0]
    code = f"""
import json, sys, torch
sys.modules["ctcasr"] = None  # any import of ctcasr fails
extra = {{"ctcasr.json": ""}}
m = torch.jit.load({str(out)!r}, _extra_files=extra)
info = json.loads(extra["ctcasr.json"])
lp, n = m(torch.load({str(tmp_path / 'w.pt')!r})[None], torch.tensor([{len(wave)}]))
torch.save(lp, {str(tmp_path / 'lp.pt')!r})
print(info["features"]["sample_rate"], info["tokenizer"]["type"], int(n[0]))
"""
    torch.save(wave, tmp_path / "w.pt")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    engine = open_engine(trained)
    lp = engine.log_probs([wave])[0]
    assert r.stdout.split() == [str(SR), "word", str(lp.shape[0])]
    assert (torch.load(tmp_path / "lp.pt")[0] - lp).abs().max() < 1e-4


def test_export_and_transcribe_cli(trained, tmp_path):
    refs = write_utterances(tmp_path / "audio", 3, seed=1200)
    out = tmp_path / "exported.ts"
    r = run("export", trained, "--format", "torchscript", "--int8", "--out", out)
    assert r.returncode == 0, r.stderr
    assert f"wrote {out}" in r.stdout
    r = run("transcribe", out, *refs, "--int8", "--threads", "1")
    assert r.returncode == 0, r.stderr
    assert dict(line.split("\t") for line in r.stdout.splitlines()) == refs


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # torch.jit.script, for a plain file
def test_export_errors(trained, tmp_path):
    with pytest.raises(CtcasrError, match="unknown export format 'tflite'"):
        export(trained, "tflite")
    out, _ = export(trained, "torchscript", tmp_path / "m.ts")
    with pytest.raises(CtcasrError, match="not quantised; export it with --int8"):
        open_engine(out, int8=True)
    plain = tmp_path / "plain.ts"
    torch.jit.save(torch.jit.script(torch.nn.Linear(2, 2)), str(plain))
    with pytest.raises(CtcasrError, match="not written by `ctcasr export`"):
        open_engine(plain)
    r = run("transcribe", tmp_path / "missing.pt", "x.wav")
    assert r.returncode == 1 and r.stderr.strip() == f"error: {tmp_path}/missing.pt: model " \
        "file not found"
