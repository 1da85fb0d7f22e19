"""Inputs as a person sees them: images denormalized, token ids back to words, sequences as rows."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from nntrain.data.info import PAD, DataInfo
from nntrain.data.transforms import MinMax, Normalize, Normalizer, Standardize, Whiten

TEXT_LIMIT = 400  # characters of a text shown in the report


def kind(info: DataInfo, x: torch.Tensor) -> str:
    """image (N, C, H, W), text (token ids), sequence (N, T, F) or table (N, F)."""
    if info.vocab_size is not None:
        return "text"
    return {4: "image", 3: "sequence"}.get(x.dim(), "table")


def denormalize(normalizer: Normalizer | None, x: torch.Tensor) -> torch.Tensor:
    """The inputs as they were before `normalizer` (its stored statistics), on the CPU, float32.

    Standardize / Normalize: x * std + mean; MinMax: x * span + low; Whiten: the whitening matrix
    inverted (least squares). Any other normalizer: unchanged (images are then rescaled for display).
    """
    x = x.detach().float().cpu()
    if normalizer is None:
        return x
    state = {k: v.detach().float().cpu() for k, v in normalizer.state_dict().items()}
    if isinstance(normalizer, (Standardize, Normalize)):
        return x * state["std"] + state["mean"]
    if isinstance(normalizer, MinMax):
        return x * state["span"] + state["low"]
    if isinstance(normalizer, Whiten):
        rows = x.reshape(-1, x.shape[-1]) if x.dim() == 3 else x.reshape(len(x), -1)
        original = torch.linalg.pinv(state["matrix"].double()).float()
        return (rows @ original + state["mean"]).reshape(x.shape)
    return x


def display_images(x: torch.Tensor) -> list[np.ndarray]:
    """(N, C, H, W) denormalized images -> (H, W) or (H, W, 3) arrays in [0, 1].

    Pixels in [0, 1] are shown as they are, in [0, 255] divided by 255; anything else (an unknown
    normalizer) is stretched per image to [0, 1].
    """
    out = []
    for image in x:
        low, high = float(image.min()), float(image.max())
        if low >= -1e-3 and high <= 1 + 1e-3:
            shown = image
        elif low >= -1e-3 and high <= 255.5:
            shown = image / 255
        else:
            shown = (image - low) / max(high - low, 1e-8)
        array = shown.clamp(0, 1).numpy()
        out.append(array[0] if array.shape[0] == 1 else np.moveaxis(array[:3], 0, -1))
    return out


def texts(ids: torch.Tensor, info: DataInfo) -> list[str]:
    """Token ids back to words with the stored vocabulary (padding dropped; `<unk>` kept)."""
    vocab = (info.source_state or {}).get("vocab")
    out = []
    for row in ids.cpu().tolist():
        words = [vocab[i] if vocab is not None and 0 <= i < len(vocab) else f"#{i}" for i in row if i != PAD]
        text = " ".join(words)
        out.append(text if len(text) <= TEXT_LIMIT else text[: TEXT_LIMIT - 1] + "…")
    return out


def sequence_rows(x: torch.Tensor) -> list[np.ndarray]:
    """(N, T, F) sequences -> (T', F) arrays without the NaN rows that pad variable-length ones."""
    out = []
    for seq in x.cpu().float():
        keep = ~torch.isnan(seq).all(dim=-1)
        out.append(seq[keep].numpy())
    return out


def table_rows(x: torch.Tensor, limit: int = 12) -> list[str]:
    """(N, F) feature rows as text: the first `limit` values."""
    out = []
    for row in x.cpu().float().tolist():
        shown = ", ".join(f"{v:.4g}" for v in row[:limit])
        out.append(shown + (f", … ({len(row)} features)" if len(row) > limit else ""))
    return out


def describe_inputs(info: DataInfo, x: torch.Tensor, normalizer: Normalizer | None) -> dict[str, Any]:
    """What a gallery shows of inputs `x`: {"kind", and "images" | "texts" | "series" | "rows"}."""
    what = kind(info, x)
    if what == "text":
        return {"kind": what, "texts": texts(x, info)}
    plain = denormalize(normalizer, x)
    if what == "image":
        return {"kind": what, "images": display_images(plain)}
    if what == "sequence":
        return {"kind": what, "series": sequence_rows(plain)}
    return {"kind": what, "rows": table_rows(plain)}
