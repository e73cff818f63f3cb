"""`herd bench`'s figures as rich tables that fit the terminal, one line per row.

Every figure column is as wide as its widest value and never wraps or shrinks; the units
are in the headers. A long model or node name is cut (with an ellipsis) to NAME_WIDTH
characters first; when the table is still wider than the terminal, columns are left out a
tier at a time (80 columns drop latency p99 and TTFT p95) and the caption says which.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass

from rich import box
from rich.console import Console
from rich.table import Table

from services.bench.results import BenchRun, Figures

__all__ = ["COLUMNS", "TIERS", "Column", "fitted", "show", "summary", "table"]


@dataclass(frozen=True)
class Column:
    """A figure column: its header (with the unit) and how a value reads."""

    header: str
    cell: Callable[[Figures], str]


def _ms(value: float) -> str:
    return f"{value:.0f}"


COLUMNS = (
    Column("ok", lambda f: str(f.requests)),
    Column("failed", lambda f: str(f.failed)),
    Column("req/s", lambda f: f"{f.requests_per_s:.2f}"),
    Column("tok/s", lambda f: f"{f.tokens_per_s:.1f}"),
    Column("p50 ms", lambda f: _ms(f.latency_ms.p50)),
    Column("p95 ms", lambda f: _ms(f.latency_ms.p95)),
    Column("p99 ms", lambda f: _ms(f.latency_ms.p99)),
    Column("TTFT p50 ms", lambda f: _ms(f.ttft_ms.p50)),
    Column("TTFT p95 ms", lambda f: _ms(f.ttft_ms.p95)),
    Column("cold", lambda f: str(f.cold_loads)),
)
# Columns dropped, in this order, while a table is wider than the terminal.
TIERS: tuple[frozenset[str], ...] = (
    frozenset(),
    frozenset({"p99 ms", "TTFT p95 ms"}),
    frozenset({"p99 ms", "TTFT p95 ms", "p95 ms", "TTFT p50 ms"}),
)
NAME_WIDTH = 12  # a name may be cut to this many characters before columns are dropped


def table(title: str, rows: dict[str, Figures], first: str,
          columns: tuple[Column, ...] = COLUMNS) -> Table:
    """One row per model (or node): its name, then `columns`."""
    # Two spaces between columns (collapsed padding around a blank divider), a rule under
    # the headers, no frame: the figures get the width.
    grid = Table(title=title, box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False,
                 collapse_padding=True, title_justify="left", caption_justify="left")
    # The name is the one column that gives way: cut with an ellipsis (names have no spaces
    # to wrap at), while the figures keep their width and never wrap.
    grid.add_column(first, justify="left", overflow="ellipsis")
    for column in columns:
        grid.add_column(column.header, justify="right", no_wrap=True)
    for name, figures in rows.items():
        grid.add_row(name, *(column.cell(figures) for column in columns))
    return grid


def _needed(grid: Table, rows: dict[str, Figures], first: str) -> int:
    """The width `grid` takes with every figure whole and names cut to NAME_WIDTH."""
    natural = Console(width=100_000, file=io.StringIO()).measure(grid).maximum
    name = max((len(n) for n in (first, *rows)), default=0)
    return natural - name + min(name, NAME_WIDTH)


def fitted(console: Console, title: str, rows: dict[str, Figures],
           first: str) -> tuple[Table, list[str]]:
    """The table with as many columns as the console's width holds, dropping TIERS in turn,
    and the headers of the columns it left out."""
    for dropped in TIERS:
        kept = tuple(c for c in COLUMNS if c.header not in dropped)
        grid = table(title, rows, first, kept)
        if _needed(grid, rows, first) <= console.width:
            break
    return grid, [c.header for c in COLUMNS if c not in kept]


def summary(result: BenchRun) -> str:
    """The run's totals in two short lines."""
    text = (f"run {result.run_id} {result.status}: {result.done} ok, {result.failed} failed "
            f"in {result.duration_s or 0:.1f} s\n"
            f"{result.requests_per_s:.2f} req/s, {result.tokens_per_s:.1f} tokens/s, "
            f"{result.cold_loads} cold loads")
    return text + (f"\nlast error: {result.error}" if result.error else "")


def show(console: Console, result: BenchRun) -> None:
    """The run as tables, per model then per node, and its totals."""
    left_out: list[str] = []
    for title, rows, first in (("Per model", result.per_model, "model"),
                               ("Per node", result.per_node, "node")):
        grid, dropped = fitted(console, title, rows, first)
        console.print(grid)
        left_out += [header for header in dropped if header not in left_out]
    if left_out:
        console.print(f"{', '.join(left_out)} left out to fit the terminal; --json has them.",
                      highlight=False, style="dim")
    console.print(summary(result), highlight=False)
