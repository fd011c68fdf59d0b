"""PNG plots of a run: the student's validation curve and the curriculum's progress."""

import os
import tempfile
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def _save(fig, path):
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=".png", dir=path.parent)
    os.close(fd)
    try:
        fig.savefig(tmp, dpi=110, bbox_inches="tight")
        os.chmod(tmp, 0o644)  # mkstemp makes files private; plots are meant to be shared
        os.replace(tmp, path)
    finally:
        plt.close(fig)
        Path(tmp).unlink(missing_ok=True)
    return path


def plot_validation(rows, path):
    """Validation curve of every student/ablation/baseline row against the ensemble's and
    the best teacher's validation level. Returns the path, or None without a curve."""
    curves = [r for r in rows if r.get("valid_curve", {}).get("epochs")]
    if not curves:
        return None
    metric = curves[0]["valid_metric"].lower()
    fig, ax = plt.subplots(figsize=(7, 4.2))
    for r in curves:
        ax.plot(r["valid_curve"]["epochs"], r["valid_curve"]["scores"], marker=".", label=r["name"])
    teachers = [r for r in rows if r["kind"] == "teacher" and metric in r.get("valid", {})]
    if teachers:
        best = max(teachers, key=lambda r: r["valid"][metric])
        ax.axhline(best["valid"][metric], color="grey", linestyle=":", label=f"best teacher ({best['name']})")
    ensembles = [r for r in rows if r["kind"] == "ensemble" and metric in r.get("valid", {})]
    for r, style in zip(ensembles, ("--", "-.")):
        ax.axhline(r["valid"][metric], color="black", linestyle=style, label=r["name"].lower())
    switch = next((r.get("curriculum", {}).get("loss_switch_epoch") for r in curves if r["kind"] == "student"), None)
    if switch:
        ax.axvline(switch, color="tab:red", alpha=0.4, label="loss switch (AKT)")
    ax.set_xlabel("epoch")
    ax.set_ylabel(f"validation {metric}")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return _save(fig, path)


def plot_curriculum(row, path):
    """Share of users at each trajectory point, per teacher, over the DKC steps."""
    cur = row.get("curriculum") or {}
    steps = cur.get("steps") or []
    if not steps:
        return None
    names = cur["teachers"]
    epochs = [s["epoch"] for s in steps]
    n_points = len(steps[0]["shares"][0])
    fig, axes = plt.subplots(1, len(names), figsize=(2.6 * len(names), 3), sharey=True, squeeze=False)
    for t, (ax, name) in enumerate(zip(axes[0], names)):
        series = [[s["shares"][t][v] for s in steps] for v in range(n_points)]
        ax.stackplot(epochs, series, labels=[f"point {v}" for v in range(n_points)])
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("epoch")
    axes[0][0].set_ylabel("share of users")
    axes[0][-1].legend(fontsize=7, loc="lower right")
    return _save(fig, path)


def write_plots(output_dir, rows):
    """``validation.png`` and ``curriculum.png`` in ``output_dir``; returns the paths written."""
    out = []
    student = next((r for r in rows if r["kind"] == "student"), None)
    for path in (plot_validation(rows, Path(output_dir) / "validation.png"),
                 plot_curriculum(student or {}, Path(output_dir) / "curriculum.png")):
        if path is not None:
            out.append(str(path))
    return out
