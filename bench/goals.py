"""Issue 4's goals, checked cell by cell against bench/results/accuracy.json.

    python bench/goals.py [--results bench/results/accuracy.json]

Prints a markdown table for every CIFAR-10 model: the default's top-1 against
1. the better anchor, max(Neuron Merging, LBYL with lambdas tuned on the test labels);
2. half the accuracy tuned LBYL loses: default >= unpruned - (unpruned - tuned) / 2;
3. the calibrated default against the data-free default on the same 9,488 held-out images;
and, for direction 2, LBYL with lambdas chosen per layer without labels (lbyl-auto) against
LBYL at its default lambdas and against the tuned anchor. Needs accuracy.py and tuned_lbyl.py
to have run.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parent
DEFAULT = "moments-greedy"
CALIBRATED = DEFAULT + "+calibration"


def _cell(value: float, target: float, relation: str, strict: bool = True) -> str:
    met = value > target if strict else value >= target
    return f"{100 * value:.2f} vs {relation}{100 * target:.2f} {'ok' if met else 'MISS'}"


def goal_rows(data: dict) -> list[str]:
    ratios = data["options"]["ratios"]
    lines = ["| model | check | " + " | ".join(f"{round(100 * r)}%" for r in ratios) + " |",
             "|---|---|" + "---|" * len(ratios)]
    for model in data["models"]:
        if model["status"] != "ok" or model["dataset"] != "cifar10":
            continue
        res = {(r["method"], r["ratio"]): r for r in model["results"]}
        base = model["unpruned"]["top1"]
        rows: dict[str, list[str]] = {"default vs best anchor": [], "half the tuned-LBYL loss": [],
                                      "calibrated vs data-free (9,488)": [], "lbyl-auto vs lbyl / tuned": []}
        for r in ratios:
            default = res[(DEFAULT, r)]["top1"]
            tuned = res.get(("lbyl-tuned", r), {}).get("top1")
            anchors = [res[(k, r)]["top1"] for k in ("merge", "lbyl-tuned") if (k, r) in res]
            rows["default vs best anchor"].append(_cell(default, max(anchors), ""))
            rows["half the tuned-LBYL loss"].append(
                "–" if tuned is None else _cell(default, base - (base - tuned) / 2, ">= ", strict=False))
            if (CALIBRATED, r) in res:
                rows["calibrated vs data-free (9,488)"].append(
                    _cell(res[(CALIBRATED, r)]["top1"], res[(DEFAULT, r)]["top1_heldout"], ""))
            if ("lbyl-auto", r) in res:
                auto, plain = res[("lbyl-auto", r)]["top1"], res[("lbyl", r)]["top1"]
                rows["lbyl-auto vs lbyl / tuned"].append(
                    f"{100 * auto:.2f} vs {100 * plain:.2f} / " + ("–" if tuned is None else f"{100 * tuned:.2f}"))
        first = True
        for check, cells in rows.items():
            if cells:
                lines.append(f"| {model['name'] if first else ''} | {check} | " + " | ".join(cells) + " |")
                first = False
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", default=str(BENCH / "results" / "accuracy.json"))
    args = parser.parse_args(argv)
    print("\n".join(goal_rows(json.loads(Path(args.results).read_text()))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
