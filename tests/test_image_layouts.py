"""Image competitions from their files: every layout on small generated PNG/JPG files, the bad
files each a one-line error naming the file, and the decode cache."""

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from pipeline.config import Competition
from pipeline.data import image_decode, images
from pipeline.errors import UserError

RNG = np.random.default_rng(0)
NAMES = np.array(["cat", "dog", "frog"])


def comp(**fields) -> Competition:
    return Competition(**{"name": "t", "target": "label", "id": "id", "kind": "image", **fields})


def save(path, pixels: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)


def colour(side=8) -> np.ndarray:
    return RNG.integers(0, 256, (side, side, 3), dtype=np.uint8)


def write_image_folder(root, n_train=6, n_test=4, sample=True, labels=NAMES) -> dict[int, np.ndarray]:
    """CIFAR-10's layout: train/<id>.png, trainLabels.csv (id,label), test/<id>.png, a sample."""
    pixels = {}
    for i in range(1, n_train + 1):
        pixels[i] = colour()
        save(root / "train" / f"{i}.png", pixels[i])
    pd.DataFrame({"id": range(1, n_train + 1), "label": labels[np.arange(n_train) % len(labels)]}).to_csv(
        root / "trainLabels.csv", index=False)
    for i in range(1, n_test + 1):
        save(root / "test" / f"{i}.png", colour())
    if sample:
        pd.DataFrame({"id": range(n_test, 0, -1), "label": "cat"}).to_csv(root / "sample_submission.csv", index=False)
    return pixels


def test_image_folder_with_label_names(tmp_path):
    pixels = write_image_folder(tmp_path)
    assert images.detect_layout(comp(), tmp_path) == "image-folder"
    loaded = images.load(comp(), tmp_path)
    data = loaded.data
    assert data.X_train.shape == (6, 3, 8, 8) and data.X_train.dtype == np.uint8
    assert np.array_equal(data.X_train[1], pixels[2].transpose(2, 0, 1))  # the labels CSV's order
    assert list(data.y_train) == ["cat", "dog", "frog", "cat", "dog", "frog"]
    assert list(data.test_ids) == ["4", "3", "2", "1"]  # the sample's ids, in its order
    assert data.X_test.shape == (4, 3, 8, 8)


def test_class_folders_without_a_sample_take_ids_from_file_names(tmp_path):
    for name in ("cat", "dog"):
        for i in range(3):
            save(tmp_path / "train" / name / f"{name}{i}.jpg", RNG.integers(0, 256, (10, 10), dtype=np.uint8))
    for i in (2, 10, 1):
        save(tmp_path / "test" / f"{i}.png", RNG.integers(0, 256, (10, 10), dtype=np.uint8))
    assert images.detect_layout(comp(), tmp_path) == "class-folders"
    data = images.load(comp(), tmp_path).data
    assert data.X_train.shape == (6, 10, 10)  # gray: one channel, as the pixel CSVs
    assert list(data.y_train) == ["cat"] * 3 + ["dog"] * 3
    assert list(data.test_ids) == [1, 2, 10]


def test_number_labels_stay_numbers(tmp_path):
    write_image_folder(tmp_path, labels=np.array([0, 1]))
    assert images.load(comp(), tmp_path).data.y_train.dtype == np.int64


def test_pixel_csv_of_any_side_and_colour(tmp_path):
    side, n = 5, 4
    pictures = RNG.integers(0, 256, (n, side, side, 3), dtype=np.uint8)
    columns = [f"pixel{i}" for i in range(side * side * 3)]
    train = pd.DataFrame(pictures.reshape(n, -1), columns=columns)
    train.insert(0, "label", ["a", "b", "a", "b"])
    train.to_csv(tmp_path / "train.csv", index=False)
    test = pd.DataFrame(pictures[:2].reshape(2, -1), columns=columns)
    test.insert(0, "id", [17, 18])
    test.to_csv(tmp_path / "test.csv", index=False)
    assert images.detect_layout(comp(), tmp_path) == "pixel-csv"
    data = images.load(comp(), tmp_path).data
    assert np.array_equal(data.X_train, pictures.transpose(0, 3, 1, 2))
    assert list(data.y_train) == ["a", "b", "a", "b"] and list(data.test_ids) == [17, 18]


def test_mixed_sizes_are_resized_to_an_inferred_or_configured_side(tmp_path):
    write_image_folder(tmp_path)
    save(tmp_path / "train" / "1.png", colour(12))
    assert images.load(comp(), tmp_path).data.X_train.shape == (6, 3, 8, 8)  # the median short side
    assert images.load(comp(image_size=16), tmp_path).data.X_test.shape == (4, 3, 16, 16)


# --- bad files: one line each, naming the file, before any training -------------------------


def one_line_error(competition, folder) -> str:
    with pytest.raises(UserError) as error:
        images.load(competition, folder)
    assert "\n" not in str(error.value)
    return str(error.value)


def test_an_unreadable_image_is_named(tmp_path):
    write_image_folder(tmp_path)
    (tmp_path / "train" / "3.png").write_bytes(b"not a picture")
    assert f"{tmp_path / 'train' / '3.png'}: not a readable image" in one_line_error(comp(), tmp_path)


def test_a_truncated_image_is_named(tmp_path):
    write_image_folder(tmp_path)
    good = (tmp_path / "test" / "2.png").read_bytes()
    (tmp_path / "test" / "2.png").write_bytes(good[: len(good) // 2])
    assert f"{tmp_path / 'test' / '2.png'}: not a readable image" in one_line_error(comp(), tmp_path)


def test_a_mixed_size_under_a_fixed_size_config_is_named(tmp_path):
    write_image_folder(tmp_path)
    save(tmp_path / "train" / "5.png", colour(9))
    message = one_line_error(comp(image_size="fixed"), tmp_path)
    assert f"{tmp_path / 'train' / '5.png'}: 9×9 pixels where 1.png has 8×8" in message


def test_an_image_without_a_label_is_named(tmp_path):
    write_image_folder(tmp_path)
    save(tmp_path / "train" / "7.png", colour())
    message = one_line_error(comp(), tmp_path)
    assert f"{tmp_path / 'train' / '7.png'}: no label in {tmp_path / 'trainLabels.csv'}" in message


def test_a_label_without_an_image_is_named(tmp_path):
    write_image_folder(tmp_path)
    (tmp_path / "train" / "4.png").unlink()
    assert "trainLabels.csv, line 5: no image '4'" in one_line_error(comp(), tmp_path)


def test_a_sample_id_without_a_test_image_is_named(tmp_path):
    write_image_folder(tmp_path)
    (tmp_path / "test" / "3.png").unlink()
    assert "sample_submission.csv, line 3: id '3' has no image" in one_line_error(comp(), tmp_path)


def test_no_image_files_at_all(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    assert images.detect_layout(comp(), tmp_path) is None
    assert "no image files found" in one_line_error(comp(), tmp_path)


# --- the decode cache -----------------------------------------------------------------------


def test_the_second_load_reads_the_cache_and_a_changed_file_is_decoded_again(tmp_path, monkeypatch):
    write_image_folder(tmp_path)
    first = images.load(comp(), tmp_path).data
    cached = sorted(p.name for p in (tmp_path / image_decode.CACHE_FOLDER).glob("*.npy"))
    assert len(cached) == 2 and cached[0].startswith("test-") and cached[1].startswith("train-")

    def no_decoding(path, shape):
        raise AssertionError(f"decoded {path} again")

    monkeypatch.setattr(image_decode, "decode_one", no_decoding)
    again = images.load(comp(), tmp_path).data
    assert np.array_equal(first.X_train, again.X_train) and np.array_equal(first.X_test, again.X_test)

    save(tmp_path / "train" / "2.png", colour())  # new pixels, a new modification time
    with pytest.raises(AssertionError, match="decoded"):
        images.load(comp(), tmp_path)


def test_decoding_with_worker_processes_gives_the_same_pixels(tmp_path):
    write_image_folder(tmp_path, n_train=9)
    paths = image_decode.image_files(tmp_path / "train")
    shape = image_decode.scan(paths, None)
    assert np.array_equal(image_decode.decode(paths, shape, workers=2), image_decode.decode(paths, shape, workers=0))


def test_a_folder_of_images_without_a_config_is_an_image_competition(tmp_path):
    from pipeline.tasks.image_setup import as_image_competition

    write_image_folder(tmp_path / "pictures")
    tabular = comp(kind="tabular")
    found = as_image_competition(tabular, tmp_path / "pictures")
    assert found.kind == "image" and found.cv.holdout == 0.1
    pd.DataFrame({"id": [1, 2], "label": [0, 1], "x": [3.0, 4.0]}).to_csv(tmp_path / "train.csv", index=False)
    pd.DataFrame({"id": [3], "x": [5.0]}).to_csv(tmp_path / "test.csv", index=False)
    assert as_image_competition(tabular, tmp_path) is tabular  # a table stays a table


def test_gray_and_colour_files_together_are_read_in_colour(tmp_path):
    write_image_folder(tmp_path)
    save(tmp_path / "train" / "2.png", RNG.integers(0, 256, (8, 8), dtype=np.uint8))
    data = images.load(comp(), tmp_path).data
    assert data.X_train.shape == (6, 3, 8, 8)
    assert (data.X_train[1, 0] == data.X_train[1, 1]).all()  # the gray one: equal channels


# --- Kaggle's own CIFAR-10 layout, and the pixels' own kind ----------------------------------


@pytest.mark.parametrize("name", ["sampleSubmission.csv", "SampleSubmission.csv", "sample_submission.csv"])
def test_kaggle_cifar10_layout_with_the_sample_by_any_kaggle_spelling(tmp_path, name):
    write_image_folder(tmp_path, sample=False)  # train/<id>.png, trainLabels.csv, test/<id>.png
    pd.DataFrame({"id": range(4, 0, -1), "label": "cat"}).to_csv(tmp_path / name, index=False)
    data = images.load(comp(), tmp_path)
    assert list(data.data.y_train) == ["cat", "dog", "frog", "cat", "dog", "frog"]  # trainLabels.csv, not the sample
    assert list(data.data.test_ids) == ["4", "3", "2", "1"] and list(data.sample.columns) == ["id", "label"]


def test_a_sample_under_another_name_is_known_by_its_ids_matching_the_test_images(tmp_path):
    from pipeline.data import image_folders
    from pipeline.tasks.image_setup import as_image_competition

    write_image_folder(tmp_path, sample=False)
    pd.DataFrame({"id": range(1, 5), "label": "cat"}).to_csv(tmp_path / "submission_format.csv", index=False)
    assert image_folders.sample_file(comp(), tmp_path) == tmp_path / "submission_format.csv"
    assert as_image_competition(comp(kind="tabular"), tmp_path).sample_submission_file == "submission_format.csv"
    assert list(images.load(comp(), tmp_path).data.y_train)[:3] == ["cat", "dog", "frog"]


def test_two_labels_files_besides_the_sample_are_still_ambiguous(tmp_path):
    write_image_folder(tmp_path)
    (tmp_path / "labels.csv").write_bytes((tmp_path / "trainLabels.csv").read_bytes())
    assert "several labels files (labels.csv, trainLabels.csv)" in one_line_error(comp(), tmp_path)


def test_gray_images_stored_as_rgb_are_read_as_one_gray_channel(tmp_path, capsys):
    for i in range(1, 7):
        save(tmp_path / "train" / f"{i}.png", np.repeat(RNG.integers(0, 256, (8, 8, 1), dtype=np.uint8), 3, axis=2))
    pd.DataFrame({"id": range(1, 7), "label": NAMES[np.arange(6) % 3]}).to_csv(tmp_path / "trainLabels.csv",
                                                                              index=False)
    save(tmp_path / "test" / "1.png", np.repeat(RNG.integers(0, 256, (8, 8, 1), dtype=np.uint8), 3, axis=2))
    pixels = np.asarray(Image.open(tmp_path / "train" / "1.png"))[:, :, 0]
    data = images.load(comp(), tmp_path).data
    assert data.X_train.shape == (6, 8, 8) and data.X_test.shape == (1, 8, 8)
    assert np.array_equal(data.X_train[0], pixels)
    assert "the three channels are equal in 6 sampled training images: read as one gray channel" \
        in capsys.readouterr().out


def test_the_mirror_probe_says_no_for_digits_and_yes_where_mirrors_keep_the_class():
    from sklearn.datasets import load_digits

    from pipeline.config import CVConfig
    from pipeline.tasks.image_setup import default_augment, mirror_helps

    holdout = comp(cv=CVConfig(holdout=0.2, seed=0))
    data = load_digits()
    digits = (np.kron(data.images, np.ones((2, 2))) * 255 / 16).astype(np.uint8)
    helps, line = mirror_helps(holdout, digits, data.target)
    assert not helps and line.endswith("no mirrors")
    assert default_augment(holdout, {"augment": "shift"}, digits, data.target)[0] == "shift"

    rng = np.random.default_rng(0)  # 20 kinds of object, one photo in ten taken the other way round
    templates = rng.integers(0, 256, (20, 3, 16, 16))
    y = np.arange(400) % 20
    scenes = (templates[y] * 0.7 + rng.integers(0, 77, (400, 3, 16, 16))).astype(np.uint8)
    flipped = rng.random(400) < 0.1
    scenes[flipped] = scenes[flipped][..., ::-1]
    helps, line = mirror_helps(holdout, scenes, y)
    assert helps and line.endswith("mirrors on")
    assert default_augment(holdout, {"augment": "crop"}, scenes, y)[0] == "photo"
