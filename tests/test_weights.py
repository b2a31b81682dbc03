"""A backbone from a local file (``--weights``): read without pickle, the head replaced where the
class count differs, the body frozen first when asked, and a start that beats a fresh one."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch
from conftest import (
    fast_house_prices_config,
    mlflow_runs,
    run_cli,
    snapshot,
    synthetic_frames,
    tiny_house_prices,
    write_competition,
)
from safetensors.torch import save_file
from sklearn.datasets import load_digits

from models import registry
from models import weights as weight_files
from models.image import ImageClassifier

pytestmark = pytest.mark.usefixtures("one_thread")


def digits(classes) -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's 8×8 digits of ``classes``, as 0..255 pixels upsampled to 16×16."""
    data = load_digits()
    keep = np.isin(data.target, classes)
    images = np.kron(data.images[keep], np.ones((2, 2))) * 255 / 16
    return images.round().astype(np.uint8), data.target[keep]


def small_net(classes: int, channels: int = 1):
    return registry.create("cnn5", kind="vision", num_classes=classes, in_channels=channels, width=8)


def test_matching_tensors_are_copied_and_the_head_is_fresh_where_the_class_count_differs(tmp_path):
    source = small_net(5)
    torch.save({"model": source.state_dict(), "classes": list(range(5))}, tmp_path / "model.pt")  # a run's model.pt
    save_file(source.state_dict(), tmp_path / "model.safetensors")
    for name in ("model.pt", "model.safetensors"):
        target = small_net(3)
        loaded = weight_files.load_into(target, tmp_path / name, freeze=True)
        head = list(target.state_dict())[-2:]  # the last Linear: weight, bias
        assert set(loaded.fresh) == set(head) and len(loaded.copied) == len(target.state_dict()) - len(head)
        assert torch.equal(target.state_dict()["0.weight"], source.state_dict()["0.weight"])
        frozen = {k for k, p in target.named_parameters() if not p.requires_grad}
        assert frozen == {k for k, _ in target.named_parameters() if k not in head}
        weight_files.unfreeze(target, loaded)
        assert all(p.requires_grad for p in target.parameters())


def test_the_same_class_count_freezes_nothing(tmp_path):
    torch.save(small_net(5).state_dict(), tmp_path / "w.pt")
    net = small_net(5)
    assert weight_files.load_into(net, tmp_path / "w.pt", freeze=True).frozen == ()
    assert all(p.requires_grad for p in net.parameters())


class Payload:  # anything but tensors: weights_only refuses to rebuild it
    pass


@pytest.mark.parametrize(("name", "content", "message"), [
    ("w.pt", pickle.dumps({"x": Payload()}), "not a state dict of tensors"),
    ("w.safetensors", b"\x00" * 20, "not a readable safetensors file"),
    ("w.npz", b"", "weights are a .safetensors file or a .pt/.pth state dict"),
])
def test_unreadable_or_pickled_objects_are_refused_in_one_line(tmp_path, name, content, message):
    (tmp_path / name).write_bytes(content)
    with pytest.raises(weight_files.WeightsError, match=message) as error:
        weight_files.load_into(small_net(3), tmp_path / name)
    assert str(tmp_path / name) in str(error.value) and "\n" not in str(error.value)


def test_weights_of_another_model_fit_nothing(tmp_path):
    torch.save(registry.create("lenet", kind="vision", num_classes=3).state_dict(), tmp_path / "w.pt")
    with pytest.raises(weight_files.WeightsError, match="none of its .* tensors fits this model"):
        weight_files.load_into(small_net(3), tmp_path / "w.pt")


def test_weights_from_one_set_start_another_and_beat_a_fresh_start_at_the_same_epochs(tmp_path):
    X_a, y_a = digits([0, 1, 2, 3, 4])
    X_b, y_b = digits([5, 6, 7, 8])  # four classes: the five-class head is replaced
    rows = np.random.default_rng(0).permutation(len(y_b))
    train, test = rows[:32], rows[32:]  # 8 images a class to learn from
    params = {"arch": "cnn5", "arch_params": {"width": 8}, "batch_size": 16, "lr": 1e-2, "augment": False}
    source = ImageClassifier(epochs=6, **params).fit(X_a, y_a)
    torch.save(source.state_dict(), tmp_path / "digits04.pt")  # as a run logs model.pt

    def fitted(**extra) -> tuple[float, ImageClassifier]:
        clf = ImageClassifier(epochs=3, **params, **extra).fit(X_b[train], y_b[train])
        return float(np.mean(clf.predict(X_b[test]) == y_b[test])), clf

    fresh, _ = fitted()
    started, clf = fitted(weights=str(tmp_path / "digits04.pt"), freeze_epochs=1)
    assert len(clf.weights_.fresh) == 2 and clf.weights_.frozen  # the head new, the body frozen first
    assert started > fresh + 0.1, (started, fresh)  # here 0.708 against 0.385


def write_pixel_folder(folder, n_train: int = 60, n_test: int = 10):
    """A tiny pixel-CSV competition of 16×16 digits (5..9): train.csv, test.csv, sample_submission.csv."""
    import pandas as pd

    X, y = digits([5, 6, 7, 8, 9])
    folder.mkdir(parents=True, exist_ok=True)
    frame = pd.DataFrame(X[:n_train + n_test].reshape(n_train + n_test, -1),
                         columns=[f"pixel{i}" for i in range(256)])
    frame.iloc[:n_train].assign(label=y[:n_train]).to_csv(folder / "train.csv", index=False)
    frame.iloc[n_train:].to_csv(folder / "test.csv", index=False)
    pd.DataFrame({"id": range(1, n_test + 1), "label": 5}).to_csv(folder / "sample_submission.csv", index=False)
    return folder


def test_submit_with_weights_says_what_it_copied_and_logs_the_source(workdir):
    data = write_pixel_folder(workdir / "digits59")
    save_file(small_net(3).state_dict(), workdir / "body.safetensors")  # three classes: the head is fresh
    result = run_cli("submit", "--data-dir", data, "--target", "label", "--id", "id", "--model", "cnn5",
                     "--weights", workdir / "body.safetensors", "-p", "epochs=1", "-p", 'arch_params={"width": 8}',
                     "--output", workdir / "submission.csv")
    assert result.code == 0, result.err
    assert "weights body.safetensors: 30 tensors copied; 2 fresh (19.weight, 19.bias)" in result.out
    params = mlflow_runs()[0].data.params
    assert params["params.weights"] == str(workdir / "body.safetensors")
    assert "weights: weights" in params["param_sources.cnn5"] and "epochs: command line" in params["param_sources.cnn5"]


def test_a_bad_weights_file_is_one_line_exit_2_before_any_run(workdir):
    data = write_pixel_folder(workdir / "digits59")
    (workdir / "body.pt").write_bytes(pickle.dumps({"x": Payload()}))
    result = run_cli("submit", "--data-dir", data, "--target", "label", "--id", "id", "--model", "cnn5",
                     "--weights", workdir / "body.pt", "--output", workdir / "submission.csv")
    assert result.code == 2 and len(result.err_lines) == 1 and "body.pt: not a state dict of tensors" in result.err
    assert mlflow_runs() == [] and not (workdir / "submission.csv").exists()


def test_weights_on_a_table_are_one_line_exit_2_before_any_run(workdir):
    train, test, _ = synthetic_frames("binary")
    data = write_competition(workdir / "toy", train, test)
    save_file(small_net(2).state_dict(), workdir / "body.safetensors")
    before = snapshot(workdir)
    result = run_cli("submit", "--data-dir", data, "--target", "target", "--id", "id",
                     "--weights", workdir / "body.safetensors", "--output", workdir / "submission.csv")
    assert result.code == 2 and len(result.err_lines) == 1, result.err
    assert "--weights" in result.err and "toy is a table" in result.err and "Traceback" not in result.err
    assert mlflow_runs() == [] and snapshot(workdir) == before


def test_weights_in_a_table_config_name_the_config(workdir):
    data = workdir / "house"
    data.mkdir()
    for name, frame in tiny_house_prices().items():
        if frame is not None:
            frame.to_csv(data / name, index=False)
    config_file = fast_house_prices_config(workdir)
    config_file.write_text('weights = "body.safetensors"\n' + config_file.read_text())
    result = run_cli("submit", "--config", config_file, "--data-dir", data, "--output", workdir / "submission.csv")
    assert result.code == 2 and len(result.err_lines) == 1, result.err
    assert f"{config_file.name}: weights body.safetensors" in result.err and "is a table" in result.err
    assert mlflow_runs() == [] and not (workdir / "submission.csv").exists()


@pytest.mark.parametrize("optimizer", ["sgd", "adamw"])
def test_a_body_unfrozen_mid_run_trains_on_with_momentum(tmp_path, optimizer):
    torch.save(small_net(3).state_dict(), tmp_path / "w.pt")  # three classes: the head is fresh, the body frozen
    X, y = digits([5, 6, 7, 8, 9])
    clf = ImageClassifier(arch="cnn5", arch_params={"width": 8}, epochs=2, batch_size=32, optimizer=optimizer,
                          weights=str(tmp_path / "w.pt"), freeze_epochs=1).fit(X[:96], y[:96])
    assert len(clf.history_) == 2 and all(p.requires_grad for p in clf.model_.parameters())
    body = torch.load(tmp_path / "w.pt")["0.weight"]
    assert not torch.equal(clf.model_.state_dict()["0.weight"].cpu(), body)  # trained after its frozen epoch
