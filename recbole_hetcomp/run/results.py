"""Result rows and their rendering: the comparison table, ``results.json`` and ``results.md``."""

import json
import os
import tempfile
from pathlib import Path

METRIC_COLUMNS = ("recall@10", "recall@20", "recall@50", "ndcg@10", "ndcg@20", "ndcg@50")


def atomic_write_text(path, text):
    """Write ``text`` to ``path`` through a temporary file and a rename: never half-written."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.chmod(tmp, 0o644)  # mkstemp makes files private; results are meant to be shared
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


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


def write_results(output_dir, dataset, rows, extra=None):
    """``results.json`` and ``results.md`` in ``output_dir``; returns the markdown table."""
    table = markdown_table(rows)
    payload = {"dataset": dataset, "rows": rows, **(extra or {})}
    atomic_write_text(Path(output_dir) / "results.json", json.dumps(payload, indent=1, default=str) + "\n")
    atomic_write_text(Path(output_dir) / "results.md", f"# Results on {dataset}\n\n{table}\n")
    return table
