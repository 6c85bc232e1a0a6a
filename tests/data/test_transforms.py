"""Batch augmentation and normalisation: exact, vectorised, reproducible from a generator."""

import pytest
import torch
import torch.nn.functional as F

from dstlab.data.transforms import FloatInput, ImageInput, ResizedCropInput, crop_flip, normalize


def images(b=16, c=3, h=32, w=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (b, c, h, w), generator=g, dtype=torch.int64).to(torch.uint8)


def reference_crop_flip(x, pad, mode, seed):
    """Per-sample loop with F.pad + slicing + flip, drawing the same numbers in the same order."""
    g = torch.Generator().manual_seed(seed)
    b, _, h, w = x.shape
    oy = torch.randint(0, 2 * pad + 1, (b,), generator=g)
    ox = torch.randint(0, 2 * pad + 1, (b,), generator=g)
    fl = torch.randint(0, 2, (b,), generator=g)
    mode = "constant" if mode == "zeros" else mode
    padded = F.pad(x.float(), (pad,) * 4, mode=mode)
    out = []
    for i in range(b):
        crop = padded[i, :, oy[i] : oy[i] + h, ox[i] : ox[i] + w]
        out.append(crop.flip(-1) if fl[i] else crop)
    return torch.stack(out).to(torch.uint8)


@pytest.mark.parametrize("mode", ["zeros", "reflect"])
@pytest.mark.parametrize("shape", [(16, 3, 32, 32), (5, 1, 9, 7)])
def test_crop_flip_equals_pad_crop_flip_per_sample(mode, shape):
    x = images(*shape)
    got = crop_flip(x, 4, mode, True, torch.Generator().manual_seed(3))
    assert got.dtype == torch.uint8 and got.shape == x.shape
    assert torch.equal(got, reference_crop_flip(x, 4, mode, 3))


def test_crop_flip_is_reproducible_and_varies_with_the_seed():
    x = images(64)
    a = crop_flip(x, 4, "zeros", True, torch.Generator().manual_seed(7))
    b = crop_flip(x, 4, "zeros", True, torch.Generator().manual_seed(7))
    c = crop_flip(x, 4, "zeros", True, torch.Generator().manual_seed(8))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert not torch.equal(a, x)  # something moved


def test_crop_flip_without_padding_or_flip_is_identity():
    x = images(8)
    assert torch.equal(crop_flip(x, 0, "zeros", False, torch.Generator().manual_seed(0)), x)


def test_normalize_is_per_channel():
    x = torch.full((2, 3, 4, 4), 255, dtype=torch.uint8)
    out = normalize(x, (0.5, 0.0, 1.0), (0.5, 1.0, 2.0))
    assert out.dtype == torch.float32
    assert torch.allclose(out[:, 0], torch.tensor(1.0)) and torch.allclose(
        out[:, 1], torch.tensor(1.0)
    )
    assert torch.allclose(out[:, 2], torch.tensor(0.0), atol=1e-6)


def test_image_input_augments_only_in_training():
    pre = ImageInput(mean=(0.5,) * 3, std=(0.25,) * 3, pad=4, flip=True)
    x = images(32)
    plain = normalize(x, pre.mean, pre.std)
    assert torch.equal(pre(x, train=False), plain)
    g1, g2 = torch.Generator().manual_seed(1), torch.Generator().manual_seed(1)
    a, b = pre(x, train=True, generator=g1), pre(x, train=True, generator=g2)
    assert torch.equal(a, b) and not torch.equal(a, plain)


def test_float_input_only_casts():
    x = torch.randn(3, 5, dtype=torch.float64)
    assert torch.equal(FloatInput()(x, train=True), x.float())


def test_resized_crop_input_shapes_reproducibility_and_centre_crop():
    pre = ResizedCropInput(mean=(0.5,) * 3, std=(0.5,) * 3, size=24)
    x = images(6, h=32, w=32)
    ev = pre(x, train=False)
    assert ev.shape == (6, 3, 24, 24)
    assert torch.equal(ev, normalize(x[..., 4:28, 4:28], pre.mean, pre.std))
    a = pre(x, train=True, generator=torch.Generator().manual_seed(0))
    b = pre(x, train=True, generator=torch.Generator().manual_seed(0))
    c = pre(x, train=True, generator=torch.Generator().manual_seed(1))
    assert a.shape == (6, 3, 24, 24) and torch.equal(a, b) and not torch.equal(a, c)
    assert a.min() >= -1.0 - 1e-5 and a.max() <= 1.0 + 1e-5  # interpolated pixels stay in range


def test_resized_crop_of_the_whole_image_is_a_resize_or_its_mirror():
    # area 1 and aspect 1: the crop is the whole image, sampled at the output size
    pre = ResizedCropInput(mean=(0.0,), std=(1 / 255,), size=8, scale=(1.0, 1.0), ratio=(1.0, 1.0))
    x = images(10, c=1, h=8, w=8)
    out = pre(x, train=True, generator=torch.Generator().manual_seed(0))
    for i in range(10):
        same, mirrored = x[i].float(), x[i].float().flip(-1)
        assert torch.allclose(out[i], same, atol=1e-3) or torch.allclose(
            out[i], mirrored, atol=1e-3
        )


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_augmentation_on_cuda_matches_cpu_for_the_same_cpu_generator():
    pre = ImageInput(mean=(0.5,) * 3, std=(0.25,) * 3, pad=4, pad_mode="reflect", flip=True)
    x = images(32)
    cpu = pre(x, train=True, generator=torch.Generator().manual_seed(0))
    gpu = pre(x.cuda(), train=True, generator=torch.Generator().manual_seed(0))
    assert gpu.device.type == "cuda" and torch.allclose(gpu.cpu(), cpu, atol=1e-5)
