"""``/metrics``: the gateway's numbers in Prometheus' text format (prometheus-client).

Every scrape reads StatusView afresh through a collector of its own registry: there is no
process-wide registry to keep in step with the running parts.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from gateway.status import StatusView

__all__ = ["metrics_text"]

# The sink fields that only grow; any other number a sink shows is a gauge.
_SINK_COUNTERS = {
    "delivered": "events (or actions) the far side confirmed",
    "retries": "deliveries tried again",
    "parked": "batches refused for good and set aside",
}


async def metrics_text(status: StatusView) -> bytes:
    document = await status.document()
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Collector(document))
    return generate_latest(registry)


class _Collector:
    def __init__(self, document: Mapping[str, Any]) -> None:
        self._document = document

    def collect(self) -> Iterator[Metric]:
        document = self._document
        counters = document["counters"]
        yield _labelled(
            CounterMetricFamily,
            "lantern_messages",
            "messages received, by device family (source kind)",
            "family",
            document["messages_by_family"],
        )
        yield CounterMetricFamily(
            "lantern_events_committed",
            "events committed to the outbox since start",
            value=counters["events_committed"],
        )
        yield _labelled(
            CounterMetricFamily,
            "lantern_dead_letters",
            "messages that could not be decoded, by kind",
            "kind",
            document["dead_letters_by_kind"],
        )
        yield CounterMetricFamily(
            "lantern_duplicates", "redelivered messages dropped", value=counters["duplicates"]
        )
        yield GaugeMetricFamily(
            "lantern_mqtt_connected",
            "1 while connected to the broker",
            value=int(document["mqtt"]["connected"]),
        )
        yield GaugeMetricFamily(
            "lantern_ready", "1 when /readyz answers 200", value=int(document["ready"])
        )
        yield GaugeMetricFamily(
            "lantern_outbox_depth",
            "events the slowest sink has yet to deliver",
            value=document["outbox"]["depth"],
        )
        yield GaugeMetricFamily(
            "lantern_outbox_oldest_pending_age_seconds",
            "age of the oldest event a sink has yet to deliver (0: none)",
            value=document["outbox"]["oldest_pending_age_s"] or 0.0,
        )
        outbox = document["outbox"]
        yield GaugeMetricFamily(
            "lantern_outbox_used_bytes", "what the outbox holds now", value=outbox["used_bytes"]
        )
        yield GaugeMetricFamily(
            "lantern_outbox_max_bytes",
            "the outbox's budget (outbox.max_bytes)",
            value=outbox["max_bytes"],
        )
        yield GaugeMetricFamily(
            "lantern_outbox_waiting_for_room",
            "1 while nothing commits for lack of room (a full disk or budget): nothing is acked",
            value=int(outbox["waiting_for_room"] is not None),
        )
        yield _labelled(
            CounterMetricFamily,
            "lantern_outbox_dropped",
            "events dropped to keep to the budget: a sink's undelivered sightings, dead letters",
            "what",
            outbox["dropped"],
        )
        yield _labelled(
            CounterMetricFamily,
            "lantern_part_failures",
            "failures of each supervised part (each was restarted)",
            "part",
            {part["name"]: part["failures"] for part in document["parts"]},
        )
        yield _labelled(
            GaugeMetricFamily,
            "lantern_part_running",
            "1 while a supervised part runs, 0 while it waits to restart or has ended",
            "part",
            {part["name"]: int(part["status"] == "running") for part in document["parts"]},
        )
        yield from _sink_metrics(document["sinks"])
        outcomes = CounterMetricFamily(
            "lantern_rule_outcomes",
            "rule evaluations by rule and outcome",
            labels=["rule", "outcome"],
        )
        for summary in document["rules"]["summary"]:
            for outcome, count in summary.items():
                if outcome != "rule":
                    outcomes.add_metric([summary["rule"], outcome], count)
        yield outcomes
        yield GaugeMetricFamily(
            "lantern_presence_visitors",
            "visitors presence is tracking now",
            value=document["presence_visitors"],
        )
        yield _labelled(
            GaugeMetricFamily,
            "lantern_zone_occupancy",
            "visitors in each zone now",
            "zone",
            {zone["id"]: zone["occupancy"] for zone in document["zones"]},
        )


def _labelled(
    family: type[CounterMetricFamily] | type[GaugeMetricFamily],
    name: str,
    documentation: str,
    label: str,
    values: Mapping[str, float],
) -> Metric:
    metric = family(name, documentation, labels=[label])
    for key, value in sorted(values.items()):
        metric.add_metric([key], value)
    return metric


def _sink_metrics(sinks: list[dict[str, Any]]) -> Iterator[Metric]:
    """Every number a sink shows, its name as the label: new fields need no change here."""
    fields = sorted(
        {
            key
            for sink in sinks
            for key, value in sink.items()
            if isinstance(value, int | float) and not isinstance(value, bool)
        }
    )
    for field in fields:
        kind = CounterMetricFamily if field in _SINK_COUNTERS else GaugeMetricFamily
        metric = kind(
            f"lantern_sink_{field}", _SINK_COUNTERS.get(field, f"a sink's {field}"), labels=["sink"]
        )
        for sink in sinks:
            value = sink.get(field)
            if isinstance(value, int | float) and not isinstance(value, bool):
                metric.add_metric([sink["name"]], value)
        yield metric
