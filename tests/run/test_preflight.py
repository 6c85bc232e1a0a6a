"""A run's model and DST are built ahead on the meta device: a run that cannot start is one
sentence, and a grid of runs builds each architecture once."""

from __future__ import annotations

import pytest
from torch import nn

import dstlab.models
from dstlab.errors import ConfigError, MissingDependency
from dstlab.models import MODELS
from dstlab.models.registry import flat_size
from dstlab.run import RunConfig
from dstlab.run.preflight import BuildCheck, build_meta_model


def test_a_run_that_can_start_passes_and_its_model_is_on_the_meta_device():
    BuildCheck().check(RunConfig(model="resnet56", data="cifar10", density=0.05))
    assert all(p.is_meta for p in build_meta_model("resnet56", "cifar10").parameters())


@pytest.mark.parametrize(
    ("changes", "words"),
    [
        ({"model": "lenet5", "data": "higgs"}, "with dataset 'higgs', model 'lenet5' needs image"),
        ({"model": "vgg16", "data": "digits"}, "at least 16x16 pixels, got 8x8"),
        ({"model": "vgg16", "dropout": 0.1}, "has no dropout layers"),
        ({"dense_layers": ("nothing.*",)}, "match no sparsifiable parameter"),
    ],
)
def test_a_run_that_cannot_start_is_one_sentence(changes, words):
    # what needs no model (ranges, criteria without a score) RunConfig refuses already
    config = RunConfig(**{"model": "mlp", "data": "digits", **changes})
    with pytest.raises(ConfigError) as caught:
        BuildCheck().check(config)
    message = str(caught.value)
    assert words in message and "\n" not in message and message.endswith(".")


def test_an_optimizer_that_refuses_the_options_is_one_sentence(monkeypatch):
    # RunConfig checks lr, momentum and weight decay; a refusal torch adds later is still named
    def refuse(model, config):
        raise ValueError("Invalid beta parameter at index 0: 1.5")

    monkeypatch.setattr("dstlab.run.optim.make_optimizer", refuse)
    with pytest.raises(ConfigError) as caught:
        BuildCheck().check(RunConfig(model="mlp", data="digits"))
    assert str(caught.value) == (
        "the optimizer refuses these options: Invalid beta parameter at index 0: 1.5."
    )


def test_a_forward_pass_that_fails_or_gives_other_outputs_is_named():
    @MODELS.register("test_fixed_input")
    def fixed_input(input_shape=(100,), num_classes=10, dropout=0.0):
        return nn.Sequential(nn.Flatten(), nn.Linear(100, num_classes))

    @MODELS.register("test_ten_outputs")
    def ten_outputs(input_shape=(100,), num_classes=10, dropout=0.0):
        return nn.Sequential(nn.Flatten(), nn.Linear(flat_size(input_shape), 10))

    try:
        with pytest.raises(ConfigError, match=r"'test_fixed_input' cannot take the samples of"):
            build_meta_model("test_fixed_input", "digits")  # 64 features, not 100
        with pytest.raises(ConfigError, match=r"dataset 'cifar100' needs 100 \(one logit"):
            build_meta_model("test_ten_outputs", "cifar100")
        build_meta_model("test_ten_outputs", "cifar10")
    finally:
        MODELS._entries.pop("test_fixed_input")
        MODELS._entries.pop("test_ten_outputs")


def test_each_architecture_is_built_once_and_each_distinct_engine_once(monkeypatch):
    built = []
    real = dstlab.models.create_model

    def counting(name, **kwargs):
        built.append(name)
        return real(name, **kwargs)

    monkeypatch.setattr(dstlab.models, "create_model", counting)
    check = BuildCheck()
    for seed in range(5):
        for density in (0.1, 0.2):
            check.check(RunConfig(model="resnet56", data="cifar10", density=density, seed=seed))
    assert built == ["resnet56"]
    assert len(check._engines) == 2  # the seed decides nothing DST checks


def test_a_dataset_without_a_stated_shape_cannot_be_checked():
    from dstlab.data import DATASETS

    DATASETS.register("test_no_shape")(lambda root, **options: None)
    try:
        with pytest.raises(MissingDependency, match="registered without its sample shape"):
            BuildCheck().check(RunConfig(data="test_no_shape"))
    finally:
        DATASETS._entries.pop("test_no_shape")
