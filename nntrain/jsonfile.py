"""JSON that every reader accepts: a NaN or infinite number is written as `null`.

Python's json writes `NaN` and `Infinity`, which are not JSON (jq, JavaScript's JSON.parse and
most other readers refuse the whole file). Everything nntrain writes as JSON (summary.json,
metrics.jsonl, run.json, sweep files, `--json` output) goes through `dumps`.

Leaf module: the standard library only.
"""

from __future__ import annotations

import json
import math
from typing import Any


def finite(value: Any) -> Any:
    """`value` with every float that is NaN or infinite replaced by None (in dicts, lists, tuples)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite(v) for v in value]
    return value


def dumps(value: Any, **kwargs: Any) -> str:
    """`json.dumps` of `finite(value)`; never writes NaN or Infinity."""
    return json.dumps(finite(value), allow_nan=False, **kwargs)
