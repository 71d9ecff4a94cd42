"""The pipeline commands' shared command line: default paths, and dataclass -> options.

`python -m vision_model train|calibrate|evaluate|export|soup|imprint` runs `vision_model.<command>.main(args)`,
where `args` is the arguments dataclass that main() is annotated with (`TrainArguments`, ...),
parsed with transformers' `HfArgumentParser`: one `--option` per field, booleans as `--x` /
`--no-x` (and `--no_x`), lists as `--x A B`. Nothing here imports torch or transformers until a
command is parsed, so `python -m vision_model --help` stays fast.

Default locations: the real photos and the pretrained backbone are beside the checkout in
`../shared/data` (never copied in); runs under `var/runs/`, reports under `reports/`; the
training caches (frozen-block tokens, validation logits) under `var/cache/`, or under
`$VISION_CACHE_DIR` when set (the tests point it at a temporary folder).
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import inspect
import logging
import os
import typing
from collections.abc import Callable, Sequence
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
SHARED_DATA = PROJECT_ROOT.parent / "shared" / "data"
DEFAULT_IMAGES = SHARED_DATA / "images"
DEFAULT_BACKBONE = SHARED_DATA / "weights" / "dinov2-small-imgfocus"
RUNS_DIR = PROJECT_ROOT / "var" / "runs"
REPORTS_DIR = PROJECT_ROOT / "reports"
CACHE_ENV = "VISION_CACHE_DIR"

PIPELINE_COMMANDS = {
    "train": "fine-tune the vision model on the photo folder and write a model directory",
    "evaluate": "measure a model directory on held-out photos (accuracy, calibration, safety costs)",
    "calibrate": "fit the temperature and tune the safety thresholds on validation photos",
    "export": "package a trained model directory as the bundled release",
    "soup": "average the weights of model directories trained from the same start (a model soup)",
    "imprint": "blend class prototypes into the head, for species with few photos",
}
# The model registry's commands (vision_model.registry; docs/TRAINING.md "Registry").
REGISTRY_COMMANDS = {
    "register": "register an evaluated model directory in the model registry (MLflow)",
    "promote": "make a registered version the champion, if the release rule holds against the current one",
    "rollback": "move the champion back to the previous one",
}
MONITOR_COMMANDS = {
    "monitor": "compare the served predictions of a model with its evaluation (confidence and verdict drift)",
}
COMMANDS = {**PIPELINE_COMMANDS, **REGISTRY_COMMANDS, **MONITOR_COMMANDS}

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def data_folders(value: str | Path | list) -> list[str]:
    """The `--data` folders as a list (one folder may be given as a string; none: the shared pool)."""
    folders = [value] if isinstance(value, str | Path) else list(value or [])
    return [str(f) for f in folders] or [str(DEFAULT_IMAGES)]


DATA_HELP = (
    "image folder <root>/<label>/*.jpg; give --data again for more folders (e.g. accepted feedback: "
    "--data ../shared/data/images --data var/feedback/accepted)"
)
# `--data A --data B` and `--data A B` both give [A, B]; the default (the shared pool) applies when none is given.
DATA_FIELD_METADATA = {"help": DATA_HELP, "aliases": ["--data"], "action": "extend"}


def cache_dir(name: str) -> str:
    """<$VISION_CACHE_DIR or var/cache>/<name>: a dataclass default_factory, read when used."""
    return str(Path(os.environ.get(CACHE_ENV) or PROJECT_ROOT / "var" / "cache") / name)


def _parser_class():
    from transformers import HfArgumentParser

    class ArgumentParser(HfArgumentParser):
        """HfArgumentParser that also accepts `--no-<field>` for every boolean field, as spelt
        by argparse.BooleanOptionalAction (`--no-bf16`, `--no-verify_images`)."""

        @staticmethod
        def _parse_dataclass_field(parser, field: dataclasses.Field) -> None:
            HfArgumentParser._parse_dataclass_field(parser, field)
            negative = f"--no-{field.name}"
            if field.type is bool and negative not in parser._option_string_actions:
                parser.add_argument(negative, action="store_false", dest=field.name, help=argparse.SUPPRESS)

    return ArgumentParser


def parse_arguments(cls: type, argv: Sequence[str] | None = None, **parser_kwargs):
    """The dataclass `cls` filled from command-line arguments; unknown ones are a usage error (exit 2)."""
    parser = _parser_class()(cls, **parser_kwargs)
    args, rest = parser.parse_args_into_dataclasses(
        args=argv, return_remaining_strings=True, look_for_args_file=False
    )
    if rest:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    return args


def arguments_type(main: Callable) -> type:
    """The dataclass a command's main(args) is annotated with."""
    first = next(iter(inspect.signature(main).parameters))
    return typing.get_type_hints(main)[first]


def run(command: str, argv: Sequence[str] | None = None, main: Callable | None = None) -> int:
    """`python -m vision_model COMMAND ARGS`: parse ARGS, log at INFO to stderr, run main; exit status 0,
    or the one main returns when it returns an int (promote's refusal: 1).

    Errors in the arguments exit with status 2 (argparse); a failing run raises (status 1).
    """
    if main is None:
        module, function = ("registry", command) if command in REGISTRY_COMMANDS else (command, "main")
        main = getattr(importlib.import_module(f"vision_model.{module}"), function)
    args = parse_arguments(
        arguments_type(main),
        argv,
        prog=f"python -m vision_model {command}",
        description=COMMANDS[command],
    )
    logging.basicConfig(level=logging.INFO, format=LOG_FORMAT)
    result = main(args)
    return result if isinstance(result, int) and not isinstance(result, bool) else 0
