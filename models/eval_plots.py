"""PNG plots of an evaluation report (matplotlib, drawn off-screen): written next to its JSON.

* ``<stem>-reliability.png``: observed match rate against predicted probability, raw and
  calibrated, over all pairs, per caption level and on each text's top 10;
* ``<stem>-quintiles.png``: R@1 per quintile of query uncertainty, text and image queries;
* ``<stem>-risk-coverage.png``: risk when abstaining on the most uncertain queries, against random.
"""

from __future__ import annotations

import os
from pathlib import Path

NAMES = {"text_level3_clean": "text queries (level 3), clean gallery", "image_clean": "image queries, clean",
         "image_mixed": "image queries, mixed gallery"}
COLOURS = {"text_level3_clean": "tab:blue", "image_clean": "tab:orange", "image_mixed": "tab:green"}


def write_plots(report: dict, folder: str | os.PathLike, stem: str = "eval") -> list[Path]:
    """Draw the report's calibration and uncertainty figures; returns the files written (none without them)."""
    if "calibration" not in report:
        return []
    import matplotlib

    matplotlib.use("Agg")  # no display: draw into files only
    import matplotlib.pyplot as plt

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for name, draw in (("reliability", _reliability), ("quintiles", _quintiles), ("risk-coverage", _risk_coverage)):
        figure = draw(plt, report)
        path = folder / f"{stem}-{name}.png"
        tmp = path.with_name(path.name + ".tmp.png")
        figure.savefig(tmp, dpi=110, bbox_inches="tight", metadata={"Software": None})  # no version: stable bytes
        plt.close(figure)
        os.replace(tmp, path)
        written.append(path)
    return written


def _reliability(plt, report: dict):
    calibration = report["calibration"]
    panels = ["all", "level0", "level1", "level2", "level3", "top10"]
    figure, grid = plt.subplots(2, 3, figsize=(10, 6.6), sharex=True, sharey=True)
    axes = grid.ravel()
    for axis, name in zip(axes, panels, strict=True):
        block = calibration[name]
        axis.plot([0, 1], [0, 1], color="0.6", linewidth=1, linestyle="--")
        for kind, colour in (("raw", "tab:red"), ("calibrated", "tab:blue")):
            rows = block[kind]["reliability"]
            x = [row["mean_probability"] for row in rows]
            y = [row["observed"] for row in rows]
            sizes = [8 + 40 * (row["weight"] / max(r["weight"] for r in rows)) ** 0.5 for row in rows]
            axis.plot(x, y, color=colour, linewidth=1)
            axis.scatter(x, y, s=sizes, color=colour, label=f"{kind} (ECE {block[kind]['ece']:.3f})", zorder=3)
        title = {"all": "all pairs", "top10": "top 10 of each text"}.get(name, name.replace("level", "level "))
        axis.set_title(title, fontsize=10)
        axis.set_xlim(-0.02, 1.02)
        axis.set_ylim(-0.02, 1.02)
        axis.legend(fontsize=7, loc="upper left")
    for axis in grid[1]:
        axis.set_xlabel("predicted probability")
    for axis in grid[:, 0]:
        axis.set_ylabel("observed match rate")
    figure.suptitle(f"{report['model']}, {report['split']} split: reliability of the match probability "
                    "(dot area ~ pairs in the bin)", fontsize=10)
    figure.tight_layout()
    return figure


def _quintiles(plt, report: dict):
    blocks = report["uncertainty_quintiles"]
    figure, axis = plt.subplots(figsize=(7, 3.4))
    width = 0.8 / len(blocks)
    for i, (name, block) in enumerate(blocks.items()):
        x = [q + (i - (len(blocks) - 1) / 2) * width for q in range(len(block["R@1"]))]
        axis.bar(x, block["R@1"], width=width, label=NAMES.get(name, name), color=COLOURS.get(name))
    axis.set_xticks(range(5), ["1 (least)", "2", "3", "4", "5 (most)"])
    axis.set_xlabel("query-uncertainty quintile")
    axis.set_ylabel("R@1 (ranked by CSD)")
    axis.set_ylim(0, 1)
    axis.legend(fontsize=8)
    axis.set_title(f"{report['model']}: R@1 by how uncertain the query is", fontsize=10)
    figure.tight_layout()
    return figure


def _risk_coverage(plt, report: dict):
    curves = report["risk_coverage"]
    figure, axis = plt.subplots(figsize=(7, 3.4))
    for name, curve in curves.items():
        colour = COLOURS.get(name)
        axis.plot(curve["coverage"], curve["risk"], marker="o", color=colour, label=NAMES.get(name, name))
        axis.axhline(curve["random_risk"], color=colour, linestyle=":", linewidth=1)
    axis.set_xlabel("coverage (share of queries answered; the most uncertain abstain)")
    axis.set_ylabel("risk = 1 - R@1")
    axis.set_ylim(bottom=0)
    axis.legend(fontsize=8)
    axis.set_title("risk-coverage; dotted: random abstention (the full set's risk at every coverage)", fontsize=10)
    figure.tight_layout()
    return figure
