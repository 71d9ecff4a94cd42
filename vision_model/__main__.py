"""Command line: `python -m vision_model identify|train|calibrate|evaluate|export|soup|imprint|feedback|register|promote|rollback`.

identify
    python -m vision_model identify [--model DIR] [--observation] [--json] IMAGE [IMAGE ...]
    --json prints one JSON object per line, per image (one line in all with --observation):
      {"image": path, "top_k": [{"label": ..., "probability": ...}, ...], "verdict": ...,
       "abstained": ..., "danger_probability": ..., "model_version": ...}
    An unreadable photo prints {"image": path, "error": "<friendly sentence>"} and the others
    go on. With --observation, the readable photos are combined into one result ("image" is
    then the list of their paths) and unreadable ones are listed under "skipped".
    Exit status: 0 when at least one photo was identified, 1 when none could be, 2 on usage
    errors, 3 when the model cannot be loaded.

feedback
    python -m vision_model feedback list|show|accept|reject|export: the experts' review queue of users'
    feedback (vision_model.feedback).

train / calibrate / evaluate / export / soup / imprint
    The training pipeline: `vision_model.<command>.main(args)`, its arguments the dataclass main()
    takes (vision_model.cli parses them; `--help` lists them). Imported only when used, so
    `--help` and `identify` start without torch.

register / promote / rollback
    The model registry (vision_model.registry, MLflow's): promote exits 1 when the release rule
    refuses, and says which figure failed.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

from vision_model import cli

EXIT_OK, EXIT_NONE_IDENTIFIED, EXIT_USAGE, EXIT_NO_MODEL = 0, 1, 2, 3


@dataclass
class IdentifyArgs:
    images: list[Path] = field(default_factory=list)
    model: Path | None = None  # None: $MODEL_DIR, else the bundled release
    observation: bool = False
    json: bool = False
    backend: str | None = None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m vision_model",
        description="Mushroom photo identification: identify photos, or train/evaluate/export the model.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    identify = sub.add_parser(
        "identify",
        help="identify the species in photos and give a safety verdict",
        description=(
            "Identify mushroom photos. Each photo is treated as a separate mushroom unless "
            "--observation is given. 'unknown' and abstained results mean: treat it as poisonous."
        ),
        epilog="Exit status: 0 if at least one photo was identified, 1 if none, 3 if the model cannot be loaded.",
    )
    identify.add_argument(
        "images", nargs="+", type=Path, metavar="IMAGE", help="photo files (JPEG, PNG, WebP, GIF)"
    )
    identify.add_argument(
        "--model",
        type=Path,
        default=None,
        metavar="DIR",
        help="model directory (default: $MODEL_DIR, else the bundled release vision_model/release)",
    )
    identify.add_argument(
        "--observation",
        action="store_true",
        help="the photos show ONE mushroom: combine them into one result",
    )
    identify.add_argument(
        "--json", action="store_true", help="print JSON lines instead of a readable summary"
    )
    identify.add_argument(
        "--backend",
        choices=["auto", "onnx", "onnx-int8", "openvino", "openvino-bf16", "torch"],
        default=None,
        help="inference runtime (default: $VISION_BACKEND, else auto: OpenVINO, bfloat16 checked against float32 "
        "where the CPU has bfloat16 units; ONNX Runtime, then torch, without it)",
    )

    for name, summary in cli.COMMANDS.items():
        # add_help=False: `python -m vision_model train --help` is answered by vision_model.cli.run.
        sub.add_parser(name, help=summary, description=summary, add_help=False)
    sub.add_parser("feedback", help="review users' feedback and export it (list|show|accept|reject|export)",
                   add_help=False)
    return parser


def _default_model_dir() -> Path | None:
    """--model, else MODEL_DIR from the settings (environment / .env), else the bundled release."""
    try:
        from config import get_settings

        return get_settings().model_dir
    except Exception:  # settings unavailable (e.g. vision-only install): bundled release
        import os

        value = os.environ.get("MODEL_DIR")
        return Path(value) if value else None


def _summary(path: str, result) -> str:
    lines = [f"{path}:"]
    if result.abstained:
        verdict = "UNKNOWN - not sure what this is; treat it as poisonous"
    elif result.verdict == "unknown":
        verdict = "UNKNOWN - possibly dangerous; treat it as poisonous"
    else:
        verdict = result.verdict.upper().replace("_", " ")
    lines.append(f"  verdict: {verdict} (danger probability {result.danger_probability:.1%})")
    for p in result.top_k:
        lines.append(f"  {p.probability:7.1%}  {p.label}")
    return "\n".join(lines)


def identify(args: IdentifyArgs) -> int:
    from vision_model.classifier import Classifier
    from vision_model.images import ImageError, decode_image
    from vision_model.release import ModelNotFound

    try:
        classifier = Classifier.load(args.model or _default_model_dir(), backend=args.backend)
    except (ModelNotFound, OSError, ValueError) as exc:
        print(f"error: cannot load the vision model: {exc}", file=sys.stderr)
        return EXIT_NO_MODEL

    def emit(obj: dict) -> None:
        print(json.dumps(obj, ensure_ascii=False), flush=True)

    # Decode every photo first, so one unreadable file only costs its own line.
    outcomes: list[tuple[str, object]] = []  # (path, PIL image or error dict), in the order given
    for path in args.images:
        try:
            outcomes.append((str(path), decode_image(path, max_pixels=classifier.max_pixels)))
        except ImageError as exc:
            outcomes.append((str(path), {"image": str(path), "error": str(exc)}))
    readable = [(path, img) for path, img in outcomes if not isinstance(img, dict)]
    errors = [item for _, item in outcomes if isinstance(item, dict)]

    if args.observation:
        if not readable:
            message = "None of the photos could be read."
            if args.json:
                emit({"image": [str(p) for p in args.images], "error": message, "skipped": errors})
            else:
                print(f"error: {message}", file=sys.stderr)
            return EXIT_NONE_IDENTIFIED
        result = classifier.identify([img for _, img in readable])
        if args.json:
            emit({**result.to_dict([path for path, _ in readable]), "skipped": errors})
        else:
            print(_summary(f"observation of {len(readable)} photo(s)", result))
            for err in errors:
                print(f"  skipped {err['image']}: {err['error']}")
        return EXIT_OK

    results = iter(classifier.identify_each([img for _, img in readable]) if readable else [])
    for path, item in outcomes:
        if isinstance(item, dict):
            if args.json:
                emit(item)
            else:
                print(f"{path}:\n  error: {item['error']}")
        else:
            result = next(results)
            if args.json:
                emit(result.to_dict(path))
            else:
                print(_summary(path, result))
    return EXIT_OK if readable else EXIT_NONE_IDENTIFIED


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    # Pipeline subcommands own their argument parsing (including --help).
    if argv and argv[0] in cli.COMMANDS:
        return cli.run(argv[0], argv[1:])
    if argv and argv[0] == "feedback":
        from vision_model.feedback import main as feedback_main

        return feedback_main(argv[1:])
    parser = build_parser()
    ns = parser.parse_args(argv)
    args = IdentifyArgs(
        images=ns.images, model=ns.model, observation=ns.observation, json=ns.json, backend=ns.backend
    )
    return identify(args)


if __name__ == "__main__":
    sys.exit(main())
