"""Training on 2 CPU cores: a Dinov2 classifier fine-tuned on cached frozen lower layers.

Why it is built this way (see docs/TRAINING.md for the figures):
- The offline backbone's top blocks were fine-tuned for saliency: poor frozen features, but
  fine as a starting point, so all `num_hidden_layers` (default 12) are kept and the top ones
  re-learnt. A smaller value truncates the backbone (a normal save_pretrained model either way).
- The first `frozen_layers` blocks (default 4) never change, so their output tokens are computed
  once for the centre view of every photo plus `augmented_views` random views of each training
  photo, and stored in a float16 memmap under `cache_dir`. Training then runs only the top
  blocks + final layer norm + head on those tokens: a few times faster than full fine-tuning.
- Fine-tuning (`mode="finetune"`) starts from a zero head (`head_init="fresh"`) with layer-wise
  learning rates, drops half of each view's patch tokens (PatchDropout: an augmentation the
  fixed cached views lack, and twice the speed), samples classes balanced (n^-0.5), smooths
  labels, keeps the mean of the last epochs' weights (`average_last`; without it, the best
  epoch on validation with early stopping), writes per-epoch metrics (JSON + CSV) and a
  resumable checkpoint. `mode="linear"` (or `head_init="linear"`) fits a logistic-regression head on the
  frozen features first.
- Afterwards calibrate.py fits the temperature and tunes the safety thresholds on validation.
- `refit=True` trains the same recipe on train + validation photos for exactly `epochs` (the
  release: a quarter more photos to learn from). Its validation photos are no longer held out,
  so it is calibrated with its twin's thresholds (`calibrate --from_model`); test stays held out.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import hashlib
import json
import logging
import math
import random
import shutil
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from vision_model import cli, data, dataset, tracking
from vision_model.data import Preprocess, Sample, Splits
from vision_model.metrics import selection_score, split_accuracy

log = logging.getLogger(__name__)


@dataclass
class DataArguments:
    data_dir: list[str] = field(default_factory=list, metadata=cli.DATA_FIELD_METADATA)
    min_photos: int = field(default=2, metadata={"help": "drop classes with fewer photos"})
    val_fraction: float = field(default=0.15, metadata={"help": "per-class validation share (classes >= 8)"})
    test_fraction: float = field(default=0.15, metadata={"help": "per-class test share (classes >= 8)"})
    verify_images: bool = field(default=True, metadata={"help": "decode every file once to report bad ones"})
    # Kept apart from --seed so that runs with other training seeds (for a soup) share one test split.
    split_seed: int = field(default=0, metadata={"help": "seed of the stratified train/val/test split"})

    def __post_init__(self):
        self.data_dir = cli.data_folders(self.data_dir)


@dataclass
class TrainArguments(DataArguments):
    backbone: str = field(
        default=str(cli.DEFAULT_BACKBONE),
        metadata={"help": "Dinov2 checkpoint: local directory or hub id"},
    )
    output_dir: str = field(
        default=str(cli.RUNS_DIR / "vision"),
        metadata={"help": "run directory (checkpoints, metrics, the model in <output_dir>/model)"},
    )
    release_dir: str | None = field(
        default=None,
        metadata={"help": "also copy the final model directory here (e.g. vision_model/release)"},
    )
    mode: str = field(default="finetune", metadata={"help": "'linear' (frozen features) or 'finetune'"})
    num_hidden_layers: int = field(default=12, metadata={"help": "keep this many backbone blocks"})
    # Blocks 1-4 frozen (8 trained) beat 1-7 frozen by 1 point on validation and 1-3 on test, at
    # 1.6x the step cost (docs/TRAINING.md).
    frozen_layers: int = field(default=4, metadata={"help": "blocks kept frozen (their outputs are cached)"})
    augmented_views: int = field(default=4, metadata={"help": "cached random views per training photo"})
    epochs: int = field(default=24, metadata={"help": "fine-tuning epochs (one random view per photo each)"})
    batch_size: int = 32
    # With a fresh (zero) head the blocks take usual fine-tuning rates for a batch of 32; a
    # warm-started linear head needs tiny ones (1e-5) and then barely improves (docs/TRAINING.md).
    learning_rate: float = field(default=5e-5, metadata={"help": "top block (lower ones: x layer_decay each)"})
    head_learning_rate: float = field(default=1e-3, metadata={"help": "head and final layer norm"})
    weight_decay: float = 0.05
    label_smoothing: float = 0.1
    balance_power: float = field(
        default=0.5, metadata={"help": "sampling weight of a photo = n_class^-power (0 none, 1 balanced)"}
    )
    patience: int = field(
        default=8, metadata={"help": "early stopping: epochs without val improvement (with --average_last 0)"}
    )
    # A safety cap, not a schedule: the released recipe takes ~63 min (twin) and ~80 min (refit)
    # on 2 cores, and a run cut short says so.
    max_minutes: float = field(default=150.0, metadata={"help": "stop fine-tuning after this long"})
    seed: int = field(default=0, metadata={"help": "training randomness: cached views, sampling, PatchDropout"})
    # Off by default because CPUs without AMX / AVX512-BF16 emulate bfloat16 and run slower; the
    # release was trained with it on, and its model card's reproduce command passes --bf16.
    bf16: bool = field(
        default=False,
        metadata={
            "help": "run the trained blocks under bfloat16 autocast (weights, optimiser and loss stay "
            "float32): ~1.8x faster steps on CPUs with AMX / AVX512-BF16, slower on others"
        },
    )
    image_size: int = field(
        default=0,
        metadata={
            "help": "side of the centre crop the model sees, px (0: the backbone processor's, 224); the "
            "shortest-edge resize keeps its ratio (252 -> 288). Use a multiple of the patch size (14)"
        },
    )
    cache_dir: str = field(
        default_factory=lambda: cli.cache_dir("vision-features"),
        metadata={"help": "cache of the frozen blocks' tokens ($VISION_CACHE_DIR/vision-features when set)"},
    )
    resume: bool = field(default=True, metadata={"help": "resume from <output_dir>/checkpoint.pt"})
    threads: int = field(default=0, metadata={"help": "torch CPU threads (0: torch default)"})
    save_fp16: bool = field(default=True, metadata={"help": "store weights as float16 (half the size)"})
    calibrate: bool = field(default=True, metadata={"help": "fit temperature + tune thresholds afterwards"})
    version: str | None = field(default=None, metadata={"help": "model version string (default: derived)"})
    head_init: str = field(
        default="fresh",
        metadata={
            "help": "'fresh' (zero head, trained with the blocks at head_learning_rate) or 'linear' "
            "(start from the stage-1 logistic-regression head)"
        },
    )
    layer_decay: float = field(
        default=0.8, metadata={"help": "each block below the top one learns at this fraction of the rate above"}
    )
    token_keep: float = field(
        default=0.5,
        metadata={
            "help": "share of patch tokens each training view keeps (random, CLS always kept): "
            "PatchDropout, an augmentation the fixed cached views lack, and faster steps"
        },
    )
    # The released recipe: 265 of 295 main-class test photos against 263 without (docs/TRAINING.md).
    cutmix: float = field(
        default=0.5,
        metadata={
            "help": "share of training batches given CutMix on the cached tokens: a box of the patch "
            "grid comes from another photo of the batch and the loss mixes both labels by area (0: off)"
        },
    )
    genus_loss: float = field(
        default=0.0,
        metadata={
            "help": "weight of a second cross-entropy over genera (each genus's probability = the sum of its "
            "species'; the hierarchical loss of FungiCLEF 2024's winners): a mistake within the genus costs "
            "less than one across genera, and an unfamiliar species lands in its genus (0: off)"
        },
    )
    init_head_from: str | None = field(
        default=None,
        metadata={
            "help": "model directory whose classifier head starts fine-tuning (skips the linear stage)"
        },
    )
    average_last: int = field(
        default=6,
        metadata={
            "help": "keep the mean of the weights at the end of the last N epochs (stochastic weight "
            "averaging; 0: off). The mean is the model, for a twin and its refit alike, so there is "
            "no early stopping; the validation figures of the mean are logged"
        },
    )
    refit: bool = field(
        default=False,
        metadata={
            "help": "train on the training and validation photos for exactly --epochs (no early "
            "stopping: validation is no longer held out; the test split still is). Calibrate "
            "the result with `calibrate --from_model` of a twin run trained without them"
        },
    )
    include_test: bool = field(
        default=False,
        metadata={
            "help": "with --refit: train on the test photos too - the final fit of a release, once "
            "the recipe is chosen and its figures measured: nothing stays held out, so the held-out "
            "figures to report are those of the same recipe's train + val refit"
        },
    )
    track: bool = field(
        default=True,
        metadata={
            "help": "record the run in MLflow (parameters, dataset version, per-epoch metrics, files): "
            "var/mlflow by default, $MLFLOW_TRACKING_URI for a server; off: --no-track or VISION_TRACKING=off"
        },
    )


# --- model construction -------------------------------------------------------------------------


def build_model(backbone: str, labels: list[str], num_hidden_layers: int):
    """A truncated Dinov2ForImageClassification initialised from the backbone checkpoint."""
    from transformers import AutoModelForImageClassification
    from transformers.utils import logging as hf_logging

    previous = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # the dropped top blocks are reported as "unused weights"
    try:
        model = AutoModelForImageClassification.from_pretrained(
            backbone,
            num_hidden_layers=num_hidden_layers,
            num_labels=len(labels),
            id2label=dict(enumerate(labels)),
            label2id={label: i for i, label in enumerate(labels)},
            # The checkpoint's backbone fields name stage 12; a truncated config must not,
            # or the saved config.json fails validation when it is loaded again.
            out_features=[f"stage{num_hidden_layers}"],
            out_indices=[num_hidden_layers],
            dtype=torch.float32,
        )
    finally:
        hf_logging.set_verbosity(previous)
    # Architectures field: a classifier, so AutoModelForImageClassification reloads it as one.
    model.config.architectures = [type(model).__name__]
    return model


def load_preprocess(backbone: str, image_size: int = 0):
    """The backbone's image processor, optionally at another crop size (saved with the model, so
    the Classifier and the ONNX export follow)."""
    from transformers import AutoImageProcessor

    processor = AutoImageProcessor.from_pretrained(backbone)
    preprocess = Preprocess.from_processor(processor)
    if image_size:
        resize = round(image_size * preprocess.resize / preprocess.crop)
        processor.size = {"shortest_edge": resize}
        processor.crop_size = {"height": image_size, "width": image_size}
        preprocess = dataclasses.replace(preprocess, resize=resize, crop=image_size)
    return processor, preprocess


def lower_forward(model, pixel_values: torch.Tensor, frozen_layers: int) -> torch.Tensor:
    """Embeddings + the first `frozen_layers` blocks: the tokens the cache stores."""
    hidden = model.dinov2.embeddings(pixel_values)
    for block in model.dinov2.encoder.layer[:frozen_layers]:
        hidden = block(hidden)
    return hidden


def upper_forward(model, hidden: torch.Tensor, frozen_layers: int) -> torch.Tensor:
    """Top blocks + layer norm + the classifier's pooled input (CLS ++ mean patch token)."""
    for block in model.dinov2.encoder.layer[frozen_layers:]:
        hidden = block(hidden)
    hidden = model.dinov2.layernorm(hidden)
    return torch.cat([hidden[:, 0], hidden[:, 1:].mean(dim=1)], dim=1)


# --- the activation cache -----------------------------------------------------------------------


@dataclass
class FeatureCache:
    """float16 tokens [n_views, seq, hidden] + which photo (index into `samples`) and view each row is."""

    tokens: np.ndarray
    sample_index: np.ndarray
    view_index: np.ndarray  # 0 = centre view, >= 1 augmented
    samples: list[Sample]

    def rows(self, sample_ids, centre_only: bool = False) -> np.ndarray:
        wanted = np.isin(self.sample_index, np.asarray(list(sample_ids)))
        if centre_only:
            wanted &= self.view_index == 0
        return np.flatnonzero(wanted)


def _cache_key(args: TrainArguments, samples: list[Sample], train_set: set[Path]) -> str:
    h = hashlib.sha256()
    key = [str(Path(args.backbone).resolve()), args.frozen_layers, args.augmented_views, args.seed]
    if args.image_size:  # only when set, so caches built at the processor's size keep their keys
        key.append(args.image_size)
    h.update(json.dumps(key).encode())
    for s in samples:
        h.update(f"{s.path}|{s.label}|{s.path in train_set}\n".encode())
    return h.hexdigest()[:16]


def build_feature_cache(args: TrainArguments, model, preprocess: Preprocess, splits: Splits) -> FeatureCache:
    """Compute (or reuse) the frozen-block tokens; resumable if interrupted part-way."""
    samples = splits.train + splits.val + splits.test
    # Photos that get augmented views: the training photos and the validation photos, so that a
    # twin and its refit share one cache (the twin reads only the validation photos' centre view);
    # a final fit (--include_test) augments the test photos too, in a cache of its own.
    train_set = {s.path for s in splits.train + splits.val + (splits.test if args.include_test else [])}
    plan: list[tuple[int, int]] = []  # (sample index, view index)
    for i, s in enumerate(samples):
        plan.append((i, 0))
        if s.path in train_set:
            plan.extend((i, v) for v in range(1, args.augmented_views + 1))
    key = _cache_key(args, samples, train_set)
    cache_dir = Path(args.cache_dir) / key
    cache_dir.mkdir(parents=True, exist_ok=True)
    with torch.no_grad():
        probe = lower_forward(model, torch.zeros(1, 3, preprocess.crop, preprocess.crop), args.frozen_layers)
    shape = (len(plan), probe.shape[1], probe.shape[2])
    tokens_path, done_path = cache_dir / "tokens.f16", cache_dir / "done.json"
    mode = "r+" if tokens_path.exists() else "w+"
    tokens = np.memmap(tokens_path, dtype=np.float16, mode=mode, shape=shape)
    done = json.loads(done_path.read_text())["rows"] if done_path.exists() else 0
    if done < len(plan):
        log.info("building feature cache %s: %d views (%d done)", cache_dir, len(plan), done)
        model.eval()
        batch: list[np.ndarray] = []
        start = done
        bar = tqdm(total=len(plan), initial=done, desc="caching frozen features", unit="view")
        for row in range(done, len(plan)):
            i, view = plan[row]
            img = data.load_rgb(samples[i].path)
            if view == 0:
                batch.append(preprocess.centre(img))
            else:
                rng = random.Random(f"{args.seed}:{samples[i].path.name}:{view}")
                batch.append(preprocess.augmented(img, rng))
            if len(batch) == 16 or row == len(plan) - 1:
                with torch.no_grad():
                    out = lower_forward(model, torch.from_numpy(np.stack(batch)), args.frozen_layers)
                tokens[start : start + len(batch)] = out.numpy().astype(np.float16)
                start += len(batch)
                bar.update(len(batch))
                batch = []
                if start % 256 == 0 or start == len(plan):
                    tokens.flush()
                    done_path.write_text(json.dumps({"rows": start}))
        bar.close()
    tokens = np.memmap(tokens_path, dtype=np.float16, mode="r", shape=shape)
    plan_arr = np.asarray(plan, dtype=np.int64)
    return FeatureCache(tokens, plan_arr[:, 0], plan_arr[:, 1], samples)


def autocast(bf16: bool):
    """bfloat16 autocast on CPU when asked: matmuls in bf16 (AMX), reductions and weights float32."""
    return torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16)


def pooled_features(
    model, cache: FeatureCache, rows: np.ndarray, frozen_layers: int, batch: int = 64, bf16: bool = False
):
    model.eval()
    out = []
    with torch.no_grad(), autocast(bf16):
        for start in tqdm(range(0, len(rows), batch), desc="frozen top blocks", unit="batch", leave=False):
            chunk = torch.from_numpy(cache.tokens[rows[start : start + batch]].astype(np.float32))
            out.append(upper_forward(model, chunk, frozen_layers).float())
    return torch.cat(out) if out else torch.zeros(0, model.classifier.in_features)


# --- stage 1: linear head on frozen features ----------------------------------------------------


def class_weights(targets: np.ndarray, num_classes: int, power: float) -> torch.Tensor:
    counts = np.bincount(targets, minlength=num_classes).astype(np.float64)
    w = np.where(counts > 0, np.maximum(counts, 1.0) ** -power, 0.0)
    w = w / (w[targets].mean() if len(targets) else 1.0)
    return torch.tensor(w, dtype=torch.float32)


def fit_linear_head(
    features: torch.Tensor,
    targets: torch.Tensor,
    num_classes: int,
    *,
    balance_power: float,
    label_smoothing: float,
    weight_decay: float = 1e-3,
    steps: int = 300,
    seed: int = 0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Multinomial logistic regression on standardised features, folded back to raw-feature weights.

    The head starts from class prototypes (mean normalised embedding), which matters for classes
    with one to three training photos.
    """
    torch.manual_seed(seed)
    # A floor on the scale: a near-constant feature would otherwise get a huge folded weight,
    # and the slightest drift of that feature during fine-tuning would blow the logits up.
    mean, std = features.mean(0), features.std(0)
    std = std.clamp_min(0.25 * float(std.median()) + 1e-6)
    z = (features - mean) / std
    protos = torch.zeros(num_classes, z.shape[1])
    protos.index_add_(0, targets, F.normalize(z, dim=1))
    protos = F.normalize(protos, dim=1)
    weight = (protos * 5.0).clone().requires_grad_(True)
    bias = torch.zeros(num_classes, requires_grad=True)
    sample_w = class_weights(targets.numpy(), num_classes, balance_power)[targets]
    opt = torch.optim.Adam([weight, bias], lr=0.01)
    for _ in tqdm(range(steps), desc="linear head", leave=False):
        opt.zero_grad()
        logits = z @ weight.T + bias
        loss = (
            F.cross_entropy(logits, targets, reduction="none", label_smoothing=label_smoothing) * sample_w
        ).mean() + weight_decay * weight.pow(2).sum() / 2
        loss.backward()
        opt.step()
    with torch.no_grad():
        w_raw = weight / std
        b_raw = bias - (weight * (mean / std)).sum(1)
    return w_raw.detach(), b_raw.detach()


# --- stage 2: fine-tune the top blocks ----------------------------------------------------------


def parameter_groups(model, args: TrainArguments) -> list[dict]:
    """Layer-wise learning rates: the top block at learning_rate, each one below x layer_decay.

    Lower blocks hold more general features and this backbone's are the good ones (its top
    blocks were tuned for saliency), so they move least.
    """
    layers = model.dinov2.encoder.layer
    top = len(layers) - 1
    groups = [
        {"params": list(layers[i].parameters()), "lr": args.learning_rate * args.layer_decay ** (top - i)}
        for i in range(args.frozen_layers, len(layers))
    ]
    head = list(model.dinov2.layernorm.parameters()) + list(model.classifier.parameters())
    groups.append({"params": head, "lr": args.head_learning_rate})
    return groups


def trainable_state(model, frozen_layers: int) -> dict[str, torch.Tensor]:
    prefixes = [f"dinov2.encoder.layer.{i}." for i in range(frozen_layers, model.config.num_hidden_layers)]
    prefixes += ["dinov2.layernorm.", "classifier."]
    return {
        k: v.detach().clone() for k, v in model.state_dict().items() if any(k.startswith(p) for p in prefixes)
    }


def drop_patch_tokens(tokens: torch.Tensor, keep: float) -> torch.Tensor:
    """Keep the CLS token and a random `keep` share of each row's patch tokens (PatchDropout).

    Position embeddings were added before the cached blocks, so the kept tokens still know where
    they are; evaluation always sees every token.
    """
    patches = tokens.shape[1] - 1
    k = max(1, round(patches * keep))
    index = torch.rand(tokens.shape[0], patches).argsort(dim=1)[:, :k] + 1
    kept = tokens.gather(1, index.unsqueeze(-1).expand(-1, -1, tokens.shape[2]))
    return torch.cat([tokens[:, :1], kept], dim=1)


def cutmix_tokens(tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, float]:
    """CutMix on cached tokens: a random box of the patch grid comes from a shuffled partner row.

    Returns the mixed tokens, each row's partner index and lambda, the share of patches kept (the
    weight of a row's own label). The box is a rectangle of the square grid, as in CutMix on
    pixels (area 1 - lambda, lambda ~ Beta(1, 1)); the CLS token is never swapped. Tokens cached
    after the frozen blocks have already attended to the whole photo, so the label weights by
    area are an approximation, as they are for pixels.
    """
    n, patches = tokens.shape[0], tokens.shape[1] - 1
    side = math.isqrt(patches)
    assert side * side == patches, f"CutMix needs a square patch grid, got {patches} tokens"
    cut = math.sqrt(1.0 - float(torch.distributions.Beta(1.0, 1.0).sample()))
    h = w = round(side * cut)
    top, left = (int(torch.randint(0, side - h + 1, ())), int(torch.randint(0, side - w + 1, ())))
    grid = torch.zeros(side, side, dtype=torch.bool)
    grid[top : top + h, left : left + w] = True
    box = torch.cat([torch.zeros(1, dtype=torch.bool), grid.flatten()])  # CLS never swapped
    partner = torch.randperm(n)
    mixed = torch.where(box[None, :, None], tokens[partner], tokens)
    return mixed, partner, 1.0 - h * w / patches


def evaluate_on_val(model, cache, val_rows, targets, main_mask_by_sample, args) -> dict[str, float]:
    with torch.no_grad():
        logits = model.classifier(pooled_features(model, cache, val_rows, args.frozen_layers, bf16=args.bf16))
    samples = cache.sample_index[val_rows]
    return split_accuracy(logits.numpy(), targets[samples], main_mask_by_sample[samples])


def trainable_and_optimizer(model, args: TrainArguments):
    """Freeze all but the trained blocks, head and final norm; AdamW over their rate groups."""
    groups = parameter_groups(model, args)
    trainable = [p for g in groups for p in g["params"]]
    for p in model.parameters():
        p.requires_grad_(False)
    for p in trainable:
        p.requires_grad_(True)
    return trainable, torch.optim.AdamW(groups, weight_decay=args.weight_decay)


def genus_ids(labels: Sequence[str]) -> torch.Tensor:
    """Each label's genus as an index ("amanita_muscaria" -> the index of "amanita")."""
    genera = {label: label.split("_", 1)[0] for label in labels}
    index = {genus: i for i, genus in enumerate(sorted(set(genera.values())))}
    return torch.tensor([index[genera[label]] for label in labels])


def genus_logits(logits: torch.Tensor, genus: torch.Tensor) -> torch.Tensor:
    """log of the summed species probabilities per genus (up to the softmax's common constant)."""
    top = logits.max(dim=1, keepdim=True).values.detach()
    sums = torch.zeros(len(logits), int(genus.max()) + 1, dtype=logits.dtype).index_add_(
        1, genus, torch.exp(logits - top))
    return torch.log(sums.clamp_min(1e-30)) + top


def classification_loss(logits: torch.Tensor, y: torch.Tensor, args: TrainArguments,
                        genus: torch.Tensor | None = None) -> torch.Tensor:
    """Cross-entropy over species, plus `genus_loss` x the cross-entropy over their genera (`genus`: genus_ids
    of the labels, needed when genus_loss is on)."""
    loss = F.cross_entropy(logits, y, label_smoothing=args.label_smoothing)
    if args.genus_loss:
        loss = loss + args.genus_loss * F.cross_entropy(
            genus_logits(logits, genus), genus[y], label_smoothing=args.label_smoothing)
    return loss


def training_step(model, trainable, opt, x: torch.Tensor, y: torch.Tensor, args: TrainArguments,
                  genus: torch.Tensor | None = None):
    """One optimiser step on a batch of cached tokens (CutMix, PatchDropout, bf16 autocast); the loss.
    `genus`: genus_ids of the model's labels, for --genus_loss (computed once per run, not per step)."""
    partner, keep = None, 1.0
    if args.cutmix and float(torch.rand(())) < args.cutmix:
        x, partner, keep = cutmix_tokens(x)
    if args.token_keep < 1.0:
        x = drop_patch_tokens(x, args.token_keep)
    with autocast(args.bf16):
        logits = model.classifier(upper_forward(model, x, args.frozen_layers)).float()
    loss = classification_loss(logits, y, args, genus)
    if partner is not None:
        # The mixed photo is `keep` its own and 1 - keep its partner's: the loss weighs both labels so.
        loss = keep * loss + (1 - keep) * classification_loss(logits, y[partner], args, genus)
    opt.zero_grad()
    loss.backward()
    torch.nn.utils.clip_grad_norm_(trainable, 1.0)
    opt.step()
    return loss


def finetune(
    args: TrainArguments,
    model,
    cache: FeatureCache,
    ids: dict[str, np.ndarray],
    targets: np.ndarray,
    main_mask_by_sample: np.ndarray,
    out_dir: Path,
    on_epoch=None,
) -> list[dict]:
    """Fine-tune the top blocks; `on_epoch(record)` after each epoch (the MLflow run's live metrics)."""
    rng = np.random.default_rng(args.seed)
    torch.manual_seed(args.seed)
    num_classes = model.config.num_labels
    train_ids = ids["train"]
    # All cached views of each training photo; each epoch draws one per photo.
    views_of: dict[int, np.ndarray] = {int(i): cache.rows([i]) for i in train_ids}
    per_photo_w = class_weights(targets[train_ids], num_classes, args.balance_power)[
        targets[train_ids]
    ].numpy()
    per_photo_w = per_photo_w / per_photo_w.sum()
    val_rows = cache.rows(ids["val"], centre_only=True)

    trainable, opt = trainable_and_optimizer(model, args)
    genus = genus_ids([model.config.id2label[i] for i in range(num_classes)]) if args.genus_loss else None
    steps_per_epoch = math.ceil(len(train_ids) / args.batch_size)
    total_steps = steps_per_epoch * args.epochs
    warmup = max(1, steps_per_epoch)  # one epoch: the first Adam steps are sign-like and large

    def lr_factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warmup) / max(1, total_steps - warmup))))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_factor)
    history: list[dict] = []
    # A refit trains on the validation photos: none are held out to choose an epoch or stop early
    # with, so it skips the validation pass, runs every epoch and keeps the last (or the average).
    validate = not args.refit
    # With weight averaging the mean of the last epochs is the model whatever validation says, so
    # that a twin and its refit follow one recipe; validation is then only reported.
    select_on_val = validate and not args.average_last
    first_averaged = args.epochs - args.average_last if args.average_last else args.epochs
    average: dict[str, torch.Tensor] | None = None
    n_averaged = 0
    best_score, best_state, bad_epochs, start_epoch = -math.inf, None, 0, 0
    if select_on_val:
        # The stage-1 linear model is the baseline: fine-tuning only replaces it when val improves.
        best_score = selection_score(evaluate_on_val(model, cache, val_rows, targets, main_mask_by_sample, args))
        best_state = trainable_state(model, args.frozen_layers)
    ckpt_path = out_dir / "checkpoint.pt"
    if args.resume and ckpt_path.exists():
        ckpt = torch.load(ckpt_path, weights_only=False)
        model.load_state_dict(ckpt["state"], strict=False)
        opt.load_state_dict(ckpt["optimizer"])
        sched.load_state_dict(ckpt["scheduler"])
        history, best_score, best_state = ckpt["history"], ckpt["best_score"], ckpt["best_state"]
        average, n_averaged = ckpt.get("average"), ckpt.get("n_averaged", 0)
        bad_epochs, start_epoch = ckpt["bad_epochs"], ckpt["epoch"] + 1
        rng = ckpt["rng"]
        log.info("resumed from %s at epoch %d", ckpt_path, start_epoch)

    started = time.monotonic()
    for epoch in range(start_epoch, args.epochs):
        model.train()
        # Weighted draw with replacement: few-shot classes appear more often than their share.
        order = rng.choice(train_ids, size=len(train_ids), replace=True, p=per_photo_w)
        rows = np.array([rng.choice(views_of[int(i)]) for i in order])
        epoch_loss, seen, t0 = 0.0, 0, time.monotonic()
        bar = tqdm(
            range(0, len(rows), args.batch_size), desc=f"epoch {epoch + 1}/{args.epochs}", unit="batch"
        )
        for start in bar:
            batch_rows = rows[start : start + args.batch_size]
            x = torch.from_numpy(cache.tokens[np.sort(batch_rows)].astype(np.float32))
            y = torch.as_tensor(targets[cache.sample_index[np.sort(batch_rows)]])
            loss = training_step(model, trainable, opt, x, y, args, genus)
            sched.step()
            epoch_loss += loss.item() * len(batch_rows)
            seen += len(batch_rows)
            bar.set_postfix(loss=f"{epoch_loss / seen:.3f}", img_s=f"{seen / (time.monotonic() - t0):.1f}")
        record = {
            "epoch": epoch + 1,
            "train_loss": epoch_loss / max(1, seen),
            "train_img_per_s": seen / (time.monotonic() - t0),
            "elapsed_min": (time.monotonic() - started) / 60,
        }
        if epoch >= first_averaged:
            # Running mean of the end-of-epoch weights (SWA): averages out the last epochs' noise
            # at no inference cost.
            state = trainable_state(model, args.frozen_layers)
            n_averaged += 1
            if average is None:
                average = state
            else:
                for k, v in state.items():
                    average[k] += (v - average[k]) / n_averaged
            record["averaged"] = n_averaged
        if validate:
            metrics = evaluate_on_val(model, cache, val_rows, targets, main_mask_by_sample, args)
            record.update({f"val_{k}": v for k, v in metrics.items()})
        if select_on_val:
            score = selection_score(metrics)
            if score > best_score:
                best_score, best_state, bad_epochs = score, trainable_state(model, args.frozen_layers), 0
            else:
                bad_epochs += 1
            record["best"] = bad_epochs == 0
        history.append(record)
        log.info("epoch %d: %s", epoch + 1, json.dumps(record))
        write_history(history, out_dir)
        if on_epoch is not None:
            on_epoch(record)
        torch.save(
            {
                "state": trainable_state(model, args.frozen_layers),
                "optimizer": opt.state_dict(),
                "scheduler": sched.state_dict(),
                "history": history,
                "best_score": best_score,
                "best_state": best_state,
                "bad_epochs": bad_epochs,
                "average": average,
                "n_averaged": n_averaged,
                "epoch": epoch,
                "rng": rng,
            },
            ckpt_path,
        )
        if select_on_val and bad_epochs >= args.patience:
            log.info("early stopping: no val improvement for %d epochs", bad_epochs)
            break
        if (time.monotonic() - started) / 60 > args.max_minutes:
            log.info("stopping: max_minutes=%s reached", args.max_minutes)
            if not select_on_val:
                log.warning("run cut short at epoch %d of %d: raise --max_minutes", epoch + 1, args.epochs)
            break
    if average is not None:
        model.load_state_dict(average, strict=False)
        record = {"epoch": len(history), "stage": "average", "averaged": n_averaged}
        if validate:
            metrics = evaluate_on_val(model, cache, val_rows, targets, main_mask_by_sample, args)
            record.update({f"val_{k}": v for k, v in metrics.items()})
        log.info("kept the mean of the last %d epochs' weights: %s", n_averaged, json.dumps(record))
        history.append(record)
        write_history(history, out_dir)
    elif args.average_last:
        log.warning("no epoch reached the averaging window (the last %d): keeping the last epoch", args.average_last)
    elif select_on_val and best_state is not None:
        model.load_state_dict(best_state, strict=False)
    return history


def write_history(history: list[dict], out_dir: Path) -> None:
    (out_dir / "history.json").write_text(json.dumps(history, indent=2))
    if history:
        with (out_dir / "history.csv").open("w", newline="") as fh:
            names = list(dict.fromkeys(k for row in history for k in row))
            writer = csv.DictWriter(fh, fieldnames=names)
            writer.writeheader()
            writer.writerows(history)


# --- saving -------------------------------------------------------------------------------------


def fix_backbone_fields(config_path: Path) -> None:
    """Make a saved config.json's out_features/out_indices agree with num_hidden_layers."""
    config = json.loads(config_path.read_text())
    n = config["num_hidden_layers"]
    config["out_features"], config["out_indices"] = [f"stage{n}"], [n]
    config["stage_names"] = ["stem"] + [f"stage{i}" for i in range(1, n + 1)]
    config_path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")


def save_model_dir(model, processor, path: Path, *, fp16: bool) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    to_save = model
    if fp16:
        import copy

        to_save = copy.deepcopy(model).half()
    to_save.save_pretrained(path)
    fix_backbone_fields(path / "config.json")
    processor.save_pretrained(path)
    return path


def copy_model_dir(src: Path, dst: Path) -> None:
    """Copy a model directory's files into dst (files only; dst's other files stay)."""
    dst.mkdir(parents=True, exist_ok=True)
    for f in src.iterdir():
        if f.is_file():
            shutil.copy2(f, dst / f.name)


# --- entry point --------------------------------------------------------------------------------


def check_arguments(args: TrainArguments) -> None:
    if args.mode not in ("linear", "finetune"):
        raise ValueError(f"mode must be 'linear' or 'finetune', got {args.mode!r}")
    if args.head_init not in ("fresh", "linear"):
        raise ValueError(f"head_init must be 'fresh' or 'linear', got {args.head_init!r}")
    if not 0 <= args.frozen_layers < args.num_hidden_layers:
        raise ValueError("need 0 <= frozen_layers < num_hidden_layers")
    if args.refit and args.calibrate:
        raise ValueError(
            "a refit model cannot be calibrated on validation photos it was trained on: pass "
            "--no-calibrate, then `calibrate --from_model` a twin run trained on train only"
        )
    if args.include_test and not args.refit:
        raise ValueError("--include_test is a final fit: pass --refit too (no early stopping, no calibration)")
    if args.bf16 and not torch.cpu._is_avx512_bf16_supported():
        log.warning("--bf16 on a CPU without AVX512-BF16/AMX: bfloat16 is emulated and slower here")


def main(args: TrainArguments) -> Path:
    """Train; returns the model directory (<output_dir>/model, also copied to release_dir)."""
    check_arguments(args)
    name = args.version or Path(args.output_dir).name
    with tracking.run(name, args.track and tracking.enabled_by_default(), tags={"command": "train"}) as mlflow:
        return train(args, mlflow)


def train(args: TrainArguments, mlflow=None) -> Path:
    """The run itself; `mlflow` (the module, inside an active run) or None when tracking is off."""
    if args.threads:
        torch.set_num_threads(args.threads)
    t_start = time.monotonic()
    random.seed(args.seed)
    np.random.seed(args.seed)
    torch.manual_seed(args.seed)
    out_dir = Path(args.output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)

    folder = data.scan_image_folders(args.data_dir, min_photos=args.min_photos, verify=args.verify_images)
    log.info("%s", folder.report())
    splits = data.split_samples(
        folder.samples, seed=args.split_seed, val_fraction=args.val_fraction, test_fraction=args.test_fraction
    )
    data.write_splits(folder, splits, out_dir)
    manifest = dataset.manifest_rows(folder, splits)
    data_summary = dataset.summary(folder, manifest)
    dataset.write_manifest(out_dir, manifest)
    log.info("dataset version %s: %d photos, %d labels", data_summary["version"], len(manifest), data_summary["labels"])
    if mlflow:
        mlflow.log_params(tracking.flat_params(dataclasses.asdict(args)))
        mlflow.set_tag("dataset_version", data_summary["version"])
        mlflow.log_input(
            dataset.mlflow_dataset(manifest, data_summary["version"], str(out_dir / dataset.MANIFEST_FILE)),
            context="training",
        )
    labels = folder.labels
    label_index = {label: i for i, label in enumerate(labels)}
    mains = set(data.main_classes(folder))
    log.info(
        "splits: train %d, val %d, test %d; %d classes (%d main)",
        len(splits.train),
        len(splits.val),
        len(splits.test),
        len(labels),
        len(mains),
    )

    model = build_model(args.backbone, labels, args.num_hidden_layers)
    processor, preprocess = load_preprocess(args.backbone, args.image_size)
    cache = build_feature_cache(args, model, preprocess, splits)
    targets = np.array([label_index[s.label] for s in cache.samples])
    is_main = np.array([s.label in mains for s in cache.samples])
    n_train, n_val = len(splits.train), len(splits.val)
    # The cache holds train, val, test in that order: a refit learns val too, a final fit test too.
    n_learnt = n_train + n_val * args.refit + len(splits.test) * args.include_test
    ids = {
        "train": np.arange(n_learnt),
        "val": np.arange(n_train, n_train + n_val),
        "test": np.arange(n_train + n_val, len(cache.samples)),
    }
    if args.include_test:
        log.info("final fit: training on all %d photos (test included: nothing is held out)", len(ids["train"]))
    elif args.refit:
        log.info("refit: training on %d train + %d validation photos", n_train, n_val)

    # Stage 1: linear head on frozen features of every cached training view (or a given head).
    train_rows = cache.rows(ids["train"])
    val_rows = cache.rows(ids["val"], centre_only=True)
    if args.init_head_from:
        from safetensors.torch import load_file

        head = load_file(str(Path(args.init_head_from) / "model.safetensors"))
        w, b = head["classifier.weight"].float(), head["classifier.bias"].float()
        val_feats = pooled_features(model, cache, val_rows, args.frozen_layers, bf16=args.bf16)
    elif args.mode == "finetune" and args.head_init == "fresh":
        # A zero head: the first steps train the head alone (no gradient reaches the blocks until
        # it is non-zero), a natural warm-up; a warm-started linear head is already fitted to the
        # training photos, so it sends the blocks almost no signal (measured: docs/TRAINING.md).
        w, b = torch.zeros_like(model.classifier.weight), torch.zeros_like(model.classifier.bias)
        val_feats = None
    else:
        feats = pooled_features(
            model, cache, np.concatenate([train_rows, val_rows]), args.frozen_layers, bf16=args.bf16
        )
        train_feats, val_feats = feats[: len(train_rows)], feats[len(train_rows) :]
        w, b = fit_linear_head(
            train_feats,
            torch.as_tensor(targets[cache.sample_index[train_rows]]),
            len(labels),
            balance_power=args.balance_power,
            label_smoothing=args.label_smoothing,
            seed=args.seed,
        )
    with torch.no_grad():
        model.classifier.weight.copy_(w)
        model.classifier.bias.copy_(b)
    history: list[dict] = []
    if val_feats is not None:
        val_ids = cache.sample_index[val_rows]
        linear_metrics = split_accuracy(
            model.classifier(val_feats).detach().numpy(), targets[val_ids], is_main[val_ids]
        )
        log.info("linear head (frozen features), val: %s", json.dumps(linear_metrics))
        history.append({"epoch": 0, "stage": "linear", **{f"val_{k}": v for k, v in linear_metrics.items()}})

    if args.mode == "finetune" and not args.init_head_from and val_feats is not None:
        # The linear model is saved too: a quick fallback release while fine-tuning runs.
        save_model_dir(model, processor, out_dir / "linear_model", fp16=args.save_fp16)
    if args.mode == "finetune":
        live = (lambda record: tracking.log_history(mlflow, [record])) if mlflow else None
        history += finetune(args, model, cache, ids, targets, is_main, out_dir, on_epoch=live)
    write_history(history, out_dir)

    model_dir = save_model_dir(model, processor, out_dir / "model", fp16=args.save_fp16)
    version = args.version or f"dinov2s-L{args.num_hidden_layers}-{args.mode}-{time.strftime('%Y%m%d-%H%M')}"
    train_info = {
        "version": version,
        "mode": args.mode,
        "backbone": args.backbone,
        "num_hidden_layers": args.num_hidden_layers,
        "frozen_layers": args.frozen_layers,
        "seed": args.seed,
        "train_minutes": (time.monotonic() - t_start) / 60,
        "n_train": len(ids["train"]),
        "n_val": n_val,
        "refit": args.refit,
        "include_test": args.include_test,
        "n_test": len(splits.test),
        "labels": len(labels),
        "main_classes": sorted(mains),
        "dropped_classes": folder.dropped_classes,
        "skipped_files": len(folder.skipped),
        "dataset": data_summary,
        "args": dataclasses.asdict(args),
        "history": history,
    }
    (out_dir / "train_info.json").write_text(json.dumps(train_info, indent=2))
    (model_dir / "train_info.json").write_text(
        json.dumps({k: v for k, v in train_info.items() if k != "history"}, indent=2)
    )
    # The model keeps the list of photos it learnt from: evaluate refuses them whatever their path.
    dataset.write_manifest(model_dir, manifest)
    if args.calibrate:
        from vision_model import calibrate

        with contextlib.nullcontext() if mlflow else tracking.off():  # untracked training: calibrate too
            calibrate.main(
                calibrate.CalibrateArguments(
                    model=str(model_dir),
                    data_dir=args.data_dir,
                    splits=str(out_dir / data.SPLITS_FILE),
                    version=version,
                    seed=args.split_seed,
                )
            )
    if mlflow:  # the epochs went out live; the linear stage and the weight average now
        tracking.log_history(mlflow, [row for row in history if row.get("stage") in ("linear", "average")])
        mlflow.set_tag("model_version", version)
        mlflow.log_param("model_dir", str(model_dir))
        for name in ("train_info.json", "splits.json", "history.csv", dataset.MANIFEST_FILE):
            if (out_dir / name).is_file():
                mlflow.log_artifact(str(out_dir / name), "run")
        for name in ("safety.json", "labels.json", "config.json"):
            if (model_dir / name).is_file():
                mlflow.log_artifact(str(model_dir / name), "model")
    if args.release_dir:
        copy_model_dir(model_dir, Path(args.release_dir))
        log.info("copied the model to %s", args.release_dir)
    log.info("done in %.1f min: %s", (time.monotonic() - t_start) / 60, model_dir)
    return model_dir


if __name__ == "__main__":
    sys.exit(cli.run("train", main=main))
