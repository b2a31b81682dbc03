"""The vision zoo, the training loop, on-device preprocessing and ImageClassifier (small, CPU)."""

import ctypes
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from features.images import make_prepare, pixel_mean_std, to_image_batch
from models import registry
from models.image import ImageClassifier
from models.training import TrainConfig, fit
from models.vision import parameter_count
from pipeline.data.bundled import bundled_digits

ROOT = Path(__file__).resolve().parents[1]
VISION_MODELS = [entry.name for entry in registry.list_models(kind="vision")]


def test_the_zoo_is_registered():
    assert set(VISION_MODELS) == {
        "softmax_regression", "mlp", "lenet", "lenet_bn", "cnn5", "alexnet", "vgg11", "nin",
        "googlenet", "resnet18", "densenet", "whitenet",
    }  # fmt: skip
    assert all(registry.get(name, "vision").tasks == {"multiclass"} for name in VISION_MODELS)


@pytest.mark.parametrize("name", VISION_MODELS)
def test_every_model_maps_28x28_images_to_logits(name):
    model = registry.create(name, kind="vision", num_classes=10, in_channels=1).eval()
    with torch.no_grad():
        assert model(torch.zeros(2, 1, 28, 28)).shape == (2, 10)
    assert parameter_count(model) > 0


def test_whitenet_whitens_patches_from_its_first_training_batch_and_keeps_the_filters():
    from models.vision.whitenet import PatchWhitening

    images = torch.rand(64, 3, 12, 12) @ torch.rand(12, 12) + torch.rand(64, 3, 1, 1)  # correlated pixels
    layer = PatchWhitening(3).eval()
    layer(images)
    assert not layer.fitted and torch.count_nonzero(layer.weight) == 0  # not fitted in evaluation
    layer.train()(images)
    out = layer(images) - layer.bias[:, None, None]
    half = out[:, :12].permute(0, 2, 3, 1).reshape(-1, 12)  # the filters; the other 12 are their negatives
    assert torch.allclose(torch.cov(half.T), torch.eye(12), atol=0.05)
    assert [name for name, _ in layer.named_parameters()] == ["bias"]  # the filters are no parameter
    again = PatchWhitening(3)
    again.load_state_dict(layer.state_dict())
    assert again.fitted and torch.equal(again.weight, layer.weight)


@pytest.mark.parametrize(("name", "resize"), [("nin", 224), ("resnet18", 96)])
def test_book_sized_models_take_resized_batches(name, resize):
    model = registry.create(name, kind="vision", resize=resize).eval()
    prepare = make_prepare(mean=0.13, std=0.31, resize=resize)
    batch = prepare(torch.randint(0, 256, (2, 1, 28, 28), dtype=torch.uint8), False)
    assert batch.shape == (2, 1, resize, resize)
    with torch.no_grad():
        assert model(batch).shape == (2, 10)


class FirstChoiceTrial:
    """Duck-typed Optuna trial: the low end of every range, the first of every choice."""

    def suggest_float(self, name, low, high, log=False):
        return low

    def suggest_int(self, name, low, high):
        return low

    def suggest_categorical(self, name, choices):
        return choices[0]


@pytest.mark.parametrize("name", VISION_MODELS)
def test_every_space_gives_image_classifier_arguments(name):
    params = registry.get(name, "vision").space(FirstChoiceTrial())
    assert {"lr", "weight_decay", "epochs", "batch_size", "label_smoothing"} <= params.keys()
    clf = ImageClassifier(arch=name, **params)
    registry.create(name, kind="vision", **(clf.arch_params or {}))


# --- training loop --------------------------------------------------------------------------


def blobs(n=256, seed=0):
    generator = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 2, (n,), generator=generator)
    X = torch.randn(n, 2, generator=generator) * 0.5 + (2 * y[:, None] - 1) * 2.0
    return X, y


def test_fit_drives_the_loss_down_on_a_separable_problem():
    X, y = blobs()
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(2, 16), nn.ReLU(), nn.Linear(16, 2))
    cfg = TrainConfig(epochs=15, batch_size=32, lr=1e-2, schedule="onecycle")
    history = fit(model, X, y, loss_fn=nn.CrossEntropyLoss(), cfg=cfg, X_val=X, y_val=y)
    assert history[-1]["train_loss"] < 0.2 * history[0]["train_loss"]
    assert history[-1]["val_loss"] < 0.1
    assert all(log["examples_per_sec"] > 0 for log in history)


def test_fit_with_mse_and_a_constant_schedule_as_the_tabular_mlp_uses_it():
    X, y = blobs()
    target = y.float()[:, None]
    torch.manual_seed(0)
    model = nn.Linear(2, 1)
    cfg = TrainConfig(epochs=20, batch_size=500, lr=5e-2, optimizer="adam")  # batch > rows
    history = fit(model, X, target, loss_fn=nn.MSELoss(), cfg=cfg)
    assert history[-1]["train_loss"] < 0.1 < history[0]["train_loss"]


def test_early_stopping_stops_and_keeps_the_best_weights():
    X, y = blobs()
    torch.manual_seed(0)
    model = nn.Linear(2, 2)
    cfg = TrainConfig(epochs=30, batch_size=32, lr=1e-2, early_stopping_patience=1)
    # Validating on flipped labels: every epoch of learning makes the validation loss worse.
    history = fit(model, X, y, loss_fn=nn.CrossEntropyLoss(), cfg=cfg, X_val=X, y_val=1 - y)
    assert len(history) == 3
    with torch.no_grad():
        restored = float(nn.CrossEntropyLoss()(model(X), 1 - y))
    assert restored == pytest.approx(history[0]["val_loss"], rel=1e-5)


def test_on_epoch_can_stop_training():
    X, y = blobs()

    def prune(log):
        if log["epoch"] == 1:
            raise RuntimeError("pruned")

    with pytest.raises(RuntimeError, match="pruned"):
        fit(nn.Linear(2, 2), X, y, loss_fn=nn.CrossEntropyLoss(), cfg=TrainConfig(), on_epoch=prune)


MEMORY_KEPT_AFTER_FREEING = """
import ctypes, torch
from torch import nn
from models.training import TrainConfig, fit

class MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in ("arena", "ordblks", "smblks", "hblks",
                "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]

libc = ctypes.CDLL("libc.so.6")
libc.mallinfo2.restype = MallInfo2

def kept_after_freeing():  # MiB malloc still holds after 128 MiB of 4 MiB buffers are freed
    buffers = [torch.empty(1 << 20).fill_(1.0) for _ in range(32)]
    del buffers
    return libc.mallinfo2().fordblks >> 20

untouched = kept_after_freeing()
fit(nn.Linear(2, 2), torch.zeros(8, 2), torch.zeros(8, dtype=torch.long),
    loss_fn=nn.CrossEntropyLoss(), cfg=TrainConfig(epochs=1))
print(untouched, kept_after_freeing())
"""


def _has_mallinfo2() -> bool:
    try:
        return hasattr(ctypes.CDLL("libc.so.6"), "mallinfo2")
    except OSError:
        return False


@pytest.mark.slow
@pytest.mark.skipif(not _has_mallinfo2(), reason="needs glibc 2.33 or later")
def test_after_fit_on_a_cpu_freed_buffers_stay_for_reuse():
    # By default glibc gives freed activations back to the OS (keeping 64 MiB at most) and
    # page-faults them in again on the next step. A fresh interpreter, because the setting is
    # process-wide and other tests have trained already.
    result = subprocess.run([sys.executable, "-c", MEMORY_KEPT_AFTER_FREEING], cwd=ROOT,
                            capture_output=True, text=True, check=True)
    before, after = map(int, result.stdout.split())
    assert before < 128 <= after


# --- preprocessing --------------------------------------------------------------------------


def test_to_image_batch_accepts_the_three_shapes():
    flat = np.arange(2 * 784).reshape(2, 784) % 256
    for X in (flat, flat.reshape(2, 28, 28), flat.reshape(2, 1, 28, 28)):
        images = to_image_batch(X)
        assert images.dtype == np.uint8 and images.shape == (2, 1, 28, 28)
        assert np.array_equal(images.reshape(2, -1), flat)
    with pytest.raises(ValueError, match="0..255"):
        to_image_batch(np.full((1, 784), 300))
    with pytest.raises(ValueError, match="square"):
        to_image_batch(np.zeros((1, 783)))


def test_prepare_normalises_without_augmenting_at_evaluation():
    batch = torch.randint(0, 256, (8, 1, 28, 28), dtype=torch.uint8)
    mean, std = pixel_mean_std(batch)
    out = make_prepare(mean=mean, std=std, augment="fashion")(batch, False)
    assert out.dtype == torch.float32
    assert out.mean().item() == pytest.approx(0, abs=1e-5)
    assert out.std().item() == pytest.approx(1, abs=1e-4)


@pytest.mark.parametrize("augment", ["shift", "fashion"])
def test_augmentation_keeps_shape_and_replays_per_seed(augment):
    batch = torch.randint(0, 256, (64, 1, 28, 28), dtype=torch.uint8)

    def two_batches(seed):
        prepare = make_prepare(mean=0.3, std=0.3, augment=augment, seed=seed)
        return prepare(batch, True), prepare(batch, True)

    first, second = two_batches(0)
    assert first.shape == batch.shape and first.dtype == torch.float32
    assert not torch.equal(first, second)  # a fresh draw every batch
    again = two_batches(0)
    assert torch.equal(first, again[0]) and torch.equal(second, again[1])
    assert not torch.equal(first, two_batches(1)[0])


def test_shift_moves_each_image_by_at_most_the_padding():
    batch = torch.zeros(256, 1, 28, 28, dtype=torch.uint8)
    batch[:, 0, 14, 14] = 255
    out = make_prepare(mean=0.0, std=1 / 255, augment="shift", seed=0)(batch, True)
    assert torch.all(out.flatten(1).max(dim=1).values == 255)  # the pixel is never cut off
    rows, cols = torch.nonzero(out[:, 0] == 255)[:, 1:].T
    assert rows.min() == 12 and rows.max() == 16 and cols.min() == 12 and cols.max() == 16
    assert len(set(zip(rows.tolist(), cols.tolist(), strict=True))) == 25  # all shifts happen


# --- ImageClassifier ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def digits():
    data = bundled_digits(seed=0)
    return data.X_train[:600], data.y_train[:600], data.X_test[:200], data.y_test[:200]


@pytest.fixture(scope="module")
def fitted(digits):
    X, y, X_val, y_val = digits
    clf = ImageClassifier(arch="lenet_bn", epochs=4, batch_size=64, lr=1e-2, augment="shift")
    return clf.fit(X.reshape(len(X), -1), y, X_val=X_val, y_val=y_val)


@pytest.mark.slow
def test_image_classifier_learns_digits(fitted, digits):
    _, _, X_test, y_test = digits
    assert (fitted.predict(X_test) == y_test).mean() > 0.8
    assert list(fitted.classes_) == list(range(10))
    proba = fitted.predict_proba(X_test)
    assert proba.shape == (len(X_test), 10) and np.allclose(proba.sum(axis=1), 1, atol=1e-5)
    assert len(fitted.history_) == 4
    for log in fitted.history_:
        assert {"train_loss", "val_loss", "val_accuracy", "lr", "examples_per_sec"} <= log.keys()
    assert fitted.history_[-1]["val_accuracy"] > 0.8


@pytest.mark.slow
def test_state_dict_round_trips_through_a_weights_only_load(fitted, digits, tmp_path):
    path = tmp_path / "weights.pt"
    torch.save(fitted.state_dict(), path)
    state = torch.load(path, weights_only=True)
    restored = ImageClassifier(**fitted.get_params()).load_state_dict(state)
    _, _, X_test, _ = digits
    assert np.array_equal(restored.predict(X_test), fitted.predict(X_test))
    assert np.allclose(restored.predict_proba(X_test), fitted.predict_proba(X_test), atol=1e-6)


@pytest.mark.slow
def test_same_seed_gives_identical_weights(digits):
    X, y, _, _ = digits

    def weights(seed):
        clf = ImageClassifier(arch="lenet_bn", epochs=1, augment="fashion", seed=seed)
        return clf.fit(X[:256], y[:256]).state_dict()["model"]

    first, again, other = weights(0), weights(0), weights(1)
    assert all(torch.equal(first[k], again[k]) for k in first)
    assert not all(torch.equal(first[k], other[k]) for k in first)


def test_string_labels_and_mirror_tta(digits):
    X, y, X_test, _ = digits
    names = np.array(
        ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
    )
    clf = ImageClassifier(arch="softmax_regression", epochs=1, tta=True).fit(X, names[y])
    assert set(clf.predict(X_test)) <= set(names)
    # Test-time augmentation averages the logits of each image and of its mirror image: the
    # predictions cannot tell an image from its mirror, which the model alone does, and they are
    # the softmax of the mean of the two plain log-probabilities (logits up to a constant).
    mirrored = np.ascontiguousarray(X_test[..., ::-1])
    with_tta = clf.predict_proba(X_test)
    assert np.allclose(with_tta, clf.predict_proba(mirrored), atol=1e-6)
    plain = clf.set_params(tta=False)
    log_plain, log_mirrored = np.log(plain.predict_proba(X_test)), np.log(plain.predict_proba(mirrored))
    assert not np.allclose(log_plain, log_mirrored, atol=1e-2)
    expected = torch.softmax(torch.from_numpy((log_plain + log_mirrored) / 2), dim=1).numpy()
    assert np.allclose(with_tta, expected, atol=1e-5)
    clf.set_params(tta=True)
    with pytest.raises(ValueError, match="not seen in training"):
        clf.fit(X, names[y], X_val=X_test, y_val=np.full(len(X_test), "ten"))


def test_arch_params_reach_the_factory_and_resize_every_batch(digits):
    X, y, X_test, _ = digits
    tiny = {"resize": 40, "growth_rate": 4, "block_convs": (1, 1)}
    clf = ImageClassifier(arch="densenet", epochs=1, arch_params=tiny).fit(X[:64], y[:64])
    seen = []
    clf.model_.register_forward_pre_hook(lambda module, args: seen.append(args[0].shape))
    clf.predict(X_test[:3])
    assert seen == [(3, 1, 40, 40)]
    assert clf.model_[4].layers[0][2].out_channels == 4  # growth_rate


def test_auto_tta_is_kept_only_where_it_scores_better_on_the_held_out_images(digits):
    from pipeline.tasks.base import CVResult
    from pipeline.tasks.image_setup import refit_params

    X, y, X_val, y_val = digits
    clf = ImageClassifier(arch="softmax_regression", epochs=2, tta="auto").fit(X, y, X_val=X_val, y_val=y_val)
    last = clf.history_[-1]
    plain = clf.set_params(tta=False).predict(X_val)
    assert last["val_accuracy"] == pytest.approx((plain == y_val).mean())
    mirrored = clf.set_params(tta=True).predict(X_val)
    assert last["val_accuracy_mirror_tta"] == pytest.approx((mirrored == y_val).mean())
    assert clf.set_params(tta="auto").tta_ == (last["val_accuracy_mirror_tta"] > last["val_accuracy"])
    result = CVResult(np.zeros((1, 10)), [0.0], 0.0, np.zeros(1), [clf.history_], 0.0)
    assert refit_params({"tta": "auto", "epochs": 2}, result)["tta"] == clf.tta_  # the refit is told
    assert not ImageClassifier(arch="softmax_regression", epochs=1, tta="auto").fit(X, y).tta_  # nothing held out
