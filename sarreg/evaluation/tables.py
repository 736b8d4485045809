"""Outputs of a benchmark run: Markdown and CSV tables, per-pair JSON, MMA-vs-threshold plot."""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path
from typing import Any

from sarreg.evaluation.metrics import THRESHOLDS

#: (column title, summary key, format) of the Markdown table
COLUMNS: tuple[tuple[str, str, str], ...] = (
    ("method", "label", "s"),
    ("MMA@1", "mma@1", ".3f"),
    ("MMA@3", "mma@3", ".3f"),
    ("MMA@5", "mma@5", ".3f"),
    ("MMA@10", "mma@10", ".3f"),
    ("rep@3", "repeatability@3", ".3f"),
    ("median RMSE px", "rmse_median", ".2f"),
    ("mean RMSE px (registered)", "rmse_mean", ".2f"),
    ("success@1", "success@1", ".2f"),
    ("success@3", "success@3", ".2f"),
    ("success@5", "success@5", ".2f"),
    ("failed", "failures", "d"),
    ("predicted error within 2x", "error_within_2x", ".2f"),
    ("keypoints", "keypoints", ".0f"),
    ("matches", "matches", ".0f"),
    ("inliers", "inliers", ".0f"),
    ("extract s", "time_extract", ".2f"),
    ("match s", "time_match", ".3f"),
    ("estimate s", "time_estimate", ".3f"),
    ("total s/pair", "time_total", ".2f"),
)


def _fmt(value: Any, fmt: str) -> str:
    if value is None:
        return "-"
    if isinstance(value, float) and math.isinf(value):
        return "inf"
    if fmt == "s":
        return str(value)
    return format(value, fmt)


def markdown_table(summary: list[dict[str, Any]]) -> str:
    """Markdown table, one row per method (``-``: not applicable, ``inf``: failed)."""
    lines = ["| " + " | ".join(c[0] for c in COLUMNS) + " |"]
    lines.append("|" + "|".join("---" if i == 0 else "---:" for i in range(len(COLUMNS))) + "|")
    for row in summary:
        lines.append("| " + " | ".join(_fmt(row.get(k), f) for _, k, f in COLUMNS) + " |")
    return "\n".join(lines) + "\n"


def breakdown_table(records: list[dict[str, Any]], methods: list[tuple[str, str]], tag: str) -> str:
    """Markdown table of the main figures per value of a pair tag (e.g. 'sensor') and method."""
    from sarreg.evaluation.run import summarize

    values = sorted({str(r["tags"].get(tag, "-")) for r in records})
    cols = (
        ("MMA@3", "mma@3", ".3f"),
        ("success@1", "success@1", ".2f"),
        ("success@3", "success@3", ".2f"),
        ("median RMSE px", "rmse_median", ".2f"),
        ("failed", "failures", "d"),
        ("matches", "matches", ".0f"),
    )
    lines = [f"| {tag} | method | pairs | " + " | ".join(c[0] for c in cols) + " |"]
    lines.append("|---|---|" + "---:|" * (len(cols) + 1))
    for v in values:
        sub = [r for r in records if str(r["tags"].get(tag, "-")) == v]
        for row in summarize(sub, methods):
            cells = [v, row["label"], str(row["pairs"])]
            cells += [_fmt(row.get(k), f) for _, k, f in cols]
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def error_table(records: list[dict[str, Any]]) -> str:
    """Markdown table of predicted against true error (reference px, RMS at the moving image's
    corners and centre) per pair, for the methods that estimate their error; '' when none."""
    from sarreg.evaluation.run import error_ratio

    recs = [r for r in records if "predicted_error" in r and _estimates_error(r, records)]
    if not recs:
        return ""
    lines = ["| pair | method | RMSE px | true error px | predicted px | ratio | within 2x |"]
    lines.append("|---|---|---:|---:|---:|---:|---|")
    for r in recs:
        q = error_ratio(r)
        ok = "-" if q is None else ("yes" if 0.5 <= q <= 2.0 else "no")
        cells = [
            r["pair"], r["label"], _fmt(r["rmse"], ".2f"), _fmt(r.get("true_error"), ".2f"),
            _fmt(r.get("predicted_error"), ".2f"), _fmt(q, ".2f"), ok,
        ]  # fmt: skip
        if not math.isfinite(r["rmse"]):
            cells[-1] = str(r.get("status", ""))[:100].replace("|", "/")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _estimates_error(rec: dict[str, Any], records: list[dict[str, Any]]) -> bool:
    """Whether the record's method gave an error estimate on any pair."""
    return any(
        r["method"] == rec["method"] and r.get("predicted_error") is not None for r in records
    )


def csv_table(summary: list[dict[str, Any]]) -> str:
    """CSV with every summary key (MMA@1..10 included); empty cells = not applicable."""
    keys: list[str] = []
    for row in summary:
        keys.extend(k for k in row if k not in keys)
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=keys, lineterminator="\n")
    w.writeheader()
    for row in summary:
        w.writerow({k: ("" if row.get(k) is None else row.get(k)) for k in keys})
    return buf.getvalue()


def plot_mma(summary: list[dict[str, Any]], path: str | Path, title: str = "") -> None:
    """PNG of MMA versus threshold (1..10 px) for every keypoint method (R2D2/D2-Net style)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.0, 4.0), dpi=120)
    styles = ["-", "--", "-.", ":"]
    for i, row in enumerate(r for r in summary if r.get("mma@1") is not None):
        ys = [row[f"mma@{t}"] for t in THRESHOLDS]
        ax.plot(THRESHOLDS, ys, styles[i % 4], marker="o", ms=3, lw=2, label=row["label"])
    ax.set_xlim(1, THRESHOLDS[-1])
    ax.set_ylim(0, 1)
    ax.set_xticks(THRESHOLDS)
    ax.set_xlabel("threshold [px]")
    ax.set_ylabel("MMA")
    ax.grid(True, alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    if title:
        ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def write_outputs(
    result,
    out: str | Path,
    title: str = "",
    plot: bool = True,
    by: tuple[str, ...] = ("sensor", "multidate"),
) -> dict[str, Path]:
    """Write ``results.md``, ``results.csv``, ``pairs.json`` (per pair and method; a failed
    registration has ``rmse: null``), ``mma.png``, ``errors.md`` (predicted against true
    error per pair, for methods with an error estimate) and, for each pair tag in ``by`` that the
    pairs carry, ``results_by_<tag>.md`` into ``out``.

    Returns the written paths by kind.
    """
    from sarreg.atomic import write_json_atomic, write_text_atomic

    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    paths = {
        "markdown": write_text_atomic(markdown_table(result.summary), folder / "results.md"),
        "csv": write_text_atomic(csv_table(result.summary), folder / "results.csv"),
        "pairs": write_json_atomic(
            _finite(
                {"records": result.records, "skipped": result.skipped, "summary": result.summary}
            ),
            folder / "pairs.json",
        ),
    }
    errors = error_table(result.records)
    if errors:
        paths["errors"] = write_text_atomic(errors, folder / "errors.md")
    for tag in by:
        if any(tag in r["tags"] for r in result.records):
            text = breakdown_table(result.records, result.methods, tag)
            paths[f"by_{tag}"] = write_text_atomic(text, folder / f"results_by_{tag}.md")
    if plot:
        plot_mma(result.summary, folder / "mma.png", title)
        paths["plot"] = folder / "mma.png"
    return paths


def _finite(obj: Any) -> Any:
    """``obj`` with non-finite floats replaced by None (strict JSON; inf = failed)."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_finite(v) for v in obj]
    return obj
