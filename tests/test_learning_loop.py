"""The learning loop's data side (issue 27): dataset versions, training on several folders, MLflow's
record of the data a run learnt from, evaluation that refuses learnt photos, and users' feedback on
real photos flowing through review and export into a training run."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from vision_support import (  # noqa: F401 - vision_caches_outside_the_checkout is autouse
    TINY_PHOTOS,
    make_folder,
    shape_image,
    tiny_backbone,
    vision_caches_outside_the_checkout,
)

from vision_model import data, dataset


def version_of(*folders: Path) -> str:
    folder = data.scan_image_folders(list(folders), min_photos=2, verify=False)
    splits = data.split_samples(folder.samples)
    return dataset.summary(folder, dataset.manifest_rows(folder, splits))["version"]


def test_the_dataset_version_changes_exactly_when_photos_or_labels_change(tmp_path):
    pool = make_folder(tmp_path / "pool", TINY_PHOTOS)
    extra = tmp_path / "feedback"
    (extra / "boletus_edulis").mkdir(parents=True)
    shape_image(extra / "boletus_edulis" / "a.jpg", (10, 250, 10), seed=101)
    shape_image(extra / "boletus_edulis" / "b.jpg", (10, 240, 30), seed=102)
    base, both = version_of(pool), version_of(pool, extra)
    assert base != both and base.startswith("ds-")

    # Moving or renaming files changes nothing.
    moved = tmp_path / "elsewhere" / "feedback"
    shutil.copytree(extra, moved)
    (moved / "boletus_edulis" / "a.jpg").rename(moved / "boletus_edulis" / "renamed.jpg")
    assert version_of(pool, moved) == both
    # A photo that is already in an earlier folder is skipped, not counted twice (nor split twice).
    shutil.copy(pool / "amanita_muscaria" / "amanita_muscaria_0.jpg", moved / "boletus_edulis" / "dup.jpg")
    assert version_of(pool, moved) == both
    folder = data.scan_image_folders([pool, moved], verify=False)
    assert any("duplicate of" in s.reason for s in folder.skipped)
    # Relabelling a photo changes it; so does editing one.
    (moved / "cantharellus_cibarius").mkdir()
    (moved / "boletus_edulis" / "renamed.jpg").rename(moved / "cantharellus_cibarius" / "renamed.jpg")
    relabelled = version_of(pool, moved)
    assert relabelled not in (base, both)
    shape_image(moved / "boletus_edulis" / "b.jpg", (10, 240, 31), seed=103)
    assert version_of(pool, moved) not in (base, both, relabelled)


def test_adding_a_folder_never_moves_the_first_folders_photos_between_splits(tmp_path):
    pool = make_folder(tmp_path / "pool", TINY_PHOTOS)
    extra = make_folder(tmp_path / "feedback", {"boletus_edulis": 6, "morchella_esculenta": 2}, seed=1)
    alone = data.split_samples(data.scan_image_folders([pool], verify=False).samples)
    grown = data.split_samples(data.scan_image_folders([pool, extra], verify=False).samples)
    for name in ("train", "val", "test"):
        first = lambda items: sorted(str(s.path) for s in items if s.root == 0)  # noqa: E731
        assert first(alone.as_dict()[name]) == first(grown.as_dict()[name])
    later = [s for items in grown.as_dict().values() for s in items if s.root == 1]
    assert len(later) == 8
    # A species only the new folder has keeps a training photo (even if the hash sent both to held-out).
    assert any(s.label == "morchella_esculenta" for s in grown.train)
    # The splits file of a run with two folders reads back with either folder moved.
    folder = data.scan_image_folders([pool, extra], verify=False)
    data.write_splits(folder, grown, tmp_path)
    shutil.copytree(extra, tmp_path / "moved")
    back = data.load_splits([pool, tmp_path / "moved"], tmp_path / data.SPLITS_FILE, seed=0, min_photos=2)
    assert sorted(p.name for p, _ in back["train"]) == sorted(s.path.name for s in grown.train)
    assert all(p.is_file() for items in back.values() for p, _ in items)


def tiny_train(tmp_path: Path, folders: list[Path], name: str, **overrides) -> Path:
    from vision_model import train

    args = train.TrainArguments(
        data_dir=[str(f) for f in folders], backbone=str(tiny_backbone(tmp_path / "backbone")),
        output_dir=str(tmp_path / name), num_hidden_layers=2, frozen_layers=1, augmented_views=1, epochs=2,
        average_last=1, batch_size=4, learning_rate=1e-3, head_learning_rate=1e-2,
        cache_dir=str(tmp_path / "cache"), save_fp16=False, version=name, **{"calibrate": False, **overrides},
    )  # fmt: skip
    return train.main(args)


def test_train_takes_several_folders_records_the_dataset_in_mlflow_and_evaluate_refuses_learnt_photos(
    tmp_path, monkeypatch
):
    import mlflow

    from vision_model import evaluate, tracking
    from vision_model.__main__ import main as vision_main

    monkeypatch.setenv("VISION_TRACKING", "on")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow' / 'mlflow.db'}")
    pool = make_folder(tmp_path / "pool", TINY_PHOTOS)
    extra = make_folder(tmp_path / "feedback", {"boletus_edulis": 3, "morchella_esculenta": 3}, seed=1)
    tiny = ["--backbone", str(tiny_backbone(tmp_path / "backbone")), "--num_hidden_layers", "2",
            "--frozen_layers", "1", "--augmented_views", "1", "--epochs", "2", "--average_last", "1",
            "--batch_size", "4", "--cache_dir", str(tmp_path / "cache"), "--no-calibrate", "--no-save_fp16"]
    argv = ["train", "--data", str(pool), "--data", str(extra), "--output_dir", str(tmp_path / "run"),
            "--version", "two-folders", *tiny]  # fmt: skip
    assert vision_main(argv) == 0
    model_dir = tmp_path / "run" / "model"
    info = json.loads((model_dir / "train_info.json").read_text())
    assert info["dataset"]["version"] == version_of(pool, extra)
    assert [f["photos"] for f in info["dataset"]["folders"]] == [20, 6]
    assert info["args"]["data_dir"] == [str(pool), str(extra)]
    assert "morchella_esculenta" in json.loads((model_dir / "config.json").read_text())["label2id"]
    rows = dataset.read_manifest(model_dir)
    assert len(rows) == 26 and {r["folder"] for r in rows} == {"0", "1"}

    # MLflow holds the run: its parameters, the dataset (digest = the version) and per-epoch metrics.
    [run] = mlflow.search_runs(experiment_names=[tracking.EXPERIMENT], output_format="list")
    [ds_input] = run.inputs.dataset_inputs
    assert ds_input.dataset.digest == info["dataset"]["version"] and ds_input.dataset.name == dataset.DATASET_NAME
    assert run.data.tags["dataset_version"] == info["dataset"]["version"]
    assert run.data.params["epochs"] == "2" and run.data.tags["model_version"] == "two-folders"
    epochs = {m.step for key in run.data.metrics for m in mlflow.MlflowClient().get_metric_history(run.info.run_id, key)}
    assert {1, 2} <= epochs
    artifacts = {a.path for a in mlflow.MlflowClient().list_artifacts(run.info.run_id, "run")}
    assert f"run/{dataset.MANIFEST_FILE}" in artifacts
    assert not (Path.cwd() / "mlruns").exists()  # the artifacts sit beside the database, not in the cwd

    # Another split seed puts some learnt photos in "test": the hashes give them away, whatever the split says.
    args = evaluate.EvaluateArguments(model=str(model_dir), data_dir=[str(pool), str(extra)], seed=7,
                                      out=str(tmp_path / "report"), synthetic_images=2)
    with pytest.raises(evaluate.LearntPhotos, match="it learnt from"):
        evaluate.main(args)
    assert not (tmp_path / "report" / "metrics.json").exists()
    # Its own test split is held out.
    evaluate.main(evaluate.EvaluateArguments(
        model=str(model_dir), data_dir=[str(pool), str(extra)], splits=str(tmp_path / "run" / "splits.json"),
        out=str(tmp_path / "report"), synthetic_images=2))  # fmt: skip
    assert json.loads((tmp_path / "report" / "metrics.json").read_text())["held_out"] is True
    # The evaluation is a run of its own: its figures, plots and the photos it was measured on.
    [evaluated] = mlflow.search_runs(experiment_names=[tracking.EXPERIMENT], output_format="list",
                                     filter_string="tags.command = 'evaluate'")
    assert "fewshot.top1" in evaluated.data.metrics and "safety.all.dangerous_errors" in evaluated.data.metrics
    assert evaluated.data.tags["model_version"] == "untuned"  # the version serving reports: not calibrated yet
    assert evaluated.data.tags["photo_set"].startswith("ds-")
    plots = {a.path for a in mlflow.MlflowClient().list_artifacts(evaluated.info.run_id, "evaluate")}
    assert {"evaluate/confusion_main.png", "evaluate/reliability.png", "evaluate/metrics.json"} <= plots


def test_training_works_the_same_with_tracking_off(tmp_path, monkeypatch):
    monkeypatch.setenv("VISION_TRACKING", "off")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow' / 'mlflow.db'}")
    model_dir = tiny_train(tmp_path, [make_folder(tmp_path / "pool", TINY_PHOTOS)], "untracked")
    assert json.loads((model_dir / "train_info.json").read_text())["dataset"]["photos"] == 20
    assert not (tmp_path / "mlflow").exists()

    # `--no-track` with tracking on: the calibration that training runs afterwards records nothing either.
    monkeypatch.setenv("VISION_TRACKING", "on")
    model_dir = tiny_train(tmp_path, [make_folder(tmp_path / "pool2", TINY_PHOTOS)], "untracked2", track=False,
                           calibrate=True)
    assert (model_dir / "safety.json").is_file()
    assert not (tmp_path / "mlflow").exists()


async def test_users_feedback_on_real_photos_reaches_a_training_run(shared_data, tmp_path):
    """The loop on real photos: users send photos the training folder lacks, confirm or correct the bundled
    model's answer, an admin accepts the votes from a chat, the export joins a (tiny) training run as a
    second folder, and the run records a new dataset version holding exactly the consented photos."""
    from bot_support import load_classifier, make_core, make_settings

    from bot.messages import Event
    from vision_model.images import decode_image
    from vision_model.release import BUNDLED_MODEL_DIR

    pool, sent = tmp_path / "pool", []
    for label in ("amanita_muscaria", "boletus_edulis", "cantharellus_cibarius"):
        photos = sorted((shared_data / "images" / label).glob("*.jpg"))
        (pool / label).mkdir(parents=True)
        for path in photos[:5]:
            shutil.copy(path, pool / label)
        sent += [(label, path) for path in photos[5:7]]  # photos the training folder does not have

    settings = make_settings(tmp_path)
    classifier = load_classifier(str(BUNDLED_MODEL_DIR))
    core = make_core(settings, BUNDLED_MODEL_DIR, classifier=classifier)
    agreed = corrected = 0
    for i, (label, path) in enumerate(sent + [sent[0]]):  # the last user sends a photo again, without consent
        chat = {"platform": "telegram", "chat_id": f"c{i}", "user_id": f"user-{i}"}
        consenting = i < len(sent)
        if consenting:
            await core.handle(Event(**chat, command="consent", args="on"))
        [reply] = await core.handle(Event(**chat, photos=[path.read_bytes()]))
        buttons = {b.label: b.payload for b in reply.buttons}
        model_says = classifier.identify([decode_image(path)]).top_k[0].label
        if model_says == label:
            await core.handle(Event(**chat, button=buttons["Right"]))
            agreed += 1
        else:  # the user knows better: "Wrong", then which species
            await core.handle(Event(**chat, button=buttons["Wrong"]))
            [said] = await core.handle(Event(**chat, command="correct", args=label.replace("_", " ")))
            assert "recorded" in said.text.lower() or "thank" in said.text.lower(), said.text
            corrected += 1
    assert agreed + corrected == len(sent) + 1

    admin = {"platform": "telegram", "chat_id": "admin", "user_id": "1001", "is_admin": True}
    [queue] = await core.handle(Event(**admin, command="review"))
    assert f"{len(sent) + 1} feedback item(s) to review" in queue.text
    for row in core.feedback.rows(review="pending"):
        [done] = await core.handle(Event(**admin, command="review", args=f"accept {row['id']}"))
        assert "accepted" in done.text
    exported = core.feedback.export(tmp_path / "accepted")
    core.close()
    # Every accepted photo of a consenting user, under the species the user (or the agreeing model) named;
    # the user without consent left a hash and a label, no photo.
    assert sorted((r["label"], r["sha256"]) for r in exported) == sorted(
        (label, data.file_sha256(path)) for label, path in sent
    )

    before = tiny_train(tmp_path, [pool], "pool-only")
    after = tiny_train(tmp_path, [pool, tmp_path / "accepted"], "with-feedback")
    info_before, info_after = (json.loads((m / "train_info.json").read_text()) for m in (before, after))
    assert info_before["dataset"]["version"] != info_after["dataset"]["version"]
    assert [f["photos"] for f in info_after["dataset"]["folders"]] == [15, len(sent)]
    learnt_or_held = {r["sha256"] for r in dataset.read_manifest(after)}
    assert {data.file_sha256(path) for _, path in sent} <= learnt_or_held
    print(f"simulated feedback: {agreed} confirmed, {corrected} corrected; dataset "
          f"{info_before['dataset']['version']} -> {info_after['dataset']['version']}")
