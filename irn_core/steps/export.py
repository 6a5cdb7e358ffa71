"""Entry point of ``irn export``: shards as COCO JSON or PNGs, the dataset as a COCO-format dataset."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

from irn_core import export
from irn_core.config import RunConfig
from irn_core.errors import ConfigError
from irn_core.maskrcnn.train import REFERENCE_MIN_SCORE
from irn_core.steps.common import open_run_dataset, role_splits, shard_plan, split_ids
from irn_core.store import ShardReader

logger = logging.getLogger(__name__)

INSTANCE_PRODUCTS = ("instances", "maskrcnn")
"""Products with ``masks_s1``, ``class_ids`` and ``scores`` per image."""


def shard_product(paths: Sequence[Path]) -> str:
    """The one product the shard files hold (a mix raises :class:`ConfigError`)."""
    if not paths:
        raise ConfigError("irn export: no shard files given (--inputs)")
    products = set()
    for path in paths:
        with ShardReader(path) as reader:
            products.add(reader.product)
    if len(products) > 1:
        raise ConfigError(f"irn export: the shard files hold several products {sorted(products)}")
    return products.pop()


def default_min_score(product: str) -> float | None:
    """Pseudo labels: the reference's 1e-5 (``make_cocoann.py``); predictions: none."""
    return REFERENCE_MIN_SCORE if product == "instances" else None


def run_export(
    config: RunConfig,
    *,
    what: str,
    inputs: Sequence[Path],
    output: Path,
    ground_truth: bool = False,
    splits: Sequence[str] | None = None,
    role: str | None = None,
    min_score: float | None = None,
    results: bool = False,
) -> None:
    """``what="coco"``: instance shards -> one COCO JSON (``results``: COCO's result list), or with
    ``ground_truth`` the dataset's images + one instances JSON per split under the folder ``output``;
    ``what="png"``: shards -> ``SegmentationClass`` / ``SegmentationObject`` PNGs under ``output``.
    ``role`` keeps the ids of one split role (infer, downstream, val)."""
    if what not in ("coco", "png"):
        raise ConfigError(f"irn export: --what must be coco or png, got {what!r}")
    if ground_truth:
        if what != "coco":
            raise ConfigError("irn export --ground-truth writes a COCO-format dataset: use --what coco")
        names = list(splits) if splits else sorted({split for split in role_splits(config).values() if split})
        ids = {name: split_ids(config, name) for name in names}
        written = export.export_coco_dataset(open_run_dataset(config), ids, output)
        for name, files in written.items():
            logger.info("split %s: images in %s, annotations %s", name, files["image_dir"], files["annotation_file"])
        return
    product = shard_product(inputs)
    image_ids = shard_plan(config).all_ids(role) if role else None
    threshold = min_score if min_score is not None else default_min_score(product)
    if what == "png":
        export.export_pngs(inputs, output, product=product, min_score=threshold, image_ids=image_ids)
        return
    if product not in INSTANCE_PRODUCTS:
        raise ConfigError(f"irn export --what coco takes instance shards ({', '.join(INSTANCE_PRODUCTS)}), "
                          f"got {product!r}")
    data = export.store_to_coco(inputs, open_run_dataset(config), product=product, image_ids=image_ids,
                                min_score=threshold)
    export.write_coco_json(output, export.coco_results(data) if results else data)
    logger.info("wrote %s: %d images, %d instances", output, len(data["images"]), len(data["annotations"]))
