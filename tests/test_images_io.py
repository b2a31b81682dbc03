"""Image competition files: readers on tiny files built here, submissions, the bundled digits."""

import gzip

import numpy as np
import pandas as pd
import pytest

from pipeline.data.bundled import write_bundled_digits
from pipeline.data.images import load_image_competition, read_idx
from pipeline.errors import UserError

RNG = np.random.default_rng(0)
IMAGES = RNG.integers(0, 256, (5, 28, 28), dtype=np.uint8)
LABELS = np.array([3, 1, 4, 1, 5])


def image_frame(images=IMAGES, labels=LABELS, first_pixel=0) -> pd.DataFrame:
    columns = [f"pixel{i}" for i in range(first_pixel, first_pixel + 784)]
    frame = pd.DataFrame(images.reshape(len(images), -1), columns=columns)
    if labels is not None:
        frame.insert(0, "label", labels)
    return frame


def write_digit_recognizer(folder, train=None, test=None):
    (train if train is not None else image_frame()).to_csv(folder / "train.csv", index=False)
    (test if test is not None else image_frame(labels=None)).to_csv(
        folder / "test.csv", index=False
    )


def idx_bytes(array: np.ndarray, type_code: int = 0x08) -> bytes:
    header = bytes([0, 0, type_code, array.ndim]) + b"".join(
        int(d).to_bytes(4, "big") for d in array.shape
    )
    return header + array.astype(np.uint8).tobytes()


def write_idx_layout(folder, images=IMAGES, labels=LABELS):
    for prefix in ("train", "t10k"):
        (folder / f"{prefix}-images-idx3-ubyte.gz").write_bytes(gzip.compress(idx_bytes(images)))
        (folder / f"{prefix}-labels-idx1-ubyte.gz").write_bytes(gzip.compress(idx_bytes(labels)))


# --- reading good files ---------------------------------------------------------------------


def test_digit_recognizer_layout(tmp_path):
    write_digit_recognizer(tmp_path)
    data = load_image_competition(tmp_path, "digit-recognizer")
    assert data.X_train.dtype == np.uint8 and data.X_train.shape == (5, 28, 28)
    assert np.array_equal(data.X_train, IMAGES) and np.array_equal(data.y_train, LABELS)
    assert np.array_equal(data.X_test, IMAGES)
    assert list(data.test_ids) == [1, 2, 3, 4, 5]
    assert data.y_test is None


def test_fashion_mnist_csv_layout_numbers_pixels_from_one(tmp_path):
    image_frame(first_pixel=1).to_csv(tmp_path / "fashion-mnist_train.csv", index=False)
    image_frame(IMAGES[:2], LABELS[:2], 1).to_csv(tmp_path / "fashion-mnist_test.csv", index=False)
    data = load_image_competition(tmp_path, "fashion-mnist-csv")
    assert np.array_equal(data.X_train, IMAGES) and np.array_equal(data.y_train, LABELS)
    assert np.array_equal(data.X_test, IMAGES[:2]) and np.array_equal(data.y_test, LABELS[:2])


def test_fashion_mnist_idx_layout(tmp_path):
    write_idx_layout(tmp_path)
    data = load_image_competition(tmp_path, "fashion-mnist-idx")
    assert np.array_equal(data.X_train, IMAGES) and np.array_equal(data.y_train, LABELS)
    assert np.array_equal(data.X_test, IMAGES) and np.array_equal(data.y_test, LABELS)
    assert data.X_train.dtype == np.uint8


def test_idx_files_already_gunzipped_are_found(tmp_path):
    write_idx_layout(tmp_path)
    for path in tmp_path.glob("*.gz"):
        path.with_suffix("").write_bytes(gzip.decompress(path.read_bytes()))
        path.unlink()
    assert load_image_competition(tmp_path, "fashion-mnist-idx").X_train.shape == (5, 28, 28)


# --- bad files: one helpful line each -------------------------------------------------------


def with_cell(row, column, value) -> pd.DataFrame:
    frame = image_frame().astype(object)
    frame.loc[row, column] = value
    return frame


BAD_TRAIN_FILES = {
    "783 pixels": (image_frame().iloc[:, :-1], "783 pixel columns: not S×S (gray) or 3×S×S"),
    "value 300": (with_cell(1, "pixel5", 300), "line 3, column pixel5: pixel value 300 is outside 0..255"),
    "negative": (with_cell(0, "pixel0", -1), "line 2, column pixel0: pixel value -1 is outside 0..255"),
    "text": (with_cell(2, "pixel9", "abc"), "line 4, column pixel9: 'abc' is not a whole number"),
    "fraction": (with_cell(2, "pixel9", 3.5), "line 4, column pixel9: 3.5 is not a whole number"),
    "blank": (with_cell(4, "pixel1", None), "line 6, column pixel1: missing value"),
    "no label value": (with_cell(3, "label", None), "line 5, column label: missing label"),
    "no label": (image_frame(labels=None), "has no 'label' column"),
    "renamed": (image_frame().rename(columns={"pixel7": "px7"}), "column 'px7' where 'pixel7'"),
}  # fmt: skip


@pytest.mark.parametrize("case", BAD_TRAIN_FILES)
def test_bad_train_csv_is_a_one_line_user_error(tmp_path, case):
    frame, message = BAD_TRAIN_FILES[case]
    write_digit_recognizer(tmp_path, train=frame)
    with pytest.raises(UserError, match="train.csv") as error:
        load_image_competition(tmp_path, "digit-recognizer")
    assert message in str(error.value) and "\n" not in str(error.value)


@pytest.mark.parametrize(
    ("content", "message"),
    [("", "empty file"), (",".join(f"pixel{i}" for i in range(784)) + "\n", "no rows")],
)
def test_empty_test_csv_is_a_user_error(tmp_path, content, message):
    write_digit_recognizer(tmp_path)
    (tmp_path / "test.csv").write_text(content)
    with pytest.raises(UserError, match=message):
        load_image_competition(tmp_path, "digit-recognizer")


def test_missing_file_and_unknown_layout(tmp_path):
    (tmp_path / "train.csv").write_text("label\n")
    with pytest.raises(UserError, match="test.csv not found"):
        load_image_competition(tmp_path, "digit-recognizer")
    with pytest.raises(UserError, match="unknown image layout 'cifar'"):
        load_image_competition(tmp_path, "cifar")


def test_idx_header_checks(tmp_path):
    path = tmp_path / "images.gz"
    good = idx_bytes(IMAGES)
    cases = {
        "bad magic": (idx_bytes(IMAGES, type_code=0x0D), "magic number 0x00000d03, expected 0x00000803"),
        "truncated data": (good[:-10], "truncated: 5×28×28 needs 3920 bytes of data, found 3910"),
        "truncated header": (good[:9], "truncated: the header needs 16 bytes"),
        "trailing bytes": (good + b"\0", "longer than its header says"),
    }  # fmt: skip
    for content, message in cases.values():
        path.write_bytes(gzip.compress(content))
        with pytest.raises(UserError, match=message):
            read_idx(path, 3)
    path.write_bytes(gzip.compress(good)[:-8])
    with pytest.raises(UserError, match="truncated or not gzip"):
        read_idx(path, 3)
    path.write_bytes(good)
    with pytest.raises(UserError, match="truncated or not gzip"):
        read_idx(path, 3)


def test_idx_images_and_labels_must_agree(tmp_path):
    write_idx_layout(tmp_path, labels=LABELS[:4])
    with pytest.raises(UserError, match="5 images but .* 4 labels"):
        load_image_competition(tmp_path, "fashion-mnist-idx")
    write_idx_layout(tmp_path, images=np.zeros((5, 32, 32), np.uint8))
    assert load_image_competition(tmp_path, "fashion-mnist-idx").X_train.shape == (5, 32, 32)  # any side


# --- bundled digits -------------------------------------------------------------------------


def test_bundled_digits_are_reproducible_and_split_cleanly(tmp_path):
    counts = write_bundled_digits(tmp_path / "a", seed=0)
    write_bundled_digits(tmp_path / "b", seed=0)
    write_bundled_digits(tmp_path / "c", seed=1)
    names = ["sample_submission.csv", "test.csv", "test_labels.csv", "train.csv"]
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == names
    for name in names:
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    assert (tmp_path / "a" / "train.csv").read_bytes() != (
        tmp_path / "c" / "train.csv"
    ).read_bytes()
    assert not list(tmp_path.glob(".a-*"))  # the temporary folder is gone

    data = load_image_competition(tmp_path / "a", "digit-recognizer")
    assert counts == {"train": len(data.X_train), "test": len(data.X_test)}
    assert len(data.X_train) + len(data.X_test) == 1797  # all of scikit-learn's digits
    ids = np.arange(1, len(data.X_test) + 1)
    for name in ("sample_submission.csv", "test_labels.csv"):
        frame = pd.read_csv(tmp_path / "a" / name)
        assert list(frame.columns) == ["ImageId", "Label"]
        assert np.array_equal(frame["ImageId"], ids)
    assert np.array_equal(data.test_ids, ids) and data.y_test is not None
    train_images = {image.tobytes() for image in data.X_train}
    assert not any(image.tobytes() in train_images for image in data.X_test)
    assert set(np.unique(data.y_train)) == set(range(10))
    # MNIST-like: a 20×20 digit centred in a blank 28×28 frame, using the full 0..255 range.
    assert data.X_train[:, :4].max() == 0 and data.X_train[:, 24:].max() == 0
    assert data.X_train.max() == 255
