"""Reading a Prometheus page in tests: every sample as (name, labels) → value, as Prometheus itself would see it.

An empty label value is no label at all in Prometheus; the OpenTelemetry exporter writes one for an
attribute that only some of a metric's series have (`reason=""` on committed transactions), so
samples are keyed by their non-empty labels.
"""
from prometheus_client.parser import text_string_to_metric_families

Key = tuple[str, frozenset]


def samples(page: str) -> dict[Key, float]:
    return {(s.name, frozenset((k, v) for k, v in s.labels.items() if v != "")): s.value
            for family in text_string_to_metric_families(page) for s in family.samples}


def key(name: str, **labels: str) -> Key:
    return name, frozenset(labels.items())


def value(page: dict[Key, float], name: str, **labels: str) -> float:
    """The sample's value, 0 when the page has no such series (a counter not yet incremented)."""
    return page.get(key(name, **labels), 0.0)


def series(page: dict[Key, float], name: str) -> dict[frozenset, float]:
    """Every series of one sample name: its labels → value."""
    return {labels: v for (n, labels), v in page.items() if n == name}
