"""One fine-tuning step in float32 vs under bfloat16 autocast (`train --bf16`), same process.

    python benchmarks/bench_train_step.py [--steps 6] [--frozen 4,2]

The step is the training loop's own, `train.training_step`: cached tokens -> PatchDropout -> the
trained blocks + head -> cross-entropy -> backward -> clip -> AdamW, on a batch of 32 views of
257 x 384 tokens (random: the cost does not depend on the values) and the real ViT-S/14 shape
(the offline backbone when present, else a random model of the same configuration). float32 and
bf16 steps alternate so that other load hits both alike. Writes benchmarks/results/train_step.json.
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the repository root

from benchmarks import support
from benchmarks.support import option

BACKBONE = support.SHARED / "weights" / "dinov2-small-imgfocus"


@dataclass
class BenchArgs:
    steps: int = option(6, "timed steps per setting (after one warm-up)")
    frozen: str = option("4,2", "frozen_layers settings to time")
    batch_size: int = 32
    out: str = str(support.RESULTS / "train_step.json")


def build(frozen_layers: int, num_labels: int = 261):
    """The model, its trainable parameters and AdamW, set up as `train.finetune` sets them up."""
    from transformers import Dinov2Config, Dinov2ForImageClassification

    from vision_model import train

    labels = [f"label_{i}" for i in range(num_labels)]
    if (BACKBONE / "config.json").is_file():
        model = train.build_model(str(BACKBONE), labels, 12)
    else:  # same shapes, random weights: the timing is what is measured
        config = Dinov2Config(hidden_size=384, num_hidden_layers=12, num_attention_heads=6, image_size=224)
        config.num_labels = num_labels
        model = Dinov2ForImageClassification(config)  # head: CLS ++ mean patch token, as trained
    args = train.TrainArguments(frozen_layers=frozen_layers)
    return (model, *train.trainable_and_optimizer(model, args), args)


def timed_step(model, trainable, opt, tokens, targets, args) -> float:
    """Seconds of one `train.training_step` (the loop's own step)."""
    from vision_model import train

    t = time.perf_counter()
    train.training_step(model, trainable, opt, tokens, targets, args)
    return time.perf_counter() - t


def main(argv=None) -> None:
    import torch

    cli = support.parse_args(BenchArgs, argv, __doc__)

    torch.manual_seed(0)
    tokens = torch.randn(cli.batch_size, 257, 384)
    targets = torch.randint(0, 261, (cli.batch_size,))
    results = []
    for frozen in [int(f) for f in cli.frozen.split(",")]:
        model, trainable, opt, args = build(frozen)
        model.train()

        times: dict[bool, list[float]] = {False: [], True: []}
        for i in range(cli.steps + 1):
            for bf16 in (False, True):
                args.bf16 = bf16
                seconds = timed_step(model, trainable, opt, tokens, targets, args)
                if i:  # the first round warms up: oneDNN picks its kernels on the first call
                    times[bf16].append(seconds)
        fp32, bf16 = statistics.median(times[False]), statistics.median(times[True])
        row = {
            "frozen_layers": frozen,
            "trained_blocks": 12 - frozen,
            "fp32_step_s": round(fp32, 4),
            "bf16_step_s": round(bf16, 4),
            "fp32_img_per_s": round(cli.batch_size / fp32, 2),
            "bf16_img_per_s": round(cli.batch_size / bf16, 2),
            "bf16_speedup": round(fp32 / bf16, 2),
        }
        print(json.dumps(row))
        results.append(row)

    report = {
        "what": "train.training_step: forward, backward, AdamW on cached tokens, PatchDropout 0.5",
        "batch_size": cli.batch_size,
        "steps_timed": cli.steps,
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "cpu": support.cpu_info()["model"],
        "avx512_bf16": torch.cpu._is_avx512_bf16_supported(),
        "amx": torch.cpu._is_amx_tile_supported(),
        "real_backbone": (BACKBONE / "config.json").is_file(),
        "machine": support.machine(),
        "results": results,
    }
    print("wrote", support.write_result(cli.out, report, echo=False))


if __name__ == "__main__":
    main()
