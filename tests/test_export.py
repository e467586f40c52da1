"""``ctcasr export`` to ONNX (fbank in the graph), and int8 quantisation.

Every encoder that exports gives log-probs that match the checkpoint's model (within 1e-4) on
padded batches of sizes and lengths it was not exported with, and greedy decoding gives the same
text; the graph's batched fbank matches ``ctcasr.data.features.fbank``; the file runs with
onnxruntime and numpy alone. ONNX tests need onnxruntime (the ``onnx`` extra, part of ``dev``).
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import test_transcribe
import torch
from test_transcribe import SR, make_checkpoint, run, write_utterances

import ctcasr
from ctcasr.checkpoint import load_model
from ctcasr.config import FbankConfig
from ctcasr.data.features import fbank
from ctcasr.decode import greedy_search
from ctcasr.errors import CtcasrError
from ctcasr.infer import open_engine
from ctcasr.infer.engine import EagerEngine, ModelInfo
from ctcasr.infer.export import check_export, export
from ctcasr.infer.wavegraph import BatchFbank

pytestmark = pytest.mark.skipif(not importlib.util.find_spec("onnxruntime"),
                                reason="onnxruntime not installed (pip install -e '.[onnx]')")
trained = test_transcribe.trained  # the trained tiny Conformer (trained once per session)
VARIANTS = [("lstm", {}), ("lstm", {"impl": "packed"}), ("lstm", {"bidirectional": False}),
            ("gru", {}), ("conformer", {}), ("transformer", {}),
            ("transformer", {"pos_enc": "abs"}), ("ebranchformer", {})]
RNN_NODE = {"lstm": "LSTM", "gru": "GRU"}


@pytest.fixture(scope="module")
def exported(trained, tmp_path_factory) -> dict[bool, tuple[Path, float]]:
    """The trained Conformer exported once per module: ``{int8: (path, diff)}``."""
    folder = tmp_path_factory.mktemp("exported")
    return {int8: export(trained, "onnx", folder / f"m{int8}.onnx", int8=int8)
            for int8 in (False, True)}


def noise_batch(sr: int, seconds: list[float], seed: int = 3) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [0.1 * torch.randn(round(s * sr), generator=g) for s in seconds]


@pytest.mark.parametrize("cmn", [False, True])
@pytest.mark.parametrize("sr, mels", [(16000, 80), (8000, 23)])
def test_batch_fbank_is_the_training_fbank(sr, mels, cmn):
    """Padded batch in, each utterance's frames out as ``fbank`` computes them alone (the
    longest, the shortest, one sample past a frame boundary), padded frames 0."""
    cfg = FbankConfig(sample_rate=sr, num_mel_bins=mels, utterance_cmn=cmn)
    win, hop = sr // 40, sr // 100
    lens = [sr + 123, win, win + hop - 1, win + hop, 3 * sr // 2]
    waves = noise_batch(sr, [n / sr for n in lens], seed=5)
    waves[1] = waves[1] * 1e-6  # near-silence: the log's floor
    feats, feat_lens = BatchFbank(cfg)(torch.nn.utils.rnn.pad_sequence(waves, batch_first=True),
                                       torch.tensor(lens))
    for i, w in enumerate(waves):
        want = fbank(w, cfg)
        assert int(feat_lens[i]) == want.shape[0] == 1 + (lens[i] - win) // hop
        got = feats[i, : want.shape[0]]
        # log-mels of 10-25: float32 DFT as a matmul against torch's FFT, measured <= 2e-4
        assert (got - want).abs().max() < 1e-3, i
        assert (feats[i, want.shape[0]:] == 0).all()


@pytest.mark.parametrize("encoder, conf", VARIANTS, ids=lambda v: str(v) if v else "")
def test_export_matches_the_checkpoint(encoder, conf, tmp_path):
    ckpt = make_checkpoint(tmp_path / "m.pt", encoder, utterance_cmn=encoder == "conformer",
                           **conf)
    out, diff = export(ckpt)
    assert out == tmp_path / "m.onnx" and diff < 1e-4
    if encoder in RNN_NODE:  # one ONNX LSTM / GRU node per layer and direction, no loops
        import onnx

        ops = [n.op_type for n in onnx.load(str(out)).graph.node]
        dirs = 1 if conf.get("bidirectional") is False else 2
        assert ops.count(RNN_NODE[encoder]) == 2 * dirs and "Loop" not in ops, ops
    engine = open_engine(out)
    assert engine.kind == "onnx" and engine.info.encoder == encoder
    eager = EagerEngine.open(ckpt)
    # batch sizes and lengths the export was not exported with (its example: 2 x 2 s)
    for seconds in ([2.7], [0.35, 4.1, 1.0, 0.9], [engine.min_samples / SR]):
        waves = noise_batch(SR, seconds)
        got, want = engine.log_probs(waves), eager.log_probs(waves)
        for g, w in zip(got, want, strict=True):
            assert g.shape == w.shape
            assert (g - w).abs().max() < 1e-4
            lens = torch.tensor([g.shape[0]])
            assert greedy_search(g[None], lens)[0][0].tokens == \
                greedy_search(w[None], lens)[0][0].tokens


@pytest.mark.parametrize("cls", [torch.nn.LSTM, torch.nn.GRU])
def test_onnx_rnn_computes_what_the_rnn_does(cls):
    """The stand-in keeps the weights in ONNX's gate order and computes the same outputs."""
    from ctcasr.infer.onnx_rnn import OnnxRNN

    torch.manual_seed(0)
    rnn = cls(5, 7, batch_first=True)
    x = torch.randn(3, 11, 5)
    with torch.no_grad():
        assert (OnnxRNN(rnn)(x)[0] - rnn(x)[0]).abs().max() < 1e-6
    gates = 4 if cls is torch.nn.LSTM else 3
    w = OnnxRNN(rnn).w[0].chunk(gates)
    first = rnn.weight_ih_l0.chunk(gates)
    # ONNX's order: LSTM i o f c (PyTorch i f g o), GRU z r h (PyTorch r z n)
    order = (0, 3, 1, 2) if gates == 4 else (1, 0, 2)
    assert all(torch.equal(w[k], first[order[k]]) for k in range(gates))
    with pytest.raises(ValueError, match="one layer, one direction"):
        OnnxRNN(cls(5, 7, batch_first=True, bidirectional=True))


def test_int8_lstm_is_onnxruntimes_quantised_lstm(tmp_path):
    import onnx

    out, diff = export(make_checkpoint(tmp_path / "m.pt", "lstm"), int8=True)
    ops = [n.op_type for n in onnx.load(str(out)).graph.node]
    assert ops.count("DynamicQuantizeLSTM") == 4 and "LSTM" not in ops
    assert diff < 0.05  # int8 weights: log-probs move, measured 2e-3 on this model


def test_packed_lstm_exports_as_its_padded_form(tmp_path):
    """``exportable`` turns a packed BiLSTM into the padded form with the same weights: the
    same log-probs, on a padded batch."""
    from ctcasr.infer.export import exportable

    rec = load_model(make_checkpoint(tmp_path / "p.pt", "lstm", impl="packed"))
    padded = exportable(rec.model)
    assert padded.encoder.impl != "packed" and rec.model.encoder.impl == "packed"
    info = ModelInfo.of(rec)
    waves = noise_batch(SR, [2.7, 0.35, 1.0])
    got = EagerEngine(padded, info, rec.device).log_probs(waves)
    want = EagerEngine(rec.model, info, rec.device).log_probs(waves)
    for g, w in zip(got, want, strict=True):
        assert g.shape == w.shape and (g - w).abs().max() < 1e-5


def test_exported_and_int8_models_transcribe_like_the_checkpoint(trained, exported, tmp_path):
    refs = write_utterances(tmp_path / "audio", 6, seed=1100)
    want = [t.text for t in ctcasr.load(trained).transcribe(list(refs))]
    assert want == list(refs.values())
    for int8 in (False, True):
        out, diff = exported[int8]
        asr = ctcasr.load(out, int8=int8)
        assert asr.engine.info.int8 == int8
        assert [t.text for t in asr.transcribe(list(refs))] == want
        assert diff < (1.0 if int8 else 1e-4)  # int8: against the float model
    assert [t.text for t in ctcasr.load(trained, int8=True).transcribe(list(refs))] == want


def test_decode_scores_a_checkpoint_and_its_export_alike(trained, exported, tmp_path):
    """``ctcasr decode`` of a checkpoint and of its ONNX export: one code path, the same
    hypotheses and report (beam search, n-best and word times included)."""
    import json
    import subprocess
    import sys

    refs = write_utterances(tmp_path / "audio", 8, seed=1200)
    manifest = tmp_path / "m.jsonl"
    manifest.write_text("".join(json.dumps({"id": f"u{i}", "audio": p, "text": t,
                                            "duration": sf.info(p).duration}) + "\n"
                                for i, (p, t) in enumerate(refs.items())))
    out = {}
    for name, model in (("ckpt", trained), ("onnx", exported[False][0])):
        r = subprocess.run([sys.executable, "-m", "ctcasr", "decode", "--checkpoint", model,
                            "--manifest", manifest, "--out-dir", tmp_path / name, "--decoder",
                            "beam", "--nbest", "2", "--timestamps"], capture_output=True,
                           text=True)
        assert r.returncode == 0, r.stderr
        out[name] = {f: (tmp_path / name / f).read_text()
                     for f in ("hyp.txt", "nbest.txt", "summary.txt")}
    assert out["ckpt"] == out["onnx"] and out["ckpt"]["hyp.txt"].count("\n") == 8


def test_int8_checkpoint_is_the_int8_export(trained, exported):
    """``--int8`` on a checkpoint runs the int8 ONNX export: the same numbers, not the float
    model's (quantisation moves them)."""
    out, _ = exported[True]
    on_the_fly = open_engine(trained, int8=True)
    assert on_the_fly.kind == "onnx" and on_the_fly.info.int8
    assert check_export(on_the_fly, open_engine(out, int8=True)) < 1e-6
    assert check_export(on_the_fly, open_engine(trained)) > 1e-5


def test_onnx_export_runs_with_onnxruntime_alone(trained, exported, tmp_path):
    """Waveforms in, log-probs out, with neither ctcasr nor torch importable."""
    out, _ = exported[False]
    wave = noise_batch(SR, [1.5])[0]
    np.save(tmp_path / "w.npy", wave.numpy())
    code = f"""
import json, sys
import numpy as np
sys.modules["ctcasr"] = sys.modules["torch"] = None  # any import of either fails
import onnxruntime as ort
s = ort.InferenceSession({str(out)!r}, providers=["CPUExecutionProvider"])
info = json.loads(s.get_modelmeta().custom_metadata_map["ctcasr.json"])
w = np.load({str(tmp_path / 'w.npy')!r})
lp, n = s.run(None, {{"waves": w[None], "wave_lens": np.array([len(w)])}})
np.save({str(tmp_path / 'lp.npy')!r}, lp[0])
print(info["features"]["sample_rate"], info["tokenizer"]["type"], int(n[0]))
"""
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    lp = open_engine(trained).log_probs([wave])[0]
    assert r.stdout.split() == [str(SR), "word", str(lp.shape[0])]
    assert np.abs(np.load(tmp_path / "lp.npy") - lp.numpy()).max() < 1e-4


def test_export_and_transcribe_cli(trained, tmp_path):
    refs = write_utterances(tmp_path / "audio", 3, seed=1200)
    out = tmp_path / "exported.onnx"
    r = run("export", trained, "--int8", "--out", out)
    assert r.returncode == 0, r.stderr
    assert f"wrote {out}" in r.stdout
    r = run("transcribe", out, *refs, "--int8", "--threads", "1")
    assert r.returncode == 0, r.stderr
    assert dict(line.split("\t") for line in r.stdout.splitlines()) == refs


def test_export_errors(trained, exported, tmp_path):
    with pytest.raises(CtcasrError, match="unknown export format 'tflite'"):
        export(trained, "tflite")
    with pytest.raises(CtcasrError, match="TorchScript export was removed"):
        export(trained, "torchscript")
    out, _ = exported[False]
    with pytest.raises(CtcasrError, match="not quantised; export it with --int8"):
        open_engine(out, int8=True)
    old = tmp_path / "old.ts"  # the layout of a TorchScript archive, as earlier exports wrote
    with zipfile.ZipFile(old, "w") as z:
        z.writestr("old/constants.pkl", b"")
        z.writestr("old/extra/ctcasr.json", b"{}")
    with pytest.raises(CtcasrError, match="a TorchScript file; ctcasr no longer runs these"):
        open_engine(old)
    import onnx

    plain = onnx.load(str(out))
    del plain.metadata_props[:]
    onnx.save(plain, str(tmp_path / "plain.onnx"))
    with pytest.raises(CtcasrError, match="not written by `ctcasr export`"):
        open_engine(tmp_path / "plain.onnx")
    r = run("transcribe", tmp_path / "missing.pt", "x.wav")
    assert r.returncode == 1 and r.stderr.strip() == f"error: {tmp_path}/missing.pt: model " \
        "file not found"
