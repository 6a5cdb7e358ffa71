"""DeepLab v2 entry points through the CLI: training on pseudo labels and ground truth, per-shard
inference into HDF5, evaluation tables; clear errors for missing or bad pseudo labels."""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pytest
import yaml

from irn_core.cli import main
from irn_core.config import load_config
from irn_core.engine.checkpoint import load_checkpoint
from irn_core.steps.common import open_run_dataset, shard_plan
from irn_core.store import ShardWriter

TINY_DEEPLAB = {
    "name": "tiny",
    "seed": 0,
    "shard_size": 5,
    "dataset": {
        "kind": "synthetic",
        "train_split": "train",
        "infer_split": "train",
        "downstream_split": "train",
        "val_split": "val",
        "synthetic": {"seed": 5, "num_train": 6, "num_val": 3, "image_size_range": [64, 72],
                      "objects_per_image": [1, 2]},
    },
    "deeplab": {
        "enabled": True,
        "backbone": {"name": "resnet18", "weights": "none", "output_stride": 8},
        "train": {"steps": 3, "batch_size": 2, "crop_size": 40, "input_scales": [0.75],
                  "optimizer": {"learning_rate": 0.001}},
        "infer": {"scales": [1.0, 0.5], "crf": {"iterations": 2}},
    },
    "compute": {"device": "cpu", "threads": 1},
}


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A config file and its synthetic data set (9 images of 64-72 px)."""
    folder = tmp_path_factory.mktemp("deeplab")
    data = {**TINY_DEEPLAB, "output_dir": str(folder / "results"),
            "dataset": {**TINY_DEEPLAB["dataset"], "root": str(folder / "data")}}
    path = folder / "tiny.yaml"
    path.write_text(yaml.safe_dump(data))
    assert main(["make-synthetic", "--config", str(path)]) == 0
    return path


def _write_semantic_shards(config_path: Path, folder: Path, *, corrupt: str | None = None,
                           skip: str | None = None, uncertain: bool | None = None) -> list[Path]:
    """Semantic pseudo-label shards holding the ground truth of the downstream ids (``corrupt``: one
    id gets class id 9; ``skip``: one id is left out; ``uncertain``: an ``uncertain_s1`` of that value
    everywhere)."""
    config = load_config(config_path)
    dataset = open_run_dataset(config)
    plan = shard_plan(config)
    paths = []
    for shard in plan.product_shards("semantic"):
        path = folder / f"shard-{shard:05d}.h5"
        with ShardWriter(path, product="semantic", config_hash="0" * 16, shard_index=shard) as writer:
            for image_id in plan.product_ids(shard, "semantic"):
                if image_id == skip:
                    continue
                label = dataset.semantic_mask(image_id)
                if image_id == corrupt:
                    label[2, 3] = 9
                datasets = {"semantic_s1": label}
                if uncertain is not None:
                    datasets["uncertain_s1"] = np.full(label.shape, uncertain)
                writer.add(image_id, datasets)
        paths.append(path)
    return paths


def test_train_infer_evaluate_on_pseudo_labels_and_ground_truth(tiny_run: Path, tmp_path: Path) -> None:
    config = load_config(tiny_run)
    semantic = _write_semantic_shards(tiny_run, tmp_path / "semantic")
    plan = shard_plan(config)
    val_shards = plan.product_shards("deeplab")
    # the val ids form their own shard (the plan groups ids by role)
    assert len(val_shards) == 1 and plan.product_ids(val_shards[0], "deeplab") == plan.all_ids("val")
    for labels in ("pseudo", "ground_truth"):
        checkpoint = tmp_path / f"deeplab_{labels}.pt"
        extra = ["--semantic", *map(str, semantic)] if labels == "pseudo" else []
        assert main(["train-deeplab", "--config", str(tiny_run), "--labels", labels, *extra,
                     "--out", str(checkpoint)]) == 0
        payload = load_checkpoint(checkpoint, kind="deeplab")
        assert payload["config"]["labels"] == labels and payload["record"]["steps"] == 3
        assert set(payload["record"]["loss_terms"]) == {"scale_1", "scale_0.75", "scale_max", "total"}
        if labels == "ground_truth":
            continue  # inference and evaluation do not depend on the label source: run them once
        outputs = []
        for shard in val_shards:
            output = tmp_path / f"deeplab_{labels}" / f"shard-{shard:05d}.h5"
            assert main(["deeplab-infer", "--config", str(tiny_run), "--shard", str(shard),
                         "--checkpoint", str(checkpoint), "--out", str(output)]) == 0
            outputs.append(output)
            with h5py.File(output) as handle:
                assert handle.attrs["product"] == "deeplab"
                assert json.loads(handle.attrs["config"])["labels"] == labels
                ids = json.loads(handle.attrs["image_ids"])
                assert ids == plan.product_ids(shard, "deeplab")
                for image_id in ids:
                    prediction = handle[image_id]["semantic_s1"]
                    assert prediction.dtype == np.uint8
                    assert prediction.shape == (handle[image_id].attrs["height"], handle[image_id].attrs["width"])
                    assert int(np.max(prediction[()])) <= 4
        prefix = tmp_path / "evaluation" / f"deeplab_{labels}"
        assert main(["evaluate-deeplab", "--config", str(tiny_run), "--inputs", *map(str, outputs),
                     "--out-prefix", str(prefix)]) == 0
        metrics = json.loads(prefix.with_suffix(".json").read_text())
        assert metrics["images"] == 3 and 0 <= metrics["mIoU"] <= 1
        assert prefix.with_suffix(".csv").exists() and "background" in prefix.with_suffix(".md").read_text()


def test_missing_or_bad_pseudo_labels_fail_clearly(tiny_run: Path, tmp_path: Path,
                                                   caplog: pytest.LogCaptureFixture) -> None:
    ids = shard_plan(load_config(tiny_run)).all_ids("downstream")
    missing = _write_semantic_shards(tiny_run, tmp_path / "missing", skip=ids[2])
    out = tmp_path / "model.pt"
    assert main(["train-deeplab", "--config", str(tiny_run), "--labels", "pseudo", "--semantic",
                 *map(str, missing), "--out", str(out)]) == 2
    assert f"missing for 1 of the 6 downstream ids (e.g. ['{ids[2]}'])" in caplog.text
    corrupt = _write_semantic_shards(tiny_run, tmp_path / "corrupt", corrupt=ids[4])
    assert main(["train-deeplab", "--config", str(tiny_run), "--labels", "pseudo", "--semantic",
                 *map(str, corrupt), "--out", str(out), "--max-steps", "6"]) == 2
    assert f"corrupt/shard-00000.h5 of image id '{ids[4]}' holds class ids [9] outside 0..4" in caplog.text
    assert main(["train-deeplab", "--config", str(tiny_run), "--labels", "pseudo", "--out", str(out)]) == 2
    assert "--semantic" in caplog.text
    assert not out.exists()


def test_uncertain_pixels_are_ignored_under_the_band(tiny_run: Path, tmp_path: Path,
                                                     caplog: pytest.LogCaptureFixture) -> None:
    banded = tmp_path / "banded.yaml"
    banded.write_text(yaml.safe_dump({"random_walk": {"uncertain_band": [0.5, 1.0]}}))
    all_uncertain = _write_semantic_shards(tiny_run, tmp_path / "uncertain", uncertain=True)
    losses = {}
    for name, configs in (("band", [str(tiny_run), str(banded)]), ("reference", [str(tiny_run)])):
        out = tmp_path / f"{name}.pt"
        assert main(["train-deeplab", "--config", *configs, "--labels", "pseudo", "--semantic",
                     *map(str, all_uncertain), "--out", str(out), "--max-steps", "2"]) == 0
        losses[name] = load_checkpoint(out, kind="deeplab")["record"]["loss_terms"]["total"]
    assert losses["band"] == [0.0, 0.0]  # every pixel ignored: nothing to learn
    assert min(losses["reference"]) > 0  # without the band the mask is not read
    plain = _write_semantic_shards(tiny_run, tmp_path / "plain")
    out = tmp_path / "missing.pt"
    assert main(["train-deeplab", "--config", str(tiny_run), str(banded), "--labels", "pseudo", "--semantic",
                 *map(str, plain), "--out", str(out), "--max-steps", "2"]) == 2
    assert "has no dataset 'uncertain_s1'" in caplog.text and "plain/shard-00000.h5" in caplog.text
    assert not out.exists()
