"""The small parts of a run: learning-rate schedule, optimizers, the loss of a batch,
run-directory files."""

from __future__ import annotations

import math

import pytest
import torch

from dstlab.errors import ConfigError
from dstlab.run import RunConfig
from dstlab.run.config_file import read_config_file
from dstlab.run.files import MetricsLog, read_metrics, write_json
from dstlab.run.losses import batch_loss
from dstlab.run.optim import lr_at, make_optimizer


def test_step_schedule_divides_by_ten_at_half_and_three_quarters():
    c = RunConfig(epochs=100, lr=0.1, lr_schedule="step")
    lrs = [lr_at(epoch * 10, 10, c) for epoch in (0, 49, 50, 74, 75, 99)]
    assert lrs == pytest.approx([0.1, 0.1, 0.01, 0.01, 0.001, 0.001])


def test_warmup_then_cosine_and_constant():
    c = RunConfig(epochs=10, lr=1.0, lr_schedule="cosine", warmup_epochs=2)
    assert lr_at(0, 5, c) == pytest.approx(0.1)
    assert lr_at(9, 5, c) == pytest.approx(1.0)
    assert lr_at(10, 5, c) == pytest.approx(1.0)
    assert lr_at(30, 5, c) == pytest.approx(0.5)
    # the last step is 39/40 of the way through the cosine: (1 + cos(39π/40))/2 = sin²(π/80)
    assert lr_at(49, 5, c) == pytest.approx(math.sin(math.pi / 80) ** 2)
    assert lr_at(37, 5, c.replace(lr_schedule="constant")) == 1.0


@pytest.mark.parametrize(
    "name, cls",
    [("sgd", torch.optim.SGD), ("adam", torch.optim.Adam), ("adamw", torch.optim.AdamW)],
)
def test_optimizers_take_the_config(name, cls):
    model = torch.nn.Linear(3, 2)
    opt = make_optimizer(model, RunConfig(optimizer=name, lr=0.2, weight_decay=0.01))
    assert isinstance(opt, cls)
    assert opt.param_groups[0]["lr"] == 0.2 and opt.param_groups[0]["weight_decay"] == 0.01
    if name == "sgd":
        assert opt.param_groups[0]["nesterov"] and opt.param_groups[0]["momentum"] == 0.9
        no_momentum = make_optimizer(model, RunConfig(momentum=0.0))
        assert not no_momentum.param_groups[0]["nesterov"]


# logits (ln 3, 0): softmax (3/4, 1/4), and sigmoid(ln 3) = 3/4
LOGITS = torch.tensor([[math.log(3), 0.0], [math.log(3), 0.0]])


def test_batch_loss_is_cross_entropy_with_a_count_of_correct_predictions():
    y = torch.tensor([0, 1])  # the first right (loss ln 4/3), the second wrong (loss ln 4)
    loss, correct = batch_loss(LOGITS, y, binary=False)
    assert loss.item() == pytest.approx((math.log(4 / 3) + math.log(4)) / 2)
    assert correct.item() == 1
    total, _ = batch_loss(LOGITS, y, binary=False, reduction="sum")
    assert total.item() == pytest.approx(math.log(16 / 3))


def test_batch_loss_binary_reads_one_logit_against_one_half():
    out = torch.tensor([[math.log(3)], [math.log(3)], [-1.0]])
    y = torch.tensor([1, 0, 0])  # right, wrong, right
    loss, correct = batch_loss(out, y, binary=True, reduction="sum")
    # -ln σ(ln 3) - ln(1 - σ(ln 3)) - ln(1 - σ(-1)) = ln 4/3 + ln 4 + ln(1 + e^-1)
    assert loss.item() == pytest.approx(math.log(4 / 3) + math.log(4) + math.log(1 + math.e**-1))
    assert correct.item() == 2


def test_label_smoothing_moves_the_target_towards_uniform():
    # smoothing 0.2 over two classes, or on one logit: the target (0.9, 0.1)
    expected = 0.9 * math.log(4 / 3) + 0.1 * math.log(4)
    loss, _ = batch_loss(LOGITS[:1], torch.tensor([0]), binary=False, smoothing=0.2)
    assert loss.item() == pytest.approx(expected)
    loss, _ = batch_loss(LOGITS[:1, :1], torch.tensor([1]), binary=True, smoothing=0.2)
    assert loss.item() == pytest.approx(expected)


def test_metrics_log_cuts_back_to_a_checkpointed_length(tmp_path):
    path = tmp_path / "metrics.jsonl"
    log = MetricsLog(path)
    log.write({"kind": "epoch", "epoch": 1, "loss": float("nan")})
    kept = log.sync()
    log.write({"kind": "epoch", "epoch": 2})
    log.close()
    assert len(read_metrics(path)) == 2
    again = MetricsLog(path, keep_bytes=kept)
    again.write({"kind": "epoch", "epoch": 3})
    again.close()
    assert read_metrics(path) == [
        {"kind": "epoch", "epoch": 1, "loss": None},
        {"kind": "epoch", "epoch": 3},
    ]


def test_atomic_json_write_leaves_no_temporary_file(tmp_path):
    write_json(tmp_path / "result.json", {"a": float("inf"), "b": (1, 2)})
    assert (tmp_path / "result.json").read_text().replace(" ", "").replace("\n", "") == (
        '{"a":null,"b":[1,2]}'
    )
    assert [p.name for p in tmp_path.iterdir()] == ["result.json"]


@pytest.mark.parametrize(
    "text, message",
    [
        ("epochs: [1\n", "not valid YAML at line"),
        ("- 1\n- 2\n", "must hold a mapping"),
    ],
)
def test_bad_config_files_are_one_sentence(tmp_path, text, message):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message):
        read_config_file(path)


def test_missing_config_file(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        read_config_file(tmp_path / "nope.yaml")
    (tmp_path / "empty.yaml").write_text("")
    assert read_config_file(tmp_path / "empty.yaml") == {}


def test_config_checks_added_for_runs():
    with pytest.raises(ConfigError, match="start_similarity needs"):
        RunConfig(mode="dense", start_similarity=(0.5,))
    with pytest.raises(ConfigError, match="warmup_epochs"):
        RunConfig(epochs=3, warmup_epochs=3)
    with pytest.raises(ConfigError, match=r"each of start_similarity must be a number in \(0, 1\]"):
        RunConfig(start_similarity=(1.5,))


def test_lr_milestones_replace_half_and_three_quarters_after_warmup():
    # the study's ImageNet schedule: 5 warm-up epochs, then ×0.1 at epochs 30, 60 and 80
    c = RunConfig.from_dict(
        {"epochs": 90, "lr": 0.1, "warmup_epochs": 5, "lr_milestones": "30,60,80"}
    )
    assert c.lr_milestones == (30, 60, 80)
    lrs = [lr_at(epoch * 10, 10, c) for epoch in (5, 29, 30, 59, 60, 79, 80, 89)]
    assert lrs == pytest.approx([0.1, 0.1, 0.01, 0.01, 1e-3, 1e-3, 1e-4, 1e-4])
    assert lr_at(0, 10, c) == pytest.approx(0.1 / 50)


@pytest.mark.parametrize(
    "values",
    [
        {"lr_milestones": [60, 30]},
        {"lr_milestones": [30, 30]},
        {"lr_milestones": [0, 30]},
        {"lr_milestones": [90]},
        {"lr_milestones": [30], "lr_schedule": "cosine"},
    ],
)
def test_bad_lr_milestones_are_one_sentence(values):
    with pytest.raises(ConfigError, match="lr_milestones must be increasing epochs"):
        RunConfig.from_dict({"epochs": 90, **values})


def test_bn_weight_decay_off_exempts_only_batch_norm_parameters():
    model = torch.nn.Sequential(
        torch.nn.Conv2d(3, 4, 3),
        torch.nn.BatchNorm2d(4),
        torch.nn.Flatten(),
        torch.nn.LazyLinear(2),
    )
    model(torch.zeros(2, 3, 5, 5))
    on = make_optimizer(model, RunConfig(weight_decay=1e-4))
    assert [g["weight_decay"] for g in on.param_groups] == [1e-4]
    off = make_optimizer(model, RunConfig(weight_decay=1e-4, bn_weight_decay=False))
    decayed, exempt = off.param_groups
    assert decayed["weight_decay"] == 1e-4 and exempt["weight_decay"] == 0.0
    bn = model[1]
    assert {id(p) for p in exempt["params"]} == {id(bn.weight), id(bn.bias)}
    assert len(decayed["params"]) == 4  # conv and linear weights and biases
    # a model without batch norm keeps a single group
    linear = make_optimizer(torch.nn.Linear(3, 2), RunConfig(bn_weight_decay=False))
    assert len(linear.param_groups) == 1
