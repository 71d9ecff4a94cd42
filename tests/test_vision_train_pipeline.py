"""End to end on tiny self-made data and a tiny random Dinov2 backbone (never the real one):
train -> calibrate -> the model loads with the production Classifier -> evaluate writes its report."""

import dataclasses
import hashlib
import json
import math
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from vision_support import (  # noqa: F401 - vision_caches_outside_the_checkout is autouse
    TINY_PHOTOS,
    make_folder,
    tiny_backbone,
    vision_caches_outside_the_checkout,
)


def tiny_run_args(tmp_path: Path, **overrides):
    """TrainArguments for a 2-block tiny run on a fresh folder under tmp_path (fast rates, no calibration)."""
    from vision_model import train

    defaults = dict(
        data_dir=str(make_folder(tmp_path / "img", TINY_PHOTOS)),
        backbone=str(tiny_backbone(tmp_path / "backbone")),
        output_dir=str(tmp_path / "run"),
        num_hidden_layers=2,
        frozen_layers=1,
        augmented_views=1,
        learning_rate=1e-3,
        head_learning_rate=1e-2,
        batch_size=4,
        cache_dir=str(tmp_path / "cache"),
        calibrate=False,
        save_fp16=False,
    )
    return train.TrainArguments(**{**defaults, **overrides})


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    from vision_model import train

    tmp = tmp_path_factory.mktemp("vision_train")
    data = make_folder(tmp / "img", TINY_PHOTOS)
    args = train.TrainArguments(
        data_dir=str(data),
        backbone=str(tiny_backbone(tmp / "backbone")),
        output_dir=str(tmp / "run"),
        release_dir=str(tmp / "release"),
        num_hidden_layers=2,
        frozen_layers=1,
        augmented_views=1,
        head_init="linear",
        epochs=2,
        average_last=0,  # keep the best epoch: the weight-averaging test covers the default
        batch_size=4,
        cache_dir=str(tmp / "cache"),
        version="tiny-e2e",
        max_minutes=5,
    )
    model_dir = train.main(args)
    return tmp, args, model_dir


def test_tiny_model_trains_and_loads_with_the_classifier(trained):
    from PIL import Image

    from vision_model.classifier import Classifier
    from vision_model.verdict import SafetyConfig

    tmp, args, model_dir = trained
    history = json.loads((tmp / "run" / "history.json").read_text())
    assert history[0]["stage"] == "linear" and len(history) == 3  # linear head + 2 fine-tuning epochs
    assert (tmp / "run" / "history.csv").read_text().startswith("epoch,")
    config = json.loads((model_dir / "config.json").read_text())
    assert config["num_hidden_layers"] == 2 and config["out_indices"] == [2]
    assert sorted(config["id2label"].values()) == sorted(TINY_PHOTOS)

    safety = SafetyConfig.load(model_dir)
    assert safety.version == "tiny-e2e" and safety.temperature > 0
    assert safety.extra["tuning"]["dangerous_errors"] == 0

    for where in (model_dir, tmp / "release"):
        clf = Classifier.load(where, backend="torch")
        photo = next((tmp / "img" / "boletus_edulis").glob("*.jpg"))
        result = clf.identify([Image.open(photo)])
        assert result.top_k[0].label in TINY_PHOTOS
        assert 0.99 < sum(p.probability for p in clf.identify_each([photo])[0].top_k) <= 1.0 + 1e-6


def test_resume_continues_from_the_checkpoint(trained):
    from vision_model import train

    tmp, args, _ = trained
    before = json.loads((tmp / "run" / "history.json").read_text())
    args.epochs, args.calibrate, args.release_dir = 3, False, None
    train.main(args)
    after = json.loads((tmp / "run" / "history.json").read_text())
    assert [r["epoch"] for r in after] == [0, 1, 2, 3]
    assert after[1]["train_loss"] == before[1]["train_loss"]  # epochs 1-2 were not re-run


def test_fresh_head_trains_with_layer_wise_rates(tmp_path):
    import torch
    from safetensors.torch import load_file

    from vision_model import train

    data = make_folder(tmp_path / "img", TINY_PHOTOS)
    args = train.TrainArguments(
        data_dir=str(data),
        backbone=str(tiny_backbone(tmp_path / "backbone")),
        output_dir=str(tmp_path / "run"),
        num_hidden_layers=3,
        frozen_layers=1,
        augmented_views=1,
        head_init="fresh",
        learning_rate=1e-3,
        layer_decay=0.5,
        head_learning_rate=1e-2,
        epochs=2,
        average_last=0,
        batch_size=4,
        cache_dir=str(tmp_path / "cache"),
        calibrate=False,
    )
    model = train.build_model(args.backbone, sorted(TINY_PHOTOS), args.num_hidden_layers)
    assert [g["lr"] for g in train.parameter_groups(model, args)] == [5e-4, 1e-3, 1e-2]

    model_dir = train.main(args)
    history = json.loads((tmp_path / "run" / "history.json").read_text())
    # No linear stage: the zero head is trained together with the blocks from the first epoch.
    assert [r["epoch"] for r in history] == [1, 2] and "stage" not in history[0]
    assert not (tmp_path / "run" / "linear_model").exists()
    weights = load_file(str(model_dir / "model.safetensors"))
    assert float(weights["classifier.weight"].float().abs().sum()) > 0
    backbone = load_file(str(Path(args.backbone) / "model.safetensors"))
    moved = weights["dinov2.encoder.layer.2.mlp.fc1.weight"].float() - backbone["encoder.layer.2.mlp.fc1.weight"]
    frozen = weights["dinov2.encoder.layer.0.mlp.fc1.weight"].float() - backbone["encoder.layer.0.mlp.fc1.weight"]
    assert float(moved.abs().max()) > 1e-3  # trained block
    assert float(frozen.abs().max()) < 1e-3  # frozen block: only fp16 rounding
    assert torch.isfinite(weights["classifier.bias"].float()).all()


def test_weight_averaging_keeps_the_mean_of_the_last_epochs_across_resumes(tmp_path):
    import torch
    from safetensors.torch import load_file

    from vision_model import export, train

    args = tiny_run_args(
        tmp_path,
        epochs=3,
        average_last=2,  # the mean of epochs 2 and 3
        patience=0,  # would stop after one epoch without improvement: averaging turns that off
        max_minutes=0,  # one epoch per call: every epoch goes through a checkpoint and a resume
    )
    ckpt_path = tmp_path / "run" / "checkpoint.pt"
    states = []
    for _ in range(3):
        model_dir = train.main(args)
        states.append(torch.load(ckpt_path, weights_only=False))
    assert [s["epoch"] for s in states] == [0, 1, 2] and [s["n_averaged"] for s in states] == [0, 1, 2]
    assert states[0]["average"] is None  # epoch 1 is outside the window

    epoch2, epoch3 = states[1]["state"], states[2]["state"]
    saved = load_file(str(model_dir / "model.safetensors"))
    for name in ("classifier.weight", "dinov2.encoder.layer.1.mlp.fc1.weight"):
        assert not torch.equal(epoch2[name], epoch3[name])
        torch.testing.assert_close(saved[name], (epoch2[name] + epoch3[name]) / 2)

    history = json.loads((tmp_path / "run" / "history.json").read_text())
    assert [r["epoch"] for r in history if "stage" not in r] == [1, 2, 3]  # no early stopping
    (mean_row,) = [r for r in history if r.get("stage") == "average"]
    assert mean_row["averaged"] == 2 and 0.0 <= mean_row["val_top1"] <= 1.0  # validation reported
    info = json.loads((model_dir / "train_info.json").read_text())
    assert "3 epochs, mean of the last 2 epochs' weights kept" in export.training_line(info)
    refit = dict(info, refit=True)
    assert "refit on train + validation photos for 3 epochs, mean of the last 2" in export.training_line(refit)


def test_evaluate_writes_report_plots_and_json(trained):
    from vision_model import evaluate

    tmp, args, model_dir = trained
    out = tmp / "report"
    metrics = evaluate.main(
        evaluate.EvaluateArguments(
            model=str(model_dir),
            out=str(out),
            data_dir=args.data_dir,
            splits=str(tmp / "run" / "splits.json"),
            synthetic_images=6,
            cache_dir=str(tmp / "logits"),
        )
    )
    for name in (
        "metrics.json",
        "per_class.csv",
        "confusion_main.png",
        "risk_coverage.png",
        "reliability.png",
    ):
        assert (out / name).stat().st_size > 0, name
    saved = json.loads((out / "metrics.json").read_text())
    assert saved["n"] == metrics["n"] == 4  # one test photo per 5-photo class
    assert saved["fewshot"]["n"] == 4 and 0.0 <= saved["fewshot"]["top1"] <= 1.0
    assert saved["safety"]["open_set"]["n"] == 4 + 6
    assert set(saved["calibration"]) >= {"ece_before", "ece_after", "temperature"}
    # Issue 23's figures: the 4 test photos are all rare (5-photo classes): amanita_phalloides (deadly) and
    # amanita_muscaria (poisonous) are the dangerous ones, boletus and cantharellus the edible ones; the open
    # set judges the same 4 photos with their own class removed, against what they really are.
    danger = saved["danger"]
    assert danger["main"]["dangerous_photos"] == 0 and danger["main"]["danger_recall"] is None
    assert (danger["rare"]["dangerous_photos"], danger["rare"]["edible_photos"]) == (2, 2)
    assert (danger["open_set"]["dangerous_photos"], danger["open_set"]["edible_photos"]) == (2, 2)
    assert all(0.0 <= d[k] <= 1.0 for d in (danger["rare"], danger["open_set"])
               for k in ("danger_recall", "false_alarm_rate"))
    # The default fast backend (bfloat16 checked against float32) compared with the evaluated one on the same photos.
    assert saved["parity"]["backend"] == "openvino-bf16" and saved["parity"]["n"] == 4
    assert 0 <= saved["parity"]["same"] <= 4 and saved["parity"]["rate"] == saved["parity"]["same"] / 4
    # Parity counts what the replies show; the stricter arg-max count can only be lower.
    assert saved["parity"]["compared"] == "the verdict shown and the species named as most likely"
    assert saved["parity"]["same_top1_and_verdict"] <= saved["parity"]["same"]
    reference = json.loads((out / "reference.json").read_text())
    assert len(reference["top1_probability"]) == len(reference["verdicts"]) == len(reference["embeddings"]) == 4


def test_export_writes_the_card_and_keeps_its_selection_note_for_the_same_model(trained, tmp_path):
    import dataclasses
    import shutil

    from vision_model import export
    from vision_model.verdict import SafetyConfig

    _, _, model_dir = trained
    note = tmp_path / "note.md"
    note.write_text("Chosen on validation before the test split was read.\n")
    release = tmp_path / "release"

    def card_after_export(model, selection_note=None):
        args = export.ExportArguments(
            model=str(model), release_dir=str(release), manifest=str(tmp_path / "none.csv"),
            selection_note=selection_note,
        )  # fmt: skip
        export.main(args)
        return (release / "MODEL_CARD.md").read_text()

    card = card_after_export(model_dir, str(note))
    assert card.startswith("# Mushroom photo classifier - tiny-e2e\n")
    assert "## How this release was chosen\nChosen on validation before the test split was read.\n\n## Known" in card
    assert (release / "model.safetensors").is_file() and (release / "metrics.json").is_file()
    # Re-exporting the same model (say after re-calibration) keeps the note ...
    assert card_after_export(model_dir) == card
    # ... a different model does not inherit it.
    other = tmp_path / "other"
    shutil.copytree(model_dir, other)
    dataclasses.replace(SafetyConfig.load(other), version="tiny-other").save(other)
    card = card_after_export(other)
    assert card.startswith("# Mushroom photo classifier - tiny-other\n") and "How this release was chosen" not in card


def test_train_help_lists_the_options():
    out = subprocess.run(
        [sys.executable, "-m", "vision_model", "train", "--help"],
        capture_output=True,
        text=True,
        cwd=Path(__file__).resolve().parent.parent,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    for option in ("--backbone", "--num_hidden_layers", "--frozen_layers", "--seed", "--no-calibrate"):
        assert option in out.stdout


def test_patch_dropout_keeps_cls_and_a_random_subset_of_patches():
    import torch

    from vision_model.train import drop_patch_tokens

    torch.manual_seed(0)
    tokens = torch.arange(2 * 17 * 3, dtype=torch.float32).reshape(2, 17, 3)  # CLS + 16 patches
    kept = drop_patch_tokens(tokens, 0.5)
    assert kept.shape == (2, 9, 3)
    assert torch.equal(kept[:, 0], tokens[:, 0])
    for row in range(2):
        originals = {tuple(t.tolist()) for t in tokens[row, 1:]}
        chosen = [tuple(t.tolist()) for t in kept[row, 1:]]
        assert len(set(chosen)) == 8 and set(chosen) <= originals  # distinct patches of the same row
    assert drop_patch_tokens(tokens, 0.01).shape == (2, 2, 3)  # at least one patch survives


def refit_of(args, tmp_path, name: str, **changes):
    """The trained fixture's arguments as a 2-epoch refit (no calibration) in tmp_path/name."""
    import dataclasses

    return dataclasses.replace(
        args, output_dir=str(tmp_path / name), release_dir=None, cache_dir=str(tmp_path / "cache"),
        refit=True, calibrate=False, epochs=2, version=f"tiny-{name}", **changes,
    )  # fmt: skip


def test_refit_trains_on_validation_photos_and_takes_its_twins_calibration(trained, tmp_path):
    import dataclasses

    from vision_model import calibrate, export, train
    from vision_model.verdict import SafetyConfig

    tmp, args, _ = trained
    twin = tmp / "release"  # trained on train photos only and calibrated on validation
    refit_args = refit_of(args, tmp_path, "refit", patience=0)  # patience 0 would stop after one epoch without --refit
    with pytest.raises(ValueError, match="calibrate"):
        train.main(dataclasses.replace(refit_args, calibrate=True))
    model_dir = train.main(refit_args)

    info = json.loads((model_dir / "train_info.json").read_text())
    assert info["refit"] is True and (info["n_train"], info["n_val"]) == (16, 4)  # 12 train + 4 val photos
    history = json.loads((tmp_path / "refit" / "history.json").read_text())
    assert [r["epoch"] for r in history if "stage" not in r] == [1, 2]  # no early stopping
    assert not [k for r in history if "stage" not in r for k in r if k.startswith("val_")]  # no val pass
    # 20 centre views + one augmented view per photo trained on (validation photos included).
    (cache,) = (tmp_path / "cache").iterdir()
    assert json.loads((cache / "done.json").read_text())["rows"] == 20 + 16

    with pytest.raises(ValueError, match="--from_model"):  # its validation photos are training photos
        calibrate.main(calibrate.CalibrateArguments(model=str(model_dir), data_dir=args.data_dir))
    with pytest.raises(ValueError, match="calibrate it first"):
        calibrate.transfer(model_dir, model_dir, None)  # not calibrated yet: nothing to take
    safety = calibrate.main(calibrate.CalibrateArguments(model=str(model_dir), from_model=str(twin)))
    source = SafetyConfig.load(twin)
    assert SafetyConfig.load(model_dir) == safety
    assert safety.temperature == source.temperature
    assert safety.abstain_min_probability == source.abstain_min_probability
    assert safety.version == "tiny-refit"
    assert safety.extra["transferred_from"] == {"model": str(twin), "version": "tiny-e2e"}

    card = export.model_card(model_dir, {}, {})
    assert "refit on train + validation photos for 2 epochs" in card
    assert "Train 12, val 4, test 4 photos (the refit learns from train + val, 16)." in card
    assert "taken from the twin run `tiny-e2e`" in card
    assert "--refit" in card and "--from_model var/runs/vision/model" in card


def test_final_fit_learns_every_photo_and_its_card_shows_the_held_out_figures_of_the_recipe(trained, tmp_path):
    import dataclasses

    from vision_model import calibrate, evaluate, export, train

    tmp, args, _ = trained
    twin = tmp / "release"  # trained on train photos only and calibrated on validation
    final_args = refit_of(args, tmp_path, "final", include_test=True)
    with pytest.raises(ValueError, match="--refit"):
        train.main(dataclasses.replace(final_args, refit=False))
    model_dir = train.main(final_args)
    info = json.loads((model_dir / "train_info.json").read_text())
    assert info["include_test"] is True and info["n_train"] == 20  # 12 train + 4 val + 4 test photos
    (cache,) = (tmp_path / "cache").iterdir()  # its own cache: test photos get augmented views too
    assert json.loads((cache / "done.json").read_text())["rows"] == 20 + 20
    calibrate.main(calibrate.CalibrateArguments(model=str(model_dir), from_model=str(twin)))

    def report(model, name, allow_learnt_photos=False):
        evaluate.main(
            evaluate.EvaluateArguments(
                model=str(model), out=str(tmp_path / name), data_dir=args.data_dir,
                splits=str(tmp / "run" / "splits.json"), synthetic_images=4, cache_dir=str(tmp_path / "logits"),
                allow_learnt_photos=allow_learnt_photos,
            )
        )  # fmt: skip
        return tmp_path / name

    # The final fit learnt the test photos (its manifest lists their hashes): refused unless asked for.
    with pytest.raises(evaluate.LearntPhotos, match="it learnt from 4 of these 4 photos"):
        report(model_dir, "refused")
    assert not (tmp_path / "refused" / "metrics.json").exists()
    trained_on_test = report(model_dir, "final-report", allow_learnt_photos=True)
    held_out = report(twin, "twin-report")
    assert json.loads((trained_on_test / "metrics.json").read_text())["held_out"] is False
    assert json.loads((held_out / "metrics.json").read_text())["held_out"] is True
    release = tmp_path / "released"

    def export_with(report_dir):
        export.main(
            export.ExportArguments(
                model=str(model_dir), report=str(report_dir), release_dir=str(release),
                manifest=str(tmp_path / "none.csv"),
            )
        )  # fmt: skip
        return (release / "MODEL_CARD.md").read_text()

    with pytest.raises(ValueError, match="trained on"):  # training figures never reach a card
        export_with(trained_on_test)
    card = export_with(held_out)
    assert "final fit on all photos (train + validation + test) for 2 epochs" in card
    assert "## Metrics (test split, held out from `tiny-e2e`: the same recipe without the test photos)" in card
    assert "no held-out figure of them exists" in card
    assert "| danger recall / false-alarm rate, open set |" in card
    assert "| same reply (verdict shown, species named) with openvino-bf16 as with torch | " in card
    assert "Train 12, val 4, test 4 photos (these weights learnt from all 20;" in card
    command = export.reproduce_command(info)
    assert command.count("--include_test") == 1  # the twin and the refit hold the test photos out
    assert "train --output_dir var/runs/vision-refit --refit --no-calibrate" in command
    assert "evaluate --model var/runs/vision-refit/model --splits var/runs/vision-refit/splits.json" in command
    assert "train --output_dir var/runs/vision-final --refit --include_test --no-calibrate" in command
    assert "calibrate --model var/runs/vision-final/model --from_model var/runs/vision/model" in command
    assert command.endswith("export --model var/runs/vision-final/model --report reports/vision")


def test_soup_averages_two_runs_and_is_calibrated_and_described_as_one(trained, tmp_path):
    import dataclasses

    import torch
    from safetensors.torch import load_file

    from vision_model import calibrate, cli, export, soup, train
    from vision_model.classifier import Classifier

    tmp, args, first = trained
    second = train.main(
        dataclasses.replace(
            args,
            output_dir=str(tmp_path / "run-v2"),
            release_dir=None,
            cache_dir=str(tmp_path / "cache"),
            augmented_views=2,
            seed=1,  # other views and sampling order; the split stays the split seed's
            calibrate=False,
            version="tiny-v2",
        )
    )
    assert (second.parent / "splits.json").read_text() == (first.parent / "splits.json").read_text()
    arguments = cli.parse_arguments(
        soup.SoupArguments, ["--models", str(first), str(second), "--output_dir", str(tmp_path / "soup")]
    )
    out = soup.main(arguments)

    a, b, mean = (load_file(str(d / "model.safetensors")) for d in (first, second, out))
    key = "classifier.weight"
    assert mean[key].dtype == a[key].dtype and not torch.equal(a[key], b[key])
    expected = (a[key].float() + b[key].float()) / 2
    assert torch.equal(mean[key], expected.to(a[key].dtype))  # the mean, stored in the ingredients' dtype
    assert not (out / "safety.json").exists()  # calibrated afterwards, never inherited

    info = json.loads((out / "train_info.json").read_text())
    assert info["version"] == "soup-tiny-e2e+tiny-v2" and info["refit"] is False
    assert [p["differs_in"] for p in info["soup_of"]] == [{}, {"augmented_views": 2, "seed": 1}]
    # A run trained before --split_seed existed lacks it in train_info: it counts as the default.
    older = json.loads((first / "train_info.json").read_text())
    del older["args"]["split_seed"]
    newer = json.loads((second / "train_info.json").read_text())
    assert soup.differing_args(newer, older) == {"augmented_views": 2, "seed": 1}
    safety = calibrate.main(
        calibrate.CalibrateArguments(model=str(out), data_dir=args.data_dir, splits=str(tmp / "run" / "splits.json"))
    )
    assert safety.version == "soup-tiny-e2e+tiny-v2"  # a first calibration names the model itself
    photo = next((tmp / "img" / "amanita_phalloides").glob("*.jpg"))
    assert Classifier.load(out, backend="torch").identify_each([photo])[0].top_k[0].label in TINY_PHOTOS

    card = export.model_card(out, {}, {})
    assert "mean of 2 such runs (a model soup): `tiny-e2e`, `tiny-v2` (--augmented_views 2 --seed 1)" in card
    assert "train --output_dir var/runs/vision-2 --augmented_views 2 --seed 1" in card
    assert "soup --models var/runs/vision/model var/runs/vision-2/model --output_dir var/runs/vision-soup" in card
    refit_soup = dict(info, refit=True)
    command = export.reproduce_command(refit_soup)
    assert "train --output_dir var/runs/vision-2-refit --refit --no-calibrate --augmented_views 2" in command
    assert "calibrate --model var/runs/vision-refit-soup --from_model var/runs/vision-soup" in command
    assert command.endswith("export --model var/runs/vision-refit-soup --report reports/vision")

    other = tmp_path / "other-labels"
    other.mkdir()
    for name in ("config.json", "model.safetensors"):
        (other / name).write_bytes((second / name).read_bytes())
    config = json.loads((other / "config.json").read_text())
    config["id2label"] = {k: f"x_{v}" for k, v in config["id2label"].items()}
    (other / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="label set"):
        soup.main(soup.SoupArguments(models=[str(first), str(other)], output_dir=str(tmp_path / "bad")))
    with pytest.raises(ValueError, match="at least two"):
        soup.main(soup.SoupArguments(models=[str(first)], output_dir=str(tmp_path / "bad")))


def test_bf16_autocast_runs_the_trained_blocks_in_bfloat16_and_keeps_float32_weights(tmp_path):
    import torch
    from safetensors.torch import load_file

    from vision_model import train

    args = tiny_run_args(tmp_path, epochs=2, average_last=0, bf16=True)
    model = train.build_model(args.backbone, sorted(TINY_PHOTOS), args.num_hidden_layers)
    tokens = torch.randn(2, 5, 32)
    for bf16, dtype in ((True, torch.bfloat16), (False, torch.float32)):
        with train.autocast(bf16):  # matmuls (the blocks' and the head's) follow autocast
            assert model.classifier(train.upper_forward(model, tokens, 1)).dtype == dtype

    model_dir = train.main(args)
    history = json.loads((tmp_path / "run" / "history.json").read_text())
    assert all(math.isfinite(r["train_loss"]) for r in history) and 0.0 <= history[-1]["val_top1"] <= 1.0
    weights = load_file(str(model_dir / "model.safetensors"))
    assert {t.dtype for t in weights.values()} == {torch.float32}  # master weights never left float32
    backbone = load_file(str(Path(args.backbone) / "model.safetensors"))
    moved = weights["dinov2.encoder.layer.1.mlp.fc1.weight"] - backbone["encoder.layer.1.mlp.fc1.weight"]
    assert float(moved.abs().max()) > 1e-4 and torch.isfinite(weights["classifier.weight"]).all()
    assert json.loads((model_dir / "train_info.json").read_text())["args"]["bf16"] is True


def test_image_size_trains_at_another_crop_and_the_classifier_follows(tmp_path):
    import numpy as np
    from PIL import Image

    from vision_model import calibrate, export, soup, train
    from vision_model.classifier import Classifier, load_preprocessor

    args = tiny_run_args(tmp_path, epochs=1, average_last=0, image_size=70)  # 5x5 patches, not 4x4
    model_dir = train.main(args)
    saved = json.loads((model_dir / "preprocessor_config.json").read_text())
    assert saved["crop_size"] == {"height": 70, "width": 70}
    assert saved["size"] == {"shortest_edge": 80}  # the backbone's 64:56 ratio kept
    (cache,) = (tmp_path / "cache").iterdir()
    tokens = np.memmap(cache / "tokens.f16", dtype=np.float16, mode="r")
    assert tokens.size % (26 * 32) == 0 and tokens.size % (17 * 32) != 0  # CLS + 25 patches per view

    photo = next((tmp_path / "img" / "boletus_edulis").glob("*.jpg"))
    assert load_preprocessor(model_dir)([Image.open(photo)]).shape == (1, 3, 70, 70)
    clf = Classifier.load(model_dir, backend="torch")
    assert clf.identify([Image.open(photo)]).top_k[0].label in TINY_PHOTOS

    info = json.loads((model_dir / "train_info.json").read_text())
    command = export.reproduce_command(info)  # the model card's: it rebuilds the model at 70
    assert command.startswith("python -m vision_model train --output_dir var/runs/vision --data_dir")
    assert " --epochs 1 " in command and " --image_size 70 " in command and "--refit" not in command

    # Weights trained at another size are neither souped with it nor given its calibration.
    other = tmp_path / "at-56"
    shutil.copytree(model_dir, other)
    (other / "preprocessor_config.json").write_text(
        json.dumps({**saved, "size": {"shortest_edge": 64}, "crop_size": {"height": 56, "width": 56}})
    )
    with pytest.raises(ValueError, match="input size"):
        soup.main(soup.SoupArguments(models=[str(model_dir), str(other)], output_dir=str(tmp_path / "soup")))
    with pytest.raises(ValueError, match="input size"):
        calibrate.transfer(other, model_dir, None)

    # Another size is another cache; the processor's own size (0) keeps the key caches had before.
    default = dataclasses.replace(args, image_size=0)
    assert train._cache_key(default, [], set()) != train._cache_key(args, [], set())
    legacy = [str(Path(args.backbone).resolve()), args.frozen_layers, args.augmented_views, args.seed]
    assert train._cache_key(default, [], set()) == hashlib.sha256(json.dumps(legacy).encode()).hexdigest()[:16]


def test_cutmix_swaps_one_box_of_the_patch_grid_with_a_partner_photo():
    import torch

    from vision_model.train import cutmix_tokens

    tokens = torch.randn(6, 1 + 36, 4)  # CLS + a 6x6 patch grid; every token distinct
    for seed in range(20):
        torch.manual_seed(seed)
        mixed, partner, keep = cutmix_tokens(tokens)
        assert sorted(partner.tolist()) == list(range(6)) and 0.0 <= keep <= 1.0
        assert torch.equal(mixed[:, 0], tokens[:, 0])  # CLS is never swapped
        for row in range(6):
            took = (mixed[row, 1:] == tokens[partner[row], 1:]).all(dim=1)
            own = (mixed[row, 1:] == tokens[row, 1:]).all(dim=1)
            assert bool((took | own).all())  # each patch is its own or the partner's, same position
            if partner[row] != row:
                assert int(took.sum()) == round((1 - keep) * 36)  # lambda is the share left its own
                cells = took.reshape(6, 6).nonzero()
                if len(cells):  # the taken patches fill one rectangle of the grid
                    h = int(cells[:, 0].max() - cells[:, 0].min()) + 1
                    w = int(cells[:, 1].max() - cells[:, 1].min()) + 1
                    assert h * w == len(cells)


def test_cutmix_training_weighs_both_labels_by_area_and_trains_end_to_end(tmp_path):
    import dataclasses

    import torch
    import torch.nn.functional as F

    from vision_model import export, train

    args = tiny_run_args(tmp_path, epochs=2, average_last=0, cutmix=1.0, token_keep=1.0)
    model = train.build_model(args.backbone, sorted(TINY_PHOTOS), args.num_hidden_layers)
    trainable, opt = train.trainable_and_optimizer(model, args)
    x, y = torch.randn(4, 1 + 16, 32), torch.tensor([0, 1, 2, 3])  # 56 px: a 4x4 grid

    torch.manual_seed(3)  # what training_step draws, in its order: apply-or-not, then the mix
    torch.rand(())
    mixed, partner, keep = train.cutmix_tokens(x)
    with torch.no_grad():
        logits = model.classifier(train.upper_forward(model, mixed, args.frozen_layers))
    smooth = args.label_smoothing
    expected = keep * F.cross_entropy(logits, y, label_smoothing=smooth) + (1 - keep) * F.cross_entropy(
        logits, y[partner], label_smoothing=smooth
    )
    torch.manual_seed(3)
    loss = train.training_step(model, trainable, opt, x, y, args)
    assert keep < 1.0 and loss.item() == pytest.approx(float(expected), rel=1e-5)

    off = dataclasses.replace(args, cutmix=0.0)  # off: plain cross-entropy on the photo's own label
    with torch.no_grad():
        plain = F.cross_entropy(
            model.classifier(train.upper_forward(model, x, args.frozen_layers)), y, label_smoothing=smooth
        )
    assert train.training_step(model, trainable, opt, x, y, off).item() == pytest.approx(float(plain), rel=1e-5)

    model_dir = train.main(dataclasses.replace(args, cutmix=0.25))  # not the default: the card says so
    history = json.loads((tmp_path / "run" / "history.json").read_text())
    assert all(math.isfinite(r["train_loss"]) for r in history) and 0.0 <= history[-1]["val_top1"] <= 1.0
    info = json.loads((model_dir / "train_info.json").read_text())
    assert " --cutmix 0.25 " in export.reproduce_command(info) + " "


def test_imprint_blends_prototypes_into_the_head_as_the_same_graph_and_a_refit_takes_the_twins_alpha(
        trained, tmp_path):
    """vision_model.imprint: the blended model's own logits are the head's plus alpha x the prototype scores."""
    from vision_model import imprint
    from vision_model.classifier import Classifier
    from vision_model.data import load_splits
    from vision_model.release import read_labels

    tmp, args, model_dir = trained
    splits_file = str(tmp / "run" / "splits.json")
    report = imprint.main(imprint.ImprintArguments(
        model=str(model_dir), output_dir=str(tmp_path / "imprinted"), data_dir=args.data_dir,
        splits=splits_file, cache_dir=str(tmp_path / "features")))
    # Every alpha was measured on the validation photos, and the choice follows the fixed rule.
    rows = report["by_alpha"]
    assert [row["alpha"] for row in rows] == list(imprint.ALPHAS) and report["val_photos"] == 4
    allowed = [row for row in rows if (row["main_top1"] or 0) >= (rows[0]["main_top1"] or 0)]
    best = max(row["rare_top1"] for row in allowed)
    assert report["alpha"] == min(row["alpha"] for row in allowed if row["rare_top1"] == best)
    assert report["fit_photos"] == 12  # the twin's training photos, 3 per species

    # Forced to a visible blend, the written model computes exactly head + alpha x prototypes (same graph).
    out = tmp_path / "alpha4"
    imprint.main(imprint.ImprintArguments(
        model=str(model_dir), output_dir=str(out), data_dir=args.data_dir, splits=splits_file, alpha=4.0,
        cache_dir=str(tmp_path / "features")))
    assert not (out / "safety.json").exists()  # calibrate again: the head changed
    info = json.loads((out / "train_info.json").read_text())
    assert info["imprint"]["alpha"] == 4.0 and info["version"] == json.loads(
        (model_dir / "train_info.json").read_text())["version"]
    splits = load_splits(args.data_dir, splits_file, 0, 2)
    labels = read_labels(model_dir)
    index = {label: i for i, label in enumerate(labels)}
    fit = splits["train"]
    fit_features, _ = imprint.head_inputs(model_dir, [p for p, _ in fit])
    protos, r = imprint.prototypes(fit_features, np.array([index[lab] for _, lab in fit]), len(labels))
    test = [p for p, _ in splits["test"]]
    features, logits = imprint.head_inputs(model_dir, test)
    expected = imprint.blended_logits(logits, features, protos, r, 4.0)
    served = Classifier.load(out, backend="onnx", cache_dir=tmp_path / "onnx").logits(test)
    # The weights are stored in float16, as the twin's: equal to that rounding, far from the unblended logits.
    assert np.abs(served - expected).max() < 0.02 < 0.5 < np.abs(served - logits).max()
    # A refit learnt its validation photos: choosing alpha on them is refused; it takes its twin's.
    refit = tmp_path / "refit"
    shutil.copytree(model_dir, refit)
    info = json.loads((refit / "train_info.json").read_text())
    (refit / "train_info.json").write_text(json.dumps({**info, "refit": True}))
    with pytest.raises(ValueError, match="--alpha"):
        imprint.main(imprint.ImprintArguments(model=str(refit), output_dir=str(tmp_path / "no"),
                                              data_dir=args.data_dir, splits=splits_file))
    again = imprint.main(imprint.ImprintArguments(model=str(refit), output_dir=str(tmp_path / "refit-imprinted"),
                                                  data_dir=args.data_dir, splits=splits_file, alpha=4.0))
    assert again["fit_photos"] == 16 and again["alpha"] == 4.0  # train + val photos


def test_the_genus_loss_sums_species_into_genera_and_charges_a_mistake_within_the_genus_less():
    import torch
    import torch.nn.functional as F

    from vision_model import train

    labels = ("amanita_muscaria", "amanita_phalloides", "boletus_edulis", "cantharellus_cibarius")
    genus = train.genus_ids(labels)
    assert genus.tolist() == [0, 0, 1, 2]
    logits = torch.tensor([[2.0, 1.0, 0.5, -1.0], [-3.0, 0.0, 4.0, 1.0]])
    # Each genus's probability is the sum of its species' probabilities.
    expected = torch.stack([torch.softmax(logits, 1)[:, :2].sum(1), torch.softmax(logits, 1)[:, 2],
                            torch.softmax(logits, 1)[:, 3]], 1)
    assert torch.allclose(torch.softmax(train.genus_logits(logits, genus), 1), expected, atol=1e-6)

    args = train.TrainArguments(label_smoothing=0.0)
    y = torch.tensor([1, 2])
    plain = train.classification_loss(logits, y, args)
    assert plain.item() == pytest.approx(F.cross_entropy(logits, y).item())
    with_genus = dataclasses.replace(args, genus_loss=0.5)
    total = train.classification_loss(logits, y, with_genus, genus).item()
    assert total == pytest.approx(plain.item() + 0.5 * F.nll_loss(torch.log(expected), genus[y]).item(), rel=1e-5)
    # A death cap called fly agaric (same genus) costs less than one called a chanterelle, at equal confidence.
    within = torch.tensor([[4.0, 0.0, 0.0, 0.0]])
    across = torch.tensor([[0.0, 0.0, 0.0, 4.0]])
    death_cap = torch.tensor([1])
    assert train.classification_loss(within, death_cap, args) == pytest.approx(
        train.classification_loss(across, death_cap, args).item())
    assert (train.classification_loss(within, death_cap, with_genus, genus)
            < train.classification_loss(across, death_cap, with_genus, genus))
