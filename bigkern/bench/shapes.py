"""``bigkern bench --shapes FILE``: benchmark cases at shapes of your own.

FILE is JSON: an object keyed by suite, each a list of entries (every key but the first one or
two optional, defaults shown):

    {
      "conv":      [{"shape": [N, C, H, W, K], "kernel": 3, "stride": 1, "groups": 1,
                     "op": "conv2d", "layout": "channels_last"}],
      "attention": [{"batch": 2, "heads": 8, "kv_heads": heads, "length": 1024,
                     "kv_length": length, "head_dim": 64, "causal": false}],
      "pool":      [{"shape": [N, C, H, W], "op": "max_pool2d", "args": [3, 2, 1], "layout": "nchw"}],
      "lstm":      [{"kind": "lstm", "steps": 100, "batch": 32, "input_size": 256,
                     "hidden": 256, "layers": 1}],
      "models":    [{"model": "mnist_convnet"}]
    }

Every entry may also give "directions" (default ["forward", "forward+backward"]; --quick keeps
forward only). Each entry runs in every dtype asked for with --dtype (default float32 on the CPU,
bfloat16 on CUDA). The FLOP and byte models are the suites' own.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from bigkern.bench import attention, conv, lstm, models, pool
from bigkern.bench.harness import DIRECTIONS, Case


class ShapesError(ValueError):
    pass


def _take(entry: dict, where: str, required: tuple[str, ...], optional: dict) -> dict:
    if not isinstance(entry, dict):
        raise ShapesError(f"{where}: expected an object, got {entry!r}")
    known = set(required) | set(optional) | {"directions"}
    unknown = sorted(set(entry) - known)
    if unknown:
        raise ShapesError(f"{where}: unknown key {unknown[0]!r}; expected keys {sorted(known)}")
    missing = [k for k in required if k not in entry]
    if missing:
        raise ShapesError(f"{where}: missing {missing[0]!r}")
    return {**optional, **entry}


def _conv(e: dict, where: str, dtype, direction, seed) -> Case:
    e = _take(e, where, ("shape",), {"kernel": 3, "stride": 1, "groups": 1, "op": "conv2d", "layout": "channels_last"})
    if len(e["shape"]) != 5 or e["op"] not in conv.EPILOGUES:
        raise ShapesError(f"{where}: shape must be [N, C, H, W, K] and op one of {sorted(conv.EPILOGUES)}")
    n, c, h, w, k = e["shape"]
    return conv.make_case((n, c, h, w, k, e["kernel"], e["stride"], e["groups"]), e["op"], dtype, e["layout"], direction, seed)


def _attention(e: dict, where: str, dtype, direction, seed) -> Case:
    e = _take(e, where, (), {"batch": 2, "heads": 8, "kv_heads": None, "length": 1024, "kv_length": None,
                             "head_dim": 64, "causal": False})  # fmt: skip
    kv_heads = e["kv_heads"] or e["heads"]
    kv_length = e["kv_length"] or e["length"]
    return attention.make_case(e["batch"], e["heads"], kv_heads, e["length"], kv_length, e["head_dim"], dtype, e["causal"],
                               direction, seed=seed)  # fmt: skip


def _pool(e: dict, where: str, dtype, direction, seed) -> Case:
    e = _take(e, where, ("shape",), {"op": "max_pool2d", "args": [3, 2, 1], "layout": "nchw"})
    kinds = {"max_pool2d": (True, True), "avg_pool2d": (True, False), "adaptive_avg_pool2d": (False, False),
             "adaptive_max_pool2d": (False, True)}  # fmt: skip
    if e["op"] not in kinds or len(e["shape"]) != 4:
        raise ShapesError(f"{where}: shape must be [N, C, H, W] and op one of {sorted(kinds)}")
    window, is_max = kinds[e["op"]]
    pool_op = pool.PoolOp(e["op"], tuple(e["args"]), window=window, max=is_max)
    return pool.make_case(pool_op, e["shape"], dtype, e["layout"], direction, seed)


def _lstm(e: dict, where: str, dtype, direction, seed) -> Case:
    e = _take(e, where, (), {"kind": "lstm", "steps": 100, "batch": 32, "input_size": 256, "hidden": 256, "layers": 1})
    if e["kind"] not in lstm.GATES:
        raise ShapesError(f"{where}: kind must be one of {sorted(lstm.GATES)}")
    return lstm.make_case(e["kind"], e["steps"], e["batch"], e["input_size"], e["hidden"], e["layers"], dtype, direction, seed)


def _model(e: dict, where: str, dtype, direction, seed) -> Case:
    e = _take(e, where, ("model",), {})
    if e["model"] not in models.MODELS:
        raise ShapesError(f"{where}: model must be one of {sorted(models.MODELS)}")
    return models.make_case(e["model"], dtype, direction, seed)


BUILDERS = {"conv": _conv, "attention": _attention, "pool": _pool, "lstm": _lstm, "models": _model}


def load(path: str | Path, device, dtypes=None, quick: bool = False) -> dict[str, list[Case]]:
    """{suite: cases} from a shapes file (see the module docstring)."""
    try:
        spec = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise ShapesError(f"--shapes {path}: {err}") from None
    if not isinstance(spec, dict) or not spec:
        raise ShapesError(f"--shapes {path}: expected an object keyed by suite ({', '.join(BUILDERS)})")
    device = torch.device(device)
    dtypes = list(dtypes) if dtypes else [torch.bfloat16 if device.type == "cuda" else torch.float32]
    result: dict[str, list[Case]] = {}
    for suite, entries in spec.items():
        if suite not in BUILDERS:
            raise ShapesError(f"--shapes {path}: unknown suite {suite!r}; expected one of {', '.join(BUILDERS)}")
        if not isinstance(entries, list):
            raise ShapesError(f"--shapes {path}: {suite} must be a list of entries")
        cases = []
        for i, entry in enumerate(entries):
            where = f"--shapes {path}: {suite}[{i}]"
            directions = entry.get("directions", list(DIRECTIONS)) if isinstance(entry, dict) else DIRECTIONS
            if quick:
                directions = [d for d in directions if d == "forward"]
            for direction in directions:
                if direction not in DIRECTIONS:
                    raise ShapesError(f"{where}: direction {direction!r} is not one of {DIRECTIONS}")
                for dtype in dtypes:
                    try:
                        cases.append(BUILDERS[suite](entry, where, dtype, direction, len(cases)))
                    except (TypeError, ValueError) as err:
                        raise ShapesError(f"{where}: {err}") from None
        result[suite] = cases
    return result
