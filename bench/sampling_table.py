"""Sampling settings side by side, from `lal report` files: the table README's Sampling gives.

    uv run lal report RUN --settings "" temperature=1.0 ... --json > a.json   # or its report.json
    uv run python bench/sampling_table.py a.json [b.json ...]

Per report, a Markdown table with a row per column (a checkpoint, backend or setting) and one
for the held-out text: distinct-2, repeated 4-grams, samples in a loop, memorised 8-grams and
invented words, each with its standard error over the samples. A figure within two standard
errors of the first column's (the report's own test, `report_file.within_noise`) is marked ≈: that
gap is the draw's noise. The last column sums each figure's distance from held-out text in its
standard errors (repeated 4-grams, memorised 8-grams, distinct-2): lower is closer. Invented
words are left out of that sum on purpose: held-out text's are real words of other plays
(names), a sample's are broken ones, so fewer is better, not closer.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

from lal_core.quality.report_file import QualityReport, estimate, within_noise
from lal_core.runs.records import Figures

FIGURES = (
    ("distinct_2", "distinct-2"),
    ("repeated_4", "repeated 4-grams"),
    ("looping", "loops"),
    ("memorised_8", "memorised 8-grams"),
    ("invented_words", "invented words"),
)
CLOSENESS = ("distinct_2", "repeated_4", "memorised_8")


def cell(figures: Figures, key: str, first: Figures | None) -> str:
    found = estimate(figures, key)
    if key == "looping":
        text = f"{figures.looping}/{figures.samples}"
    elif found is None:
        return "-"
    else:
        text = f"{found[0]:.3f} ± {found[1]:.3f}"
    theirs = estimate(first, key) if first is not None else None
    if found and theirs and figures is not first and within_noise(found, theirs):
        text += " ≈"
    return text


def distance(figures: Figures, held: Figures) -> float:
    """How far from held-out text, in standard errors of the difference, summed."""
    total = 0.0
    for key in CLOSENESS:
        mine, theirs = estimate(figures, key), estimate(held, key)
        if mine is None or theirs is None:
            return float("nan")
        total += abs(mine[0] - theirs[0]) / math.hypot(mine[1], theirs[1])
    return total


def table(report: QualityReport) -> str:
    head = (
        f"{len(report.prompts)} prompts x {report.samples} samples x {report.tokens} tokens, "
        f"seed {report.seed}; ≈: within two standard errors of the first row\n\n"
        "| setting | " + " | ".join(label for _, label in FIGURES) + " | distance from held-out |"
    )
    lines = [head, "|---" * (len(FIGURES) + 2) + "|"]
    first = report.columns[0].figures if report.columns else None
    for column in report.columns:
        f = column.figures
        far = "-" if report.baseline is None else f"{distance(f, report.baseline):.1f}"
        cells = [cell(f, key, first) for key, _ in FIGURES]
        lines.append(f"| {column.settings} | " + " | ".join(cells) + f" | {far} |")
    if report.baseline is not None:
        cells = [cell(report.baseline, key, None) for key, _ in FIGURES]
        lines.append("| held-out text | " + " | ".join(cells) + " | 0 |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("reports", nargs="+", type=Path, help="report files (JSON)")
    for path in parser.parse_args().reports:
        print(table(QualityReport.from_json(json.loads(path.read_text()))) + "\n")


if __name__ == "__main__":
    main()
