"""digits and mnist1d (no download), the registry, the data folder and the split rules."""

import random

import numpy as np
import pytest
import torch

from dstlab.data import ENV_VAR, data_root, list_datasets, load_dataset
from dstlab.data.builtin import MNIST1D_SEED, _mnist1d_arrays, generate_mnist1d
from dstlab.data.splits import FileSplit, TensorSplit, split_last, split_last_per_class
from dstlab.errors import ConfigError, DataError


def test_list_datasets():
    assert list_datasets() == sorted(
        ["cifar10", "cifar100", "digits", "fashion_mnist", "higgs", "imagenet", "mnist",
         "mnist1d", "tiny_imagenet"]
    )  # fmt: skip


def test_digits_splits_and_scaling():
    ds = load_dataset("digits")
    assert (len(ds.train), len(ds.val), len(ds.test)) == (1293, 144, 360)
    assert ds.input_shape == (1, 8, 8) and ds.num_classes == 10
    assert ds.train.x.dtype == torch.float32 and ds.train.y.dtype == torch.int64
    assert torch.allclose(ds.train.x.mean(0), torch.zeros(1, 8, 8), atol=1e-5)
    assert set(ds.test.y.unique().tolist()) == set(range(10))
    x, y = ds.train.take(torch.tensor([3, 1]))
    assert torch.equal(ds.prepare(x, train=True), x) and torch.equal(y, ds.train.y[[3, 1]])
    # the test split is fixed: the same images whatever the seed or validation fraction
    other = load_dataset("digits", seed=5, val_fraction=0.0)
    assert torch.equal(other.test.y, ds.test.y) and len(other.val) == 0
    assert len(other.train) == 1437


def test_val_fraction_zero_gives_an_empty_validation_split():
    ds = load_dataset("digits", val_fraction=0)
    x, y = ds.val.take(torch.arange(0))
    assert len(ds.val) == 0 and x.shape == (0, 1, 8, 8) and y.shape == (0,)


@pytest.mark.parametrize("bad", [-0.1, 1.0, 1.5, "0.1"])
def test_bad_val_fraction(bad):
    with pytest.raises(ConfigError, match="val_fraction must be in"):
        load_dataset("digits", val_fraction=bad)


def test_unknown_dataset_lists_known_ones():
    with pytest.raises(ConfigError) as info:
        load_dataset("cifar")
    assert "unknown dataset 'cifar'" in str(info.value) and "cifar10" in str(info.value)


def test_data_root_argument_then_environment_then_home(monkeypatch, tmp_path):
    monkeypatch.setenv(ENV_VAR, str(tmp_path / "env"))
    assert data_root(tmp_path / "arg") == tmp_path / "arg"
    assert data_root(None) == tmp_path / "env"
    monkeypatch.delenv(ENV_VAR)
    assert data_root(None).parts[-2:] == (".dstlab", "data")


def test_loaders_use_the_environment_folder(monkeypatch, tmp_path):
    monkeypatch.setenv(ENV_VAR, str(tmp_path))
    with pytest.raises(DataError) as info:
        load_dataset("cifar10")
    assert str(info.value) == (
        "dataset 'cifar10' not found: expected the python version's pickle batches at "
        f"{tmp_path / 'cifar-10-batches-py' / 'data_batch_1'}; get it from "
        "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz (the data folder is "
        "--data-dir, else $DSTLAB_DATA, else ~/.dstlab/data)."
    )


def test_mnist1d_generation_is_local_seeded_and_leaves_global_rngs_alone():
    np.random.seed(123)
    random.seed(123)
    np_before, py_before = np.random.get_state()[1].copy(), random.getstate()
    a = generate_mnist1d(num_samples=200)
    assert np.array_equal(np.random.get_state()[1], np_before) and random.getstate() == py_before
    b = generate_mnist1d(num_samples=200)
    assert a["x"].shape == (160, 40) and a["x_test"].shape == (40, 40)
    assert np.array_equal(a["x"], b["x"]) and np.array_equal(a["y"], b["y"])
    assert set(np.unique(a["y"]).tolist()) == set(range(10))


@pytest.mark.slow
def test_mnist1d_dataset_and_its_cache(tmp_path):
    _mnist1d_arrays.cache_clear()
    ds = load_dataset("mnist1d", data_dir=tmp_path)
    assert (len(ds.train), len(ds.val), len(ds.test)) == (3600, 400, 1000)
    assert ds.input_shape == (40,) and ds.num_classes == 10
    cache = tmp_path / "mnist1d" / f"mnist1d_seed{MNIST1D_SEED}.npz"
    assert cache.exists()
    _mnist1d_arrays.cache_clear()
    again = load_dataset("mnist1d", data_dir=tmp_path)  # read back from the cache file
    assert torch.equal(again.train.x, ds.train.x) and torch.equal(again.test.y, ds.test.y)
    cache.write_bytes(b"broken")  # a damaged cache is regenerated, not trusted
    _mnist1d_arrays.cache_clear()
    assert torch.equal(load_dataset("mnist1d", data_dir=tmp_path).val.x, ds.val.x)


def test_split_last_sizes_and_views():
    x, y = torch.arange(50).view(50, 1), torch.arange(50)
    train, val = split_last(x, y, 0.1)
    assert (len(train), len(val)) == (45, 5) and val.y.tolist() == [45, 46, 47, 48, 49]
    assert train.x.data_ptr() == x.data_ptr()  # a view, nothing copied
    with pytest.raises(ConfigError):
        split_last(x, y, 1.0)


def test_split_last_per_class_holds_back_the_tail_of_each_class():
    labels = [0] * 10 + [1] * 5 + [2] * 20
    train, val = split_last_per_class(labels, 0.2)
    assert val == [8, 9, 14, 31, 32, 33, 34]
    assert sorted(train + val) == list(range(35))


def test_tensor_and_file_splits_take():
    s = TensorSplit(torch.arange(10) * 2, torch.arange(10))
    assert s.take(torch.tensor([9, 0]))[0].tolist() == [18, 0]
    with pytest.raises(ValueError):
        TensorSplit(torch.zeros(3), torch.zeros(4))
    f = FileSplit(["a", "b", "c"], torch.tensor([0, 1, 2]), lambda p: np.full((1, 2, 2), ord(p)))
    x, y = f.take(torch.tensor([2, 0]))
    assert x[:, 0, 0, 0].tolist() == [ord("c"), ord("a")] and y.tolist() == [2, 0]
