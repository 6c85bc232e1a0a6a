"""Batch preprocessing: a batch from ``Split.take`` -> float32 model input.

Augmentation works on whole uint8 batches with index arithmetic (no per-sample Python), and
draws all its randomness from the ``torch.Generator`` it is given, so a seeded generator
reproduces it exactly."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F


def _draw_device(generator: torch.Generator | None) -> torch.device:
    return generator.device if generator is not None else torch.device("cpu")


@dataclass(frozen=True)
class FloatInput:
    """Features already scaled at load time: only made float32."""

    def __call__(
        self, x: torch.Tensor, train: bool = False, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        return x.to(torch.float32)


@dataclass(frozen=True)
class ImageInput:
    """uint8 images (B, C, H, W) -> float, normalised per channel; in training optionally a
    random crop from the image padded by ``pad`` pixels (``zeros`` or ``reflect``) and a
    random horizontal flip."""

    mean: tuple[float, ...]
    std: tuple[float, ...]
    pad: int = 0
    pad_mode: str = "zeros"
    flip: bool = False

    def __call__(
        self, x: torch.Tensor, train: bool = False, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        if train and (self.pad or self.flip):
            x = crop_flip(x, self.pad, self.pad_mode, self.flip, generator)
        return normalize(x, self.mean, self.std)


def normalize(x: torch.Tensor, mean: tuple[float, ...], std: tuple[float, ...]) -> torch.Tensor:
    """uint8 in [0, 255] -> (x / 255 - mean) / std per channel, in one fused multiply-add."""
    scale = torch.tensor([1.0 / (255.0 * s) for s in std], device=x.device).view(1, -1, 1, 1)
    shift = torch.tensor([-m / s for m, s in zip(mean, std, strict=True)], device=x.device)
    return torch.addcmul(shift.view(1, -1, 1, 1), x.to(torch.float32), scale)


def crop_flip(
    x: torch.Tensor,
    pad: int,
    pad_mode: str = "zeros",
    flip: bool = True,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Random crop of each image from its ``pad``-padded version, then a random horizontal
    flip: one gather over the whole batch, never materialising the padded images.

    Draw order (part of the reproducibility contract): row offsets, column offsets, flips, each
    of shape (B,) from ``generator``."""
    if pad_mode not in ("zeros", "reflect"):
        raise ValueError(f"pad_mode must be 'zeros' or 'reflect', got {pad_mode!r}")
    b, c, h, w = x.shape
    dev = _draw_device(generator)
    oy = torch.randint(0, 2 * pad + 1, (b,), generator=generator, device=dev).to(x.device)
    ox = torch.randint(0, 2 * pad + 1, (b,), generator=generator, device=dev).to(x.device)
    flips = torch.randint(0, 2, (b,), generator=generator, device=dev).to(x.device).bool()
    if not flip:
        flips = torch.zeros_like(flips)
    ar_h = torch.arange(h, device=x.device)
    ar_w = torch.arange(w, device=x.device)
    rows = oy[:, None] + ar_h - pad  # (B, H) source rows, may fall in the padding
    cols = ox[:, None] + torch.where(flips[:, None], w - 1 - ar_w, ar_w) - pad  # (B, W)
    if pad_mode == "reflect":
        rows = _reflect(rows, h)
        cols = _reflect(cols, w)
        valid = None
    else:
        valid = ((rows >= 0) & (rows < h))[:, :, None] & ((cols >= 0) & (cols < w))[:, None, :]
        rows, cols = rows.clamp(0, h - 1), cols.clamp(0, w - 1)
    flat = (rows[:, :, None] * w + cols[:, None, :]).reshape(b, 1, h * w).expand(b, c, h * w)
    out = torch.gather(x.reshape(b, c, h * w), 2, flat).reshape(b, c, h, w)
    if valid is not None:
        out = out * valid[:, None].to(out.dtype)
    return out


def _reflect(i: torch.Tensor, n: int) -> torch.Tensor:
    """Reflection without repeating the edge (numpy/PyTorch 'reflect'), for |overhang| < n."""
    i = torch.where(i < 0, -i, i)
    return torch.where(i > n - 1, 2 * (n - 1) - i, i)


@dataclass(frozen=True)
class ResizedCropInput:
    """ImageNet-style: uint8 images (256x256 as the ImageNet split decodes them) -> float
    ``size`` x ``size``. Training: a random-resized crop (area ``scale``, aspect ``ratio``) and a random
    horizontal flip, all done by one batched ``grid_sample``; evaluation: the centre crop."""

    mean: tuple[float, ...]
    std: tuple[float, ...]
    size: int = 224
    scale: tuple[float, float] = (0.08, 1.0)
    ratio: tuple[float, float] = (3 / 4, 4 / 3)

    def __call__(
        self, x: torch.Tensor, train: bool = False, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        if not train:
            h, w = x.shape[-2:]
            top, left = (h - self.size) // 2, (w - self.size) // 2
            return normalize(
                x[..., top : top + self.size, left : left + self.size], self.mean, self.std
            )
        return self.random_resized_crop(normalize(x, self.mean, self.std), generator)

    def random_resized_crop(
        self, x: torch.Tensor, generator: torch.Generator | None
    ) -> torch.Tensor:
        b, c, h, w = x.shape
        dev = _draw_device(generator)

        def uniform(lo: float, hi: float) -> torch.Tensor:
            u = torch.rand(b, generator=generator, device=dev, dtype=torch.float64)
            # float32 on the data's device: MPS has no float64
            return (lo + (hi - lo) * u).to(x.device, torch.float32)

        area = uniform(*self.scale)
        aspect = torch.exp(uniform(math.log(self.ratio[0]), math.log(self.ratio[1])))
        # crop size as a fraction of the image; a crop that would not fit is clipped to it
        cw = torch.sqrt(area * aspect).clamp(max=1.0)
        ch = torch.sqrt(area / aspect).clamp(max=1.0)
        cx = (uniform(0.0, 1.0) * (1 - cw) + cw / 2) * 2 - 1  # centre in [-1, 1] coordinates
        cy = (uniform(0.0, 1.0) * (1 - ch) + ch / 2) * 2 - 1
        flip = torch.randint(0, 2, (b,), generator=generator, device=dev).to(x.device) * 2 - 1
        theta = torch.zeros(b, 2, 3, dtype=torch.float32, device=x.device)
        theta[:, 0, 0] = cw * -flip  # a negative x scale mirrors the crop
        theta[:, 0, 2] = cx
        theta[:, 1, 1] = ch
        theta[:, 1, 2] = cy
        grid = F.affine_grid(theta.to(x.dtype), [b, c, self.size, self.size], align_corners=False)
        return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
