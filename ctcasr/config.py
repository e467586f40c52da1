"""Typed configuration: dataclasses loaded from YAML.

Every component has one dataclass; :class:`Config` nests them. Loading is strict: an unknown
key is an error naming its dotted path, values are checked (and int→float coerced) against the
field types. ``--set a.b=c`` overrides are applied to the raw mapping before it is typed, so
they are checked the same way. Configs are never mutated after loading.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ctcasr.errors import CtcasrError


@dataclass(frozen=True)
class FbankConfig:
    """Kaldi-compatible log-mel filterbank (``torchaudio.compliance.kaldi.fbank``)."""

    sample_rate: int = 16000  # audio at other rates is resampled to this
    num_mel_bins: int = 80  # mel bands: the feature dimension
    frame_length_ms: float = 25.0  # analysis window
    frame_shift_ms: float = 10.0  # hop between frames
    dither: float = 0.0  # 0 keeps features deterministic (exact resume, reproducible decode)
    low_freq: float = 20.0  # lowest mel band edge (Hz)
    high_freq: float = 0.0  # <= 0: offset from Nyquist, as in Kaldi
    utterance_cmn: bool = False  # subtract each utterance's mean log-mel (removes the
    #                              microphone / channel colouring; global CMVN still follows)


@dataclass(frozen=True)
class AugmentConfig:
    """Training-only augmentation; evaluation never augments. The draws for an utterance are a
    pure function of (train.seed, epoch, utterance), so a resumed run sees the same ones."""

    speeds: list[float] = field(default_factory=lambda: [1.0])  # speed perturbation, one per utt
    warps: list[float] = field(default_factory=lambda: [1.0])  # VTLP: Kaldi VTLN warp of the
    #                      mel filterbank (a different vocal tract length), one per utterance
    noise_prob: float = 0.0  # share of utterances that get white noise ...
    noise_snr: list[float] = field(default_factory=lambda: [10.0, 30.0])  # ... at an SNR (dB)
    #                        drawn uniformly from this range (noisy features are not cached)
    freq_masks: int = 0  # SpecAugment frequency masks per utterance
    freq_mask_width: int = 10  # each up to this many mel bins
    time_masks: int = 0  # SpecAugment time masks per utterance
    time_mask_width: int = 40  # each up to this many frames ...
    time_mask_ratio: float = 0.2  # ... and up to this share of the utterance
    spec_start_epoch: int = 1  # SpecAugment from this epoch on, counted from 1 as the logs
    #                            count (masks from the start can keep CTC on its all-blank
    #                            plateau; 0 or 1: from the start)
    cr_time_masks_factor: float = 2.5  # with train.cr_ctc_weight: each copy gets this many
    #                                    times time_masks (rounded; CR-CTC masks more in time)

    def __post_init__(self) -> None:
        if not self.speeds or any(not 0.5 <= s <= 2.0 for s in self.speeds):
            raise CtcasrError(f"data.augment.speeds: {self.speeds} (need factors in 0.5..2.0)")
        if not self.warps or any(not 0.8 <= w <= 1.2 for w in self.warps):
            raise CtcasrError(f"data.augment.warps: {self.warps} (need factors in 0.8..1.2)")
        if not 0.0 <= self.noise_prob <= 1.0 or len(self.noise_snr) != 2 \
                or self.noise_snr[0] > self.noise_snr[1]:
            raise CtcasrError(f"data.augment: noise_prob {self.noise_prob} (need 0..1), "
                              f"noise_snr {self.noise_snr} (need [low, high] dB)")
        if not 0.0 <= self.time_mask_ratio <= 1.0:
            raise CtcasrError(f"data.augment.time_mask_ratio: {self.time_mask_ratio} not in 0..1")
        if self.cr_time_masks_factor < 0:
            raise CtcasrError(f"data.augment.cr_time_masks_factor: {self.cr_time_masks_factor} "
                              "(must be >= 0)")

    @property
    def enabled(self) -> bool:
        return (self.speeds != [1.0] or self.warps != [1.0] or self.noise_prob > 0
                or self.freq_masks > 0 or self.time_masks > 0)


@dataclass(frozen=True)
class DataConfig:
    features: FbankConfig = field(default_factory=FbankConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    max_frames_per_batch: int = 20000  # padded frames (batch size x longest) per batch
    max_utts_per_batch: int = 256  # and at most this many utterances
    sort_noise: float = 0.1  # training: durations jittered by up to +-10 % before bucketing
    sortagrad_epochs: int = 0  # the first N epochs go shortest batch first, unshuffled
    num_workers: int = 0  # DataLoader worker processes
    # pad each batch's time axis up to a multiple of this many frames (padding only: lengths
    # and masks unchanged): fewer distinct batch shapes, for kernels built per shape (oneDNN's
    # bf16 kernels on the CPU: docs/training.md, "bf16 on a CPU that computes in it")
    pad_to_multiple_of: int = 1
    # where training keeps fbank between epochs (docs/training.md, "Memory"):
    #   disk:   a feature store in EXP_DIR/feats, written before epoch 1 (each speed factor),
    #           read back per batch; memory does not grow with the corpus
    #   memory: a dict in RAM (and in each worker): grows with the corpus; small corpora only
    #   none:   computed for every batch
    #   auto:   disk when the folder has room for it, else none
    feature_cache: str = "auto"
    cache_features: bool | None = None  # old switch: false = feature_cache none

    def __post_init__(self) -> None:
        if self.feature_cache not in ("auto", "disk", "memory", "none"):
            raise CtcasrError(f"data.feature_cache: {self.feature_cache!r} (need auto, disk, "
                              "memory or none)")
        if self.pad_to_multiple_of < 1:
            raise CtcasrError(f"data.pad_to_multiple_of: {self.pad_to_multiple_of} (need 1 or "
                              "more frames)")


@dataclass(frozen=True)
class TokenizerConfig:
    type: str = "char"  # char | word | bpe | unigram | phone
    vocab_size: int = 0  # SentencePiece only
    path: str = ""  # a file written by `ctcasr tokenizer` (of this type and size) to use
    #                 instead of training one from the training set
    lexicon: str = ""  # phone: a lexicon file (word PH1 PH2 ...); "": CMUdict (ctcasr.lexicon)


# --------------------------------------------------------------------------- model parts
SUBSAMPLING = (1, 4, 6, 8)  # the front end's factors (ctcasr.models.frontend)
POS_ENCODINGS = ("rotary", "abs", "none")  # the attention encoders' positions


@dataclass(frozen=True)
class FrontendConfig:
    subsampling: int = 4  # 1 (none), 4, 6 or 8
    channels: int = 64  # convolution channels
    dim: int = 256  # output dimension (0 with subsampling 1: pass features through)
    dropout: float = 0.0  # on the projected output
    separable: bool = False  # convolutions after the first: depthwise (with the stride) + 1x1

    def __post_init__(self) -> None:
        if self.subsampling != 1 and self.subsampling not in SUBSAMPLING:
            raise CtcasrError(
                f"model.frontend.subsampling: {self.subsampling} not supported (1, 4, 6 or 8)"
            )


@dataclass(frozen=True)
class RNNConfig:
    hidden_size: int = 256  # per direction
    num_layers: int = 3  # stacked recurrent layers
    dropout: float = 0.1  # between layers
    bidirectional: bool = True  # false: a left-to-right RNN (it can stream)
    impl: str = "reverse"  # reverse | packed

    def __post_init__(self) -> None:
        if self.impl not in ("reverse", "packed"):
            raise CtcasrError(f"model.encoder_conf.impl: unknown {self.impl!r} (reverse, packed)")


@dataclass(frozen=True)
class TransformerConfig:
    d_model: int = 256  # attention width; the input is projected to it when its size differs
    num_layers: int = 12  # blocks
    num_heads: int = 4  # must divide d_model
    ffn_dim: int = 1024  # hidden size of the feed-forward networks
    dropout: float = 0.1  # on the input and on every residual branch
    attention_dropout: float = 0.0  # on the attention weights
    pos_enc: str = "rotary"  # rotary | abs | none (benchmarks/posenc.py)
    # chunked attention (streaming, WeNet's U2): each frame attends to its chunk of chunk_size
    # frames and left_chunks chunks before it (-1: all); 0 = the whole utterance. With
    # dynamic_chunk, each training batch draws its chunk size (half the batches full context,
    # the others 1-25 frames), so that one model decodes with any chunk size
    chunk_size: int = 0
    left_chunks: int = -1  # chunks of left context with chunk_size (-1: all)
    dynamic_chunk: bool = False  # train with a chunk size drawn per batch (see chunk_size)

    def __post_init__(self) -> None:
        where = "model.encoder_conf"
        if self.chunk_size < 0:
            raise CtcasrError(f"{where}.chunk_size: must be >= 0, got {self.chunk_size}")
        for name in ("d_model", "num_layers", "num_heads", "ffn_dim"):
            if getattr(self, name) < 1:
                raise CtcasrError(f"{where}.{name}: must be positive, got {getattr(self, name)}")
        for name in ("dropout", "attention_dropout"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise CtcasrError(f"{where}.{name}: must be in [0, 1), got {getattr(self, name)}")
        if self.d_model % self.num_heads:
            raise CtcasrError(
                f"{where}.d_model: {self.d_model} is not divisible by num_heads {self.num_heads}"
            )
        if self.pos_enc not in POS_ENCODINGS:
            raise CtcasrError(
                f"{where}.pos_enc: unknown {self.pos_enc!r} ({', '.join(POS_ENCODINGS)})"
            )
        if self.pos_enc == "rotary" and (self.d_model // self.num_heads) % 2:
            raise CtcasrError(
                f"{where}.d_model: rotary needs an even head size, d_model / num_heads = "
                f"{self.d_model // self.num_heads}"
            )


# --------------------------------------------------------------------------- positions


@dataclass(frozen=True)
class ConformerConfig(TransformerConfig):
    """The Transformer's fields, and the convolution module's."""

    conv_kernel: int = 15  # depthwise convolution kernel (frames, odd)
    causal: bool = False  # the depthwise convolution reads only past frames (for streaming)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.conv_kernel < 1 or self.conv_kernel % 2 == 0:
            raise CtcasrError(
                f"model.encoder_conf.conv_kernel: must be odd and positive, got {self.conv_kernel}"
            )


@dataclass(frozen=True)
class EBranchformerConfig(ConformerConfig):
    """The Conformer's fields (conv_kernel: the cgMLP's depthwise kernel), and the branches'."""

    conv_kernel: int = 31  # the cgMLP's depthwise convolution kernel (frames, odd)
    cgmlp_dim: int = 1024  # the cgMLP's width before its gate halves it (even)
    merge_kernel: int = 3  # the depthwise convolution merging the two branches (odd)

    def __post_init__(self) -> None:
        super().__post_init__()
        where = "model.encoder_conf"
        if self.cgmlp_dim < 2 or self.cgmlp_dim % 2:
            raise CtcasrError(f"{where}.cgmlp_dim: must be even and positive, got "
                              f"{self.cgmlp_dim}")
        if self.merge_kernel < 1 or self.merge_kernel % 2 == 0:
            raise CtcasrError(f"{where}.merge_kernel: must be odd and positive, got "
                              f"{self.merge_kernel}")


# model.encoder names the encoder (ctcasr.models.ENCODERS builds it) and types its encoder_conf
ENCODER_CONFIGS: dict[str, type] = {"lstm": RNNConfig, "gru": RNNConfig,
                                    "conformer": ConformerConfig, "transformer": TransformerConfig,
                                    "ebranchformer": EBranchformerConfig}


def encoder_config_class(name: str) -> type:
    if name not in ENCODER_CONFIGS:
        raise CtcasrError(f"model.encoder: unknown {name!r} (choose {', '.join(ENCODER_CONFIGS)})")
    return ENCODER_CONFIGS[name]


@dataclass(frozen=True)
class ModelConfig:
    frontend: FrontendConfig = field(default_factory=FrontendConfig)
    encoder: str = "lstm"  # a name in ctcasr.models.ENCODERS
    encoder_conf: Any = field(default_factory=dict)  # typed by the encoder's own dataclass
    head_dropout: float = 0.0  # dropout before the CTC output layer
    init: str = "default"  # parameter initialisation: default (PyTorch's) | xavier | kaiming
    # intermediate CTC (ctcasr.models.ctc): these encoder layers' outputs (from 1) also get the
    # CTC loss, weighted by train.inter_ctc_weight; inter_ctc_condition: self-conditioned CTC
    inter_ctc_layers: tuple[int, ...] = ()
    inter_ctc_condition: bool = False  # feed each such layer's CTC prediction to the next

    def __post_init__(self) -> None:
        conf_cls = encoder_config_class(self.encoder)
        if isinstance(self.encoder_conf, dict):
            typed = from_dict(conf_cls, self.encoder_conf, "model.encoder_conf")
            object.__setattr__(self, "encoder_conf", typed)
        elif not isinstance(self.encoder_conf, conf_cls):
            raise CtcasrError(f"model.encoder_conf: expected {conf_cls.__name__}")


@dataclass(frozen=True)
class OptimConfig:
    weight_decay: float = 0.01  # AdamW's decoupled weight decay
    betas: tuple[float, float] = (0.9, 0.98)  # AdamW's moment decays
    eps: float = 1e-9  # AdamW's denominator term
    impl: str = "auto"  # AdamW's implementation: auto (fused, or foreach where the device
    #                     has no fused kernel), foreach (grouped tensor ops), fused (one kernel
    #                     per parameter) or loop (torch's default on the CPU)

    def __post_init__(self) -> None:
        if self.impl not in ("auto", "foreach", "fused", "loop"):
            raise CtcasrError(f"optim.impl: unknown {self.impl!r} (auto, foreach, fused or "
                              "loop)")


@dataclass(frozen=True)
class SchedulerConfig:
    """Learning rate per optimizer step; every schedule warms up linearly to ``peak_lr``."""

    name: str = "noam"  # noam | cosine | step | plateau | constant
    warmup_steps: int = 1000  # optimizer steps of linear warm-up from 0
    peak_lr: float = 1e-3  # the learning rate reached at the end of warmup
    min_lr: float = 0.0  # cosine: the floor reached at total_steps
    total_steps: int = 0  # cosine: 0 = train.max_steps or epochs x optimizer steps per epoch
    milestones: list[int] = field(default_factory=list)  # step: multiply by gamma at these steps
    step_size: int = 0  # step without milestones: multiply by gamma every step_size steps
    gamma: float = 0.1  # step: the decay factor
    factor: float = 0.5  # plateau: multiply by this when validation loss stops improving ...
    patience: int = 1  # ... for more than this many epochs
    threshold: float = 1e-3  # plateau: relative improvement that counts


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 10  # passes over the training set
    max_steps: int = 0  # > 0: stop after this many optimizer steps in total (0 = no limit)
    max_norm: float = 5.0  # gradient-norm clipping
    seed: int = 1234  # initial weights, batch order, augmentation draws, dropout
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    log_every: int = 10  # steps between log lines
    save_every_steps: int = 0  # > 0: also write last.pt every N steps inside an epoch
    keep_epochs: int = 5  # epoch-N.pt files kept (the newest ones)
    num_threads: int = 0  # > 0: exactly this many torch threads; 0: all cores, fewer under load
    accum_grad: int = 1  # batches per optimizer step (per process)
    # loss = (1 - w) CTC(last layer) + w mean(CTC(model.inter_ctc_layers)), when there are any
    inter_ctc_weight: float = 0.3
    # > 0: consistency-regularised CTC (CR-CTC, Yao et al. 2025): two copies of each utterance
    # with independent SpecAugment masks; loss = mean of their CTC losses + this weight x the KL
    # between their frame posteriors, each copy the other's (detached) target. ~2x the compute
    cr_ctc_weight: float = 0.0
    # none | bf16 | fp16: mixed precision (CPU: bf16 only, where native); auto: bf16 where the
    # device computes in it (a GPU that has it, a CPU with AVX512-BF16 / AMX-BF16), else fp32
    amp: str = "none"
    patience: int = 0  # > 0: stop after this many epochs without a better validation WER
    max_bad_steps: int = 20  # stop after this many non-finite steps in a row
    average: int = 0  # > 0: model.pt = the average of this many epoch checkpoints ...
    average_select: str = "best"  # ... the best by validation WER (best), CER, loss, or the last
    tensorboard: bool = True  # also write TensorBoard events when tensorboard is installed
    compile: bool = False  # torch.compile the encoder (ctcasr.train.compile; docs/training.md)
    # fine-tuning (ctcasr.train.finetune; `ctcasr train --init CKPT` sets init)
    init: str = ""  # start from this checkpoint's weights (those whose name and shape match)
    init_tokenizer: bool = False  # use init's tokenizer instead of training one (keeps its head)
    freeze_frontend: bool = False  # hold the conv front end still ...
    freeze_encoder_layers: int = 0  # ... and the first N encoder layers ...
    freeze_steps: int = 0  # ... for the first N optimizer steps

    def __post_init__(self) -> None:
        checks = {
            "amp": (self.amp, ("none", "bf16", "fp16", "auto")),
            "average_select": (self.average_select, ("best", "cer", "loss", "last")),
        }
        for key, (value, allowed) in checks.items():
            if value not in allowed:
                raise CtcasrError(f"train.{key}: unknown {value!r} (choose {', '.join(allowed)})")
        if self.accum_grad < 1:
            raise CtcasrError(f"train.accum_grad: {self.accum_grad} (must be >= 1)")
        if not 0.0 <= self.inter_ctc_weight < 1.0:
            raise CtcasrError(f"train.inter_ctc_weight: {self.inter_ctc_weight} (must be in "
                              "[0, 1))")
        if self.cr_ctc_weight < 0:
            raise CtcasrError(f"train.cr_ctc_weight: {self.cr_ctc_weight} (must be >= 0)")


@dataclass(frozen=True)
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    scheduler: SchedulerConfig = field(default_factory=SchedulerConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def to_dict(self) -> dict[str, Any]:
        return to_dict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Config:
        return from_dict(cls, d, "")


# --------------------------------------------------------------------------- loading
def load_config(path: str | Path | None, overrides: list[str] | None = None) -> Config:
    """Read a YAML config (or the defaults when ``path`` is None) and apply ``a.b=c`` overrides."""
    raw: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        try:
            raw = yaml.safe_load(path.read_text()) or {}
        except OSError as e:
            raise CtcasrError(f"{path}: cannot read config: {e.strerror}") from None
        except yaml.YAMLError as e:
            raise CtcasrError(f"{path}: not valid YAML: {_one_line(e)}") from None
        if not isinstance(raw, dict):
            raise CtcasrError(f"{path}: a config must be a mapping at the top level")
    for item in overrides or []:
        apply_override(raw, item)
    try:
        return Config.from_dict(raw)
    except CtcasrError as e:
        where = f"{path}: " if path is not None else ""
        raise CtcasrError(f"{where}{e}") from None


def apply_override(raw: dict[str, Any], item: str) -> None:
    """Apply one ``a.b.c=value`` override in place; the value is parsed as YAML."""
    key, sep, value = item.partition("=")
    if not sep or not key:
        raise CtcasrError(f"--set {item!r}: expected KEY=VALUE, e.g. train.epochs=5")
    node = raw
    parts = key.split(".")
    for p in parts[:-1]:
        node = node.setdefault(p, {})
        if not isinstance(node, dict):
            raise CtcasrError(f"--set {item!r}: {p!r} is not a section")
    try:
        node[parts[-1]] = yaml.safe_load(value)
    except yaml.YAMLError as e:
        raise CtcasrError(f"--set {item!r}: not valid YAML: {_one_line(e)}") from None


def save_config(config: Config, path: Path) -> None:
    path.write_text(yaml.safe_dump(config.to_dict(), sort_keys=False))


def to_dict(obj: Any) -> Any:
    if dataclasses.is_dataclass(obj):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, tuple):
        return [to_dict(v) for v in obj]
    return obj


def from_dict(cls: type, d: Any, where: str) -> Any:
    """Build dataclass ``cls`` from mapping ``d``; ``where`` is the dotted path for errors."""
    if not isinstance(d, dict):
        raise CtcasrError(f"{where or 'config'}: expected a mapping, got {d!r}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(d) - names)
    if unknown:
        path = ", ".join(_join(where, k) for k in unknown)
        raise CtcasrError(
            f"unknown config key {path} (known keys here: {', '.join(sorted(names))})"
        )
    kwargs = {k: _coerce(hints[k], v, _join(where, k)) for k, v in d.items()}
    return cls(**kwargs)


def _coerce(tp: Any, value: Any, where: str) -> Any:
    origin = typing.get_origin(tp)
    if tp is Any:
        return value
    if dataclasses.is_dataclass(tp):
        return from_dict(tp, value, where)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(arg, value, where)
            except CtcasrError:
                pass
        raise CtcasrError(f"{where}: {value!r} is not a valid {tp}")
    if origin is tuple:
        args = typing.get_args(tp)
        if len(args) == 2 and args[1] is Ellipsis:  # tuple[X, ...]: a list of any length
            if not isinstance(value, (list, tuple)):
                raise CtcasrError(f"{where}: expected a list, got {value!r}")
            return tuple(_coerce(args[0], v, where) for v in value)
        if not isinstance(value, (list, tuple)) or len(value) != len(args):
            raise CtcasrError(f"{where}: expected a list of {len(args)} values, got {value!r}")
        return tuple(_coerce(a, v, where) for a, v in zip(args, value, strict=True))
    if origin is list:
        (arg,) = typing.get_args(tp)
        if not isinstance(value, list):
            raise CtcasrError(f"{where}: expected a list, got {value!r}")
        return [_coerce(arg, v, where) for v in value]
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if tp is float and isinstance(value, str):  # YAML 1.1 reads "1e-3" as a string
        try:
            return float(value)
        except ValueError:
            pass
    if tp in (int, float, str, bool) and not (
        isinstance(value, tp) and not (tp is int and isinstance(value, bool))
    ):
        raise CtcasrError(f"{where}: expected {tp.__name__}, got {value!r}")
    return value


def _join(where: str, key: str) -> str:
    return f"{where}.{key}" if where else key


def _one_line(e: Exception) -> str:
    return " ".join(str(e).split())
