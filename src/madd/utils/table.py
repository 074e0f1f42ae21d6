"""The final metrics table printed at the end of a run (rich)."""

from __future__ import annotations

from collections.abc import Mapping

from rich.console import Console
from rich.table import Table


def print_metrics_table(metrics: Mapping[str, float], title: str = "Test metrics") -> None:
    table = Table(title=title)
    table.add_column("metric", style="cyan")
    table.add_column("value", justify="right")
    for key in sorted(metrics):
        table.add_row(key, f"{float(metrics[key]):.4f}")
    Console().print(table)


def print_confusion(matrix, class_names) -> None:
    table = Table(title="Test confusion matrix (rows: true, columns: predicted)")
    table.add_column("")
    for n in class_names:
        table.add_column(n, justify="right")
    for name, row in zip(class_names, matrix.tolist()):
        table.add_row(name, *[str(int(v)) for v in row])
    Console().print(table)
