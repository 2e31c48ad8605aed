"""Markdown rendering of bench/results/accuracy.json, shared by accuracy.py and update_readme.py.

Every measured number in a table comes from the JSON, so the tables can always be
regenerated and never drift from the measurements. The only numbers typed in here are the
LBYL paper's, quoted as context with their source.
"""
from __future__ import annotations

METHOD_NAMES = {"lbyl": "LBYL", "merge": "Neuron Merging", "prune": "prune only",
                "moments-greedy": "**moments-greedy (default)**",
                "moments-greedy+calibration": "moments-greedy + 512 unlabeled images †",
                "lbyl-tuned": "LBYL, λ tuned on the test labels (anchor)",
                "lbyl-auto": "LBYL, λ chosen per layer without labels",
                "onnxsim-filter-norm": "onnxsim filter-norm (no compensation)",
                "onnxsim-wanda+calibration": "onnxsim wanda (calibrated) †"}
PEER_METHODS = ("onnxsim-filter-norm", "onnxsim-wanda+calibration")
CALIBRATION_NOTE = ("† calibrated on the first 512 test images (no labels) and scored on the other 9,488; "
                    "the ↳ row below ours is the data-free default scored on the same 9,488 images. "
                    "onnxsim's wanda variant gets the same 512 images.")

# Which models the design was developed on (the record, choice by choice, with its sources:
# bench/results/held_out.md). The choices were made looking at ResNet-20 and ResNet-8, both
# exports; none was made on ResNet-32's scores, so it is held out. LeNet-300-100 is not: its
# test scores were in view when the probe images and the dense-chain probe size were chosen.
# EfficientNet-Lite0 (not in this table) was looked at while developing the groups.
MODEL_ROLES = {"akamaster_resnet32_cifar10_bn": "held out", "akamaster_resnet32_cifar10_folded": "held out",
               "lbyl_lenet300100_fashion_folded": "not held out ‡"}
HELD_OUT_NOTE = ("*held out*: no design choice of the tool was made on this model's scores (ResNet-32; the choices "
                 "were made on ResNet-20 and ResNet-8, both exports, unmarked here; ResNet-32's budget results were "
                 "in view when error allocation became the `--target-macs` default, which this table does not use). "
                 "‡ LeNet-300-100's test scores were in view when the data-free probe's images and its size for dense "
                 "chains were chosen. Record: [bench/results/held_out.md](bench/results/held_out.md).")


# The LBYL paper's top-1 (%), l2-norm criterion, no fine-tuning; other models than ours.
# Source: bigdata-inha/LBYL README and images/LBYL_Results.png (Table 1: VGG-16/CIFAR-10,
# Table A1: ResNet-50/CIFAR-100), as collected in the project's ANCHORS.md section 2.1.
# The authors tuned their lambdas per model and ratio on the test set.
PAPER_RATIOS = (0.1, 0.2, 0.3, 0.4, 0.5)
PAPER_L2 = [
    ("VGG-16 / CIFAR-10 (every conv pruned)", 93.7, {
        "LBYL": (92.04, 87.84, 83.25, 66.81, 45.71),
        "Neuron Merging": (91.93, 87.24, 76.91, 54.32, 32.58),
        "prune only": (89.43, 71.77, 56.95, 31.74, 12.37),
    }),
    ("ResNet-50 / CIFAR-100 (block-internal convs)", 78.82, {
        "LBYL": (78.14, 76.15, 73.29, 65.21, 52.61),
        "Neuron Merging": (77.28, 72.73, 64.47, 46.40, 25.98),
        "prune only": (75.14, 63.39, 39.96, 15.32, 5.22),
    }),
]


def method_name(method: str) -> str:
    return METHOD_NAMES.get(method, method)


def model_label(name: str) -> str:
    """The model column: the file's name, and whether it was held out from the design."""
    role = MODEL_ROLES.get(name)
    return f"`{name}`" + (f" *({role})*" if role else "")


def pct(value: float | None, digits: int = 2) -> str:
    return "–" if value is None else f"{100 * value:.{digits}f}"


def ratio_header(ratios) -> str:
    return " | ".join(f"{round(100 * r)}%" for r in ratios)


def ran_models(data: dict, names: list[str] | None = None) -> list[dict]:
    """Models that were pruned and scored, in run order (optionally only `names`)."""
    models = [m for m in data["models"] if m["status"] == "ok"]
    if names:
        models = [m for m in models if m["name"] in names]
    return models


def accuracy_table(data: dict, names: list[str] | None = None, methods: list[str] | None = None) -> list[str]:
    """Rows model x method (x criterion when several), columns the ratios: top-1 in %.
    `names` and `methods` keep only those models and methods (default: all)."""
    ratios = data["options"]["ratios"]
    criteria = data["options"]["criteria"]
    many = len(criteria) > 1
    head = "| model | data | method |" + (" criterion |" if many else "") + " unpruned | " + ratio_header(ratios) + " |"
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for model in ran_models(data, names):
        first = True
        for criterion in criteria:
            for method in [m for m in data["options"]["methods"] if not methods or m in methods]:
                cells = {r["ratio"]: r for r in model["results"]
                         if r["method"] == method and r["criterion"] == criterion}
                if not cells:
                    continue
                label = f"{model_label(model['name'])} | {model['dataset']}" if first else " | "
                row = f"| {label} | {method_name(method)} |" + (f" {criterion} |" if many else "")
                row += f" {pct(model['unpruned']['top1'])} |" if first else "  |"
                row += " " + " | ".join(pct(cells[r]["top1"]) if r in cells else "–" for r in ratios) + " |"
                lines.append(row)
                first = False
                if method.endswith("+calibration"):  # the same 9,488 images for the data-free method
                    base = {r["ratio"]: r for r in model["results"] if r["method"] == method[: -len("+calibration")]
                            and r["criterion"] == criterion and r.get("top1_heldout") is not None}
                    if base:
                        lines.append("|  |  | ↳ data-free, same 9,488 images |" + (" |" if many else "") + "  | "
                                     + " | ".join(pct(base[r]["top1_heldout"]) if r in base else "–" for r in ratios)
                                     + " |")
    return lines


def size_table(data: dict, names: list[str] | None = None) -> list[str]:
    """What each ratio leaves: parameters and MACs in % of the unpruned model. They do not
    depend on our method, so our first result per ratio stands for all of ours; onnxsim's
    rows (one count for both of its variants) get a line of their own."""
    ratios = data["options"]["ratios"]
    lines = ["| model | unpruned params / MACs | " + ratio_header(ratios) + " |",
             "|---|---|" + "---|" * len(ratios)]
    for model in ran_models(data, names):
        base = model["unpruned"]
        for peer, label in ((False, model_label(model["name"])), (True, "↳ onnxsim")):
            hits = [next((r for r in model["results"] if r["ratio"] == ratio and (r["method"] in PEER_METHODS) == peer),
                         None) for ratio in ratios]
            if peer and not any(hits):
                continue
            cells = ["–" if hit is None else
                     f"{100 * hit['parameters'] / base['parameters']:.0f} / {100 * hit['macs'] / base['macs']:.0f}"
                     for hit in hits]
            size = "" if peer else f"{base['parameters']:,} / {base['macs'] / 1e6:.1f} M"
            lines.append(f"| {label} | {size} | " + " | ".join(cells) + " |")
    return lines


def peer_counts_note(data: dict, names: list[str] | None = None) -> str:
    """Whether onnxsim's wanda variant left the same MACs as its filter-norm one everywhere."""
    macs = {}
    for model in ran_models(data, names):
        for r in model["results"]:
            if r["method"] in PEER_METHODS:
                macs.setdefault((model["name"], r["ratio"]), set()).add(r["macs"])
    differ = [key for key, values in macs.items() if len(values) > 1]
    if not differ:
        return "onnxsim's wanda variant leaves the same MACs as its filter-norm one everywhere"
    return ("onnxsim's wanda variant leaves other MACs than its filter-norm one at "
            + ", ".join(f"{name} {round(100 * ratio)}%" for name, ratio in differ) + "; the counts are the filter-norm's")


def peer_lines(data: dict, names: list[str] | None = None) -> list[str]:
    """What onnxsim pruned against ours, from the counts each onnxsim row records: the same
    layers or not, channels removed and MACs left (% of unpruned), per model and ratio."""
    ratios = data["options"]["ratios"]
    rows = []
    for model in ran_models(data, names):
        cells, same = [], True
        for ratio in ratios:
            hit = next((r for r in model["results"] if r["ratio"] == ratio and r["method"] == PEER_METHODS[0]), None)
            if hit is None or "ours" not in hit:
                cells.append("–")
                continue
            same &= hit["same_layers_as_ours"]
            macs = 100 * hit["macs"] / model["unpruned"]["macs"]
            macs_ours = 100 * hit["ours"]["macs"] / model["unpruned"]["macs"]
            cells.append(f"{hit['channels_removed']} vs {hit['ours']['channels_removed']}; {macs:.1f} vs {macs_ours:.1f}")
        if any(c != "–" for c in cells):
            layers = "yes" if same else "**no**"
            rows.append(f"| {model_label(model['name'])} | {layers} | " + " | ".join(cells) + " |")
    if not rows:
        return []
    return ["| model | same layers as ours | " + " | ".join(f"{round(100 * r)}%: channels removed; MACs left %"
                                                        for r in ratios) + " |",
            "|---|---|" + "---|" * len(ratios), *rows]


def not_run_lines(data: dict) -> list[str]:
    lines = []
    for model in data["models"]:
        if model["status"] != "ok":
            base = model.get("unpruned")
            score = f" (unpruned top-1 {pct(base['top1'])}%)" if base else ""
            lines.append(f"- `{model['name']}`: {model['status'].replace('_', ' ')}{score}: {model['message']}")
    return lines


def paper_table() -> list[str]:
    lines = ["| paper's model | method | unpruned | " + ratio_header(PAPER_RATIOS) + " |",
             "|---|---|---|" + "---|" * len(PAPER_RATIOS)]
    for name, base, rows in PAPER_L2:
        for i, (method, values) in enumerate(rows.items()):
            lines.append(f"| {name if i == 0 else ''} | {method} | {base if i == 0 else ''} | "
                         + " | ".join(f"{v:.2f}" for v in values) + " |")
    return lines
