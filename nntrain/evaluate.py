"""`nntrain eval`: rebuild a model from its checkpoint's config and measure it on a split."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

from nntrain.checkpoint import load_checkpoint
from nntrain.config import config_from_dict
from nntrain.errors import CheckpointError, DataError, RunError


def evaluate_checkpoint(
    path: str | Path, split: str = "test", overrides: list[str] = (), out: Optional[str | Path] = None
) -> tuple[dict[str, float], Path]:
    """Evaluates the checkpoint at `path` on `split`; writes the metrics as JSON.

    Returns:
        The metrics and the path of the JSON file (`<checkpoint>.<split>.json` unless `out` is given).
    """
    from nntrain.experiment import build_parts
    from nntrain.trainer import autocast, evaluate

    path = Path(path)
    ckpt = load_checkpoint(path)
    stored = dict(ckpt["config"])
    if isinstance(stored.get("model"), dict):
        # The weights come from this checkpoint: the pretrained file init_from named may be gone.
        stored["model"] = {k: v for k, v in stored["model"].items() if k != "init_from"}
    cfg = config_from_dict(stored, list(overrides), where=f"{path} (stored config)")
    parts = build_parts(cfg, normalizer_state=ckpt.get("normalizer"), data_info=ckpt.get("data_info"))
    trained_on = (ckpt.get("data_info") or {}).get("classes")
    classes = parts.data.info.classes
    if trained_on is not None and classes is not None and list(classes) != list(trained_on):
        # Same number of classes in another order would load and give silently wrong metrics.
        shown = lambda names: ", ".join(names[:10]) + (", ..." if len(names) > 10 else "")  # noqa: E731
        raise DataError(cfg.locate(
            f"data.dataset: the data's classes ({shown(classes)}) are not the ones {path} was trained "
            f"on ({shown(trained_on)}); evaluate on data with the same labels"
        ))
    try:
        parts.model.load_state_dict(ckpt["model"])
    except RuntimeError as exc:
        detail = str(exc).strip().splitlines()[-1].strip()
        raise CheckpointError(
            f"{path}: the weights don't fit the model the config builds "
            f"(a different architecture?): {detail}"
        ) from None
    metrics = evaluate(
        parts.model, parts.loss_fn, parts.data, split, cfg, autocast(parts.device, cfg.train.precision)
    )
    record = {"checkpoint": str(path), "split": split, "epoch": ckpt["epoch"], "step": ckpt["step"], **metrics}
    out_path = Path(out) if out else path.with_name(f"{path.stem}.{split}.json")
    try:
        out_path.write_text(json.dumps(record, indent=2), encoding="utf-8")
    except OSError as exc:
        raise RunError(f"cannot write {out_path}: {exc.strerror or exc}") from None
    return metrics, out_path
