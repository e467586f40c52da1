#!/usr/bin/env python3
"""SpeechBrain CTC baseline on ctcasr manifests, for issue 19 (run in .venv-sb, not .venv).

    train.py --hparams hparams.yaml --out DIR --train T.jsonl --valid V.jsonl --test X.jsonl
             [--budget-s 3495] [--overrides YAML]

Trains SpeechBrain's own CRDNN + CTC through its ``Brain`` class until the next epoch would end
past ``--budget-s`` seconds of training wall-clock, keeps the checkpoint with the lowest valid
CER (as the TIMIT recipe keeps the lowest PER), then writes, for valid and test:
``DIR/decode_<set>_greedy/hyp.txt`` (id<TAB>text, for ``ctcasr score``) and ``DIR/logp_<set>.pt``
(log-posteriors, lengths, ids and the label list, for beam + LM with the same decoder and ARPA
LM as ctcasr: ``lm_decode.py``). Audio is read with soundfile: SpeechBrain's ``read_audio`` goes
through ``torchaudio.load``, which needs torchcodec/FFmpeg.
"""

import argparse
import json
import sys
import time
from pathlib import Path

import soundfile
import speechbrain as sb
import torch
from hyperpyyaml import load_hyperpyyaml


def read_manifest(path: str) -> dict[str, dict]:
    rows = {}
    with open(path) as f:
        for line in f:
            if line.strip():
                r = json.loads(line)
                rows[r["id"]] = {"wav": r["audio"], "duration": r["duration"], "words": r["text"]}
    return rows


class CTCBrain(sb.Brain):
    def compute_forward(self, batch, stage):
        batch = batch.to(self.device)
        wavs, wav_lens = batch.sig
        if stage == sb.Stage.TRAIN:
            wavs, wav_lens = self.hparams.wav_augment(wavs, wav_lens)
        feats = self.hparams.compute_features(wavs)
        feats = self.modules.normalize(feats, wav_lens)
        logits = self.modules.output(self.modules.model(feats))
        return self.hparams.log_softmax(logits), wav_lens

    def compute_objectives(self, predictions, batch, stage):
        logp, lens = predictions
        chars, char_lens = batch.chars_encoded
        if stage == sb.Stage.TRAIN:
            chars, char_lens = self.hparams.wav_augment.replicate_labels(chars), \
                self.hparams.wav_augment.replicate_labels(char_lens)
        loss = self.hparams.compute_cost(logp, chars, lens, char_lens)
        if stage != sb.Stage.TRAIN:
            hyp = sb.decoders.ctc_greedy_decode(logp, lens, blank_id=self.hparams.blank_index)
            self.cer.append(ids=batch.id, predict=hyp, target=chars, target_len=char_lens,
                            ind2lab=self.label_encoder.decode_ndim)
        return loss

    def on_stage_start(self, stage, epoch=None):
        self.epoch_start = time.time()
        if stage != sb.Stage.TRAIN:
            self.cer = self.hparams.cer_stats()

    def on_stage_end(self, stage, stage_loss, epoch=None):
        if stage == sb.Stage.TRAIN:
            self.train_loss = stage_loss
            self.train_time = time.time() - self.epoch_start
            return
        cer = self.cer.summarize("error_rate")
        if stage == sb.Stage.VALID:
            old_lr, new_lr = self.hparams.lr_annealing(cer)
            sb.nnet.schedulers.update_learning_rate(self.optimizer, new_lr)
            elapsed = time.time() - self.start
            self.hparams.train_logger.log_stats(
                stats_meta={"epoch": epoch, "lr": old_lr, "elapsed_s": round(elapsed)},
                train_stats={"loss": self.train_loss},
                valid_stats={"loss": stage_loss, "CER": cer})
            self.checkpointer.save_and_keep_only(meta={"CER": cer}, min_keys=["CER"])
            epoch_s = time.time() - self.epoch_start + self.train_time
            if elapsed + epoch_s > self.budget_s:  # the next epoch would end past the budget
                self.hparams.epoch_counter.limit = epoch
                print(f"stopping after epoch {epoch}: {elapsed:.0f} s", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser()
    for name in ("--hparams", "--out", "--train", "--valid", "--test"):
        ap.add_argument(name, required=True)
    ap.add_argument("--budget-s", type=float, default=3495.0)
    ap.add_argument("--overrides", default="", help="hparams overrides, block-style YAML")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    sets = {}
    for name in ("train", "valid", "test"):
        sets[name] = read_manifest(getattr(args, name))
        (out / f"{name}.json").write_text(json.dumps(sets[name]))
    chars = sorted({c for r in sets["train"].values() for c in r["words"]})
    with open(args.hparams) as f:
        hp = load_hyperpyyaml(f, f"output_folder: {out}\noutput_neurons: {len(chars) + 1}\n"
                              + args.overrides)

    data = {n: sb.dataio.dataset.DynamicItemDataset.from_json(str(out / f"{n}.json"))
            .filtered_sorted(sort_key="duration") for n in sets}
    enc = sb.dataio.encoder.CTCTextEncoder()
    enc.update_from_iterable([list(chars)], sequence_input=True)
    enc.insert_blank(index=hp["blank_index"])

    @sb.utils.data_pipeline.takes("wav")
    @sb.utils.data_pipeline.provides("sig")
    def audio(wav):
        sig, sr = soundfile.read(wav, dtype="float32")
        assert sr == hp["sample_rate"], f"{wav}: {sr} Hz, expected {hp['sample_rate']}"
        return torch.from_numpy(sig)

    @sb.utils.data_pipeline.takes("words")
    @sb.utils.data_pipeline.provides("chars_encoded")
    def text(words):
        return enc.encode_sequence_torch([c for c in words if c in enc.lab2ind])

    datasets = list(data.values())
    sb.dataio.dataset.add_dynamic_item(datasets, audio)
    sb.dataio.dataset.add_dynamic_item(datasets, text)
    sb.dataio.dataset.set_output_keys(datasets, ["id", "sig", "chars_encoded"])

    brain = CTCBrain(modules=hp["modules"], opt_class=hp["opt_class"], hparams=hp,
                     run_opts={"device": "cpu"}, checkpointer=hp["checkpointer"])
    brain.label_encoder = enc
    brain.budget_s = args.budget_s
    n_params = sum(p.numel() for p in brain.modules.parameters())
    print(f"parameters: {n_params / 1e6:.2f} M, labels: {len(enc)}", flush=True)
    brain.start = time.time()
    brain.fit(hp["epoch_counter"], data["train"], data["valid"],
              train_loader_kwargs=hp["train_dataloader_opts"],
              valid_loader_kwargs=hp["eval_dataloader_opts"])
    train_s = time.time() - brain.start
    audio_s = sum(r["duration"] for r in sets["train"].values())
    epochs = hp["epoch_counter"].current
    (out / "summary.json").write_text(json.dumps({
        "params": n_params, "train_s": round(train_s), "epochs": epochs,
        "train_audio_s_per_s": round(audio_s * epochs / train_s, 2)}))

    brain.checkpointer.recover_if_possible(min_key="CER")
    brain.modules.eval()
    labels = [enc.ind2lab[i] for i in range(len(enc))]
    for name in ("valid", "test"):
        loader = sb.dataio.dataloader.make_dataloader(data[name], **hp["eval_dataloader_opts"])
        ids, logps, lens, hyps = [], [], [], []
        with torch.no_grad():
            for batch in loader:
                logp, rel = brain.compute_forward(batch, sb.Stage.TEST)
                n = torch.round(rel * logp.shape[1]).long()
                for i, uid in enumerate(batch.id):
                    ids.append(uid)
                    logps.append(logp[i, : n[i]].clone())
                    lens.append(int(n[i]))
                for uid, seq in zip(batch.id, sb.decoders.ctc_greedy_decode(
                        logp, rel, blank_id=hp["blank_index"]), strict=True):
                    hyps.append(f"{uid}\t{' '.join(''.join(enc.decode_ndim(seq)).split())}")
        (out / f"decode_{name}_greedy").mkdir(exist_ok=True)
        (out / f"decode_{name}_greedy" / "hyp.txt").write_text("\n".join(hyps) + "\n")
        torch.save({"ids": ids, "logp": logps, "labels": labels}, out / f"logp_{name}.pt")
    print(json.dumps(json.loads((out / "summary.json").read_text())), flush=True)


if __name__ == "__main__":
    sys.exit(main())
