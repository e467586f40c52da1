"""Distributed training on CPU (gloo): 2 processes under torchrun, on one "node" and as two
"nodes" meeting over loopback, each train to the weights of 1 process accumulating 2 batches."""

import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import TINY_CONFIG, make_corpus

from ctcasr.checkpoint import load_checkpoint

NO_DROPOUT = ["data.max_utts_per_batch=2", "model.encoder_conf.dropout=0.0", "train.max_steps=3",
              "train.epochs=1",
              "train.save_every_steps=1"]
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def torchrun() -> list[str]:
    exe = Path(sys.executable).with_name("torchrun")
    if not exe.exists() and shutil.which("torchrun") is None:
        pytest.skip("torchrun is not installed next to this Python")
    return [str(exe) if exe.exists() else "torchrun"]


def sets(overrides):
    return [x for o in overrides for x in ("--set", o)]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """The config, the corpus, and the reference: one process accumulating 2 batches a step."""
    tmp = tmp_path_factory.mktemp("ddp")
    config = tmp / "tiny.yaml"
    config.write_text(TINY_CONFIG)
    manifest = str(make_corpus(tmp / "corpus"))
    args = ["train", "-c", str(config), "--train", manifest, "--valid", manifest]
    one = subprocess.run(
        [sys.executable, "-m", "ctcasr", *args, "--exp-dir", str(tmp / "one"),
         *sets([*NO_DROPOUT, "train.accum_grad=2"])],
        capture_output=True, text=True, env=ENV, timeout=300,
    )
    assert one.returncode == 0, one.stderr[-3000:]
    return args, load_checkpoint(tmp / "one" / "last.pt")


def assert_same_training(exp: Path, reference: dict) -> None:
    a = load_checkpoint(exp / "last.pt")
    assert a["train_state"]["state"]["step"] == reference["train_state"]["state"]["step"] == 3
    assert len(a["train_state"]["rng"]) == 2  # every process's RNG state is saved
    diff = max((a["model"][k] - v).abs().max().item() for k, v in reference["model"].items())
    # float sums in another order; a wrong loss scale (e.g. not x world_size) gives ~1e-3
    assert diff < 1e-5, diff
    assert (exp / "model.pt").exists()


def test_two_gloo_processes_equal_one_process_accumulating_two(setup, tmp_path):
    args, reference = setup
    ddp = subprocess.run(
        [*torchrun(), "--standalone", "--nproc_per_node=2", "-m", "ctcasr", *args,
         "--exp-dir", str(tmp_path / "ddp"), *sets(NO_DROPOUT)],
        capture_output=True, text=True, env=ENV, timeout=300,
    )
    assert ddp.returncode == 0, ddp.stderr[-3000:]
    assert_same_training(tmp_path / "ddp", reference)
    assert "2 process(es)" in ddp.stderr and ddp.stderr.count("epoch 1: valid loss") == 1
    # resuming the DDP run on 2 processes continues it into epoch 2
    res = subprocess.run(
        [*torchrun(), "--standalone", "--nproc_per_node=2", "-m", "ctcasr", *args,
         "--exp-dir", str(tmp_path / "ddp"), "--resume",
         *sets([*NO_DROPOUT[:2], "train.max_steps=4", "train.epochs=2"])],
        capture_output=True, text=True, env=ENV, timeout=300,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    assert load_checkpoint(tmp_path / "ddp" / "last.pt")["train_state"]["state"]["step"] == 4


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def two_nodes(args: list[str], exp_dirs: tuple[Path, Path]) -> list[subprocess.CompletedProcess]:
    """``torchrun --nnodes 2 --nproc-per-node 1`` twice, as a cluster's two nodes would run it
    (c10d rendezvous at node 0's address: here 127.0.0.1), each with its ``--exp-dir``, the
    features in the store on disk."""
    port = free_port()
    procs = [subprocess.Popen(
        [*torchrun(), "--nnodes=2", "--nproc-per-node=1", f"--node-rank={node}",
         "--rdzv-backend=c10d", f"--rdzv-endpoint=127.0.0.1:{port}", "--rdzv-id=ctcasr-test",
         "--max-restarts=0", "-m", "ctcasr", *args, "--exp-dir", str(exp),
         *sets([*NO_DROPOUT, "data.feature_cache=disk"])],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV)
        for node, exp in enumerate(exp_dirs)]
    out = []
    for p in procs:
        try:
            stdout, stderr = p.communicate(timeout=300)
        except subprocess.TimeoutExpired:
            for q in procs:
                q.kill()
            raise
        out.append(subprocess.CompletedProcess(p.args, p.returncode, stdout, stderr))
    return out


def test_two_nodes_over_loopback_equal_one_process(setup, tmp_path):
    args, reference = setup
    exp = tmp_path / "shared"
    nodes = two_nodes(args, (exp, exp))
    for r in nodes:
        assert r.returncode == 0, r.stderr[-3000:]
    assert_same_training(exp, reference)
    # the features went through the store on the shared folder (each rank wrote its share,
    # read rows of both: the weights above depend on it), removed at the end
    log = (exp / "train.log").read_text()
    assert f"features (disk): 0.00 h x 1 speed factor(s) = 0 MB of fbank, written once to " \
        f"{exp}/feats" in log and "removed the feature store" in log


def test_two_nodes_refuse_an_exp_dir_that_is_not_shared(setup, tmp_path):
    args, _ = setup
    nodes = two_nodes(args, (tmp_path / "node0", tmp_path / "node1"))
    assert all(r.returncode != 0 for r in nodes)
    assert "rank 1 on " in nodes[0].stderr + nodes[1].stderr
    assert "must be on a filesystem every node mounts at the same path" in nodes[1].stderr
