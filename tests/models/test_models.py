"""Every model: parameter counts from the architecture definitions, forward on its data shape."""

import sys
import types

import pytest
import torch

from dstlab.errors import ConfigError
from dstlab.models import create_model, list_models


def sparse_count(model: torch.nn.Module) -> int:
    """Weights that carry a mask in DST: every parameter with two or more dimensions."""
    return sum(p.numel() for p in model.parameters() if p.dim() >= 2)


def total_count(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def conv(c_in, c_out, k, bias=True):
    return c_in * c_out * k * k, (c_out if bias else 0)


def fc(n_in, n_out):
    return n_in * n_out, n_out


def resnet_cifar(classes, blocks=9, widths=(16, 32, 64)):
    """(weights, other) of the study's CIFAR ResNet counted layer by layer."""
    layers = [conv(3, widths[0], 3, bias=False), (0, 2 * widths[0])]  # stem + BN
    c_in = widths[0]
    for w in widths:
        for _ in range(blocks):
            layers += [conv(c_in, w, 3, False), (0, 2 * w), conv(w, w, 3, False), (0, 2 * w)]
            if c_in != w:
                layers += [conv(c_in, w, 1, False), (0, 2 * w)]
            c_in = w
    layers.append(fc(c_in, classes))
    return sum(a for a, _ in layers), sum(b for _, b in layers)


def vgg16(classes):
    plan = [64, 64, 128, 128, 256, 256, 256, 512, 512, 512, 512, 512, 512]
    layers, c_in = [], 3
    for w in plan:
        layers += [conv(c_in, w, 3, False), (0, 2 * w)]
        c_in = w
    layers.append(fc(512, classes))
    return sum(a for a, _ in layers), sum(b for _, b in layers)


def mlp(sizes):
    layers = [fc(a, b) for a, b in zip(sizes[:-1], sizes[1:], strict=True)]
    return sum(a for a, _ in layers), sum(b for _, b in layers)


def lenet5():
    layers = [conv(1, 20, 5), conv(20, 50, 5), fc(800, 500), fc(500, 10)]
    return sum(a for a, _ in layers), sum(b for _, b in layers)


def small_conv():
    layers = [conv(3, 32, 3), conv(32, 64, 3), conv(64, 128, 3), fc(128, 10)]
    return sum(a for a, _ in layers), sum(b for _, b in layers)


# name, input shape, classes, (sparse weights, other params) from the definitions, literal total
CASES = [
    ("mlp_cifar10", (3, 32, 32), 10, mlp([3072, 1024, 512, 10]), 3_676_682),
    ("lenet5", (1, 28, 28), 10, lenet5(), 431_080),
    ("mlp_higgs", (24,), 1, mlp([24, 256, 256, 1]), 72_449),
    ("small_conv", (3, 32, 32), 10, small_conv(), 94_538),
    ("resnet56", (3, 32, 32), 10, resnet_cifar(10), 855_770),
    ("resnet56", (3, 32, 32), 100, resnet_cifar(100), 861_620),
    ("vgg16", (3, 32, 32), 100, vgg16(100), 14_770_212),
    ("vgg16", (3, 64, 64), 200, vgg16(200), 14_821_512),
    ("mlp", (1, 8, 8), 10, mlp([64, 256, 256, 10]), 85_002),
    ("mlp", (40,), 10, mlp([40, 256, 256, 10]), 78_858),
]


def test_mlp_cifar10_has_the_studys_sparse_weight_count():
    assert sparse_count(create_model("mlp_cifar10")) == 3_675_136


@pytest.mark.parametrize(("name", "shape", "classes", "counts", "total"), CASES)
def test_parameter_counts_and_forward(name, shape, classes, counts, total):
    torch.manual_seed(0)
    model = create_model(name, input_shape=shape, num_classes=classes)
    weights, other = counts
    assert sparse_count(model) == weights
    assert total_count(model) == weights + other == total
    model.eval()
    with torch.no_grad():
        out = model(torch.randn(2, *shape))
    assert out.shape == (2, classes) and torch.isfinite(out).all()


def test_defaults_follow_the_studys_data():
    assert create_model("mlp_higgs")(torch.randn(3, 24)).shape == (3, 1)
    assert create_model("lenet5")(torch.randn(3, 1, 28, 28)).shape == (3, 10)
    assert create_model("vgg16")(torch.randn(2, 3, 32, 32)).shape == (2, 100)


def test_mlp_dropout_on_input_and_hidden_layers():
    model = create_model("mlp_cifar10", dropout=0.5)
    x = torch.randn(4, 3, 32, 32)
    model.eval()
    assert torch.equal(model(x), model(x))  # eval: dropout off
    model.train()
    torch.manual_seed(0)
    a = model(x)
    torch.manual_seed(1)
    assert not torch.equal(a, model(x))
    # zero dropout is exactly the plain MLP
    plain = create_model("mlp_cifar10", dropout=0.0).train()
    plain.load_state_dict(model.state_dict())
    assert torch.equal(plain(x), plain.eval()(x))


def test_mlp_flattens_any_shape():
    model = create_model("mlp", input_shape=(2, 3, 4), num_classes=5)
    assert model(torch.randn(7, 2, 3, 4)).shape == (7, 5)


def test_list_models_names_every_model():
    assert set(list_models()) >= {
        "mlp", "mlp_cifar10", "lenet5", "mlp_higgs", "small_conv", "resnet56", "vgg16",
        "efficientnet_b0", "resnet50",
    }  # fmt: skip


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"name": "resnet5"}, "unknown model 'resnet5'"),
        ({"name": "lenet5", "input_shape": (40,)}, "needs image input"),
        ({"name": "lenet5", "input_shape": (1, 8, 8)}, "at least 16x16"),
        ({"name": "small_conv", "input_shape": (3, 16, 16)}, "at least 18x18"),
        ({"name": "resnet56", "dropout": 0.1}, "no dropout layers"),
        ({"name": "mlp", "dropout": 1.0}, "dropout must be in [0, 1)"),
        ({"name": "mlp", "num_classes": 0}, "num_classes must be at least 1"),
        ({"name": "mlp", "input_shape": (0, 3)}, "input_shape must be positive"),
    ],
)
def test_bad_inputs_are_one_sentence(kwargs, needle):
    with pytest.raises(ConfigError) as info:
        create_model(**kwargs)
    assert needle in str(info.value) and "\n" not in str(info.value)


def test_torchvision_models_without_torchvision(monkeypatch):
    monkeypatch.setitem(sys.modules, "torchvision", None)  # import fails as if not installed
    monkeypatch.setitem(sys.modules, "torchvision.models", None)
    for name in ("efficientnet_b0", "resnet50"):
        with pytest.raises(ConfigError, match=r"pip install dstlab\[vision\]"):
            create_model(name)


def test_torchvision_models_are_built_from_scratch_with_the_dataset_head(monkeypatch):
    calls = {}

    def fake(name):
        def build(**kwargs):
            calls[name] = kwargs
            return torch.nn.Linear(1, kwargs["num_classes"])

        return build

    tv = types.ModuleType("torchvision")
    tv.models = types.ModuleType("torchvision.models")
    tv.models.efficientnet_b0 = fake("efficientnet_b0")
    tv.models.resnet50 = fake("resnet50")
    monkeypatch.setitem(sys.modules, "torchvision", tv)
    monkeypatch.setitem(sys.modules, "torchvision.models", tv.models)
    create_model("efficientnet_b0", input_shape=(3, 64, 64), num_classes=200, dropout=0.2)
    create_model("resnet50", input_shape=(3, 224, 224), num_classes=1000)
    assert calls["efficientnet_b0"] == {"weights": None, "num_classes": 200, "dropout": 0.2}
    assert calls["resnet50"] == {"weights": None, "num_classes": 1000}
    with pytest.raises(ConfigError, match="needs image input"):
        create_model("resnet50", input_shape=(24,))


def test_resnet56_and_vgg16_start_as_the_studys_models():
    torch.manual_seed(0)
    resnet = create_model("resnet56", input_shape=(3, 32, 32), num_classes=10)
    # He-normal by fan-in: std sqrt(2 / fan_in), checked where fan-in and fan-out differ
    stem = resnet.conv.weight  # 3 -> 16, 3x3: fan-in 27, fan-out 144
    assert abs(stem.std().item() / (2 / 27) ** 0.5 - 1) < 0.15
    fc = resnet.fc.weight  # 64 -> 10
    assert abs(fc.std().item() / (2 / 64) ** 0.5 - 1) < 0.15
    vgg = create_model("vgg16", input_shape=(3, 32, 32), num_classes=100)
    first = vgg.features[0].weight  # 3 -> 64, 3x3: fan-out 576
    assert abs(first.std().item() / (2 / 576) ** 0.5 - 1) < 0.15
    assert abs(vgg.classifier.weight.std().item() / 0.01 - 1) < 0.1
    assert torch.count_nonzero(vgg.classifier.bias) == 0
