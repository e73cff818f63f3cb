"""`herd bench`'s tables in a narrow terminal: one line per row, every number whole."""

from __future__ import annotations

import io

import pytest
from rich.console import Console

from services.bench.results import COLD_LOAD_MS, BenchRun, Sample, figures
from services.bench.tables import COLUMNS, TIERS, show

SMALL, BIG = "llama3.2:3b", "qwen3:8b"
LONG = "llama3.1:70b-instruct-q4_K_M"


def measured(models: dict[str, str], count: int, latency_ms: float, tokens: int,
             wall_s: float) -> BenchRun:
    """A run as the runner fills it in: samples per model (on the node given), then figures."""
    samples = [
        Sample(model=model, node=node, ok=index % 7 != 6, latency_ms=latency_ms + index,
               ttft_ms=latency_ms / 10 + index, completion_tokens=tokens,
               load_ms=COLD_LOAD_MS * 3 if index == 0 else 2.0)
        for model, node in models.items() for index in range(count)
    ]
    run = BenchRun(run_id="0123456789ab", model=next(iter(models)), models=list(models),
                   status="completed", duration_s=wall_s)
    whole = figures(samples, wall_s)
    run.done, run.failed = whole.requests, whole.failed
    run.requests_per_s, run.tokens_per_s = whole.requests_per_s, whole.tokens_per_s
    for model in models:
        run.per_model[model] = figures([s for s in samples if s.model == model], wall_s)
    for node in sorted(set(models.values())):
        run.per_node[node] = figures([s for s in samples if s.node == node], wall_s)
    return run


def rendered(run: BenchRun, width: int) -> list[str]:
    console = Console(width=width, file=io.StringIO(), record=True, color_system=None)
    show(console, run)
    return console.export_text().splitlines()


def rows_of(lines: list[str], title: str) -> list[list[str]]:
    """The cells of a table's body rows, split on blanks (names and figures have none)."""
    start = lines.index(next(line for line in lines if line.strip() == title))
    rule = next(i for i in range(start, len(lines)) if set(lines[i].strip()) == {"─"})
    body = []
    for line in lines[rule + 1:]:
        if not line.strip() or line.strip().startswith(("Per ", "run ")) or "left out" in line:
            break
        body.append(line.split())
    return body


def headers_of(lines: list[str], title: str) -> str:
    return lines[lines.index(next(line for line in lines if line.strip() == title)) + 1]


@pytest.mark.parametrize(("width", "models", "count", "latency_ms", "tokens", "wall_s"), [
    (80, {SMALL: "gpu-large", BIG: "gpu-medium"}, 6, 240.0, 16, 1.5),  # a short real-sized run
    # The widest figures a long run gives: 5-digit counts, 6-digit milliseconds, fast tokens.
    (80, {LONG: "a-node-with-a-long-name", BIG: "n2"}, 14_000, 123_000.0, 2048, 3_000.0),
    (60, {SMALL: "gpu-large", BIG: "gpu-medium"}, 6, 240.0, 16, 1.5),
    (120, {SMALL: "gpu-large", BIG: "gpu-medium"}, 6, 240.0, 16, 1.5),
])
def test_every_row_is_one_line_with_whole_numbers(
    width: int, models: dict[str, str], count: int, latency_ms: float, tokens: int,
    wall_s: float,
) -> None:
    run = measured(models, count, latency_ms, tokens, wall_s)
    lines = rendered(run, width)
    assert all(len(line) <= width for line in lines), "\n".join(lines)
    for title, first, table in (("Per model", "model", run.per_model),
                                ("Per node", "node", run.per_node)):
        header = headers_of(lines, title)
        shown = [c for c in COLUMNS if c.header in header]
        assert header.split()[0] == first and shown, header
        body = rows_of(lines, title)
        # One line per model (node): a cell that wrapped would add a line of stray pieces.
        assert len(body) == len(table), "\n".join(lines)
        for cells, (name, figures_) in zip(body, table.items(), strict=True):
            assert len(cells) == 1 + len(shown), "\n".join(lines)
            # Every number whole, as the figures say; only a name may be cut.
            assert cells[1:] == [c.cell(figures_) for c in shown], "\n".join(lines)
            assert all("…" not in cell for cell in cells[1:])
            assert cells[0] == name or (cells[0].endswith("…") and name.startswith(
                cells[0][:-1]) and len(cells[0]) >= 8), cells[0]


def test_a_wide_terminal_shows_every_column_and_a_narrow_one_says_what_it_left_out() -> None:
    run = measured({SMALL: "gpu-large", BIG: "gpu-medium"}, 6, 240.0, 16, 1.5)
    wide = rendered(run, 120)
    assert all(c.header in headers_of(wide, "Per model") for c in COLUMNS)
    assert not any("left out" in line for line in wide)
    narrow = rendered(run, 80)
    header = headers_of(narrow, "Per model")
    assert "p99 ms" not in header and "TTFT p95 ms" not in header
    assert "TTFT p50 ms" in header and "p50 ms" in header
    note = [line for line in narrow if "left out" in line]
    assert len(note) == 1 and all(h in note[0] for h in TIERS[1]), narrow
    summary = narrow[-2:]
    assert summary[0].startswith("run 0123456789ab completed: 12 ok, 0 failed in 1.5 s")
    assert summary[1].startswith(f"{run.requests_per_s:.2f} req/s")
