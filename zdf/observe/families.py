"""Prometheus metric families from plain numbers (built at scrape time, on the HTTP thread)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)

PREFIX = "zdf_"


def gauge(name: str, doc: str, value: float) -> Metric:
    return GaugeMetricFamily(PREFIX + name, doc, value=float(value))


def counter(name: str, doc: str, value: float) -> Metric:
    return CounterMetricFamily(PREFIX + name, doc, value=float(value))


def labelled_gauge(
    name: str, doc: str, labels: Sequence[str], rows: Iterable[tuple[Sequence[str], float]]
) -> Metric:
    return _labelled(GaugeMetricFamily, name, doc, labels, rows)


def labelled_counter(
    name: str, doc: str, labels: Sequence[str], rows: Iterable[tuple[Sequence[str], float]]
) -> Metric:
    return _labelled(CounterMetricFamily, name, doc, labels, rows)


def _labelled(
    kind: type[GaugeMetricFamily] | type[CounterMetricFamily],
    name: str,
    doc: str,
    labels: Sequence[str],
    rows: Iterable[tuple[Sequence[str], float]],
) -> Metric:
    family = kind(PREFIX + name, doc, labels=list(labels))
    for values, number in rows:
        family.add_metric(list(values), float(number))
    return family


def loop_counters(snap: Mapping[str, Any]) -> Iterator[Metric]:
    """What every process's snapshot has: dropped control messages, failed callbacks."""
    if "dropped" in snap:
        yield labelled_counter(
            "messages_dropped",
            "Control messages dropped or refused, by reason",
            ["reason"],
            (([reason], n) for reason, n in snap["dropped"].items()),
        )
    yield counter("callback_errors", "Reactor callbacks that raised", snap["callback_errors"])


def by_state(name: str, doc: str, counts: Mapping[str, int], states: Iterable[str]) -> Metric:
    """One series per state, zero for the states nothing is in (so a graph never has gaps)."""
    return labelled_gauge(name, doc, ["state"], (([s], counts.get(s, 0)) for s in states))


def histogram(name: str, doc: str, buckets: Sequence[tuple[str, float]], total: float) -> Metric:
    family = HistogramMetricFamily(PREFIX + name, doc)
    family.add_metric([], list(buckets), sum_value=total)
    return family
