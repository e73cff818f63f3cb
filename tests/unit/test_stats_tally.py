"""The replica's stats tally: what one request counts, and the bound on distinct tags."""

from __future__ import annotations

from services.router.fleet.stats import MAX_TAGS_PER_HOUR, OTHER_TAG, Tally
from tests.helpers import make_trace

HOUR = 3600.0 * 500_000  # a fixed hour, in epoch seconds


def _tag_fields(tally: Tally) -> set[str]:
    (deltas,) = tally.pending.values()
    return {name.split("|t:", 1)[1] for name in deltas if name.startswith("req|t:")}


def test_distinct_tags_per_hour_are_bounded() -> None:
    tally = Tally()
    for i in range(MAX_TAGS_PER_HOUR + 50):
        tally.add(make_trace("n1", "m:1", tags=[f"app-{i}"]), now=HOUR + 1)
    tags = _tag_fields(tally)
    assert len(tags) == MAX_TAGS_PER_HOUR + 1  # the first ones, and one bucket for the rest
    assert OTHER_TAG in tags
    (deltas,) = tally.pending.values()
    assert deltas[f"req|t:{OTHER_TAG}"] == 50
    # A tag already counted this hour keeps its own field.
    tally.add(make_trace("n1", "m:1", tags=["app-0"]), now=HOUR + 2)
    assert deltas["req|t:app-0"] == 2


def test_a_new_hour_counts_new_tags_again() -> None:
    tally = Tally()
    for i in range(MAX_TAGS_PER_HOUR):
        tally.add(make_trace("n1", "m:1", tags=[f"app-{i}"]), now=HOUR + 1)
    tally.add(make_trace("n1", "m:1", tags=["late"]), now=HOUR + 3600 + 1)
    next_hour = tally.pending[max(tally.pending)]
    assert next_hour["req|t:late"] == 1
    assert f"req|t:{OTHER_TAG}" not in next_hour
