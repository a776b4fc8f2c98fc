import numpy as np
import pytest
import torch
from _mnist_idx import make_tiny_mnist

from pgm_lab.data import (
    DIGITS_N_TEST,
    DIGITS_N_TRAIN,
    MNIST_FILES,
    bars_and_stripes,
    check_data,
    dynamic_binarize,
    image_shape,
    load_dataset,
    static_binarize,
)
from pgm_lab.errors import DataError


def test_digits_splits_shapes_and_range():
    train, y_train = load_dataset("digits", "train", return_labels=True)
    test = load_dataset("digits", "test")
    assert train.shape == (DIGITS_N_TRAIN, 64) and test.shape == (DIGITS_N_TEST, 64)
    assert train.dtype == torch.float32
    assert float(train.min()) == 0.0 and float(train.max()) == 1.0
    assert set(y_train.tolist()) == set(range(10))
    # disjoint and exhaustive: together they are sklearn's 1797 images, each once
    from sklearn.datasets import load_digits

    full = torch.as_tensor(load_digits().data / 16.0, dtype=torch.float32)
    both = torch.cat([train, test])
    assert torch.equal(both.sort(dim=0).values, full.sort(dim=0).values)
    assert torch.equal(load_dataset("digits", "train"), train)  # fixed split


def test_static_binarization_is_reproducible_and_binary():
    a = load_dataset("digits", "test", binarize="static", seed=3)
    b = load_dataset("digits", "test", binarize="static", seed=3)
    c = load_dataset("digits", "test", binarize="static", seed=4)
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert set(a.unique().tolist()) <= {0.0, 1.0}


def test_binarization_frequencies_match_intensities():
    x = torch.full((20000, 3), 0.0) + torch.tensor([0.1, 0.5, 0.9])
    gen = torch.Generator().manual_seed(1)
    freq = dynamic_binarize(x, gen).mean(0)
    stderr = (x[0] * (1 - x[0]) / 20000).sqrt()
    assert ((freq - x[0]).abs() / stderr < 4).all()
    assert not torch.equal(dynamic_binarize(x, gen), dynamic_binarize(x, gen))
    assert ((static_binarize(x).mean(0) - x[0]).abs() / stderr < 4).all()


def test_mnist_reads_local_idx_files(tmp_path):
    truth = make_tiny_mnist(tmp_path)
    x, y = load_dataset("mnist", "train", data_dir=tmp_path, return_labels=True)
    assert x.shape == (7, 784) and x.dtype == torch.float32
    np.testing.assert_allclose(x.numpy(), truth["train"].reshape(7, -1) / 255.0, rtol=1e-6)
    assert y.tolist() == truth["train_labels"].tolist()
    assert load_dataset("mnist", "test", data_dir=tmp_path).shape == (3, 784)


def test_mnist_missing_files_error_names_them(tmp_path):
    with pytest.raises(DataError, match="t10k-images-idx3-ubyte.*torchvision.datasets.MNIST"):
        load_dataset("mnist", "test", data_dir=tmp_path)
    with pytest.raises(DataError, match="data_dir"):
        load_dataset("mnist")


def test_mnist_corrupt_file_is_data_error(tmp_path):
    make_tiny_mnist(tmp_path)
    (tmp_path / "MNIST" / "raw" / MNIST_FILES["train"][0]).write_bytes(b"\x00\x00")
    with pytest.raises(DataError, match="cannot read"):
        load_dataset("mnist", "train", data_dir=tmp_path)


def test_bars_and_stripes_are_distinct_and_complete():
    x = bars_and_stripes(3)
    assert x.shape == (2 * 2**3 - 2, 9)
    assert len({tuple(r.tolist()) for r in x}) == x.shape[0]
    imgs = x.reshape(-1, 3, 3)
    rows_const = (imgs == imgs[:, :, :1]).all(dim=(1, 2))
    cols_const = (imgs == imgs[:, :1, :]).all(dim=(1, 2))
    assert (rows_const | cols_const).all()
    assert load_dataset("bars").shape == (30, 16)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"name": "cifar"}, "unknown dataset 'cifar'"),
        ({"name": "digits", "split": "val"}, "unknown split 'val'"),
        ({"name": "digits", "binarize": "dynamic"}, "dynamic_binarize"),
    ],
)
def test_load_dataset_bad_arguments(kwargs, match):
    with pytest.raises(DataError, match=match):
        load_dataset(**kwargs)


@pytest.mark.parametrize(
    ("x", "kwargs", "match"),
    [
        (torch.tensor([[0.5, float("nan")]]), {}, "NaN.*row 0"),
        (torch.zeros(3), {}, r"shape \[N, D\]"),
        (torch.zeros(2, 5), {"dim": 4}, "5 features; expected 4"),
        (torch.full((2, 2), 2.0), {}, r"\[0, 1\]"),
        (torch.full((2, 2), 0.5), {"binary": True}, "binary"),
        ([[0.0]], {}, "torch.Tensor"),
        (torch.zeros(0, 3), {}, "empty"),
    ],
)
def test_check_data_errors(x, kwargs, match):
    with pytest.raises(DataError, match=match):
        check_data(x, **kwargs)


def test_check_data_accepts_numpy_and_ints():
    out = check_data(np.array([[0, 1], [1, 0]]), binary=True)
    assert out.dtype == torch.float32 and out.shape == (2, 2)


def test_image_shape():
    assert image_shape("digits") == (8, 8) and image_shape(784) == (28, 28)
    with pytest.raises(DataError, match="square"):
        image_shape(10)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_dynamic_binarize_on_the_gpu_does_not_wait_for_it():
    x = torch.rand(128, 784, device="cuda")
    gen = torch.Generator().manual_seed(0)
    dynamic_binarize(x, gen)  # warm up the pinned-memory cache
    torch.cuda.set_sync_debug_mode("error")  # a synchronizing copy raises
    try:
        out = dynamic_binarize(x, gen)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert out.device.type == "cuda" and set(out.unique().tolist()) <= {0.0, 1.0}
