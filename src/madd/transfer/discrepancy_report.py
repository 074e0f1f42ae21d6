"""Outputs of the discrepancy matrix: a rich table on the console, CSV files and a heatmap PNG."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

from madd.transfer.discrepancy import NO_SHARED, PairScore, Selection, score_table


def _cell(score: float, status: str) -> str:
    if status == NO_SHARED or not math.isfinite(score):
        return "no shared label"
    return f"{score:.4f}"


def print_matrix(pairs: Sequence[PairScore], selections: Sequence[Selection] = (), console=None) -> None:
    """The Table 2 shape: rows targets, columns sources; each row's chosen source in bold green."""
    from rich.console import Console
    from rich.table import Table

    table = score_table(pairs)
    if console is None:
        # wide enough for every column unwrapped, also when stdout is a file (rich then assumes 80 columns)
        need = 4 + max(len(str(n)) for n in table.index) + sum(3 + max(len(str(c)), 15) for c in table.columns)
        console = Console(width=max(Console().width, need))
    chosen = {s.target: s.chosen.source for s in selections}
    status = {(p.target, p.source): p.status for p in pairs}
    out = Table(title="Domain discrepancy scores (rows: target, columns: source; lower = closer)")
    out.add_column("target \\ source", style="cyan", no_wrap=True)
    for name in table.columns:
        out.add_column(name, justify="right", no_wrap=True)
    for target, row in table.iterrows():
        cells = []
        for source, value in row.items():
            text = _cell(float(value), status[(target, source)])
            if target == source:
                text = f"[dim]{text}[/dim]"
            elif chosen.get(target) == source:
                text = f"[bold green]{text}[/bold green]"
            cells.append(text)
        out.add_row(str(target), *cells)
    console.print(out)


def write_csv(pairs: Sequence[PairScore], out_dir: str | Path) -> tuple[Path, Path]:
    """``discrepancy_matrix.csv`` (targets x sources, ``inf`` = no shared label) and ``discrepancy_pairs.csv``
    (one row per pair: score, EMD, Gini, shared labels, usable samples, status)."""
    import pandas as pd

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    matrix, details = out_dir / "discrepancy_matrix.csv", out_dir / "discrepancy_pairs.csv"
    score_table(pairs).to_csv(matrix, float_format="%.6g")
    pd.DataFrame([p.as_row() for p in pairs]).to_csv(details, index=False, float_format="%.6g")
    return matrix, details


def save_heatmap(pairs: Sequence[PairScore], path: str | Path, selections: Sequence[Selection] = ()) -> Path:
    """A heatmap of the matrix: grey hatched cells = no shared label, boxes = chosen sources."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np
    from matplotlib.patches import Rectangle

    table = score_table(pairs)
    values = table.to_numpy(dtype=float)
    masked = np.ma.masked_invalid(np.where(np.isfinite(values), values, np.nan))
    n_t, n_s = values.shape
    fig, ax = plt.subplots(figsize=(1.4 + 1.15 * n_s, 1.0 + 0.75 * n_t))
    cmap = matplotlib.colormaps["viridis_r"].with_extremes(bad="lightgrey")
    im = ax.imshow(masked, cmap=cmap, aspect="auto")
    finite = values[np.isfinite(values)]
    hi = float(finite.max()) if finite.size else 1.0
    for i in range(n_t):
        for j in range(n_s):
            v = values[i, j]
            if np.isfinite(v):
                ax.text(j, i, f"{v:.3g}", ha="center", va="center", fontsize=8,
                        color="white" if v > 0.5 * hi else "black")
            else:
                ax.add_patch(Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, hatch="//", edgecolor="grey", lw=0))
                ax.text(j, i, "no shared\nlabel", ha="center", va="center", fontsize=6, color="dimgrey")
    index = {n: k for k, n in enumerate(table.columns)}
    rows = {n: k for k, n in enumerate(table.index)}
    for s in selections:
        if s.target in rows and s.chosen.source in index:
            ax.add_patch(Rectangle((index[s.chosen.source] - 0.5, rows[s.target] - 0.5), 1, 1, fill=False,
                                   edgecolor="red", lw=2.5))
    ax.set_xticks(range(n_s), table.columns, rotation=35, ha="right")
    ax.set_yticks(range(n_t), table.index)
    ax.set_xlabel("source")
    ax.set_ylabel("target")
    ax.set_title("Domain discrepancy (lower = closer; red box = chosen source)")
    fig.colorbar(im, ax=ax, label="EMD x Gini / (shared labels + eps)")
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
