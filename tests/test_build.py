"""`fit` and `eval` refuse bad input cleanly: exit 2, one message, and no run folder left behind."""

import pytest
import torch
from helpers import assert_clean_error


@pytest.mark.parametrize(
    "sections, message",
    [
        ({"optimizer": {"name": "adamm", "lr": 0.1}}, "did you mean 'adam'"),  # caught by validation
        ({"model": {"name": "lenet", "num_classes": 5}}, "model.num_classes: the config says 5 but the data has 10"),
        ({"model": {"name": "lstm"}}, "lstm"),  # a sequence model on images: caught when built
    ],
    ids=["unknown_optimizer", "size_disagrees_with_data", "model_does_not_fit_data"],
)
def test_bad_config_leaves_no_run_folder(tmp_path, cli, write_config, sections, message):
    path = write_config(tmp_path, **sections)
    stderr = assert_clean_error(cli("fit", path))
    assert message in stderr
    assert not (tmp_path / "runs").exists(), list((tmp_path / "runs").rglob("*"))


def test_missing_data_leaves_no_run_folder(tmp_path, cli, write_config):
    empty = tmp_path / "nodata"
    empty.mkdir()
    path = write_config(tmp_path, data={"dataset": {"name": "mnist", "root": str(empty), "download": False}})
    stderr = assert_clean_error(cli("fit", path))
    assert "MNIST not found" in stderr and "download: true" in stderr
    assert not (tmp_path / "runs").exists()


def test_check_writes_nothing(tmp_path, cli, write_config):
    result = cli("check", write_config(tmp_path))
    assert result.exit_code == 0, result.stderr
    assert "config OK" in result.stdout and "61,706" in result.stdout  # LeNet-5's parameter count
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.yaml"]


def test_updates_per_epoch_count_accumulation(tmp_path, write_config):
    from nntrain.build import build_parts
    from nntrain.validate import load_config

    cfg = load_config(write_config(tmp_path, train={"accumulate": 4, "epochs": 1, "device": "cpu"}))
    parts = build_parts(cfg)
    assert len(parts.data.train[0]) == 5400
    assert parts.updates_per_epoch == 22  # ceil(ceil(5400 / 64) / 4) = ceil(85 / 4)


def _csv_config(tmp_path, write_config, rows: str, **dataset):
    data = tmp_path / "d.csv"
    data.write_text("a,b,y\n" + rows, encoding="utf-8")
    return write_config(
        tmp_path,
        data={"dataset": {"name": "csv", "path": str(data), "target": "y", **dataset}, "val_split": 0.2, "batch_size": 4},
        model={"name": "mlp", "hidden": [4]},
        log={"dir": str(tmp_path / "runs"), "tensorboard": False},
    ), data


def test_too_little_data_to_train_on_is_a_config_located_error(tmp_path, cli, write_config):
    path, _ = _csv_config(tmp_path, write_config, "1,2,u\n")  # the one row goes to validation
    for command in ("check", "fit"):
        stderr = assert_clean_error(cli(command, path))
        assert f"{path}:" in stderr and "data.val_split: 'csv' has 1 samples; holding out 1 for validation" in stderr
    assert not (tmp_path / "runs").exists()


def test_a_data_file_message_is_not_taken_for_a_config_key(tmp_path, cli, write_config, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path, _ = _csv_config(tmp_path, write_config, "", path="d.csv")  # a header without rows
    stderr = assert_clean_error(cli("check", path))
    # `d.csv: ...` starts like a dotted key `d.csv`: it must not get the config's name in front.
    assert stderr.split(None, 1)[1].startswith("d.csv: no data rows"), stderr


def test_an_augmentation_that_does_not_fit_the_data_names_its_line(tmp_path, cli, write_config):
    path, _ = _csv_config(tmp_path, write_config, "".join(f"{i},{i},{i % 2}\n" for i in range(10)))
    stderr = assert_clean_error(cli("check", path, "--set", "data.augment=[{name: horizontal_flip}]"))
    assert "--set data.augment=[{name: horizontal_flip}] data.augment.0: horizontal_flip: needs image batches" in stderr


def test_error_messages_are_printed_verbatim(tmp_path, cli, write_config):
    import numpy as np

    np.savez(tmp_path / "d.npz", x=np.array([["a"]] * 4), y=np.arange(4) % 2)
    path = write_config(tmp_path, data={"dataset": {"name": "npz", "path": str(tmp_path / "d.npz")}},
                        model={"name": "mlp"})
    stderr = assert_clean_error(cli("check", path))
    assert "d.npz:x: an array of <U1" in stderr  # rich would turn `:x:` into an emoji


def test_eval_on_data_with_other_classes_is_refused(tmp_path, cli, write_config):
    path, data = _csv_config(tmp_path, write_config, "".join(f"{i},{i % 3},{'uv'[i % 2]}\n" for i in range(10)))
    assert cli("fit", path).exit_code == 0
    best = next((tmp_path / "runs").rglob("best.pt"))
    other = tmp_path / "other.csv"
    other.write_text("a,b,y\n" + "".join(f"{i},{i % 3},{'vw'[i % 2]}\n" for i in range(10)), encoding="utf-8")
    # Two classes again: the weights would load, and class 0 would silently mean another label.
    stderr = assert_clean_error(cli("eval", best, "--split", "val", "--set", f"data.dataset.path={other}"))
    assert f"--set data.dataset.path={other} data.dataset: the data's classes (v, w) are not the ones" in stderr
    assert "trained on (u, v)" in stderr
    assert cli("eval", best, "--split", "val").exit_code == 0


# ------------------------------------------------------------------ eval of bad checkpoints


def _fake_checkpoint(path, **extra):
    torch.save({"format": "nntrain/1", "model": {"w": torch.zeros(3)}, "epoch": 1, "step": 2, **extra}, path)


def test_eval_missing_checkpoint(tmp_path, cli):
    stderr = assert_clean_error(cli("eval", tmp_path / "nope.pt"))
    assert f"{tmp_path / 'nope.pt'}: checkpoint not found" in stderr


def test_eval_truncated_checkpoint(tmp_path, cli):
    whole = tmp_path / "whole.pt"
    _fake_checkpoint(whole, padding=torch.zeros(10_000))
    cut = tmp_path / "cut.pt"
    cut.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    stderr = assert_clean_error(cli("eval", cut))
    assert str(cut) in stderr and "truncated or damaged" in stderr


def test_eval_file_that_is_not_a_checkpoint(tmp_path, cli):
    text = tmp_path / "notes.pt"
    text.write_text("hello")
    assert "not a readable checkpoint" in assert_clean_error(cli("eval", text))
    empty = tmp_path / "empty.pt"
    empty.write_bytes(b"")
    assert "not a readable checkpoint (truncated or damaged?): the file is empty" in assert_clean_error(cli("eval", empty))
    foreign = tmp_path / "foreign.pt"
    torch.save({"state_dict": {"w": torch.zeros(2)}}, foreign)  # a torch file, but not nntrain's
    assert "not an nntrain checkpoint" in assert_clean_error(cli("eval", foreign))
    assert "is a folder" in assert_clean_error(cli("eval", tmp_path))


def test_eval_refuses_pickled_code(tmp_path, cli):
    import argparse

    path = tmp_path / "evil.pt"
    # An object pickles as a reference to its class: weights_only refuses to rebuild it.
    torch.save({"format": "nntrain/1", "x": argparse.Namespace(a=1)}, path)
    stderr = assert_clean_error(cli("eval", path))
    assert "refused to load" in stderr and "pickled" in stderr


def test_eval_checkpoint_with_a_bad_stored_config(tmp_path, cli):
    path = tmp_path / "odd.pt"
    _fake_checkpoint(path, config={"name": "x", "data": {"dataset": {"name": "mnist_small"}}, "model": {"name": "mlpp"}})
    stderr = assert_clean_error(cli("eval", path))
    assert "model.name: unknown model 'mlpp'; did you mean 'mlp'?" in stderr and str(path) in stderr


# ------------------------------------------------------------------ the callbacks fit attaches


def test_build_callbacks_order_and_ranks(tmp_path, write_config):
    from nntrain.build import build_callbacks
    from nntrain.callbacks import (
        Callback,
        EarlyStopping,
        MetricsLog,
        ModelCheckpoint,
        ProgressBar,
        TensorBoardLogger,
    )
    from nntrain.validate import load_config

    cfg = load_config(write_config(tmp_path, train={"early_stopping": {"monitor": "val/acc"}, "device": "cpu"}))
    extra = Callback()
    callbacks, checkpointer = build_callbacks(cfg, tmp_path / "run", extra=[extra])
    assert [type(cb) for cb in callbacks] == [
        EarlyStopping, TensorBoardLogger, MetricsLog, ProgressBar, Callback, ModelCheckpoint,
    ]
    assert callbacks[4] is extra and callbacks[-1] is checkpointer  # the checkpointer saves the others' state last
    assert callbacks[0].mode == "max" and checkpointer.mode == "min"  # val/acc up, val/loss (default) down
    assert checkpointer.folder == tmp_path / "run" / "checkpoints"
    callbacks[1].writer.close()

    # Other ranks write no files: early stopping, the extra callbacks and a checkpointer that
    # writes nothing (it builds the checkpoint state with the others: gathering loss sums is a collective).
    callbacks, checkpointer = build_callbacks(cfg, tmp_path / "run2", main=False, extra=[extra])
    assert [type(cb) for cb in callbacks] == [EarlyStopping, Callback, ModelCheckpoint]
    assert callbacks[-1] is checkpointer and not checkpointer.write

    cfg.log.tensorboard = False
    callbacks, _ = build_callbacks(cfg, tmp_path / "run3", progress=False)
    assert [type(cb) for cb in callbacks] == [EarlyStopping, MetricsLog, ModelCheckpoint]
