"""Side-by-side Markdown tables of two `prolip-retrieval eval` reports (e.g. the demo ProLIP and the demo CLIP).

    python scripts/compare-demo-evals.py models/demo/eval.json models/demo-clip/eval.json

Percentages; "n/a" where a model has no uncertainty (a deterministic model's report holds None).
Each model is ranked its own way: by CSD (for a deterministic model CSD equals 2 - 2 cosine).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def pct(value, digits: int = 1) -> str:
    return "n/a" if value is None else f"{100 * value:.{digits}f}"


def signed(value) -> str:
    return "n/a" if value is None else f"{value:+.3f}"


def _auroc(value) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def get(report: dict, *path):
    for key in path:
        if report is None:
            return None
        report = report.get(key) if isinstance(report, dict) else None
    return report


def name(report: dict) -> str:
    return f"{report.get('model_family') or 'prolip'} ({report['model'].split('@')[0]})"


def retrieval_table(a: dict, b: dict) -> list[str]:
    lines = [f"| query (ranked by CSD) | {name(a)} R@1 / R@5 / mAP@R / R-P | {name(b)} R@1 / R@5 / mAP@R / R-P |",
             "| --- | --- | --- |"]
    rows = [(f"text→image, level {lv}", ("text_to_image", f"level{lv}")) for lv in range(4)]
    rows += [("image→text, all captions", ("image_to_text", "all_levels")),
             ("image→text, level-3 captions", ("image_to_text", "level3"))]
    for label, path in rows:
        cells = []
        for report in (a, b):
            m = get(report, *path, "csd")
            cells.append(" / ".join(pct(m[key]) for key in ("R@1", "R@5", "mAP@R", "R-Precision")))
        lines.append(f"| {label} | {cells[0]} | {cells[1]} |")
    return lines


def uncertainty_table(a: dict, b: dict) -> list[str]:
    lines = [f"| what the variances give | {name(a)} | {name(b)} |", "| --- | --- | --- |"]

    def row(label: str, fa, fb) -> None:
        lines.append(f"| {label} | {fa(a)} | {fb(b) if fb else fa(b)} |")

    row("Spearman(caption level, text uncertainty)", lambda r: signed(get(r, "text_uncertainty", "spearman_level")),
        None)
    row("Spearman(corruption strength, image uncertainty), pooled",
        lambda r: signed(get(r, "image_uncertainty", "spearman_pooled")), None)
    row("degraded image detection AUROC (strength ≥ 0.6 vs clean), by image uncertainty",
        lambda r: _auroc(get(r, "image_uncertainty", "auroc_degraded_vs_clean")), None)
    row("image ⊂ its level-0 caption scored above ⊂ its level-3 caption",
        lambda r: pct(get(r, "inclusion", "image_level0_over_level3")), None)
    row("level-3 caption ⊂ its level-0 caption", lambda r: pct(get(r, "inclusion", "caption_level3_in_level0")),
        None)
    return lines


def risk_table(a: dict, b: dict) -> list[str]:
    section = a["degraded_queries"]
    lines = [f"Risk–coverage: image→text top-1 among level-3 captions, {section['queries']} query images, "
             f"{pct(section['degraded_share'], 0)} % degraded (blur, low contrast or occlusion at strength "
             "0.2–1.0); answer the most confident first. Error % (lower is better):", "",
             f"| confidence signal | {name(a)} AURC / at 50 % / at 80 % / at 100 % coverage / degraded-query AUROC "
             f"| {name(b)} AURC / 50 % / 80 % / 100 % / AUROC |", "| --- | --- | --- |"]
    for signal, label in (("image_uncertainty", "query image's uncertainty (lowest first)"),
                          ("top1_cosine", "top-1 cosine (highest first)")):
        cells = []
        for report in (a, b):
            block = get(report, "degraded_queries", "by", signal)
            if block is None:
                cells.append("n/a (no uncertainty)")
                continue
            cells.append(" / ".join(pct(block[key]) for key in ("aurc", "risk@50%", "risk@80%", "risk@100%"))
                         + f" / {block['auroc_degraded']:.3f}")
        lines.append(f"| {label} | {cells[0]} | {cells[1]} |")
    for report in (a, b):
        rc = report["degraded_queries"]
        lines.append(f"\n{name(report)}: error on clean queries {pct(rc['error_rate_clean'])} %, on queries degraded "
                     f"at strength ≥ 0.6 {pct(rc['error_rate_degraded'])} %.")
    return lines


def main() -> None:
    if len(sys.argv) != 3:
        raise SystemExit(__doc__)
    a, b = (json.loads(Path(path).read_text()) for path in sys.argv[1:])
    for table in (retrieval_table, uncertainty_table, risk_table):
        print("\n".join(table(a, b)) + "\n")


if __name__ == "__main__":
    main()
