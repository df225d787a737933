"""``/metrics``: the runtime's figures in the Prometheus text format.

A collector reads the state table at scrape time (nothing is counted twice, nothing is kept in
step by hand): actors by state, restarts, every per-actor count (one family,
``voxbridge_actor_counter``, with a ``counter`` label), the live version of each agent's file
(``voxbridge_agent_version_info``, its git blob id and commit as labels) and a rejected one,
actors kept on their previous version, reloads and their latency, load errors,
brain latency, each voice stage's latency, open voice sessions, memory (degraded per agent,
rows, writes waiting and lost, facts learned, each store operation's latency), tool calls by
outcome and their latency, process CPU and RSS, Trio scheduling lag, dropped events.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    InfoMetricFamily,
    Metric,
)
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.registry import Collector

from ..runtime.state import ActorState

if TYPE_CHECKING:
    from ..runtime.fleet import Runtime

__all__ = ["GAUGES", "HISTOGRAMS", "render_metrics"]

HISTOGRAMS = (
    ("reload", "File saved to change applied, seconds"),
    ("brain", "Message to the whole answer shown, seconds"),
    ("first_text", "Message to the first text of the answer shown, seconds"),
    ("voice_stt", "Voice: end of speech to transcript, seconds"),
    ("voice_think", "Voice: transcript to the brain's first words, seconds"),
    ("voice_tts", "Voice: a sentence to its first audio, seconds"),
    ("voice_first_audio", "Voice: end of speech to the answer's first audio, seconds"),
    ("voice_barge_in", "Voice: the person speaking over the agent to its voice stopped, seconds"),
    ("memory_write", "Memory: a turn or fact queued to committed in the store, seconds"),
    ("memory_read", "Memory: one read of the store, seconds"),
    ("memory_history_load", "Memory: a conversation loaded when first used, seconds"),
    ("memory_recall", "Memory: the facts recalled into one answer, seconds"),
    ("tool", "Tools: one call, from the LLM's request to its result, seconds"),
)
GAUGES = frozenset({"voice_sessions"})  # counts that go down as well as up


class _RuntimeCollector(Collector):
    def __init__(self, runtime: Runtime) -> None:
        self._rt = runtime

    def collect(self) -> Iterator[Metric]:
        rt = self._rt
        table = rt.table
        states = GaugeMetricFamily("voxbridge_actors", "Actors by state", labels=["state"])
        counts = table.by_state()
        for state in ActorState:
            states.add_metric([state.value], counts.get(state, 0))
        yield states

        up = GaugeMetricFamily(
            "voxbridge_actor_up", "1 while the actor is running", labels=["agent", "plugin"]
        )
        restarts = CounterMetricFamily(
            "voxbridge_actor_restarts", "Restarts after a crash", labels=["agent", "plugin"]
        )
        messages = CounterMetricFamily(
            "voxbridge_messages", "Messages answered", labels=["agent", "plugin"]
        )
        brain_errors = CounterMetricFamily(
            "voxbridge_brain_errors",
            "Messages the brain could not answer",
            labels=["agent", "plugin"],
        )
        counted = CounterMetricFamily(
            "voxbridge_actor_counter",
            "Every count an actor keeps (ctx.count), by name",
            labels=["agent", "plugin", "counter"],
        )
        sessions = GaugeMetricFamily(
            "voxbridge_voice_sessions", "Voice sessions open", labels=["agent", "plugin"]
        )
        for (agent, plugin), status in table.actors().items():
            labels = [agent, plugin]
            up.add_metric(labels, 1 if status.state == ActorState.RUNNING else 0)
            restarts.add_metric(labels, status.restarts)
            counters = table.counters((agent, plugin))
            messages.add_metric(labels, counters.get("messages", 0))
            brain_errors.add_metric(labels, counters.get("brain_errors", 0))
            for name, value in sorted(counters.items()):
                if name in GAUGES:
                    continue
                counted.add_metric([*labels, name], value)
            if "voice_sessions" in counters:
                sessions.add_metric(labels, counters["voice_sessions"])
        kept = GaugeMetricFamily(
            "voxbridge_actor_kept_previous_version",
            "1 while the actor serves its previous version because the new one failed for good",
            labels=["agent", "plugin"],
        )
        for (agent, plugin), status in table.actors().items():
            swap = status.swap
            kept.add_metric([agent, plugin], 1 if swap and swap.state == ActorState.FAILED else 0)
        yield from (up, restarts, messages, brain_errors, counted, sessions, kept)

        live = InfoMetricFamily(
            "voxbridge_agent_version", "The live version of each agent's file", labels=["agent"]
        )
        rejected = InfoMetricFamily(
            "voxbridge_agent_rejected_version",
            "A newer version of the agent's file that did not load (the live one runs on)",
            labels=["agent"],
        )
        for agent, version in sorted(table.versions().items()):
            live.add_metric([agent], {"blob": version.blob, "commit": version.commit or ""})
            if version.rejected is not None:
                rejected.add_metric([agent], {"blob": version.rejected.blob or ""})
        yield from (live, rejected)

        yield from _memory(rt)

        calls = CounterMetricFamily(
            "voxbridge_tool_calls",
            "Tool calls by agent, tool (server.tool) and outcome (ok, error, timeout)",
            labels=["agent", "tool", "outcome"],
        )
        for (agent, tool, outcome), count in sorted(table.tool_calls.items()):
            calls.add_metric([agent, tool, outcome], count)
        yield calls

        yield GaugeMetricFamily("voxbridge_agents", "Agents loaded", value=len(rt.index.by_id))
        yield GaugeMetricFamily(
            "voxbridge_load_errors", "Agent files that do not load", value=len(table.problems())
        )
        yield CounterMetricFamily(
            "voxbridge_reloads", "File changes applied", value=rt.reconciler.applied
        )
        for name, help_text in HISTOGRAMS:
            hist = table.histograms.get(name)
            family = HistogramMetricFamily(f"voxbridge_{name}_seconds", help_text)
            if hist is not None:
                cumulative = [(str(b), c) for b, c in zip(hist.buckets, hist.counts, strict=False)]
                cumulative.append(("+Inf", hist.counts[-1]))
                family.add_metric([], cumulative, hist.total)
            yield family
        yield CounterMetricFamily(
            "voxbridge_events_dropped",
            "Events dropped for slow WebSocket clients",
            value=table.dropped_events,
        )

        sample = rt.monitor.latest
        yield GaugeMetricFamily(
            "voxbridge_process_cpu_percent",
            "Process CPU, % of one core, over the last sample",
            value=sample.cpu_percent,
        )
        yield CounterMetricFamily(
            "voxbridge_process_cpu_seconds", "Process CPU time", value=sample.cpu_seconds_total
        )
        yield GaugeMetricFamily(
            "voxbridge_process_resident_memory_bytes", "Process RSS", value=sample.rss_bytes
        )
        yield GaugeMetricFamily(
            "voxbridge_scheduling_lag_seconds",
            "How late Trio woke a sleeping task (last tick)",
            value=sample.lag_s,
        )
        yield GaugeMetricFamily(
            "voxbridge_scheduling_lag_max_seconds",
            "Worst scheduling lag over the last sample",
            value=sample.lag_max_s,
        )
        yield GaugeMetricFamily(
            "voxbridge_ready",
            "1 once the first load is applied",
            value=1 if rt.ready and not rt.stopping else 0,
        )


def _memory(rt: Runtime) -> Iterator[Metric]:
    """Memory: degraded per agent, rows per kind, writes waiting and lost, what was learned."""
    health = rt.memory.health()
    degraded = GaugeMetricFamily(
        "voxbridge_memory_degraded",
        "1 while the agent's memory is failing (it answers on with what it holds)",
        labels=["agent"],
    )
    for agent in sorted(rt.index.by_id.values(), key=lambda a: a.id):
        if health is not None and (agent.memory.conversations or agent.memory.facts):
            degraded.add_metric([agent.id], 1 if health.degraded else 0)
    yield degraded
    rows = GaugeMetricFamily("voxbridge_memory_rows", "Rows in the store, by kind", labels=["kind"])
    for kind, count in sorted(rt.memory.rows.items()):
        rows.add_metric([kind], count)
    yield rows
    yield GaugeMetricFamily(
        "voxbridge_memory_pending",
        "Writes waiting to be committed",
        value=health.pending if health is not None else 0,
    )
    yield CounterMetricFamily(
        "voxbridge_memory_lost",
        "Writes dropped because the store was down too long",
        value=health.lost if health is not None else 0,
    )
    learned = CounterMetricFamily(
        "voxbridge_memory_facts",
        "Facts learned, offers dropped (behind), failures, recalls by meaning that failed",
        labels=["agent", "outcome"],
    )
    for (agent_id, name), count in sorted(rt.memory.counters.items()):
        learned.add_metric([agent_id, name.removeprefix("facts_")], count)
    yield learned


def render_metrics(runtime: Runtime) -> tuple[bytes, str]:
    """The exposition text and its content type."""
    registry = CollectorRegistry()
    registry.register(_RuntimeCollector(runtime))
    return generate_latest(registry), CONTENT_TYPE_LATEST
