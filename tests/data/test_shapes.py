"""Every dataset states its sample shape and class count without being read, and the loader
agrees with it, so a run can be checked against its model before any data is loaded."""

import importlib.util

import pytest

from dstlab.data import DATASETS, dataset_shape, list_datasets, load_dataset
from dstlab.errors import ConfigError

from .writers import (
    higgs_frame,
    write_cifar10,
    write_cifar100,
    write_idx_set,
    write_imagenet,
    write_tiny_imagenet,
)

needs_pillow = pytest.mark.skipif(importlib.util.find_spec("PIL") is None, reason="needs Pillow")


def test_every_builtin_dataset_states_its_shape():
    for name in list_datasets():
        shape = dataset_shape(name)
        assert shape is not None and shape.num_classes >= 1 and min(shape.input_shape) >= 1


def _write_higgs(root):
    (root / "higgs").mkdir()
    higgs_frame(200).to_csv(root / "higgs" / "higgs.csv", index=False)


@pytest.mark.parametrize(
    ("name", "write"),
    [
        ("digits", lambda root: None),
        ("cifar10", write_cifar10),
        ("cifar100", write_cifar100),
        ("mnist", lambda root: write_idx_set(root / "mnist")),
        ("fashion_mnist", lambda root: write_idx_set(root / "fashion_mnist")),
        ("higgs", _write_higgs),
    ],
)
def test_the_stated_shape_is_what_the_loader_gives(tmp_path, name, write):
    write(tmp_path)
    ds = load_dataset(name, data_dir=tmp_path)
    shape = dataset_shape(name)
    assert (ds.input_shape, ds.num_classes) == (shape.input_shape, shape.num_classes)


@needs_pillow
@pytest.mark.parametrize(
    ("name", "write"), [("tiny_imagenet", write_tiny_imagenet), ("imagenet", write_imagenet)]
)
def test_image_folders_have_the_stated_sample_shape(tmp_path, name, write):
    # the class count comes from the folders; these small fakes have only a few classes
    write(tmp_path)
    assert load_dataset(name, data_dir=tmp_path).input_shape == dataset_shape(name).input_shape


def test_a_dataset_registered_without_a_shape_and_an_unknown_name():
    @DATASETS.register("test_shapeless")
    def load(root, **options):  # pragma: no cover - never loaded
        raise AssertionError

    try:
        assert dataset_shape("test_shapeless") is None
    finally:
        DATASETS._entries.pop("test_shapeless")
    with pytest.raises(ConfigError, match="did you mean 'cifar10'"):
        dataset_shape("cifar11")
