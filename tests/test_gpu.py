"""The CUDA paths of the image trainer: bf16 autocast, fused AdamW, channels-last, and weights and
checkpoints that move from the GPU to the CPU. Marked ``cuda``: skipped without a CUDA GPU."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from test_image_pipeline import synthetic_images

from models import checkpoints, training
from models.image import ImageClassifier

pytestmark = pytest.mark.cuda


@pytest.fixture(scope="module")
def data():
    X, y = synthetic_images(320, seed=7)
    return X[:256], y[:256], X[256:], y[256:]


def spy_on_training(monkeypatch):
    """Record the optimizer ``fit`` makes."""
    seen: dict = {"optimizers": [], "conv_inputs": [], "conv_outputs": []}
    make_optimizer = training.make_optimizer

    def recording(*args, **kwargs):
        optimizer = make_optimizer(*args, **kwargs)
        seen["optimizers"].append(optimizer)
        return optimizer

    monkeypatch.setattr(training, "make_optimizer", recording)
    return seen


def hook_convolutions(model: torch.nn.Module, seen: dict) -> None:
    """Record the layout of what each convolution of more than one input channel sees (one
    channel is trivially channels-last), and the dtype of what every convolution makes."""

    def record(module, inputs, output):
        if module.training:
            if module.in_channels > 1:
                seen["conv_inputs"].append(inputs[0].is_contiguous(memory_format=torch.channels_last))
            seen["conv_outputs"].append(output.dtype)

    for module in model.modules():
        if isinstance(module, torch.nn.Conv2d):
            module.register_forward_hook(record)


def test_cuda_training_uses_bf16_fused_adamw_and_channels_last(monkeypatch, data):
    X, y, X_val, y_val = data
    seen = spy_on_training(monkeypatch)
    clf = ImageClassifier(arch="lenet_bn", epochs=3, batch_size=64, device="cuda", augment="shift")
    build = clf._build_model

    def built(in_channels):
        model = build(in_channels)
        hook_convolutions(model, seen)
        return model

    monkeypatch.setattr(clf, "_build_model", built)
    clf.fit(X, y, X_val, y_val)

    [optimizer] = seen["optimizers"]
    assert isinstance(optimizer, torch.optim.AdamW) and optimizer.defaults["fused"] is True
    assert all(p.is_cuda for group in optimizer.param_groups for p in group["params"])
    assert seen["conv_inputs"] and all(seen["conv_inputs"])  # channels-last activations
    assert set(seen["conv_outputs"]) == {torch.bfloat16}  # the convolution ran under bf16 autocast
    weight = [m for m in clf.model_.modules() if isinstance(m, torch.nn.Conv2d)][1].weight  # 16x6x5x5
    assert weight.dtype == torch.float32 and weight.is_contiguous(memory_format=torch.channels_last)
    losses = [log["train_loss"] for log in clf.history_]
    assert np.isfinite(losses).all() and losses[-1] < losses[0]
    assert clf.history_[-1]["val_accuracy"] > 0.5


def test_fused_adamw_on_cuda_steps_as_the_loop_does():
    torch.manual_seed(0)
    params = [torch.randn(64, 32, device="cuda", requires_grad=True) for _ in range(2)]
    twins = [p.detach().clone().requires_grad_(True) for p in params]
    cfg = training.TrainConfig(lr=1e-2, weight_decay=1e-2)
    fused, plain = training.make_optimizer(params, cfg, fused=True), training.make_optimizer(twins, cfg)
    for _ in range(5):
        for group, optimizer in ((params, fused), (twins, plain)):
            optimizer.zero_grad()
            sum((p**2).sum() for p in group).backward()
            optimizer.step()
    for ours, theirs in zip(params, twins, strict=True):
        torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-6)


def test_state_dict_round_trips_from_cuda_to_cpu(data):
    X, y, X_val, _ = data
    clf = ImageClassifier(arch="lenet_bn", epochs=2, batch_size=64, device="cuda").fit(X, y)
    state = clf.state_dict()
    assert next(iter(state["model"].values())).is_cuda
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    on_cpu = torch.load(buffer, map_location="cpu", weights_only=True)
    assert all(t.device.type == "cpu" for t in on_cpu["model"].values())
    cpu = ImageClassifier(arch="lenet_bn", device="cpu").load_state_dict(on_cpu)
    assert next(cpu.model_.parameters()).device.type == "cpu"
    for key, value in clf.model_.state_dict().items():
        torch.testing.assert_close(cpu.model_.state_dict()[key], value.cpu(), rtol=0, atol=0, msg=key)
    gpu_proba, cpu_proba = clf.predict_proba(X_val), cpu.predict_proba(X_val)  # bf16 on the GPU, float32 here
    assert np.abs(gpu_proba - cpu_proba).max() < 0.05
    assert (gpu_proba.argmax(1) == cpu_proba.argmax(1)).mean() >= 0.95


def test_cuda_checkpoint_loads_on_the_cpu_and_resumes_on_cuda(tmp_path, data):
    X, y, X_val, y_val = data
    path = tmp_path / "run.pt"

    def make():
        return ImageClassifier(arch="lenet_bn", epochs=3, batch_size=64, device="cuda", augment="shift", seed=2)

    reference = make().fit(X, y, X_val, y_val)

    class Stop(Exception):
        pass

    def stop_after_first(log):
        if log["epoch"] == 0:
            raise Stop

    with pytest.raises(Stop):
        make().fit(X, y, X_val, y_val, on_epoch=stop_after_first, checkpoint=path)
    saved = checkpoints.load(path)  # map_location cpu: readable on a machine without a GPU
    assert saved["epoch"] == 1 and all(t.device.type == "cpu" for t in saved["model"].values())
    assert saved["ranks"][0]["rng"]["cuda"]  # the CUDA generators' states
    assert any(key.startswith("cuda") for key in saved["ranks"][0]["prepare"])  # the augmentation's
    resumed = make().fit(X, y, X_val, y_val, checkpoint=path)
    # cuDNN picks its kernels per run: close, not bitwise.
    for ours, theirs in zip(resumed.history_, reference.history_, strict=True):
        assert ours["train_loss"] == pytest.approx(theirs["train_loss"], rel=2e-2)
        assert ours["val_accuracy"] == pytest.approx(theirs["val_accuracy"], abs=0.05)
