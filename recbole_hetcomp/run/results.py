"""Result rows and their rendering: the comparison table, ``results.json`` and ``results.md``."""

import json
from pathlib import Path

from recbole_hetcomp.trajectories.store import atomic_write_text  # noqa: F401 (re-exported: scripts import it here)

METRIC_COLUMNS = ("recall@10", "recall@20", "recall@50", "ndcg@10", "ndcg@20", "ndcg@50")


def markdown_table(rows, columns=METRIC_COLUMNS):
    head = ["name", "kind", "params", *columns, "train_s", "infer ms/1k users"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        test = r.get("test", {})
        cells = [r["name"], r["kind"], f"{r.get('params', 0):,}"]
        cells += [f"{test[c]:.4f}" if c in test else "-" for c in columns]
        train = r.get("train_s")
        cells.append("reused" if r.get("reused") else (f"{train:.1f}" if train is not None else "-"))
        infer = r.get("infer_ms_per_1k_users")
        cells.append(f"{infer:.1f}" if infer is not None else "-")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write_results(output_dir, dataset, rows, extra=None, footer=None):
    """``results.json`` and ``results.md`` in ``output_dir``; returns the markdown table (and ``footer``,
    markdown after it: the run's stage times)."""
    table = markdown_table(rows) + (f"\n\n{footer}" if footer else "")
    payload = {"dataset": dataset, "rows": rows, **(extra or {})}
    atomic_write_text(Path(output_dir) / "results.json", json.dumps(payload, indent=1, default=str) + "\n")
    atomic_write_text(Path(output_dir) / "results.md", f"# Results on {dataset}\n\n{table}\n")
    return table
