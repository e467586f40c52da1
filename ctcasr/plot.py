"""``ctcasr plot EXP_DIR``: training curves from ``train_log.jsonl`` to one PNG.

Three panels against the optimizer step: training and validation loss, validation WER / CER,
and the learning rate. Needs matplotlib (the ``plot`` extra).
"""

from __future__ import annotations

from pathlib import Path

from ctcasr.errors import CtcasrError
from ctcasr.train.monitor import read_log


def plot_run(exp_dir: Path, out: Path | None = None) -> Path:
    log_path = exp_dir / "train_log.jsonl"
    if not log_path.exists():
        raise CtcasrError(f"{exp_dir}: no train_log.jsonl (not an experiment folder?)")
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise CtcasrError("ctcasr plot needs matplotlib: pip install -e '.[plot]' (from a "
                          "checkout)") from None
    recs = read_log(log_path)
    train = [r for r in recs if "loss" in r]
    valid = [r for r in recs if "valid_loss" in r]
    if not train and not valid:
        raise CtcasrError(f"{log_path}: no records to plot")
    fig, (ax_loss, ax_wer, ax_lr) = plt.subplots(3, 1, figsize=(8, 9), sharex=True)
    ax_loss.plot([r["step"] for r in train], [r["loss"] for r in train], label="train", lw=1)
    ax_loss.plot([r["step"] for r in valid], [r["valid_loss"] for r in valid], "o-",
                 label="valid")
    ax_loss.set_ylabel("CTC loss / utterance")
    ax_loss.set_yscale("log")
    ax_loss.legend()
    ax_wer.plot([r["step"] for r in valid], [r["valid_wer"] for r in valid], "o-", label="WER")
    ax_wer.plot([r["step"] for r in valid], [r["valid_cer"] for r in valid], "s--", label="CER")
    ax_wer.set_ylabel("valid error rate (%)")
    ax_wer.legend()
    ax_lr.plot([r["step"] for r in train], [r["lr"] for r in train])
    ax_lr.set_ylabel("learning rate")
    ax_lr.set_xlabel("optimizer step")
    for ax in (ax_loss, ax_wer, ax_lr):
        ax.grid(alpha=0.3)
    fig.suptitle(str(exp_dir))
    fig.tight_layout()
    out = out or exp_dir / "curves.png"
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out
