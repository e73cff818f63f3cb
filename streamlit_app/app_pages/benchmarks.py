"""Benchmarks: the stored runs, and a button that starts a run against the fleet."""

from __future__ import annotations

from typing import Any

import streamlit as st

from streamlit_app import data, widgets
from streamlit_app.data import fmt, pick

PREFERRED = ("runs", "benchmarks", "benchmark_runs")
COLUMNS = ("run_id", "source", "status", "model", "requests", "concurrency", "done", "failed",
           "requests_per_s", "tokens_per_s", "latency_p50_ms", "latency_p95_ms",
           "latency_p99_ms", "ttft_p50_ms", "ttft_p95_ms", "cold_loads", "tokens_per_s_avg")
ACTIVE = {"running", "started", "pending", "queued", "in_progress"}


def progress_of(run: Any) -> float | None:
    """0..1 from whichever progress fields the run carries."""
    value = pick(run, "progress", "progress_pct", "percent")
    if isinstance(value, int | float) and not isinstance(value, bool):
        return min(max(value / 100 if value > 1 else float(value), 0.0), 1.0)
    done = pick(run, "completed", "done", "requests_done")
    total = pick(run, "total", "requests_total", "requests")
    if isinstance(done, int | float) and isinstance(total, int | float) and total > 0:
        return min(max(done / total, 0.0), 1.0)
    return None


def active_run(body: Any, runs: list[dict[str, Any]]) -> Any:
    current = pick(body, "active", "running", "current")
    if isinstance(current, list) and current:
        current = current[0]
    if isinstance(current, dict):
        return current
    return next((r for r in runs if str(r.get("status", "")).lower() in ACTIVE), None)


@st.fragment(run_every="2s")
def live() -> None:
    reply = data.benchmarks()
    if widgets.problem(reply, "benchmarks"):
        return
    runs = widgets.find_records(reply.data, PREFERRED, key_name="run_id")
    for run in runs:
        for name in ("latency", "ttft"):
            figures = run.pop(f"{name}_ms", None)
            if isinstance(figures, dict):
                run.update({f"{name}_{k}_ms": v for k, v in figures.items()})
    current = active_run(reply.data, runs)
    if current is not None:
        share = progress_of(current)
        label = f"Benchmark {fmt(pick(current, 'run_id', 'id'))} running"
        st.progress(share if share is not None else 0.0,
                    text=f"{label}: {fmt(None if share is None else share * 100, '%', 0)}")
    if not runs:
        st.info("No benchmark runs stored yet: start one below.")
        return
    latest = runs[0]
    per = {name: latest.get(name) for name in ("per_model", "per_node")}
    for run in runs:  # nested tables are shown below, for the latest run
        for name in per:
            run.pop(name, None)
    st.dataframe(widgets.frame(runs, COLUMNS), hide_index=True, width="stretch")
    for name, title in (("per_model", "model"), ("per_node", "node")):
        table = per[name]
        if isinstance(table, dict) and table:
            st.markdown(f"**Latest run ({fmt(pick(latest, 'run_id'))}) per {title}**")
            rows = [{title: key, **_flat(value)} for key, value in table.items()
                    if isinstance(value, dict)]
            st.dataframe(widgets.frame(rows), hide_index=True, width="stretch")


def _flat(figures: dict[str, Any]) -> dict[str, Any]:
    """latency_ms/ttft_ms {p50, ...} as columns of their own."""
    out: dict[str, Any] = {}
    for key, value in figures.items():
        if isinstance(value, dict):
            out.update({f"{key.removesuffix('_ms')}_{k}_ms": v for k, v in value.items()})
        else:
            out[key] = value
    return out


st.title("Benchmarks")
live()
with st.form("start_benchmark"):
    st.markdown("**Start a benchmark against the fleet**")
    left, middle, right = st.columns(3)
    count = left.number_input("Requests", min_value=1, max_value=1000, value=20, step=10,
                              key="bench_requests")
    concurrency = middle.number_input("Concurrent requests", min_value=1, max_value=64, value=4,
                                      key="bench_concurrency")
    max_tokens = right.number_input("Tokens per answer", min_value=1, max_value=2048, value=32,
                                    key="bench_tokens")
    model = st.text_input("Model (empty: the most loaded model)", value="", key="bench_model")
    submitted = st.form_submit_button("Start benchmark", type="primary", key="bench_go")
if submitted:
    options: dict[str, Any] = {"requests": int(count), "concurrency": int(concurrency),
                               "max_tokens": int(max_tokens)}
    if model.strip():
        options["model"] = model.strip()
    started = data.start_benchmark(options)
    if started.ok:
        st.success(f"Benchmark started: run {fmt(pick(started.data, 'run_id', 'id'))} "
                   f"on {fmt(pick(started.data, 'model'))}; progress shows above.")
    else:
        st.error(f"Could not start a benchmark: {started.error}")
