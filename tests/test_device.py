"""The CUDA-aware paths, exercised on the CPU: where data lives, host-to-device batches, and the
warnings for options that only act on a GPU."""

import subprocess
import warnings

import pytest
import torch
from helpers import base_config, nntrain_cmd, write_config

from nntrain.build import _data_on_device, build_parts
from nntrain.data import loaders
from nntrain.data.info import DataInfo
from nntrain.data.loaders import Data, TensorLoader, _Stager, build_data
from nntrain.device import device_warnings
from nntrain.errors import ConfigWarning
from nntrain.fit import fit
from nntrain.validate import config_from_dict


def staged(loader: TensorLoader) -> TensorLoader:
    """`loader` with host-to-device staging forced on (the CPU stands in for the device)."""
    loader.stager = _Stager(loader.x, loader.y, loader.batch_size, torch.device("cpu"))
    return loader


@pytest.mark.parametrize("shuffle", [True, False])
@pytest.mark.parametrize("world", [1, 2])
def test_staged_batches_equal_sliced_batches(shuffle, world):
    """Gathering into the two reused buffers gives the batches slicing gives, short last one included,
    and a batch stays intact after later batches reuse its buffer."""
    x, y = torch.randn(103, 3, 4, 4), torch.arange(103)
    for rank in range(world):
        args = dict(batch_size=16, shuffle=shuffle, seed=3, rank=rank, world=world)
        plain = list(TensorLoader(x, y, **args).epoch(2))
        copied = list(staged(TensorLoader(x, y, **args)).epoch(2))  # all batches held at once
        assert [len(b[0]) for b in copied] == [len(b[0]) for b in plain] == TensorLoader(x, y, **args).batch_sizes()
        for (xa, ya), (xb, yb) in zip(plain, copied):
            assert torch.equal(xa, xb) and torch.equal(ya, yb)
        midway = list(staged(TensorLoader(x, y, **args)).epoch(2, start=3))
        assert all(torch.equal(a[0], b[0]) for a, b in zip(plain[3:], midway))


def test_staged_reconstruction_batches_copy_the_input_once():
    x = torch.randn(50, 8)
    batches = list(staged(TensorLoader(x, x, 16, shuffle=True)).epoch(0))
    assert all(xb is yb for xb, yb in batches)
    assert torch.equal(torch.cat([b[0] for b in batches]).sort(0).values, x.sort(0).values)


def test_sharded_reconstruction_keeps_the_target_the_input():
    x = torch.randn(20, 4)
    loader = TensorLoader(x, x, 4, rank=1, world=2)
    assert loader.y is loader.x and torch.equal(loader.x, x[1::2])


def test_host_data_is_staged_and_device_data_is_not(monkeypatch):
    """A loader whose tensors are not where training runs stages its batches (a stub stands in for
    the CUDA copies); `Data.to(resident=False)` leaves the tensors where they are, unpinned."""
    made = []

    class Recorder(_Stager):
        def __init__(self, x, y, batch_size, device):
            made.append(device)
            super().__init__(x, y, batch_size, torch.device("cpu"))

    monkeypatch.setattr(loaders, "_Stager", Recorder)
    x, y = torch.randn(10, 3), torch.arange(10)
    assert TensorLoader(x, y, 4).stager is None and TensorLoader(x, y, 4, device="cpu").stager is None
    loader = TensorLoader(x, y, 4, device=torch.device("cuda"))
    assert made == [torch.device("cuda")]
    assert torch.equal(torch.cat([b[1] for b in loader.epoch()]), y)

    data = Data((x, y), None, (x[:2], y[:2]), DataInfo("classification", (3,), 10), None)
    data.to(torch.device("cuda"), resident=False)
    assert data.device == torch.device("cuda") and data.train[0] is x and not x.is_pinned()


def test_data_placement_follows_on_device_and_free_gpu_memory(tmp_path, monkeypatch):
    raw = base_config(tmp_path)
    raw["data"]["task"] = "reconstruction"
    cfg = config_from_dict(raw)
    data = build_data(cfg.data, cfg.seed)
    size = data.nbytes()
    assert size == sum(split[0].nbytes for split in (data.train, data.val, data.test))  # targets are the inputs
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert _data_on_device(cfg, data, cpu)  # nothing to decide on the CPU
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (2 * size, 4 * size))
    assert _data_on_device(cfg, data, cuda)  # half the free memory is room enough
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (2 * size - 2, 4 * size))
    assert not _data_on_device(cfg, data, cuda)  # too big: stays on the host, pinned
    for choice in (True, False):
        cfg.data.on_device = choice
        assert _data_on_device(cfg, data, cuda) is choice
        assert _data_on_device(cfg, data, torch.device("mps"))  # unified memory: always there


def test_host_resident_data_trains_like_device_resident_data(tmp_path):
    """The trainer's batches staged through `_Stager` (one batch ahead): same losses, same weights."""
    results = []
    for stage in (False, True):
        raw = base_config(tmp_path / str(stage))
        raw["log"]["tensorboard"] = False
        raw["train"]["test_at_end"] = False
        parts = build_parts(config_from_dict(raw))
        from nntrain.build import build_trainer

        trainer = build_trainer(parts)
        if stage:
            staged(trainer.train_loader)
        loss = trainer.train_epoch()
        results.append((loss, trainer.evaluate("val"), [p.detach().clone() for p in parts.model.parameters()]))
    (loss_a, val_a, weights_a), (loss_b, val_b, weights_b) = results
    assert loss_a == loss_b and val_a == val_b
    assert all(torch.equal(a, b) for a, b in zip(weights_a, weights_b))


def test_no_warnings_for_defaults(tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConfigWarning)
        build_parts(config_from_dict(base_config(tmp_path)))


def test_gpu_only_options_warn_on_cpu_and_are_ignored(tmp_path, monkeypatch):
    """channels_last and data.on_device do nothing on the CPU; fp16 without native support is slow.
    Each says so, with its key, and the run goes on (and trains)."""
    monkeypatch.setattr(torch.cpu, "_is_amx_fp16_supported", lambda: False, raising=False)
    raw = base_config(tmp_path)
    raw["train"].update(channels_last=True, precision="fp16", test_at_end=False)
    raw["data"]["on_device"] = False
    raw["log"]["tensorboard"] = False
    cfg = config_from_dict(raw)
    with pytest.warns(ConfigWarning) as caught:
        summary = fit(cfg, progress=False)
    messages = [str(w.message) for w in caught]  # each after the config's location
    assert any(" train.channels_last: " in m and "ignored" in m for m in messages)
    assert any(" train.precision: fp16" in m and "emulated" in m for m in messages)
    assert any(" data.on_device: false" in m for m in messages)
    assert summary["final"]["val/acc"] > 0.8


def test_precision_warning_only_without_native_support(tmp_path, monkeypatch):
    cfg = config_from_dict(base_config(tmp_path))
    data = build_data(cfg.data, cfg.seed)
    cfg.train.precision = "bf16"
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: True, raising=False)
    assert device_warnings(cfg, torch.device("cpu"), data) == []
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False, raising=False)
    assert [str(m).split(":")[0] for m in device_warnings(cfg, torch.device("cpu"), data)] == ["train.precision"]
    assert device_warnings(cfg, torch.device("cuda"), data) == []  # the GPU is what it is for


def test_cli_prints_the_warning_with_file_and_line(tmp_path):
    raw = base_config(tmp_path)
    train = dict(raw["train"], channels_last=True)
    path = write_config(tmp_path, train=train)
    result = subprocess.run(nntrain_cmd("check", path), capture_output=True, text=True, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith("warning:")]
    assert len(lines) == 1
    assert f"{path}:" in lines[0] and "train.channels_last: applies to image batches on CUDA only" in lines[0]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_host_resident_data_trains_like_gpu_resident_data(tmp_path):
    """The real pinned-buffer, side-stream path: every batch of an epoch held at once equals the
    same rows sliced on the host (no buffer overwritten under a copy), and a run with
    data.on_device false ends with the weights of a run with the data in GPU memory."""
    x, y = torch.randn(1000, 1, 8, 8), torch.arange(1000)
    held = list(TensorLoader(x, y, 64, shuffle=True, seed=1, device="cuda").epoch(0))
    for (xb, yb), (xh, yh) in zip(held, TensorLoader(x, y, 64, shuffle=True, seed=1).epoch(0)):
        assert xb.is_cuda and torch.equal(xb.cpu(), xh) and torch.equal(yb.cpu(), yh)
    weights = []
    for on_device in (True, False):
        raw = base_config(tmp_path / str(on_device))
        raw["data"]["on_device"] = on_device
        raw["train"].update(device="cuda", deterministic=True, test_at_end=False)
        raw["log"]["tensorboard"] = False
        fit(config_from_dict(raw), progress=False)
        (last,) = (tmp_path / str(on_device)).glob("runs/*/*/checkpoints/last.pt")
        weights.append(torch.load(last, weights_only=True)["model"])
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])
