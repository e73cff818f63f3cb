"""Benchmarks: the stored runs, each run's figures per model and per node, and a button that
starts a run against the fleet."""

from __future__ import annotations

import datetime as dt
from typing import Any

import streamlit as st

from shared.schemas import BenchmarkList, BenchmarkRun, Figures
from streamlit_app import data, widgets
from streamlit_app.data import fmt

# The runs side by side: when, which models, what came back, the headline figures. The run
# id, its source, TTFT and cold loads are in the breakdown of one run below: beside the others
# they would not fit in a page 1280 px wide. Models gets a fixed width so long names are cut
# in their cell (the breakdown names each one) rather than widening the table.
RUNS: widgets.Columns = {
    "started": st.column_config.DatetimeColumn("Started (UTC)", format="MMM D, HH:mm:ss"),
    "models": st.column_config.TextColumn("Models", width=170,
                                          help="Every model the run asked for"),
    "status": st.column_config.TextColumn("Status"),
    "concurrency": widgets.count("Conc.", help="Requests in flight at once"),
    "done": widgets.count("OK", help="Requests answered"),
    "failed": widgets.count("Failed"),
    "requests_per_s": widgets.number("Req/s", "%.2f", help="Answered requests per second"),
    "tokens_per_s": widgets.number("Tokens/s", "%.1f", help="Generated tokens per second"),
    "latency_p50_ms": widgets.ms("Latency p50", help="Median time to the whole answer"),
    "latency_p95_ms": widgets.ms("p95", help="95th percentile of the latency"),
}
# One run's figures per model or per node (the first column is named by the caller).
FIGURES: widgets.Columns = {
    "requests": widgets.count("OK", help="Requests answered"),
    "failed": widgets.count("Failed"),
    "requests_per_s": widgets.number("Req/s", "%.2f", help="Of the whole run's wall time"),
    "tokens_per_s": widgets.number("Tokens/s", "%.1f", help="Of the whole run's wall time"),
    "latency_p50_ms": widgets.ms("Latency p50"),
    "latency_p95_ms": widgets.ms("p95", help="95th percentile of the latency"),
    "ttft_p50_ms": widgets.ms("TTFT p50", help="Median time to the first token"),
    "ttft_p95_ms": widgets.ms("p95", help="95th percentile of the time to the first token"),
    "cold_loads": widgets.count("Cold loads", help="Answers that waited for a model load"),
}


def progress_of(run: BenchmarkRun) -> float:
    """0..1: the share of the run's requests answered, well or not."""
    return min(max(run.progress_pct / 100, 0.0), 1.0)


def active_run(body: BenchmarkList) -> BenchmarkRun | None:
    return body.active[0] if body.active else None


def models_of(run: BenchmarkRun) -> list[str]:
    """Every model of the run; runs stored before `models` existed name only `model`."""
    return list(run.models) or [run.model]


def run_row(run: BenchmarkRun) -> dict[str, Any]:
    """One row of the runs table."""
    started = (dt.datetime.fromtimestamp(run.started_at, dt.UTC) if run.started_at > 0
               else None)
    return {
        "run_id": run.run_id, "started": started, "models": ", ".join(models_of(run)),
        "source": run.source, "status": run.status, "requests": run.requests,
        "concurrency": run.concurrency, "done": run.done, "failed": run.failed,
        "requests_per_s": run.requests_per_s, "tokens_per_s": run.tokens_per_s,
        "latency_p50_ms": run.latency_ms.p50, "latency_p95_ms": run.latency_ms.p95,
        "latency_p99_ms": run.latency_ms.p99, "ttft_p50_ms": run.ttft_ms.p50,
        "ttft_p95_ms": run.ttft_ms.p95, "cold_loads": run.cold_loads,
    }


def figures_rows(first: str, table: dict[str, Figures]) -> list[dict[str, Any]]:
    """A run's per-model (or per-node) figures as table rows, `first` naming the group."""
    return [{
        first: name, "requests": f.requests, "failed": f.failed,
        "requests_per_s": f.requests_per_s, "tokens_per_s": f.tokens_per_s,
        "latency_p50_ms": f.latency_ms.p50, "latency_p95_ms": f.latency_ms.p95,
        "latency_p99_ms": f.latency_ms.p99, "ttft_p50_ms": f.ttft_ms.p50,
        "ttft_p95_ms": f.ttft_ms.p95, "cold_loads": f.cold_loads,
    } for name, f in table.items()]


def run_label(run: BenchmarkRun) -> str:
    return f"{run.run_id} · {', '.join(models_of(run))} · {run.source}"


def breakdown(run: BenchmarkRun) -> None:
    """The chosen run's figures per model and per node."""
    st.caption(f"{fmt(run.requests)} requests, {fmt(run.concurrency)} at a time, "
               f"{fmt(run.max_tokens)} tokens per answer"
               + (", streamed" if run.stream else "")
               + (f"; {fmt(run.duration_s, 's')}" if run.duration_s else "")
               + (f". Last error: {run.error}" if run.error else ""))
    for table, title, label in ((run.per_model, "model", "Model"),
                                (run.per_node, "node", "Node")):
        if table:
            st.markdown(f"**Per {title}**")
            widgets.table(figures_rows(title, table),
                          {title: st.column_config.TextColumn(label), **FIGURES})


@st.fragment(run_every="2s")
def live() -> None:
    reply = data.benchmarks()
    if widgets.problem(reply, "benchmarks") or reply.data is None:
        return
    current = active_run(reply.data)
    if current is not None:
        share = progress_of(current)
        label = f"Benchmark {fmt(current.run_id)} running"
        st.progress(share, text=f"{label}: {fmt(share * 100, '%', 0)}")
    runs = reply.data.runs
    if not runs:
        st.info("No benchmark runs stored yet: start one below.")
        return
    widgets.table([run_row(run) for run in runs], RUNS)
    st.subheader("One run in detail")
    by_label = {run_label(run): run for run in runs}
    chosen = st.selectbox("Run", list(by_label), key="bench_detail",
                          help="The newest run comes first")
    breakdown(by_label[chosen] if chosen in by_label else runs[0])


st.title("Benchmarks")
st.caption("Runs started here and by `herd bench`, newest first. Rates are over each run's "
           "wall time; latency and TTFT are percentiles of the answered requests.")
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
