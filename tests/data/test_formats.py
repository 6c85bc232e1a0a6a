"""Every loader reads small files written in its dataset's exact on-disk format."""

import gzip
import importlib.util
import pickle

import numpy as np
import pytest
import torch

from dstlab.data import FileSplit, TensorSplit, load_dataset
from dstlab.data.higgs import stratified_split
from dstlab.errors import DataError

from .writers import (
    higgs_frame,
    idx_bytes,
    write_cifar10,
    write_cifar100,
    write_idx_set,
    write_imagenet,
    write_tiny_imagenet,
)

needs_pillow = pytest.mark.skipif(importlib.util.find_spec("PIL") is None, reason="needs Pillow")
needs_pyarrow = pytest.mark.skipif(
    importlib.util.find_spec("pyarrow") is None, reason="needs pyarrow"
)


def one_sentence(message: str) -> bool:
    return "\n" not in message and message.rstrip().endswith(".")


# ---- CIFAR ---------------------------------------------------------------------------------


def test_cifar10_pickle_batches(tmp_path):
    write_cifar10(tmp_path, per_batch=4, n_test=6)
    ds = load_dataset("cifar10", data_dir=tmp_path, val_fraction=0.25)
    assert (len(ds.train), len(ds.val), len(ds.test)) == (15, 5, 6)
    assert ds.input_shape == (3, 32, 32) and ds.num_classes == 10
    assert isinstance(ds.train, TensorSplit) and ds.train.x.dtype == torch.uint8
    # batch order kept, validation is the tail of data_batch_5; channel-major pixel layout
    x, y = ds.val.take(torch.tensor([0, 4]))
    assert y.tolist() == [15 % 10, 19 % 10]
    assert x[0, 1, 5, 5] == 15 * 3 + 1 and x[1, 2, 0, 0] == 19 * 3 + 2
    assert x[0, 0, 0, 1] == 200 and x[0, 0, 1, 0] == 45
    xt, yt = ds.test.take(torch.arange(6))
    assert yt.tolist() == [0, 1, 2, 3, 4, 5] and xt[0, 0, 3, 3] == 150


def test_cifar_prepare_normalises_and_augments_reproducibly(tmp_path):
    write_cifar10(tmp_path)
    ds = load_dataset("cifar10", data_dir=tmp_path)
    x, _ = ds.train.take(torch.arange(len(ds.train)))
    ev = ds.prepare(x, train=False)
    assert ev.dtype == torch.float32 and ev.shape == x.shape
    expected = (x[:, 0].float() / 255 - 0.4914) / 0.2023
    assert torch.allclose(ev[:, 0], expected, atol=1e-5)
    a = ds.prepare(x, train=True, generator=torch.Generator().manual_seed(0))
    b = ds.prepare(x, train=True, generator=torch.Generator().manual_seed(0))
    assert torch.equal(a, b) and not torch.equal(a, ev)
    off = load_dataset("cifar10", data_dir=tmp_path, augment=False)
    assert torch.equal(off.prepare(x, train=True, generator=torch.Generator()), ev)


def test_cifar100_fine_labels(tmp_path):
    write_cifar100(tmp_path, n_train=20, n_test=5)
    ds = load_dataset("cifar100", data_dir=tmp_path)
    assert (len(ds.train), len(ds.val), len(ds.test)) == (18, 2, 5) and ds.num_classes == 100
    assert ds.val.y.tolist() == [(18 * 7) % 100, (19 * 7) % 100]


def test_cifar_missing_batch_names_the_exact_file(tmp_path):
    write_cifar10(tmp_path)
    (tmp_path / "cifar-10-batches-py" / "data_batch_3").unlink()
    with pytest.raises(DataError) as info:
        load_dataset("cifar10", data_dir=tmp_path)
    msg = str(info.value)
    assert str(tmp_path / "cifar-10-batches-py" / "data_batch_3") in msg
    assert "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz" in msg and one_sentence(msg)


def test_cifar_batch_that_runs_code_is_refused(tmp_path):
    write_cifar10(tmp_path)

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    path = tmp_path / "cifar-10-batches-py" / "test_batch"
    path.write_bytes(pickle.dumps({b"data": Evil(), b"labels": []}))
    with pytest.raises(DataError, match="not a readable CIFAR python batch"):
        load_dataset("cifar10", data_dir=tmp_path)


# ---- MNIST / Fashion-MNIST (IDX) ----------------------------------------------------------


@pytest.mark.parametrize("gz", [True, False])
@pytest.mark.parametrize(
    ("name", "folder"), [("mnist", "mnist"), ("fashion_mnist", "fashion_mnist")]
)
def test_idx_files_gzipped_or_raw(tmp_path, name, folder, gz):
    arrays = write_idx_set(tmp_path / folder, n_train=30, n_test=10, gz=gz)
    ds = load_dataset(name, data_dir=tmp_path, val_fraction=0.1)
    assert (len(ds.train), len(ds.val), len(ds.test)) == (27, 3, 10)
    assert ds.input_shape == (1, 28, 28) and ds.num_classes == 10
    x, y = ds.val.take(torch.arange(3))
    assert x.dtype == torch.uint8
    assert np.array_equal(x[:, 0].numpy(), arrays["train-images-idx3-ubyte"][27:])
    assert y.tolist() == [7, 8, 9]
    assert ds.test.y.tolist() == list(arrays["t10k-labels-idx1-ubyte"])
    out = ds.prepare(x, train=True)
    assert out.dtype == torch.float32 and out.shape == (3, 1, 28, 28)


def test_idx_in_torchvision_layout(tmp_path):
    write_idx_set(tmp_path / "FashionMNIST" / "raw", gz=False)
    ds = load_dataset("fashion_mnist", data_dir=tmp_path)
    x, _ = ds.test.take(torch.arange(2))
    assert torch.allclose(ds.prepare(x, train=False), x.float() / 255 * 2 - 1, atol=1e-6)


def test_idx_truncated_or_bad_magic(tmp_path):
    write_idx_set(tmp_path / "mnist", gz=False)
    path = tmp_path / "mnist" / "t10k-images-idx3-ubyte"
    path.write_bytes(path.read_bytes()[:-5])
    with pytest.raises(DataError, match="data bytes") as info:
        load_dataset("mnist", data_dir=tmp_path)
    assert one_sentence(str(info.value))
    path.write_bytes(b"\x08\x00" + idx_bytes(np.zeros((1, 28, 28)))[2:])
    with pytest.raises(DataError, match="bad magic"):
        load_dataset("mnist", data_dir=tmp_path)
    path.unlink()  # a broken gzip is also one sentence
    (tmp_path / "mnist" / "t10k-images-idx3-ubyte.gz").write_bytes(gzip.compress(b"x")[:-3])
    with pytest.raises(DataError, match="could not be read"):
        load_dataset("mnist", data_dir=tmp_path)


def test_idx_missing_file_names_path_and_url(tmp_path):
    write_idx_set(tmp_path / "mnist")
    (tmp_path / "mnist" / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(DataError) as info:
        load_dataset("mnist", data_dir=tmp_path)
    msg = str(info.value)
    assert str(tmp_path / "mnist" / "t10k-labels-idx1-ubyte") in msg
    assert "yann.lecun.com/exdb/mnist" in msg and one_sentence(msg)


# ---- Higgs (CSV / Parquet) ----------------------------------------------------------------


def check_higgs(ds, frame):
    n = len(frame)
    assert (
        (len(ds.train), len(ds.val), len(ds.test)) == (140, 30, 30) == (0.7 * n, 0.15 * n, 0.15 * n)
    )
    assert ds.input_shape == (24,) and ds.num_classes == 1
    for split in (ds.train, ds.val, ds.test):
        assert split.y.dtype == torch.float32 and set(split.y.unique().tolist()) <= {0.0, 1.0}
        assert split.y.mean().item() == pytest.approx(0.25, abs=0.02)  # stratified
    assert torch.allclose(ds.train.x.mean(0), torch.zeros(24), atol=1e-5)  # train statistics
    x, _ = ds.train.take(torch.arange(4))
    assert ds.prepare(x, train=True).dtype == torch.float32


def test_higgs_csv_stratified_70_15_15(tmp_path):
    frame = higgs_frame(200)
    (tmp_path / "higgs").mkdir()
    frame.to_csv(tmp_path / "higgs" / "higgs.csv", index=False)
    ds = load_dataset("higgs", data_dir=tmp_path, seed=1)
    check_higgs(ds, frame)
    # the split is the study's fixed one: every run seed is tested on the same rows
    other = load_dataset("higgs", data_dir=tmp_path, seed=2)
    assert torch.equal(ds.test.x, other.test.x)


def test_higgs_split_partitions_the_rows():
    y = (np.arange(1000) % 3 == 0).astype(np.float32)
    tr, va, te = stratified_split(y, seed=0)
    assert sorted(np.concatenate([tr, va, te]).tolist()) == list(range(1000))
    assert (len(tr), len(va), len(te)) == (700, 150, 150)
    for part in (tr, va, te):
        assert y[part].mean() == pytest.approx(1 / 3, abs=0.01)


@needs_pyarrow
def test_higgs_parquet(tmp_path):
    frame = higgs_frame(200)
    frame["target"] = frame["target"].astype(int)
    (tmp_path / "higgs").mkdir()
    frame.to_parquet(tmp_path / "higgs" / "higgs.parquet")
    check_higgs(load_dataset("higgs", data_dir=tmp_path), frame)


def test_higgs_bad_tables(tmp_path):
    (tmp_path / "higgs").mkdir()
    path = tmp_path / "higgs" / "higgs.csv"
    frame = higgs_frame(40).rename(columns={"target": "y"})
    frame.to_csv(path, index=False)
    with pytest.raises(DataError, match="no target column"):
        load_dataset("higgs", data_dir=tmp_path)
    frame = higgs_frame(40)
    frame["target"] = [str(i % 3) for i in range(40)]
    frame.to_csv(path, index=False)
    with pytest.raises(DataError, match="has 3 values"):
        load_dataset("higgs", data_dir=tmp_path)


def test_higgs_missing_names_folder_and_openml_task(tmp_path):
    with pytest.raises(DataError) as info:
        load_dataset("higgs", data_dir=tmp_path)
    msg = str(info.value)
    assert str(tmp_path / "higgs") in msg and "openml.org/t/361069" in msg and one_sentence(msg)


# ---- Tiny-ImageNet and ImageNet (image folders) ---------------------------------------------


@needs_pillow
def test_tiny_imagenet_folder_layout(tmp_path):
    write_tiny_imagenet(tmp_path, wnids=("n02", "n01", "n03"), per_class=10)
    ds = load_dataset("tiny_imagenet", data_dir=tmp_path, val_fraction=0.2)
    assert ds.num_classes == 3 and ds.input_shape == (3, 64, 64)
    assert (len(ds.train), len(ds.val), len(ds.test)) == (24, 6, 6)
    assert ds.train.x.dtype == torch.uint8 and ds.train.x.shape[1:] == (3, 64, 64)
    # classes are the sorted wnids; validation = the last 20 % of each class
    assert ds.val.y.tolist() == [0, 0, 1, 1, 2, 2]
    assert ds.test.y.tolist() == [1, 0, 2, 1, 0, 2]
    red = ds.train.x[ds.train.y == 2][:, 0].float().mean()  # n03 had red 40 * 2 + 20
    assert abs(red.item() - 100) < 4
    gray = ds.test.x[0].float()  # the grayscale file became three equal channels
    assert torch.allclose(gray[0], gray[1], atol=1) and torch.allclose(gray[1], gray[2], atol=1)
    x, _ = ds.train.take(torch.arange(4))
    g = torch.Generator().manual_seed(0)
    assert ds.prepare(x, train=True, generator=g).shape == (4, 3, 64, 64)


@needs_pillow
def test_tiny_imagenet_incomplete_folder(tmp_path):
    folder = write_tiny_imagenet(tmp_path)
    (folder / "val" / "val_annotations.txt").unlink()
    with pytest.raises(DataError) as info:
        load_dataset("tiny_imagenet", data_dir=tmp_path)
    assert str(folder / "val" / "val_annotations.txt") in str(info.value)
    assert "tiny-imagenet-200.zip" in str(info.value) and one_sentence(str(info.value))


@needs_pillow
def test_imagenet_streams_files_in_take(tmp_path):
    write_imagenet(tmp_path, classes=("n001", "n002"), per_class=5)
    ds = load_dataset("imagenet", data_dir=tmp_path, val_fraction=0.2)
    assert isinstance(ds.train, FileSplit) and ds.num_classes == 2
    assert (len(ds.train), len(ds.val), len(ds.test)) == (8, 2, 4)
    assert ds.val.y.tolist() == [0, 1] and ds.input_shape == (3, 224, 224)
    x, y = ds.train.take(torch.tensor([0, 5]))
    assert x.dtype == torch.uint8 and x.shape == (2, 3, 256, 256) and y.tolist() == [0, 1]
    assert abs(x[1, 0].float().mean().item() - 60) < 4  # class n002's red channel
    g = torch.Generator().manual_seed(0)
    assert ds.prepare(x, train=True, generator=g).shape == (2, 3, 224, 224)
    assert ds.prepare(x, train=False).shape == (2, 3, 224, 224)
    pickle.loads(pickle.dumps(ds.train))  # picklable even after its thread pool started


def test_imagenet_missing(tmp_path):
    with pytest.raises(DataError) as info:
        load_dataset("imagenet", data_dir=tmp_path)
    assert str(tmp_path / "imagenet" / "train") in str(info.value) and one_sentence(str(info.value))
