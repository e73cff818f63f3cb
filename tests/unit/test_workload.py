"""The scheduling benchmark's workload generator: seeded, with every ingredient the issue asks."""

from __future__ import annotations

from benchmarks.workload import WorkloadSpec, generate, summary


def test_workload_is_seeded_and_has_every_ingredient() -> None:
    spec = WorkloadSpec(seed=7, duration=30, rate=3)
    first, again = generate(spec), generate(spec)
    assert first == again
    assert generate(WorkloadSpec(seed=8, duration=30, rate=3)) != first
    info = summary(first)
    assert info["multi_turn"] > 0
    assert {m for m in spec.mix} == {c.model for c in first}
    words = [len(c.turns[0].text.split()) for c in first]
    assert max(words) >= spec.long_words[0] and min(words) <= spec.short_words[1]
    # later turns wait for the previous reply, then think
    assert all(t.think > 0 for c in first for t in c.turns[1:])
    # bursts: more conversations start inside the burst windows than outside, per second
    inside = sum(1 for c in first if c.start % spec.burst_every < spec.burst_seconds)
    share = spec.burst_seconds / spec.burst_every
    assert inside / len(first) > share
