"""Benchmarks: the stored runs, and a button that starts a run against the fleet."""

from __future__ import annotations

from typing import Any

import msgspec
import streamlit as st

from shared.schemas import BenchmarkList, BenchmarkRun
from streamlit_app import data, widgets
from streamlit_app.data import fmt

COLUMNS = ("run_id", "source", "status", "model", "requests", "concurrency", "done", "failed",
           "requests_per_s", "tokens_per_s", "latency_p50_ms", "latency_p95_ms",
           "latency_p99_ms", "ttft_p50_ms", "ttft_p95_ms", "cold_loads", "tokens_per_s_avg")


def progress_of(run: BenchmarkRun) -> float:
    """0..1: the share of the run's requests answered, well or not."""
    return min(max(run.progress_pct / 100, 0.0), 1.0)


def active_run(body: BenchmarkList) -> BenchmarkRun | None:
    return body.active[0] if body.active else None


@st.fragment(run_every="2s")
def live() -> None:
    reply = data.benchmarks()
    if widgets.problem(reply, "benchmarks") or reply.data is None:
        return
    runs: list[dict[str, Any]] = [msgspec.to_builtins(run) for run in reply.data.runs]
    for run in runs:
        for name in ("latency", "ttft"):
            figures = run.pop(f"{name}_ms", None)
            if isinstance(figures, dict):
                run.update({f"{name}_{k}_ms": v for k, v in figures.items()})
    current = active_run(reply.data)
    if current is not None:
        share = progress_of(current)
        label = f"Benchmark {fmt(current.run_id)} running"
        st.progress(share, text=f"{label}: {fmt(share * 100, '%', 0)}")
    if not runs:
        st.info("No benchmark runs stored yet: start one below.")
        return
    latest = reply.data.runs[0]
    for run in runs:  # nested tables are shown below, for the latest run
        run.pop("per_model", None)
        run.pop("per_node", None)
    st.dataframe(widgets.frame(runs, COLUMNS), hide_index=True, width="stretch")
    for table, title in ((latest.per_model, "model"), (latest.per_node, "node")):
        if table:
            st.markdown(f"**Latest run ({fmt(latest.run_id)}) per {title}**")
            rows = [{title: key, **_flat(msgspec.to_builtins(value))}
                    for key, value in table.items()]
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
    if started.data is not None:
        st.success(f"Benchmark started: run {fmt(started.data.run_id)} "
                   f"on {fmt(started.data.model)}; progress shows above.")
    else:
        st.error(f"Could not start a benchmark: {started.error}")
