"""What each format stores for a layer, and the structure each format requires."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from dstlab.errors import ConfigError
from dstlab.export import export
from dstlab.export.formats import check_two_four
from dstlab.export.layers import sparse_layers

from .conftest import fan_in_masks, trained


def _mlp() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(12, 8), nn.ReLU(), nn.Linear(8, 3))


def test_dense_has_exact_zeros_where_inactive_and_the_weights_elsewhere():
    model, dst, _ = trained("mlp", (64,))
    state = export(model, dst, "dense")["state_dict"]
    assert state.keys() == model.state_dict().keys()
    for name, mask in dst.masks.items():
        weight = state[name]
        assert torch.equal(weight[~mask], torch.zeros(int((~mask).sum())))
        assert torch.equal(weight[mask], model.get_parameter(name).detach()[mask])


def test_the_masks_decide_the_structure_not_the_values():
    model = _mlp()
    mask = torch.zeros(8, 12, dtype=torch.bool)
    mask[:, :3] = True  # three inputs per output ...
    with torch.no_grad():
        model[0].weight.mul_(mask)
        model[0].weight[0, 0] = 0.0  # ... one of them active at exactly 0 (just grown)
    exported = export(model, masks={"0.weight": mask}, format="condensed")
    assert exported["state_dict"]["0.indices"].shape == (8, 3)
    assert exported["layers"] == {"0": "condensed"}  # 2.weight has no mask: stays as it is
    assert torch.equal(exported["state_dict"]["2.weight"], model[2].weight.detach())


def test_csr_holds_the_active_weights_with_int32_indices():
    model, dst, _ = trained("mlp", (64,))
    exported = export(model, dst, "csr")
    for name, mask in dst.masks.items():
        module = name.rpartition(".")[0]
        if mask.all():
            assert module not in exported["layers"]
            continue
        weight = exported["state_dict"][f"{module}.weight"]
        assert weight.layout == torch.sparse_csr and weight.col_indices().dtype == torch.int32
        assert torch.equal(weight.to_dense(), model.get_parameter(name).detach() * mask)
        assert weight._nnz() == int(mask.sum())


def test_condensed_with_constant_fan_in_stores_each_rows_inputs_in_order():
    model = _mlp()
    masks = fan_in_masks(model, 0.25)
    state = export(model, masks=masks, format="condensed")["state_dict"]
    values, indices = state["0.values"], state["0.indices"]
    assert values.shape == indices.shape == (8, 3)
    assert torch.equal(indices.sort(1).values, indices)  # ascending inside each row
    weight = model[0].weight.detach()
    assert torch.equal(weight.gather(1, indices.long()), values)
    assert torch.equal(masks["0.weight"].sum(1), torch.full((8,), 3))


def test_condensed_names_the_layer_and_its_fan_ins_and_pads_when_asked():
    model = _mlp()
    mask = torch.zeros(8, 12, dtype=torch.bool)
    mask[0, :5] = True
    mask[1:, :2] = True
    with pytest.raises(ConfigError) as error:
        export(model, masks={"0.weight": mask}, format="condensed")
    text = str(error.value)
    assert "'0'" in text and "from 2 to 5" in text and "structure='fan_in'" in text
    assert "pad=True" in text and text.count(".") <= 3  # one sentence (plus the option names)
    state = export(model, masks={"0.weight": mask}, format="condensed", pad=True)["state_dict"]
    assert state["0.values"].shape == (8, 5)
    assert int((state["0.values"] != 0).sum()) <= int(mask.sum())
    assert torch.equal(state["0.values"][1, 2:], torch.zeros(3))  # the padding weighs nothing


def test_two_four_pattern_is_checked_group_by_group():
    model = nn.Sequential(nn.Linear(8, 2))
    mask = torch.tensor([[1, 1, 0, 0, 0, 1, 0, 1], [0, 1, 1, 0, 1, 0, 0, 1]], dtype=torch.bool)
    (layer,) = sparse_layers(model, masks={"0.weight": mask})
    check_two_four(layer)  # every group of 4 keeps 2
    mask[1, 6] = True  # row 1, inputs 4-7 now keep 3
    (layer,) = sparse_layers(model, masks={"0.weight": mask})
    with pytest.raises(ConfigError, match=r"1 groups \(the first: row 1, inputs 4-7\).*2:4"):
        check_two_four(layer)
    odd = nn.Sequential(nn.Linear(6, 2))
    (layer,) = sparse_layers(odd, masks={"0.weight": torch.ones(2, 6, dtype=torch.bool)})
    with pytest.raises(ConfigError, match="6 inputs, not a multiple of 4"):
        check_two_four(layer)


@pytest.mark.skipif(
    torch.cuda.is_available() and torch.cuda.get_device_capability() >= (8, 0),
    reason="this machine has a GPU that holds 2:4 weights",
)
def test_semi_structured_without_such_a_gpu_is_one_sentence():
    model = _mlp()
    mask = torch.zeros(8, 12, dtype=torch.bool)
    mask[:, ::2] = True
    with pytest.raises(ConfigError) as error:
        export(model, masks={"0.weight": mask}, format="semi_structured")
    assert "compute capability 8.0" in str(error.value) and "\n" not in str(error.value)


def test_dense_layers_stay_dense_and_unknown_names_are_refused():
    model = _mlp()
    masks = fan_in_masks(model, 0.5)
    exported = export(model, masks=masks, format="csr", dense_layers=["2.*"])
    assert exported["layers"] == {"0": "csr"}
    assert exported["state_dict"]["2.weight"].layout == torch.strided
    with pytest.raises(ConfigError, match=r"\['fc9.weight'\] match no sparse weight"):
        export(model, masks=masks, format="csr", dense_layers=["fc9.weight"])


def test_bad_requests_are_one_sentence():
    model = _mlp()
    with pytest.raises(ConfigError, match="unknown export format 'coo'; choose one of dense"):
        export(model, format="coo")
    with pytest.raises(ConfigError, match="'0.bias' is not the weight of a module"):
        export(model, masks={"0.bias": torch.ones(8, dtype=torch.bool)}, format="csr")
    with pytest.raises(ConfigError, match="has 12 entries, the weight 96"):
        export(model, masks={"0.weight": torch.ones(12, dtype=torch.bool)}, format="csr")
    embedding = nn.Sequential(nn.Embedding(10, 4))
    mask = torch.rand(10, 4) > 0.5
    with pytest.raises(ConfigError, match="sparse Embedding, and csr stores only Linear and"):
        export(embedding, masks={"0.weight": mask}, format="csr")
    grouped = nn.Sequential(nn.Conv2d(4, 4, 3, groups=2))
    mask = torch.rand(grouped[0].weight.shape) > 0.5
    with pytest.raises(ConfigError, match="groups=2"):
        export(grouped, masks={"0.weight": mask}, format="condensed", pad=True)
