"""What the status page and ``/metrics`` show: numbers read from the node's database."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import Engine, func, select

from osteo_node.outbox import queries as outbox_queries
from osteo_node.queue import jobs as job_table
from osteo_node.store.index import instances
from osteo_node.worklist.store import fls_worklist


@dataclass(frozen=True)
class NodeState:
    instances: int
    jobs: dict[str, int]
    recent_failures: list[dict[str, Any]]
    outbox: dict[str, dict[str, int]]
    worklist: dict[str, int]
    analysis_seconds: list[float]  # of finished jobs (for the histogram)


def read_state(engine: Engine, failures: int = 10) -> NodeState:
    with engine.connect() as conn:
        n_instances = int(conn.execute(select(func.count()).select_from(instances)).scalar_one())
        jobs = job_table.state_counts(conn)
        recent = job_table.recent_jobs(conn, failures, (job_table.FAILED,
                                                        job_table.NOT_ANALYSABLE))
        durations = [
            float(r.finished_at) - float(r.started_at)  # epoch seconds
            for r in conn.execute(select(job_table.jobs.c.started_at,
                                         job_table.jobs.c.finished_at)
                                  .where(job_table.jobs.c.finished_at.is_not(None),
                                         job_table.jobs.c.started_at.is_not(None)))
        ]
        wl = {r[0]: int(r[1]) for r in conn.execute(
            select(fls_worklist.c.status, func.count()).group_by(fls_worklist.c.status))}
    return NodeState(n_instances, jobs, recent, outbox_queries.counts(engine), wl, durations)


HISTOGRAM_BUCKETS = (5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0)


def prometheus_text(state: NodeState) -> str:
    """Prometheus text exposition format 0.0.4."""
    out = [
        "# HELP osteo_node_instances_received_total DICOM instances stored by the node.",
        "# TYPE osteo_node_instances_received_total counter",
        f"osteo_node_instances_received_total {state.instances}",
        "# HELP osteo_node_jobs Analysis jobs by state.",
        "# TYPE osteo_node_jobs gauge",
        *(f'osteo_node_jobs{{state="{k}"}} {v}' for k, v in sorted(state.jobs.items())),
        "# HELP osteo_node_outbox_items Result objects per destination and state.",
        "# TYPE osteo_node_outbox_items gauge",
        *(f'osteo_node_outbox_items{{destination="{d}",state="{s}"}} {n}'
          for d, by in sorted(state.outbox.items()) for s, n in sorted(by.items())),
        "# HELP osteo_node_worklist_rows FLS worklist rows by status.",
        "# TYPE osteo_node_worklist_rows gauge",
        *(f'osteo_node_worklist_rows{{status="{k}"}} {v}'
          for k, v in sorted(state.worklist.items())),
        "# HELP osteo_node_analysis_seconds Time from a job's start to its end.",
        "# TYPE osteo_node_analysis_seconds histogram",
    ]
    for b in HISTOGRAM_BUCKETS:
        n = sum(1 for d in state.analysis_seconds if d <= b)
        out.append(f'osteo_node_analysis_seconds_bucket{{le="{b:g}"}} {n}')
    out += [f'osteo_node_analysis_seconds_bucket{{le="+Inf"}} {len(state.analysis_seconds)}',
            f"osteo_node_analysis_seconds_sum {sum(state.analysis_seconds):.3f}",
            f"osteo_node_analysis_seconds_count {len(state.analysis_seconds)}"]
    return "\n".join(out) + "\n"
