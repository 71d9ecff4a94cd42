"""`python -m vision_model soup`: the uniform average of the weights of several model directories.

Runs fine-tuned from the same pretrained start, with the same frozen blocks, labels and split,
but different augmentation or training seed (e.g. 4 and 8 cached views per photo, or --seed 1)
end in one basin, so their mean weights ("model soup", Wortsman et al. 2022) classify at least
as well as either and cost nothing extra at inference, unlike an ensemble of their outputs
(twice the time and size).

The soup has no safety.json: calibrate it like any model (on validation for twins, with
`calibrate --from_model` for refits). Its train_info.json is the first ingredient's, plus
`soup_of` (each ingredient's version and the training arguments in which it differs).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors.torch import load_file

from vision_model import cli, tracking
from vision_model.release import (
    WEIGHT_FILES,
    read_labels,
    read_preprocessor_config,
    read_train_info,
    write_derived_model,
)

WEIGHTS = WEIGHT_FILES[0]


@dataclass
class SoupArguments:
    models: list[str] = field(default_factory=list, metadata={"help": "model directories to average"})
    output_dir: str = field(default="var/runs/vision-soup", metadata={"help": "where the soup goes"})
    version: str | None = field(default=None, metadata={"help": "version string (default: the ingredients')"})


def average_weights(model_dirs: list[Path]) -> dict[str, torch.Tensor]:
    """The element-wise mean of the ingredients' tensors, in float32, stored in the first's dtypes."""
    states = [load_file(str(d / WEIGHTS)) for d in model_dirs]
    first = states[0]
    for d, state in zip(model_dirs[1:], states[1:], strict=True):
        if state.keys() != first.keys() or any(state[k].shape != first[k].shape for k in first):
            raise ValueError(f"{d} has a different architecture from {model_dirs[0]}: no soup")
    return {
        k: (sum(s[k].float() for s in states) / len(states)).to(v.dtype) if v.is_floating_point() else v
        for k, v in first.items()
    }


def differing_args(info: dict, reference: dict) -> dict:
    """The training arguments of `info` that differ from `reference`'s (that shape the weights).

    An argument the reference's train_info lacks (added to TrainArguments after it was trained)
    counts as that argument's default, which is what the reference was trained with.
    """
    from dataclasses import fields

    from vision_model.train import TrainArguments

    defaults = {f.name: f.default for f in fields(TrainArguments)}
    skip = {"output_dir", "version", "cache_dir", "release_dir", "init_head_from", "threads", "resume"}
    skip |= {"max_minutes", "verify_images", "calibrate"}
    mine, theirs = info.get("args", {}), reference.get("args", {})
    return {k: v for k, v in mine.items() if k not in skip and theirs.get(k, defaults.get(k)) != v}


def main(args: SoupArguments) -> Path:
    dirs = [Path(m) for m in args.models]
    if len(dirs) < 2:
        raise ValueError("a soup needs at least two model directories (--models A B ...)")
    labels = read_labels(dirs[0])
    for d in dirs[1:]:
        if read_labels(d) != labels:
            raise ValueError(f"{d} has a different label set from {dirs[0]}: no soup")
        if read_preprocessor_config(d) != read_preprocessor_config(dirs[0]):
            raise ValueError(f"{d} was trained at another input size or preprocessing than {dirs[0]}: no soup")
    weights = average_weights(dirs)
    out = Path(args.output_dir)
    infos = [read_train_info(d) for d in dirs]
    names = [i.get("version", d.name) for i, d in zip(infos, dirs, strict=True)]
    version = args.version or "soup-" + "+".join(names)
    soup_of = [
        {"model": str(d), "version": i.get("version"), "differs_in": differing_args(i, infos[0])}
        for d, i in zip(dirs, infos, strict=True)
    ]
    info = {**infos[0], "version": version, "soup_of": soup_of}
    info["refit"] = all(i.get("refit") for i in infos)
    write_derived_model(out, weights, dirs[0], info)
    print(f"wrote {out}: mean weights of {len(dirs)} models; calibrate it before use")
    tracking.record("soup", args, {"ingredients": len(dirs)}, [out / "train_info.json"])
    return out


if __name__ == "__main__":
    sys.exit(cli.run("soup", main=main))
