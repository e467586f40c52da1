"""The ``ctcasr`` command line: ``train``, ``decode``, ``transcribe``, ``export``, ``score``,
``tokenizer``, ``import`` (and ``import-kaldi``), ``lm``, ``average``, ``plot``.

Distributed training: ``torchrun --nproc_per_node=N -m ctcasr train ...``.

Errors caused by input (and OS errors such as a full disk) print one line (``error: ...``) and
exit with status 1.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Annotated

import typer

from ctcasr.errors import CtcasrError

app = typer.Typer(
    help="ctcasr: CTC speech recognition from manifests to WER.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)

ConfigOpt = Annotated[Path, typer.Option("--config", "-c", help="YAML config file.")]
SetOpt = Annotated[
    list[str] | None,
    typer.Option("--set", help="Override a config value, e.g. --set train.epochs=5 (repeatable)."),
]


def _print_versions(value: bool) -> None:
    if value:
        from ctcasr.environment import versions

        typer.echo(" ".join(f"{k} {v}" for k, v in versions().items()))
        raise typer.Exit()


@app.callback()
def _check_environment(
    ctx: typer.Context,
    version: Annotated[bool, typer.Option("--version", callback=_print_versions, is_eager=True,
                                          help="Print the ctcasr, torch, torchaudio and Python "
                                          "versions and exit.")] = False,
) -> None:
    """ctcasr: CTC speech recognition from manifests to WER."""
    if ctx.invoked_subcommand:  # a broken torch / torchaudio pair: one line, before any work
        from ctcasr.environment import check_torch

        check_torch()


SkipBadOpt = Annotated[bool, typer.Option("--skip-bad", help="Skip bad utterances (unreadable "
                                          "audio, bad manifest lines, ...) instead of stopping; "
                                          "they are counted and listed in skipped.txt.")]


@app.command()
def train(
    config: ConfigOpt,
    train_manifest: Annotated[Path, typer.Option("--train", help="Training manifest (JSONL).")],
    valid_manifest: Annotated[Path, typer.Option("--valid", help="Validation manifest (JSONL).")],
    exp_dir: Annotated[Path, typer.Option("--exp-dir", help="Experiment folder for checkpoints "
                                          "and logs; model.pt is written there at the end "
                                          "(the best epoch, or train.average's average).")],
    overrides: SetOpt = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue the run in EXP_DIR from "
                                         "last.pt, exactly where it stopped.")] = False,
    skip_bad: SkipBadOpt = False,
    init: Annotated[Path | None, typer.Option("--init", help="Fine-tune: start from this "
                                              "checkpoint's weights (those whose name and shape "
                                              "match; the output layer only for the same "
                                              "vocabulary). Same as --set train.init=PATH.")]
    = None,
) -> None:
    """Train a CTC model: tokenizer and CMVN from the training set, then epochs of training
    with validation loss and greedy WER / CER after each; model.pt at the end is the epoch with
    the best validation WER, or the average of train.average epochs when that is set."""
    from ctcasr.config import load_config
    from ctcasr.train.trainer import train as run_train

    cfg = load_config(config, [*(overrides or []), *([f"train.init={init}"] if init else [])])
    run_train(cfg, train_manifest, valid_manifest, exp_dir, resume=resume, skip_bad=skip_bad)


CARRIED = " Default: what the model carries (ctcasr tune-lm), else"
DecoderOpt = Annotated[str | None, typer.Option(
    "--decoder", help="greedy or beam (prefix beam search)." + CARRIED + " greedy.")]
BeamOpt = Annotated[int | None, typer.Option("--beam-size", help="Beam: prefixes kept per "
                                             "frame." + CARRIED + " 10.")]
TopkOpt = Annotated[int | None, typer.Option("--topk", help="Beam: expand only the k most "
                                             "probable tokens per frame (0: beam + 1, exact "
                                             "without an LM)." + CARRIED + " 0.")]
PruneOpt = Annotated[float | None, typer.Option("--prune", help="Beam: expand only tokens "
                                                "within this many nats of the frame's best."
                                                + CARRIED + " 5.")]
BeamPruneOpt = Annotated[float | None, typer.Option(
    "--beam-prune", help="Beam: drop prefixes more than this far below the frame's best "
    "(LM score included; pyctcdecode's beam_prune_logp)." + CARRIED + " inf.")]
LmOpt = Annotated[Path | None, typer.Option("--lm", help="Beam: word n-gram LM (ARPA) for "
                                            "shallow fusion (see `ctcasr lm`); 'none': beam "
                                            "search without the model's LM. Given alone, it "
                                            "means --decoder beam.")]
LmWeightOpt = Annotated[float | None, typer.Option("--lm-weight", help="Beam: LM weight."
                                                   + CARRIED + " 0.5.")]
WordBonusOpt = Annotated[float | None, typer.Option("--word-bonus", help="Beam: score added "
                                                    "per word." + CARRIED + " 0.")]
UnkPenaltyOpt = Annotated[float | None, typer.Option(
    "--unk-penalty", help="Beam + LM: score added per word the LM does not know (<= 0); "
    "-inf allows only the LM's words." + CARRIED + " 0.")]
VocabOpt = Annotated[Path | None, typer.Option(
    "--vocab", help="Beam + LM: open vocabulary, a file of words (one per line, each with "
    "an optional count) the search may output besides the LM's, each as the LM's <unk> x its "
    "share of the counts, + --unk-penalty (docs/decoding.md).")]
HotwordsOpt = Annotated[Path | None, typer.Option(
    "--hotwords", help="Beam: a file of words or phrases to prefer, one per line, each with an "
    "optional boost per token ('new york:3'); their words are allowed outside the LM. Given "
    "alone, it means --decoder beam (docs/decoding.md).")]
HotwordBoostOpt = Annotated[float, typer.Option(
    "--hotword-boost", help="Score added per matched token of a hotword without its own.")]
DeviceOpt = Annotated[str, typer.Option("--device", help="cpu, cuda or cuda:N.")]
# padded feature frames per batch when decoding a manifest: the batched beam search does each
# frame's work once for the whole batch, so larger batches than training's are faster
DECODE_MAX_FRAMES = 20_000


@app.command()
def decode(
    checkpoint: Annotated[Path, typer.Option("--checkpoint", help="The model: a checkpoint "
                                             "(model.pt; it carries config, tokenizer and "
                                             "CMVN) or an ONNX export.")],
    manifest: Annotated[Path, typer.Option("--manifest", help="Manifest to decode (JSONL); "
                                           "'text' is optional, used for scoring when present.")],
    out_dir: Annotated[Path, typer.Option("--out-dir", help="Folder for hyp.txt, errors.txt, "
                                          "summary.txt and summary.json.")],
    decoder: DecoderOpt = None,
    beam: BeamOpt = None,
    nbest: Annotated[int, typer.Option("--nbest", help="Beam: hypotheses per utterance "
                                       "(> 1 writes nbest.txt).")] = 1,
    topk: TopkOpt = None,
    prune: PruneOpt = None,
    beam_prune: BeamPruneOpt = None,
    lm: LmOpt = None,
    lm_weight: LmWeightOpt = None,
    word_bonus: WordBonusOpt = None,
    unk_penalty: UnkPenaltyOpt = None,
    vocab: VocabOpt = None,
    hotwords: HotwordsOpt = None,
    hotword_boost: HotwordBoostOpt = 2.0,
    timestamps: Annotated[bool, typer.Option("--timestamps", help="Also write words.ctm (word "
                                             "start, duration, confidence).")] = False,
    device: DeviceOpt = "cpu",
    precision: PrecisionOpt = "fp32",
    max_frames: Annotated[int, typer.Option("--max-frames", help="Padded feature frames per "
                                            "batch (0: 20000).")] = 0,
    num_workers: Annotated[int, typer.Option("--num-workers", help="Threads reading audio "
                                             "(0: the main one).")] = 0,
    chunk_size: Annotated[int, typer.Option("--chunk-size", help="Conformer / Transformer: "
                                            "attention in chunks of this many output frames, "
                                            "as when streaming (0: the model's own, full "
                                            "context unless trained otherwise).")] = 0,
    left_chunks: Annotated[int, typer.Option("--left-chunks", help="With --chunk-size: "
                                             "chunks of left context (-1: all).")] = -1,
    skip_bad: SkipBadOpt = False,
) -> None:
    """Decode a manifest and write the hypotheses and a WER/CER report; prints the WER.

    It decodes as the model carries (see tune-lm) unless options say otherwise."""
    from ctcasr.decode.settings import hotword_list
    from ctcasr.infer.manifest import decode_manifest

    asr = _manifest_transcriber(
        checkpoint, device, max_frames, num_workers, chunk_size, left_chunks, timestamps,
        decoder=decoder, lm=lm, vocab=vocab, beam=beam, nbest=nbest, topk=topk, prune=prune,
        beam_prune=beam_prune, lm_weight=lm_weight, word_bonus=word_bonus,
        unk_penalty=unk_penalty, hotwords=hotword_list(hotwords, hotword_boost),
        precision=precision)
    typer.echo(f"decoder: {asr.settings.describe()}", err=True)
    s = decode_manifest(asr, manifest, out_dir, timestamps, skip_bad)
    typer.echo(f"{manifest}: {s.line()}" if s else f"{manifest}: decoded (no references)")
    typer.echo(f"wrote {out_dir}/hyp.txt")


def _manifest_transcriber(model: Path, device: str, max_frames: int = 0, workers: int = 0,
                          chunk_size: int = 0, left_chunks: int = -1, timestamps: bool = False,
                          decoder: str | None = None, lm: Path | None = None,
                          vocab: Path | None = None, precision: str = "fp32", **numbers):
    """A Transcriber for manifests: whole utterances (no windows) in batches of ``max_frames``
    padded feature frames (0: DECODE_MAX_FRAMES), decoding as the model carries with the
    options given on top."""
    from ctcasr.infer import Transcriber, open_engine
    from ctcasr.infer.engine import EagerEngine
    from ctcasr.models import set_chunking

    engine = open_engine(model, device=device, precision=precision)
    if chunk_size:
        if not isinstance(engine, EagerEngine):
            raise CtcasrError("--chunk-size: decode a checkpoint, not an export")
        set_chunking(engine.model, chunk_size, left_chunks)
    settings = engine.info.decoding.override(decoder, lm, vocab, **numbers)
    seconds = (max_frames or DECODE_MAX_FRAMES) * engine.info.features.frame_shift_ms / 1000
    return Transcriber(engine, settings, timestamps, chunk_seconds=0, batch_seconds=seconds,
                       max_batch=256, workers=workers)


@app.command("tune-lm")
def tune_lm(
    checkpoint: Annotated[Path, typer.Argument(help="The model (model.pt) to tune and to "
                                               "write the choice into.")],
    valid: Annotated[Path, typer.Option("--valid", help="Validation manifest (JSONL, with "
                                        "text): speakers and sentences the test set does not "
                                        "have.")],
    lm: Annotated[Path, typer.Option("--lm", help="Word n-gram LM (ARPA; `ctcasr lm`); the "
                                     "model will carry it.")],
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Checkpoint to write "
                                             "(default: CHECKPOINT itself).")] = None,
    beam: Annotated[int, typer.Option("--beam-size", help="Prefixes kept per frame.")] = 10,
    lm_weights: Annotated[str, typer.Option("--lm-weights", help="LM weights to try.")]
    = "0.3 0.5 0.8",
    word_bonuses: Annotated[str, typer.Option("--word-bonuses", help="Word bonuses to try.")]
    = "0 1 2",
    unk_penalties: Annotated[str, typer.Option("--unk-penalties", help="Penalties for words "
                                               "the LM does not know (-inf: only its "
                                               "words).")] = "0 -5 -inf",
    widen: Annotated[int, typer.Option("--widen", help="When the best weight or bonus is at "
                                       "the grid's edge, try one more step past it, up to N "
                                       "times (0: the grid only).")] = 2,
    vocab: VocabOpt = None,
    device: DeviceOpt = "cpu",
    max_frames: Annotated[int, typer.Option("--max-frames", help="Padded feature frames per "
                                            "batch (0: 20000).")] = 0,
) -> None:
    """Choose the LM weight, word bonus and OOV penalty on a validation set, and store them
    with the LM in the model, so decode, transcribe, serve and export use them by default.

    Writes lm_tuning.txt (the choice) and lm_tuning.tsv (every point's WER / CER) beside
    the output."""
    from ctcasr.checkpoint import load_checkpoint, save_checkpoint
    from ctcasr.decode.settings import parse_grid
    from ctcasr.infer.manifest import tune_lm as run_tune

    grids = [parse_grid(v, name) for v, name in ((lm_weights, "--lm-weights"),
                                                 (word_bonuses, "--word-bonuses"),
                                                 (unk_penalties, "--unk-penalties"))]
    asr = _manifest_transcriber(checkpoint, device, max_frames)
    settings, grid, best = run_tune(asr, valid, str(lm), beam, *grids,
                                    vocab=str(vocab) if vocab else None, widen=widen)
    out = out or checkpoint
    ckpt = load_checkpoint(checkpoint)
    save_checkpoint({**ckpt, "decoding": settings.state_dict()}, out)
    (out.parent / "lm_tuning.tsv").write_text(
        "lm_weight\tword_bonus\tunk_penalty\twer\tcer\n" + "".join(
            f"{p.lm_weight:g}\t{p.word_bonus:g}\t{p.unk_penalty:g}\t{p.wer:.2f}\t{p.cer:.2f}\n"
            for p in grid))
    (out.parent / "lm_tuning.txt").write_text(f"{best.line()} (best on valid)\n")
    typer.echo(f"{valid}: {best.line()}: WER {best.wer:.2f} % (of {len(grid)} settings; "
               f"{out.parent / 'lm_tuning.tsv'})")
    typer.echo(f"wrote {out}: decodes with beam {beam} + this LM by default")


PrecisionOpt = Annotated[str, typer.Option("--precision", help="fp32, or bf16 / fp16 autocast "
                                           "of a checkpoint where the CPU (AVX512-BF16 / AMX) "
                                           "or GPU computes in it natively.")]
Int8Opt = Annotated[bool, typer.Option("--int8", help="Dynamic int8 quantisation of the linear "
                                       "and recurrent layers (CPU, onnxruntime: the onnx "
                                       "extra).")]


@app.command()
def transcribe(
    model: Annotated[Path, typer.Argument(help="A checkpoint (model.pt) or a file written by "
                                          "`ctcasr export` (ONNX).")],
    audio: Annotated[list[str], typer.Argument(help="Audio files (any rate, mono or stereo, "
                                               "whatever soundfile reads), folders (searched "
                                               "for audio files), or - for a list of paths "
                                               "on stdin.")],
    json_lines: Annotated[bool, typer.Option("--json", help="Print JSON lines with word "
                                             "times and confidences instead of "
                                             "path<TAB>text.")] = False,
    snap: Annotated[bool, typer.Option("--snap", help="--json: move word edges to the "
                                       "pauses in the audio, as `ctcasr align` does (a CTC "
                                       "model's word ends where its last unit fires).")]
    = False,
    decoder: DecoderOpt = None,
    beam: BeamOpt = None,
    topk: TopkOpt = None,
    prune: PruneOpt = None,
    beam_prune: BeamPruneOpt = None,
    lm: LmOpt = None,
    lm_weight: LmWeightOpt = None,
    word_bonus: WordBonusOpt = None,
    unk_penalty: UnkPenaltyOpt = None,
    vocab: VocabOpt = None,
    hotwords: HotwordsOpt = None,
    hotword_boost: HotwordBoostOpt = 2.0,
    int8: Int8Opt = False,
    threads: Annotated[int, typer.Option("--threads", help="Intra-op threads (0: the "
                                         "library's default, all cores).")] = 0,
    device: DeviceOpt = "cpu",
    precision: PrecisionOpt = "fp32",
    batch_seconds: Annotated[float, typer.Option("--batch-seconds", help="Padded audio per "
                                                 "batch (seconds).")] = 120.0,
    chunk_seconds: Annotated[float, typer.Option("--chunk-seconds", help="Longer inputs are "
                                                 "decoded in windows of this length.")] = 30.0,
    overlap_seconds: Annotated[float, typer.Option("--overlap-seconds", help="Overlap of "
                                                   "consecutive windows.")] = 2.0,
    skip_bad: Annotated[bool, typer.Option("--skip-bad", help="Report unreadable audio on "
                                           "stderr and go on, instead of stopping.")] = False,
) -> None:
    """Transcribe audio files: prints path<TAB>text per file (or JSON lines with --json).

    It decodes as the model carries (see tune-lm) unless options say otherwise."""
    import json

    from ctcasr.decode.settings import hotword_list
    from ctcasr.infer import Transcriber, open_engine
    from ctcasr.infer.transcriber import expand_inputs

    engine = open_engine(model, int8=int8, threads=threads, device=device, precision=precision)
    settings = engine.info.decoding.override(
        decoder, lm, vocab, beam=beam, topk=topk, prune=prune, beam_prune=beam_prune,
        lm_weight=lm_weight, word_bonus=word_bonus, unk_penalty=unk_penalty,
        hotwords=hotword_list(hotwords, hotword_boost))
    from ctcasr.decode.pauses import Snap

    asr = Transcriber(engine, settings, json_lines, chunk_seconds, overlap_seconds,
                      batch_seconds, snap=Snap() if snap else None)
    failed = 0

    def report(e: CtcasrError) -> None:
        nonlocal failed
        failed += 1
        print(f"skipped: {e}", file=sys.stderr, flush=True)

    for t in asr.transcribe_iter(expand_inputs(audio, sys.stdin),
                                 on_error=report if skip_bad else None):
        line = json.dumps(t.to_dict(), ensure_ascii=False) if json_lines else \
            f"{t.name}\t{t.text}"
        typer.echo(line)
    if failed:
        print(f"skipped {failed} unreadable input(s)", file=sys.stderr)


def _opt(flag: str, text: str, kind: type = float):
    return Annotated[kind, typer.Option(flag, help=text)]


@app.command()
def serve(
    model: Annotated[Path, typer.Argument(help="A checkpoint (model.pt) or ONNX export.")],
    host: _opt("--host", "Address to listen on (127.0.0.1: this machine only; 0.0.0.0: "
               "every interface: give it an API key).", str) = "127.0.0.1",
    port: _opt("--port", "TCP port.", int) = 8000,
    decoder: DecoderOpt = None,
    beam: BeamOpt = None,
    lm: LmOpt = None,
    lm_weight: LmWeightOpt = None,
    word_bonus: WordBonusOpt = None,
    unk_penalty: UnkPenaltyOpt = None,
    vocab: VocabOpt = None,
    hotwords: HotwordsOpt = None,
    hotword_boost: HotwordBoostOpt = 2.0,
    threads: _opt("--threads", "Intra-op threads (0: all cores).", int) = 0,
    workers: _opt("--workers", "Decoding threads at once (torch already uses the cores: 1 "
                  "suits a CPU).", int) = 1,
    partial_seconds: _opt("--partial-seconds", "A full-context model re-decodes the open "
                          "segment after this much new audio.") = 1.0,
    max_streams: _opt("--max-streams", "WebSocket streams at once.", int) = 8,
    max_upload_mb: _opt("--max-upload-mb", "Largest upload.") = 50.0,
    max_stream_seconds: _opt("--max-stream-seconds", "Longest stream (seconds of audio).")
    = 600.0,
    idle_seconds: _opt("--idle-seconds", "A stream that sends nothing for this long is "
                       "closed.") = 60.0,
    shutdown_seconds: _opt("--shutdown-seconds", "On SIGTERM / Ctrl-C, open streams get this "
                           "long to finish (their final result, a normal close).") = 10.0,
    endpoint_silence: _opt("--endpoint-silence", "A stream's segment ends after this many "
                           "seconds of silence after speech (0: only at the stop).") = 1.0,
    max_segment: _opt("--max-segment", "... or when it is this many seconds long.") = 20.0,
    chunk_size: _opt("--chunk-size", "A Conformer / Transformer trained with dynamic chunks: "
                     "attention in chunks of this many output frames (it then streams).",
                     int) = 0,
    left_chunks: _opt("--left-chunks", "With --chunk-size: chunks of left context (-1: all).",
                      int) = -1,
    api_key_file: _opt("--api-key-file", "Ask every request but /healthz for this key "
                       "(Authorization: Bearer KEY; also $CTCASR_API_KEY).", Path | None)
    = None,
    allow_origin: _opt("--allow-origin", "A site whose pages may call the API (repeatable; "
                       "default: this server's own pages only).", list[str] | None) = None,
    ssl_certfile: _opt("--ssl-certfile", "Serve HTTPS with this certificate (PEM): browsers "
                       "give the microphone only to HTTPS pages and localhost.", Path | None)
    = None,
    ssl_keyfile: _opt("--ssl-keyfile", "Its private key (PEM).", Path | None) = None,
) -> None:
    """Serve recognition over HTTP and WebSocket: a page at /, POST /v1/transcribe, WS
    /v1/stream (docs/serving.md). Needs the serve extra."""
    try:
        from ctcasr.serve.app import Endpoint, Limits, create_app
        from ctcasr.serve.run import run_server
    except ImportError:
        raise CtcasrError("ctcasr serve needs starlette, uvicorn and websockets: pip install "
                          "-e '.[serve]' (from a checkout)") from None
    from ctcasr.decode.settings import hotword_list
    from ctcasr.infer import load

    asr = load(model, decoder=decoder, beam=beam, lm=lm, lm_weight=lm_weight,
               word_bonus=word_bonus, unk_penalty=unk_penalty, vocab=vocab,
               hotwords=hotword_list(hotwords, hotword_boost), threads=threads)
    limits = Limits(max_upload_mb=max_upload_mb, max_stream_seconds=max_stream_seconds,
                    max_streams=max_streams, workers=workers, partial_seconds=partial_seconds,
                    idle_seconds=idle_seconds, shutdown_seconds=shutdown_seconds,
                    api_key=_api_key(api_key_file, host),
                    allow_origins=tuple(allow_origin or ()))
    if chunk_size:
        from ctcasr.models import set_chunking

        if asr.engine.kind != "eager":
            raise CtcasrError("--chunk-size: stream a checkpoint, not an export")
        set_chunking(asr.engine.model, chunk_size, left_chunks)
    endpoint = Endpoint(endpoint_silence, max_segment) if endpoint_silence > 0 else None
    run_server(create_app(asr, limits, model.name, endpoint), host, port, limits,
               ssl_certfile, ssl_keyfile, f"serving {model} ({asr.settings.describe()})")


def _api_key(path: Path | None, host: str) -> str | None:
    """The server's API key (a file's first line, or $CTCASR_API_KEY); a warning when it
    listens beyond this machine without one."""
    import os

    key = None
    if path is not None:
        try:
            key = path.read_text(encoding="utf-8").strip()
        except OSError as e:
            raise CtcasrError(f"{path}: cannot read the API key: {e.strerror}") from None
        if not key:
            raise CtcasrError(f"{path}: the API key file is empty")
    key = key or os.environ.get("CTCASR_API_KEY") or None
    if key is None and host not in ("127.0.0.1", "localhost", "::1"):
        print(f"warning: serving on {host} without an API key: anyone who reaches this port "
              "can use it (--api-key-file)", file=sys.stderr)
    return key


@app.command()
def export(
    checkpoint: Annotated[Path, typer.Argument(help="The checkpoint (model.pt) to export.")],
    fmt: Annotated[str, typer.Option("--format", help="onnx (fbank in the graph; needs the "
                                     "onnx extra), the only format.")] = "onnx",
    out: Annotated[Path | None, typer.Option("--out", "-o", help="File to write (default: "
                                             "CHECKPOINT with .onnx, .int8.onnx with "
                                             "--int8).")] = None,
    int8: Int8Opt = False,
) -> None:
    """Export a checkpoint as one self-contained ONNX file for `ctcasr transcribe` (and any
    onnxruntime program): waveforms in, log-probs out; fbank, CMVN and the tokenizer inside."""
    from ctcasr.infer.export import export as run_export

    path, diff = run_export(checkpoint, fmt, out, int8)
    typer.echo(f"wrote {path}: largest log-prob difference from the checkpoint's float model "
               f"on a test batch {diff:.2g}")


@app.command()
def score(
    ref: Annotated[Path, typer.Argument(help="Reference file, 'id<TAB>text' per line.")],
    hyp: Annotated[Path, typer.Argument(help="Hypothesis file, 'id<TAB>text' per line.")],
    out_dir: Annotated[Path | None, typer.Option("--out-dir", help="Also write errors.txt and "
                                                 "summaries there.")] = None,
) -> None:
    """Score any two id<TAB>text files (WER, CER, S/D/I); prints one line."""
    from ctcasr.scoring import read_text_file, write_report
    from ctcasr.scoring import score as score_texts

    refs, hyps = read_text_file(ref), read_text_file(hyp)
    missing = [u for u in refs if u not in hyps]
    if missing:
        raise CtcasrError(f"{hyp}: no hypothesis for {len(missing)} id(s), e.g. {missing[0]!r}")
    ids = list(refs)
    if out_dir is not None:
        s = write_report(out_dir, ids, [refs[u] for u in ids], [hyps[u] for u in ids])
    else:
        s = score_texts([refs[u] for u in ids], [hyps[u] for u in ids])[0]
    typer.echo(s.line() if s else "nothing to score")


@app.command("tokenizer")
def make_tokenizer_file(
    config: ConfigOpt,
    manifest: Annotated[Path, typer.Option("--manifest", help="Training manifest: its "
                                           "transcripts are the only text the tokenizer sees.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Tokenizer file (JSON) to write; "
                                      "train uses it with --set tokenizer.path=OUT.")],
    overrides: SetOpt = None,
) -> None:
    """Train the config's tokenizer on a manifest's transcripts, write it, and report how many
    tokens per second it gives against the model's output frame rate (CTC needs one frame per
    token, two for a repeated one)."""
    import torch

    from ctcasr.config import load_config
    from ctcasr.data.features import frame_seconds, frames_for_duration
    from ctcasr.data.manifest import read_manifest
    from ctcasr.models.ctc import min_ctc_frames
    from ctcasr.models.frontend import Conv2dSubsampling
    from ctcasr.tokenizer import save_tokenizer, train_tokenizer

    cfg = load_config(config, overrides)
    feat, front = cfg.data.features, cfg.model.frontend
    utts = [u for u in read_manifest(manifest) if u.text]
    tok = train_tokenizer(cfg.tokenizer, (u.text for u in utts))
    save_tokenizer(tok, cfg.tokenizer, out)
    subsample = Conv2dSubsampling(feat.num_mel_bins, front).output_lengths
    fastest = max(cfg.data.augment.speeds) if cfg.data.augment.enabled else 1.0
    ntok, tight = [], {1.0: 0, fastest: 0}
    for u in utts:
        ids = torch.tensor([tok.encode(u.text)])
        need = int(min_ctc_frames(ids, torch.tensor([ids.shape[1]])))
        ntok.append(ids.shape[1])
        for speed in tight:
            have = int(subsample(torch.tensor(frames_for_duration(u.duration / speed, feat))))
            tight[speed] += need > have
    seconds = sum(u.duration for u in utts)
    typer.echo(f"wrote {out}: {cfg.tokenizer.type}, {tok.vocab_size} pieces, from "
               f"{len(utts)} transcripts")
    typer.echo(f"tokens per utterance {sum(ntok) / len(ntok):.1f} (max {max(ntok)}), "
               f"{sum(ntok) / seconds:.1f} per second of audio; the model outputs "
               f"{1 / frame_seconds(front.subsampling, feat):.1f} frames per second")
    typer.echo("utterances with more tokens than output frames (CTC cannot align them): "
               + ", ".join(f"{n} at speed {s:g}" for s, n in tight.items()))


@app.command("import")
def import_corpus(
    fmt: Annotated[str, typer.Argument(help="The corpus's layout: kaldi, librispeech, "
                                       "commonvoice, lhotse or hf.")],
    src: Annotated[Path, typer.Argument(help="kaldi: a data dir; librispeech: a split folder "
                                        "(or its parent with --split); commonvoice: one "
                                        "language's folder; lhotse: a cuts manifest, a "
                                        "recordings or supervisions manifest, or their "
                                        "folder; hf: a save_to_disk folder, or parquet "
                                        "files or their folder.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Manifest (JSONL) to write.")],
    split: Annotated[str | None, typer.Option("--split", help="librispeech / kaldi: the "
                                              "split's folder under SRC; commonvoice: the "
                                              "table (train, dev, test, validated, ...; "
                                              "default train); hf: the split (default "
                                              "train, or the only one).")] = None,
    root: Annotated[Path | None, typer.Option("--root", help="Folder that relative audio "
                                              "paths start from (kaldi: DATA_DIR's parent; "
                                              "lhotse: the manifest's folder).")] = None,
    text_norm: Annotated[str, typer.Option("--text-norm", help="commonvoice, hf: english "
                                           "(lower case, letters a-z, digits, apostrophes "
                                           "in words), unicode (the same for any script) or "
                                           "none.")] = "english",
    audio_dir: Annotated[Path | None, typer.Option("--audio-dir", help="hf: where audio held "
                                                   "as bytes is written, once, as it is "
                                                   "(default: OUT's name + _audio, beside "
                                                   "it).")] = None,
    text_column: Annotated[str | None, typer.Option("--text-column", help="hf: the "
                                                    "transcript's column (default: text, "
                                                    "sentence, transcript, ...).")] = None,
    skip_bad: SkipBadOpt = False,
) -> None:
    """Make a manifest of a corpus in the layout it ships in (docs/data.md)."""
    from ctcasr.data.badinputs import BadInputs
    from ctcasr.data.corpora import import_corpus as run_import
    from ctcasr.data.manifest import write_manifest

    bad = BadInputs(skip_bad)
    audio_dir = audio_dir or out.with_name(out.stem + "_audio")
    n = write_manifest(out, run_import(fmt, src, split, root, bad, text_norm, audio_dir,
                                       text_column))
    typer.echo(f"wrote {out}: {n} utterances" + (f", {bad.count} bad line(s) skipped"
                                                   if bad.count else ""))
    for m in bad.messages[:20]:
        typer.echo(f"  skipped: {m}")


@app.command("import-kaldi")
def import_kaldi(
    data_dir: Annotated[Path, typer.Argument(help="Kaldi data dir: text, wav.scp, and "
                                             "optionally utt2spk and segments.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Manifest (JSONL) to write.")],
    root: Annotated[Path | None, typer.Option("--root", help="Folder that relative wav.scp "
                                              "paths start from (default: DATA_DIR's parent)."
                                              )] = None,
    skip_bad: SkipBadOpt = False,
) -> None:
    """Make a manifest of a Kaldi data dir (id, audio, duration, text, speaker; offset for
    segments). wav.scp must list audio files: pipe commands are refused. The same as
    `ctcasr import kaldi`."""
    import_corpus("kaldi", data_dir, out, root=root, skip_bad=skip_bad)


@app.command()
def align(
    model: Annotated[Path, typer.Argument(help="A checkpoint (model.pt) or ONNX export.")],
    audio: Annotated[Path | None, typer.Argument(help="An audio file (and TEXT), or use "
                                                 "--manifest.")] = None,
    text: Annotated[str | None, typer.Argument(help="AUDIO's transcript.")] = None,
    manifest: Annotated[Path | None, typer.Option("--manifest", help="Align every line of a "
                                                  "manifest (its 'text').")] = None,
    out: Annotated[Path, typer.Option("--out", "-o", help="ctm / json: the file to write; "
                                      "textgrid: a folder (ID.TextGrid per utterance).")]
    = Path("-"),
    fmt: Annotated[str, typer.Option("--format", help="ctm, json (lines) or textgrid.")]
    = "ctm",
    units: Annotated[bool, typer.Option("--units", help="ctm: one line per unit (character, "
                                        "piece or phone) instead of per word.")] = False,
    find: _opt("--find", "The transcript may be imperfect (a long recording's): leave out its "
               "words that are not in the audio, pass over speech it lacks, align the rest.",
               bool) = False,
    skip_penalty: _opt("--skip-penalty", "--find: the cost of leaving a word out (nats).")
    = 6.0,
    garbage_penalty: _opt("--garbage-penalty", "--find: the cost of a frame of speech that is "
                          "not in the transcript (nats below its best unit).") = 4.0,
    snap: _opt("--snap/--no-snap", "Move word edges to the pauses in the audio (a CTC "
               "model's spans end where its last unit fires).", bool) = True,
    device: DeviceOpt = "cpu",
    skip_bad: SkipBadOpt = False,
) -> None:
    """Force-align a transcript to its audio: each word's (and unit's) start, end and score,
    as CTM, JSON lines or Praat TextGrids (docs/align.md)."""
    from ctcasr.data.manifest import iter_manifest
    from ctcasr.decode.align import Find
    from ctcasr.decode.pauses import Snap
    from ctcasr.infer import Transcriber, open_engine
    from ctcasr.infer import align as A
    from ctcasr.infer.manifest import source
    from ctcasr.infer.transcriber import Source

    if fmt not in A.FORMATS:
        raise CtcasrError(f"--format {fmt!r}: choose {', '.join(A.FORMATS)}")
    if (manifest is None) == (audio is None) or (audio is not None and text is None):
        raise CtcasrError("ctcasr align: give AUDIO and TEXT, or --manifest")
    if fmt == "textgrid" and str(out) == "-":
        raise CtcasrError("--format textgrid writes a folder: give it with --out")
    asr = Transcriber(open_engine(model, device=device), timestamps=False)
    items = [(Source(str(audio), audio), text or "")] if audio is not None else \
        ((source(u), u.text) for u in iter_manifest(manifest, require_text=True))
    failed = []

    def report(e: CtcasrError) -> None:
        failed.append(e)
        print(f"skipped: {e}", file=sys.stderr, flush=True)

    how = Find(skip_penalty, garbage_penalty) if find else None
    results = A.align_sources(asr, items, report if skip_bad else None, how,
                              Snap() if snap else None)
    if fmt == "textgrid":
        out.mkdir(parents=True, exist_ok=True)
        for a in results:
            (out / f"{A.safe_name(a.source.name)}.TextGrid").write_text(
                A.textgrid(a.duration, a.words), encoding="utf-8")
    else:
        f = sys.stdout if str(out) == "-" else out.open("w", encoding="utf-8")
        try:
            for a in results:
                lines = A.ctm_lines(a.source.name, a.words, units) if fmt == "ctm" else \
                    [A.json_line(a.source.name, a)]
                f.writelines(line + "\n" for line in lines)
        finally:
            if f is not sys.stdout:
                f.close()
    if failed:
        print(f"{len(failed)} utterance(s) could not be aligned", file=sys.stderr)


@app.command()
def realign(
    model: Annotated[Path, typer.Argument(help="A phone model (checkpoint or ONNX export).")],
    manifest: Annotated[Path, typer.Argument(help="Transcribed utterances (JSONL): usually "
                                             "the model's own training manifest.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="The manifest to write: the same "
                                      "lines, each word's chosen pronunciation marked.")],
    device: DeviceOpt = "cpu",
    max_frames: Annotated[int, typer.Option("--max-frames", help="Padded feature frames per "
                                            "batch (0: 20000).")] = 0,
) -> None:
    """Choose, for each word with several pronunciations in the lexicon, the one the audio
    supports (the model's CTC likelihood), and write the transcripts with it marked as
    CMUdict marks variants (`the(2)`): training on OUT trains those phones (docs/training.md)."""
    from ctcasr.data.manifest import read_manifest, write_manifest
    from ctcasr.data.split import manifest_line
    from ctcasr.infer.realign import realign as run
    from ctcasr.infer.realign import summary

    asr = _manifest_transcriber(model, device, max_frames)
    results = list(run(asr, read_manifest(manifest)))
    write_manifest(out, ({**manifest_line(r.utt), "text": r.text} for r in results))
    for line in summary(results, asr.tokenizer):
        typer.echo(line, err=True)
    typer.echo(f"wrote {out} ({len(results)} utterances)")


@app.command()
def split(
    manifest: Annotated[Path, typer.Argument(help="The manifest to split (JSONL, with "
                                             "'speaker' on every line).")],
    train_out: Annotated[Path, typer.Option("--train", help="Training manifest to write.")],
    valid_out: Annotated[Path, typer.Option("--valid", help="Validation manifest to write.")],
    valid_share: Annotated[float, typer.Option("--valid-share", help="Share of the audio "
                                               "(seconds) that goes to validation, at "
                                               "least.")] = 0.1,
    by: Annotated[str, typer.Option("--by", help="speaker (whole speakers on one side) or "
                                    "utterance.")] = "speaker",
    seed: Annotated[int, typer.Option("--seed", help="Changes which speakers are held "
                                      "out.")] = 0,
) -> None:
    """Hold out whole speakers as a validation set (for choosing epochs and LM settings on
    voices training never heard)."""
    from ctcasr.data.manifest import read_manifest, write_manifest
    from ctcasr.data.split import manifest_line, speaker_split

    train, valid = speaker_split(read_manifest(manifest), valid_share, seed, by)
    for out, utts in ((train_out, train), (valid_out, valid)):
        write_manifest(out, (manifest_line(u) for u in utts))
        groups = {u.extra.get("speaker") for u in utts} if by == "speaker" else utts
        typer.echo(f"wrote {out}: {len(utts)} utterances, {len(groups)} {by}(s), "
                   f"{sum(u.duration for u in utts) / 3600:.2f} h")


@app.command()
def download(
    name: Annotated[str, typer.Argument(help="yesno, fsdd, speechocean762 or arctic.")],
) -> None:
    """Find a corpus the recipes use, or download it once; prints its folder.

    Looked for in $CTCASR_DATA/NAME, then in $CTCASR_DOWNLOADS (default
    ~/.cache/ctcasr/corpora), where it is otherwise downloaded and unpacked (docs/data.md)."""
    from ctcasr.data.download import corpus_dir

    typer.echo(corpus_dir(name))


@app.command("lm")
def train_lm(
    out: Annotated[Path, typer.Option("--out", "-o", help="ARPA file to write.")],
    text: Annotated[Path | None, typer.Option("--text", help="Training text, one sentence per "
                                              "line.")] = None,
    manifest: Annotated[Path | None, typer.Option("--manifest", help="Or: a manifest whose "
                                                  "transcripts are the training text.")] = None,
    order: Annotated[int, typer.Option("--order", help="n-gram order.")] = 3,
) -> None:
    """Train a word n-gram LM (interpolated modified Kneser-Ney) and write it as ARPA."""
    from ctcasr.lm import train_kneser_ney

    if (text is None) == (manifest is None):
        raise CtcasrError("ctcasr lm: give exactly one of --text and --manifest")
    if text is not None:
        try:
            sents = [s for s in text.read_text(encoding="utf-8").splitlines() if s.strip()]
        except OSError as e:
            raise CtcasrError(f"{text}: cannot read: {e.strerror}") from None
    else:
        from ctcasr.data.manifest import read_manifest

        sents = [u.text for u in read_manifest(manifest) if u.text]
    lm = train_kneser_ney(sents, order)
    lm.write_arpa(out)
    sizes = ", ".join(f"{len(t)} {n}-grams" for n, t in enumerate(lm.probs, 1))
    typer.echo(f"wrote {out}: {sizes} from {len(sents)} sentences")


@app.command()
def average(
    inputs: Annotated[list[Path], typer.Argument(help="An experiment folder (choose epochs with "
                                                 "--num/--select) or checkpoint files.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="The averaged checkpoint to write.")],
    num: Annotated[int, typer.Option("--num", "-n", help="Epoch checkpoints to average.")] = 5,
    select: Annotated[str, typer.Option("--select", help="best (by validation WER, ties by "
                                                 "loss), cer (by validation CER), loss (by "
                                                 "validation loss) or last.")]
    = "best",
) -> None:
    """Average the weights of several checkpoints into one (e.g. the best 5 epochs)."""
    from ctcasr.checkpoint import save_checkpoint
    from ctcasr.train.average import average_checkpoints, exp_checkpoints

    if len(inputs) == 1 and inputs[0].is_dir():
        paths = exp_checkpoints(inputs[0], num, select)
    else:
        paths = inputs
    save_checkpoint(average_checkpoints(paths), out)
    typer.echo(f"wrote {out} = average of {', '.join(p.name for p in paths)}")


@app.command()
def prune(
    checkpoint: Annotated[Path, typer.Argument(help="The model to prune (model.pt).")],
    sparsity: Annotated[float, typer.Option("--sparsity", help="Share of the units to remove "
                                            "from every layer, in [0, 1).")],
    out: Annotated[Path, typer.Option("--out", "-o", help="The pruned checkpoint to write.")],
) -> None:
    """Remove the least important units (LSTM / GRU hidden units; Conformer / Transformer
    feed-forward channels; by weight norm) into a smaller dense model, then fine-tune it with
    the `ctcasr train ... --init` line this prints (docs/inference.md, "Pruning")."""
    from ctcasr.checkpoint import load_checkpoint, load_model, save_checkpoint
    from ctcasr.config import Config
    from ctcasr.models.prune import prune as prune_weights

    ckpt = load_checkpoint(checkpoint)
    cfg = Config.from_dict(ckpt["config"])
    pruned = prune_weights(ckpt["model"], cfg.model, sparsity)
    raw = cfg.to_dict()
    raw["model"]["encoder_conf"].update(pruned.encoder_conf)
    kept = {k: v for k, v in ckpt.items() if k not in ("format", "train_state")}
    save_checkpoint({**kept, "config": raw, "model": pruned.state}, out)
    load_model(out)  # it loads as any model does
    before, after = (sum(t.numel() for n, t in s.items() if not n.startswith("cmvn."))
                     for s in (ckpt["model"], pruned.state))
    sets = " ".join(f"--set model.encoder_conf.{k}={v}" for k, v in pruned.encoder_conf.items())
    typer.echo(f"wrote {out}: {after:,} parameters ({before:,} before, "
               f"{1 - after / before:.1%} fewer)\nfine-tune it: ctcasr train CONFIG --init "
               f"{out} {sets}")


@app.command()
def plot(
    exp_dir: Annotated[Path, typer.Argument(help="Experiment folder with train_log.jsonl.")],
    out: Annotated[Path | None, typer.Option("--out", "-o", help="PNG to write "
                                             "(default EXP_DIR/curves.png).")] = None,
) -> None:
    """Draw loss, validation WER/CER and learning-rate curves of a run to a PNG."""
    from ctcasr.plot import plot_run

    typer.echo(f"wrote {plot_run(exp_dir, out)}")


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s",
                        datefmt="%H:%M:%S")
    try:
        app()
    except (CtcasrError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
