"""Augmentations: callables on a whole training batch (N, C, H, W) on its device.

Each one draws its random numbers from the `generator` it is built with (the Trainer's
`aug_generator`, saved in checkpoints), never from the global RNG, so runs are reproducible and
resume exactly. Every draw is one vectorized call for the whole batch: no Python loop over
samples, no host synchronisation. The random parameters follow the definitions of
torchvision.transforms.v2 (ranges, rounding, defaults), drawn per sample.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Annotated, Any, Literal, Union

import torch
import torch.nn.functional as F
from pydantic import AfterValidator, Field

from nntrain.data.transforms import Normalize
from nntrain.errors import DataError
from nntrain.registries import AUGMENTATIONS


def _ordered(pair: tuple[float, ...]) -> tuple[float, ...]:
    for lo, hi in zip(pair[::2], pair[1::2]):
        if lo > hi:
            raise ValueError("a range (min, max) needs min <= max")
    return pair


# Argument types: pydantic checks them when the config is loaded, before anything is built.
Probability = Annotated[float, Field(ge=0.0, le=1.0)]
NonNegative = Annotated[float, Field(ge=0.0)]
Positive = Annotated[float, Field(gt=0.0)]
Fraction = Annotated[float, Field(ge=0.0, le=1.0)]
Range = Annotated[tuple[float, float], AfterValidator(_ordered)]
# An angle d means the range (-d, d); a pair is the range itself.
Degrees = Union[NonNegative, Range]
# Shear: d -> x shear in (-d, d); (a, b) -> x shear in (a, b); (a, b, c, d) -> x in (a, b), y in (c, d).
Shear = Union[NonNegative, Range, Annotated[tuple[float, float, float, float], AfterValidator(_ordered)]]
# A colour factor f means the range (max(0, 1 - f), 1 + f); a pair is the range itself.
Factor = Union[NonNegative, Annotated[tuple[NonNegative, NonNegative], AfterValidator(_ordered)]]
HalfTurn = Annotated[float, Field(ge=-0.5, le=0.5)]
Hue = Union[Annotated[float, Field(ge=0.0, le=0.5)], Annotated[tuple[HalfTurn, HalfTurn], AfterValidator(_ordered)]]
Size = Union[Annotated[int, Field(gt=0)], tuple[Annotated[int, Field(gt=0)], Annotated[int, Field(gt=0)]]]


def _symmetric(value: Any, center: float = 0.0) -> tuple[float, float]:
    """A number v -> (center - v, center + v); a pair stays as it is."""
    if isinstance(value, (int, float)):
        return center - float(value), center + float(value)
    return float(value[0]), float(value[1])


def _factor_range(value: Any, center: float, floor: float | None) -> tuple[float, float] | None:
    """torchvision's ColorJitter ranges; None when the range is the identity (no jitter)."""
    lo, hi = _symmetric(value, center)
    if isinstance(value, (int, float)) and floor is not None:
        lo = max(lo, floor)
    return None if lo == hi == center else (lo, hi)


class Augmentation:
    """Base: `__call__(x)` on a batch; `check(x)` says why training inputs `x` can't be augmented."""

    requires_images = True  # (N, C, H, W) batches only; False: any float batch

    def __init__(self, generator: torch.Generator):
        self.generator = generator

    def _rand(self, *shape: int) -> torch.Tensor:
        """U(0, 1) draws from the generator, on its device (float32 whatever the data's dtype)."""
        return torch.rand(shape, generator=self.generator, device=self.generator.device)

    def _uniform(self, n: int, low: float, high: float) -> torch.Tensor:
        return low + (high - low) * self._rand(n)

    def check(self, x: torch.Tensor) -> str | None:
        """Why this augmentation can't apply to the training inputs `x`; None when it can."""
        if not x.is_floating_point():
            return f"needs real-valued inputs, but the data gives {x.dtype} (token ids?)"
        if self.requires_images and x.dim() != 4:
            return (
                f"needs image batches (N, C, H, W), but the data's samples have shape {tuple(x.shape[1:])}"
            )
        return None

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


# ---------------------------------------------------------------- crops and flips


@AUGMENTATIONS.register("random_crop", runtime=("generator",))
class RandomCrop(Augmentation):
    """Pads by `padding`, then crops `size` at a random offset per sample (batched on device).

    As torchvision's RandomCrop: each offset is uniform over every position of the window in the
    padded image, so with `size` equal to the image size a sample shifts by at most `padding`
    pixels each way. `size` (an int or (height, width)) defaults to the image's own size.
    Constant padding is `fill`, in the units of the normalized data (under `standardize`, 0 is
    the mean pixel, not black).
    """

    def __init__(
        self,
        generator: torch.Generator,
        size: Size | None = None,
        padding: Annotated[int, Field(ge=0)] = 0,
        padding_mode: Literal["constant", "reflect", "replicate", "circular"] = "constant",
        fill: float = 0.0,
    ):
        super().__init__(generator)
        self.size = (size, size) if isinstance(size, int) else None if size is None else tuple(size)
        self.padding, self.mode, self.fill = padding, padding_mode, float(fill)

    def _size(self, x: torch.Tensor) -> tuple[int, int]:
        return self.size or (x.shape[-2], x.shape[-1])

    def check(self, x: torch.Tensor) -> str | None:
        if msg := super().check(x):
            return msg
        h, w, p = x.shape[-2], x.shape[-1], self.padding
        sh, sw = self._size(x)
        if sh > h + 2 * p or sw > w + 2 * p:
            return f"size {sh}x{sw} is larger than the padded images ({h + 2 * p}x{w + 2 * p})"
        if self.mode == "reflect" and p >= min(h, w):
            return f"padding_mode reflect needs padding < the image size ({min(h, w)}), got {p}"
        return None

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        sh, sw = self._size(x)
        p = self.padding
        if p:
            x = F.pad(x, (p, p, p, p), mode=self.mode, value=self.fill if self.mode == "constant" else None)
        n, _, h, w = x.shape
        # Offsets uniform over the h - sh + 1 (w - sw + 1) window positions.
        top = (self._rand(n) * (h - sh + 1)).long().clamp_max(h - sh).to(x.device)
        left = (self._rand(n) * (w - sw + 1)).long().clamp_max(w - sw).to(x.device)
        # One gather for the whole batch: sample i reads rows top_i.., columns left_i..
        rows = (top[:, None] + torch.arange(sh, device=x.device))[:, None, :, None]  # (N, 1, sh, 1)
        cols = (left[:, None] + torch.arange(sw, device=x.device))[:, None, None, :]  # (N, 1, 1, sw)
        batch = torch.arange(n, device=x.device)[:, None, None, None]
        channel = torch.arange(x.shape[1], device=x.device)[None, :, None, None]
        return x[batch, channel, rows, cols]


class _Flip(Augmentation):
    dim = -1

    def __init__(self, generator: torch.Generator, p: Probability = 0.5):
        super().__init__(generator)
        self.p = p

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        flip = (self._rand(len(x)) < self.p).to(x.device)
        return torch.where(flip.view(-1, 1, 1, 1), x.flip(self.dim), x)


@AUGMENTATIONS.register("horizontal_flip", runtime=("generator",))
class HorizontalFlip(_Flip):
    """Mirrors each sample left-right with probability `p` (batched on device)."""

    dim = -1


@AUGMENTATIONS.register("vertical_flip", runtime=("generator",))
class VerticalFlip(_Flip):
    """Mirrors each sample upside down with probability `p` (batched on device)."""

    dim = -2


# ---------------------------------------------------------------- rotations and affine maps


def _affine_theta(
    angle: torch.Tensor, tx: torch.Tensor, ty: torch.Tensor, scale: torch.Tensor,
    shear_x: torch.Tensor, shear_y: torch.Tensor, h: int, w: int,
) -> torch.Tensor:
    """Per-sample (N, 2, 3) matrices for F.affine_grid, from torchvision's affine parameters.

    torchvision's `_get_inverse_affine_matrix` (centre of the image fixed, angle clockwise in
    degrees, translation in pixels) maps output pixels to input pixels in pixel units centred on
    the image; affine_grid works in [-1, 1] units, hence the rescaling by w/2 and h/2.
    """
    rot, sx, sy = torch.deg2rad(angle), torch.deg2rad(shear_x), torch.deg2rad(shear_y)
    a = torch.cos(rot - sy) / torch.cos(sy)
    b = -torch.cos(rot - sy) * torch.tan(sx) / torch.cos(sy) - torch.sin(rot)
    c = torch.sin(rot - sy) / torch.cos(sy)
    d = -torch.sin(rot - sy) * torch.tan(sx) / torch.cos(sy) + torch.cos(rot)
    m00, m01, m10, m11 = d / scale, -b / scale, -c / scale, a / scale
    m02 = -(m00 * tx + m01 * ty)
    m12 = -(m10 * tx + m11 * ty)
    row0 = torch.stack([m00, m01 * h / w, m02 * 2 / w], dim=-1)
    row1 = torch.stack([m10 * w / h, m11, m12 * 2 / h], dim=-1)
    return torch.stack([row0, row1], dim=1)


def _warp(x: torch.Tensor, theta: torch.Tensor, mode: str, fill: float) -> torch.Tensor:
    """Resamples each sample of `x` through its own matrix; outside the image is `fill`.

    Same sampling grid (pixel centres, align_corners=False) and fill rule as torchvision's
    tensor kernels: a channel of ones, warped alongside, marks what came from inside the image.
    """
    theta = theta.to(device=x.device, dtype=x.dtype)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    if fill == 0 and mode == "nearest":  # the mask would change nothing: zeros padding is the fill
        return F.grid_sample(x, grid, mode=mode, padding_mode="zeros", align_corners=False)
    ones = torch.ones_like(x[:, :1])
    out = F.grid_sample(torch.cat([x, ones], dim=1), grid, mode=mode, padding_mode="zeros", align_corners=False)
    img, mask = out[:, :-1], out[:, -1:]
    if mode == "nearest":
        return torch.where(mask < 0.5, torch.full_like(img, fill), img)
    return img * mask + (1.0 - mask) * fill


@AUGMENTATIONS.register("random_affine", runtime=("generator",))
class RandomAffine(Augmentation):
    """Random rotation, translation, scale and shear per sample, one grid_sample (batched on device).

    As torchvision's RandomAffine: the angle (clockwise, degrees) is uniform in `degrees` (d
    means (-d, d)); the shift is uniform in +-translate[0] * width and +-translate[1] * height,
    rounded to whole pixels; the scale is uniform in `scale`; the shear (degrees) uniform in
    `shear`. The centre of the image stays fixed; what comes from outside the image is `fill`
    (in the units of the normalized data).
    """

    def __init__(
        self,
        generator: torch.Generator,
        degrees: Degrees,
        translate: Fraction | tuple[Fraction, Fraction] | None = None,
        scale: Annotated[tuple[Positive, Positive], AfterValidator(_ordered)] | None = None,
        shear: Shear | None = None,
        interpolation: Literal["nearest", "bilinear"] = "nearest",
        fill: float = 0.0,
    ):
        super().__init__(generator)
        self.degrees = _symmetric(degrees)
        if isinstance(translate, (int, float)):
            translate = (translate, translate)
        self.translate = None if translate is None else (float(translate[0]), float(translate[1]))
        self.scale = None if scale is None else (float(scale[0]), float(scale[1]))
        self.shear = None if shear is None else _symmetric(shear) if isinstance(shear, (int, float)) else tuple(shear)
        self.interpolation, self.fill = interpolation, float(fill)

    def params(self, n: int, h: int, w: int) -> dict[str, torch.Tensor]:
        """The per-sample parameters of torchvision's `affine` (angle, tx, ty, scale, shear_x, shear_y)."""
        angle = self._uniform(n, *self.degrees)
        zeros = torch.zeros_like(angle)
        tx = ty = zeros
        if self.translate is not None:
            max_dx, max_dy = self.translate[0] * w, self.translate[1] * h
            # torch.round, like Python's round in torchvision, rounds halves to even.
            tx = torch.round(self._uniform(n, -max_dx, max_dx))
            ty = torch.round(self._uniform(n, -max_dy, max_dy))
        scale = torch.ones_like(angle) if self.scale is None else self._uniform(n, *self.scale)
        shear_x = shear_y = zeros
        if self.shear is not None:
            shear_x = self._uniform(n, *self.shear[:2])
            if len(self.shear) == 4:
                shear_y = self._uniform(n, *self.shear[2:])
        return {"angle": angle, "tx": tx, "ty": ty, "scale": scale, "shear_x": shear_x, "shear_y": shear_y}

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        n, _, h, w = x.shape
        theta = _affine_theta(**self.params(n, h, w), h=h, w=w)
        return _warp(x, theta, self.interpolation, self.fill)


@AUGMENTATIONS.register("random_rotation", runtime=("generator",))
class RandomRotation(Augmentation):
    """Rotates each sample by a random angle about its centre, one grid_sample (batched on device).

    As torchvision's RandomRotation: the angle (counter-clockwise, degrees) is uniform in
    `degrees` (d means (-d, d)); the image keeps its size; corners from outside are `fill`.
    """

    def __init__(
        self,
        generator: torch.Generator,
        degrees: Degrees,
        interpolation: Literal["nearest", "bilinear"] = "nearest",
        fill: float = 0.0,
    ):
        super().__init__(generator)
        self.degrees = _symmetric(degrees)
        self.interpolation, self.fill = interpolation, float(fill)

    def params(self, n: int) -> torch.Tensor:
        """The per-sample angles (degrees, counter-clockwise)."""
        return self._uniform(n, *self.degrees)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        n, _, h, w = x.shape
        angle = self.params(n)
        zeros, ones = torch.zeros_like(angle), torch.ones_like(angle)
        # torchvision's rotate is its affine with the angle negated (affine turns clockwise).
        theta = _affine_theta(-angle, zeros, zeros, ones, zeros, zeros, h=h, w=w)
        return _warp(x, theta, self.interpolation, self.fill)


# ---------------------------------------------------------------- colour


_LUMA = (0.2989, 0.587, 0.114)  # ITU-R 601, as torchvision's rgb_to_grayscale


# No torch.tensor(...) constants in the per-batch code: on CUDA each would be a blocking copy.


def _gray(x: torch.Tensor) -> torch.Tensor:
    """Grayscale of RGB batches (torchvision's rgb_to_grayscale), (N, 1, H, W)."""
    return (x[:, 0:1] * _LUMA[0]).add_(x[:, 1:2], alpha=_LUMA[1]).add_(x[:, 2:3], alpha=_LUMA[2])


def _blend(x: torch.Tensor, other: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """torchvision's `_blend` with a factor per sample: factor * x + (1 - factor) * other, in [0, 1]."""
    return torch.lerp(other, x, factor).clamp_(0.0, 1.0)


def _shift_hue(x: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """torchvision's adjust_hue (RGB -> HSV, hue + shift mod 1, -> RGB) for RGB in [0, 1], fused.

    Saturation and value stay, so only the hue is computed: in sextants h6 in [0, 6), from
    Pillow's formulas as torchvision's `_rgb_to_hsv`. Back to RGB, channel c is
    max - (max - min) * clamp(min(k, 4 - k), 0, 1) with k = (n_c + h6) mod 6, n = 5, 3, 1 for
    r, g, b: torchvision's `_hsv_to_rgb` table unrolled (v s = max - min).
    """
    r, g, b = x.unbind(dim=1)
    maxc, minc = x.amax(dim=1), x.amin(dim=1)
    span = maxc - minc
    safe = torch.where(span == 0, torch.ones_like(span), span)  # gray pixels: any hue, no change
    h6 = torch.where(
        maxc == r, (g - b) / safe, torch.where(maxc == g, 2.0 + (b - r) / safe, 4.0 + (r - g) / safe)
    )
    h6 = (h6 + 6.0 * shift.view(-1, 1, 1)).remainder(6.0)
    k = torch.stack([(h6 + n).remainder(6.0) for n in (5.0, 3.0, 1.0)], dim=1)
    return maxc.unsqueeze(1) - span.unsqueeze(1) * torch.minimum(k, 4.0 - k).clamp(0.0, 1.0)


_JITTERS = ("brightness", "contrast", "saturation", "hue")
_HUE = 3


@AUGMENTATIONS.register("color_jitter", runtime=("generator",))
class ColorJitter(Augmentation):
    """Random brightness, contrast, saturation and hue, in random order per sample (batched on device).

    As torchvision's ColorJitter, on pixel values in [0, 1] (each step clamps to [0, 1]):
    brightness blends with black, contrast with the image's mean gray, saturation with its
    grayscale version, by factors uniform in (max(0, 1 - v), 1 + v) for a value v, or in a
    given (min, max); hue shifts the HSV hue by a fraction uniform in (-hue, hue) (or a given
    range). Each sample applies them in its own random order, as torchvision does per image.
    Saturation and hue leave 1-channel images unchanged (as torchvision).
    """

    def __init__(
        self,
        generator: torch.Generator,
        brightness: Factor = 0.0,
        contrast: Factor = 0.0,
        saturation: Factor = 0.0,
        hue: Hue = 0.0,
    ):
        super().__init__(generator)
        self.ranges = {
            "brightness": _factor_range(brightness, 1.0, 0.0),
            "contrast": _factor_range(contrast, 1.0, 0.0),
            "saturation": _factor_range(saturation, 1.0, 0.0),
            "hue": _factor_range(hue, 0.0, None),
        }

    def check(self, x: torch.Tensor) -> str | None:
        if msg := super().check(x):
            return msg
        if x.shape[1] not in (1, 3):
            return f"needs 1- or 3-channel images, but the data has {x.shape[1]} channels"
        low, high = x.min().item(), x.max().item()
        if low < -1e-6 or high > 1 + 1e-6:
            return (
                f"works on pixel values in [0, 1] (as torchvision's ColorJitter), but the training "
                f"inputs range over [{low:.3g}, {high:.3g}]; use data.normalize: {{name: minmax}} or "
                f"no normalizer with it"
            )
        return None

    def params(self, n: int, channels: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Per sample, the operations in the order applied (indices into brightness, contrast,
        saturation, hue) and their factors, both (N, K) for the K jitters that do something."""
        active = [i for i, k in enumerate(_JITTERS) if self.ranges[k] is not None]
        if channels == 1:  # no saturation or hue in a gray image (torchvision does the same)
            active = [i for i in active if i < 2]
        if not active:
            empty = torch.zeros(n, 0, device=self.generator.device)
            return empty.long(), empty
        factors = torch.stack([self._uniform(n, *self.ranges[_JITTERS[i]]) for i in active], dim=1)
        order = self._rand(n, len(active)).argsort(dim=1)  # a uniformly random permutation per sample
        ops = order
        for j, op in enumerate(active):  # positions in `active` -> operation numbers
            ops = ops.masked_fill(order == j, op)
        return ops, factors.gather(1, order)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        ops, factors = (t.to(x.device) for t in self.params(len(x), x.shape[1]))
        k = ops.shape[1]
        if k == 0:
            return x
        if self.ranges["hue"] is None or x.shape[1] == 1:  # hue is in every sample's order or in none
            return self._blends(x, ops, factors, range(k), None)
        # Hue, the costly step, runs once: every sample first takes the blends it orders before
        # hue, then hue, then the blends it orders after it.
        hue_at = (ops == _HUE).int().argmax(dim=1)
        hue = factors.gather(1, hue_at[:, None]).to(x.dtype)
        x = self._blends(x, ops, factors, range(k - 1), lambda step: step < hue_at)
        x = _shift_hue(x, hue)
        return self._blends(x, ops, factors, range(1, k), lambda step: step > hue_at)

    @staticmethod
    def _blends(x: torch.Tensor, ops: torch.Tensor, factors: torch.Tensor, steps: range, keep: Any) -> torch.Tensor:
        """At each step, each sample blends with the target of the operation it orders there:
        black (brightness), its mean gray (contrast) or its grayscale image (saturation). A factor
        of 1 leaves a sample unchanged (exactly): samples whose step is hue, or outside `keep`."""
        for step in steps:
            op = ops[:, step]
            use = op != _HUE if keep is None else (op != _HUE) & keep(step)
            f = torch.where(use, factors[:, step], torch.ones_like(factors[:, step])).to(x.dtype).view(-1, 1, 1, 1)
            gray = _gray(x) if x.shape[1] == 3 else x
            mean = gray.mean(dim=(1, 2, 3), keepdim=True)
            target = torch.where((op == 2).view(-1, 1, 1, 1), gray, mean * (op == 1).view(-1, 1, 1, 1))
            x = _blend(x, target, f)
        return x


# ---------------------------------------------------------------- erasing and noise


@AUGMENTATIONS.register("random_erasing", runtime=("generator",))
class RandomErasing(Augmentation):
    """Erases a random rectangle of each sample with probability `p` (batched on device).

    As torchvision's RandomErasing: the rectangle's area is a fraction uniform in `scale` of the
    image, its aspect ratio log-uniform in `ratio`; of 10 tries per sample the first that fits
    is used (none fits: the sample stays as it is); its position is uniform. The rectangle
    takes `value`: a number, one per channel, or `random` (standard normal noise).
    """

    tries = 10

    def __init__(
        self,
        generator: torch.Generator,
        p: Probability = 0.5,
        scale: Annotated[tuple[Fraction, Fraction], AfterValidator(_ordered)] = (0.02, 0.33),
        ratio: Annotated[tuple[Positive, Positive], AfterValidator(_ordered)] = (0.3, 3.3),
        value: float | list[float] | Literal["random"] = 0.0,
    ):
        super().__init__(generator)
        self.p, self.scale, self.ratio = p, (float(scale[0]), float(scale[1])), (float(ratio[0]), float(ratio[1]))
        self.value = value

    def check(self, x: torch.Tensor) -> str | None:
        if msg := super().check(x):
            return msg
        if isinstance(self.value, (list, tuple)) and len(self.value) not in (1, x.shape[1]):
            return f"value has {len(self.value)} entries but the images have {x.shape[1]} channels"
        return None

    def params(self, n: int, h: int, w: int) -> dict[str, torch.Tensor]:
        """Per-sample `erase` (bool), `top`, `left`, `height`, `width` of the rectangle."""
        area = self._uniform(n * self.tries, *self.scale).view(n, self.tries) * (h * w)
        log_lo, log_hi = math.log(self.ratio[0]), math.log(self.ratio[1])
        aspect = torch.exp(self._uniform(n * self.tries, log_lo, log_hi)).view(n, self.tries)
        eh = torch.round(torch.sqrt(area * aspect)).long()
        ew = torch.round(torch.sqrt(area / aspect)).long()
        fits = (eh < h) & (ew < w)
        first = fits.int().argmax(dim=1, keepdim=True)  # the first try that fits (0 if none does)
        eh, ew = eh.gather(1, first).squeeze(1), ew.gather(1, first).squeeze(1)
        erase = (self._rand(n) < self.p) & fits.any(dim=1)
        top = (self._rand(n) * (h - eh + 1)).long().clamp(max=h - eh)
        left = (self._rand(n) * (w - ew + 1)).long().clamp(max=w - ew)
        return {"erase": erase, "top": top, "left": left, "height": eh, "width": ew}

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        prm = {k: v.to(x.device) for k, v in self.params(n, h, w).items()}
        rows = torch.arange(h, device=x.device).view(1, h, 1)
        cols = torch.arange(w, device=x.device).view(1, 1, w)
        top, left = prm["top"].view(-1, 1, 1), prm["left"].view(-1, 1, 1)
        inside = (rows >= top) & (rows < top + prm["height"].view(-1, 1, 1))
        inside = inside & (cols >= left) & (cols < left + prm["width"].view(-1, 1, 1))
        mask = (inside & prm["erase"].view(-1, 1, 1)).unsqueeze(1)  # (N, 1, H, W)
        if self.value == "random":
            fill = torch.randn(x.shape, generator=self.generator, device=self.generator.device)
            fill = fill.to(device=x.device, dtype=x.dtype)
        elif isinstance(self.value, (list, tuple)) and len(self.value) > 1:
            fill = torch.cat([torch.full_like(x[:, :1], float(v)) for v in self.value], dim=1)
        else:
            value = self.value[0] if isinstance(self.value, (list, tuple)) else self.value
            return torch.where(mask, float(value), x)
        return torch.where(mask, fill, x)


@AUGMENTATIONS.register("gaussian_noise", runtime=("generator",))
class GaussianNoise(Augmentation):
    """Adds N(0, std^2) noise to every input value (batched on device; any float data).

    Unlike torchvision's GaussianNoise nothing is clipped: inputs are usually normalized.
    """

    requires_images = False

    def __init__(self, generator: torch.Generator, std: NonNegative = 0.1):
        super().__init__(generator)
        self.std = std

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        noise = torch.randn(x.shape, generator=self.generator, device=self.generator.device, dtype=x.dtype)
        return x + self.std * noise.to(x.device)


# ---------------------------------------------------------------- checks before training


@AUGMENTATIONS.register("normalize")
def normalize(
    mean: Annotated[list[float], Field(min_length=1)],
    std: Annotated[list[Annotated[float, Field(gt=0)]], Field(min_length=1)],
) -> Any:
    """(x - mean) / std per channel, once on every split as the data loads (not random).

    torchvision's Normalize, listed where torchvision users list it; it is the same as
    data.normalize: {name: normalize, ...} and runs before the random augmentations, wherever it
    is listed."""
    return Normalize(mean, std)


def random_augmentations(specs: Sequence[Any]) -> list[tuple[int, Any]]:
    """(index, spec) of the `data.augment` entries applied to training batches: all but `normalize`."""
    return [(i, spec) for i, spec in enumerate(specs) if dict(spec)["name"] != "normalize"]


def check_augmentations(specs: Sequence[Any], x: torch.Tensor) -> None:
    """Raises DataError, naming every `data.augment` entry that can't apply to training inputs `x`.

    Runs at build time, before a run folder exists: each augmentation checks the data (images,
    channels, value range, sizes), then augments two samples on the CPU.
    """
    errors = []
    for i, spec in random_augmentations(specs):
        name = dict(spec)["name"]
        aug = AUGMENTATIONS.build(spec, generator=torch.Generator().manual_seed(0))
        msg = aug.check(x) if isinstance(aug, Augmentation) else None
        if msg is None:
            try:
                aug(x[:2].cpu())
            except (RuntimeError, ValueError, IndexError) as exc:
                msg = f"fails on the training inputs of shape {tuple(x.shape[1:])}: {str(exc).splitlines()[0]}"
        if msg is not None:
            errors.append((i, f"{name}: {msg}"))
    if errors:  # the first entry is the error's key (located in the config); the others follow, one a line
        (first, text), rest = errors[0], errors[1:]
        lines = [text, *(f"data.augment.{i}: {more}" for i, more in rest)]
        raise DataError("\n".join(lines), key=("data", "augment", first))
