"""``bigkern bench plot FILE...``: PNG figures drawn from results files (matplotlib).

    speedup-<stem>.png     each bigkern row's speedup over the strongest other provider, one bar
                           per case (op, shape, layout, direction), 1x marked
    attention-<stem>.png   attention TFLOP/s against the key length, a line per provider (one panel
                           per dtype and direction); only when the file has attention rows
    roofline-<stem>.png    every measured row with a FLOP and a byte model at (FLOPs / byte,
                           TFLOP/s) under the machine's roofline: min(matmul peak, copy bandwidth x
                           intensity) from the ceiling measured at the start of that run

Each figure is titled with the run's device and command.
"""

from __future__ import annotations

import json
from pathlib import Path


def _pyplot():
    try:
        import matplotlib

        matplotlib.use("Agg")  # files only: no display needed
        import matplotlib.pyplot as plt
    except ImportError as err:
        raise RuntimeError("bigkern bench plot needs matplotlib: pip install matplotlib (or bigkern[bench])") from err
    return plt


def _load(path: Path) -> dict:
    try:
        document = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise ValueError(f"bigkern bench plot: cannot read {path}: {err}") from None
    if "rows" not in document:
        raise ValueError(f"bigkern bench plot: {path} is not a bigkern bench results file (no 'rows')")
    return document


def _title(document: dict) -> str:
    env = document.get("environment", {})
    device = env.get("gpu_name") or env.get("cpu_model") or document.get("device", "?")
    return f"{device}: {document.get('command', '')}"


def _case_label(row: dict) -> str:
    direction = {"forward": "fwd", "forward+backward": "fwd+bwd"}.get(row["direction"], row["direction"])
    return f"{row['case']} {'x'.join(map(str, row['shape']))} {row['dtype']} {row['layout']} {direction}"


def _save(plt, fig, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def speedup_figure(document: dict, path: Path) -> Path | None:
    rows = [r for r in document["rows"] if r.get("speedup_vs_best_baseline")]
    if not rows:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(10, 0.32 * len(rows) + 1.5))
    labels = [f"{_case_label(r)} [{r['provider']}]" for r in rows]
    values = [r["speedup_vs_best_baseline"] for r in rows]
    ax.barh(range(len(rows)), values, color=["tab:green" if v >= 1 else "tab:red" for v in values])
    ax.axvline(1.0, color="black", linewidth=1)
    ax.set_yticks(range(len(rows)), labels, fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel("speedup over the strongest other provider (> 1: bigkern faster)")
    ax.set_title(_title(document), fontsize=8)
    return _save(plt, fig, path)


def attention_figure(document: dict, path: Path) -> Path | None:
    rows = [r for r in document["rows"] if r["op"] == "attention" and r.get("tflops")]
    if not rows:
        return None
    plt = _pyplot()
    panels = sorted({(r["dtype"], r["direction"]) for r in rows})
    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 4), squeeze=False)
    for ax, (dtype, direction) in zip(axes[0], panels):
        series: dict[str, list[tuple[int, float]]] = {}
        for r in rows:
            if (r["dtype"], r["direction"]) == (dtype, direction):
                name = f"{r['provider']}{' causal' if r['params'].get('causal') else ''}"
                series.setdefault(name, []).append((r["params"].get("length_kv", r["shape"][2]), r["tflops"]))
        for name, points in sorted(series.items()):
            points.sort()
            ax.plot([p[0] for p in points], [p[1] for p in points], marker="o", label=name)
        ax.set_xscale("log", base=2)
        ax.set_xlabel("key length")
        ax.set_ylabel("TFLOP/s")
        ax.set_title(f"attention {dtype} {direction}", fontsize=9)
        ax.legend(fontsize=7)
    fig.suptitle(_title(document), fontsize=8)
    return _save(plt, fig, path)


def roofline_figure(document: dict, path: Path) -> Path | None:
    rows = [r for r in document["rows"] if r.get("flops") and r.get("bytes") and r.get("median_ms")]
    ceiling = document.get("ceiling") or {}
    bandwidth = ceiling.get("copy_gbps")
    if not rows or not bandwidth:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 5))
    intensities = [r["flops"] / r["bytes"] for r in rows]
    low, high = min(intensities) / 2, max(intensities) * 2
    peaks = ceiling.get("matmul_tflops") or {}
    xs = [low * (high / low) ** (i / 100) for i in range(101)]
    for dtype, peak in sorted(peaks.items()):
        ax.plot(xs, [min(peak, bandwidth * x / 1e3) for x in xs], label=f"roofline {dtype} ({peak:.2f} TFLOP/s, {bandwidth:.0f} GB/s)")
    if not peaks:
        ax.plot(xs, [bandwidth * x / 1e3 for x in xs], label=f"copy bandwidth {bandwidth:.0f} GB/s (no matmul ceiling)")
    for provider in sorted({r["provider"] for r in rows}):
        mine = [(i, r) for i, r in zip(intensities, rows) if r["provider"] == provider]
        ax.scatter([i for i, _ in mine], [r["flops"] / (r["median_ms"] / 1e3) / 1e12 for _, r in mine], label=provider, s=18)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("arithmetic intensity (FLOPs per byte, by each suite's models)")
    ax.set_ylabel("TFLOP/s")
    ax.legend(fontsize=7)
    ax.set_title(_title(document), fontsize=8)
    return _save(plt, fig, path)


def plot_files(paths: list[str | Path], out_dir: str | Path | None = None) -> list[Path]:
    """Draw every figure that the data of each file supports; returns the PNG paths written."""
    written = []
    for path in map(Path, paths):
        document = _load(path)
        target = Path(out_dir) if out_dir else path.parent
        target.mkdir(parents=True, exist_ok=True)
        for name, draw in (("speedup", speedup_figure), ("attention", attention_figure), ("roofline", roofline_figure)):
            png = draw(document, target / f"{name}-{path.stem}.png")
            if png is not None:
                written.append(png)
    return written
