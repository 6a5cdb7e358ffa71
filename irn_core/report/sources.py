"""Which products of a run become which panels, and the reading of one image's products.

:data:`PRODUCT_SOURCES` is the registry: a folder of shard files under the run folder, the product
its files hold, a title and a kind; the kind picks the panel builder (:data:`PANEL_BUILDERS`).
Products whose folder holds no shard file are skipped, so the downstream models' predictions
appear in the report as soon as their shard files exist. A new product is one more entry.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np

from irn_core.config import RunConfig
from irn_core.data.registry import SegmentationDataset
from irn_core.errors import IrnError
from irn_core.report import panels
from irn_core.report.panels import Panel
from irn_core.store import ShardedStore

logger = logging.getLogger(__name__)

Kind = Literal["cam", "irnet", "semantic", "instances"]


@dataclass(frozen=True)
class ProductSource:
    """A per-shard product shown in the report.

    ``directory``: folder under the run folder holding ``shard-NNNNN.h5`` files; ``product``: the
    files' product attribute; ``title``: caption; ``kind``: how it is drawn and scored
    (``semantic``: a ``semantic_s1`` label map, scored by per-image mIoU; ``instances``:
    ``masks_s1``/``class_ids``/``scores``, scored by mask AP); ``detections``: a detector's output,
    shown from ``report.detection_score_threshold``.
    """

    directory: str
    product: str
    title: str
    kind: Kind
    detections: bool = False

    @property
    def key(self) -> str:
        return self.directory


PRODUCT_SOURCES: tuple[ProductSource, ...] = (
    ProductSource("cam", "cam", "CAM", "cam"),
    ProductSource("irnet", "irnet", "IRNet", "irnet"),
    ProductSource("semantic", "semantic", "semantic pseudo label", "semantic"),
    ProductSource("instances", "instances", "instance pseudo labels", "instances"),
    ProductSource("deeplab_pseudo", "deeplab", "DeepLab (trained on pseudo labels)", "semantic"),
    ProductSource("deeplab_ground_truth", "deeplab", "DeepLab (trained on ground truth)", "semantic"),
    ProductSource("maskrcnn", "maskrcnn", "Mask R-CNN (trained on pseudo labels)", "instances", detections=True),
)
"""The registry, in the order of a row's panels (the image first, the ground truth last)."""

DATASETS: dict[str, tuple[str, ...]] = {
    "cam": ("cam_s1", "class_ids"),
    "irnet": ("boundary_s4", "displacement_s4"),
    "semantic": ("semantic_s1",),
    "instances": ("masks_s1", "class_ids", "scores"),
}
"""Datasets each kind reads."""


@dataclass(frozen=True)
class PanelContext:
    """What a panel builder needs beside the stored arrays: the image and the settings."""

    image: np.ndarray
    class_names: Sequence[str]
    config: RunConfig

    @property
    def image_size(self) -> tuple[int, int]:
        return int(self.image.shape[0]), int(self.image.shape[1])


def _cam_panels(source: ProductSource, stored: Mapping[str, np.ndarray], context: PanelContext) -> list[Panel]:
    result = []
    for cam, class_id in zip(stored["cam_s1"], stored["class_ids"]):
        name = context.class_names[int(class_id)]
        result.append(
            Panel(
                f"{source.key}-{int(class_id)}",
                f"{source.title}: {name}",
                panels.cam_panel(context.image, cam.astype(np.float32), opacity=context.config.report.cam_overlay),
            )
        )
    return result


def _irnet_panels(source: ProductSource, stored: Mapping[str, np.ndarray], context: PanelContext) -> list[Panel]:
    displacement = stored["displacement_s4"].astype(np.float32)
    clusters, centres = panels.instance_centres(
        displacement,
        iterations=context.config.instances.centroid_iterations,
        threshold=context.config.instances.cluster_threshold,
    )
    size = context.image_size
    return [
        Panel(f"{source.key}-boundary", "class boundary map", panels.boundary_panel(stored["boundary_s4"], size)),
        Panel(
            f"{source.key}-displacement",
            f"displacement field, {len(centres)} centroid{'s' if len(centres) != 1 else ''}",
            panels.displacement_panel(displacement, size, centres_s4=centres),
        ),
        Panel(f"{source.key}-instance-map", "instance map", panels.instance_map_panel(clusters, size)),
    ]


def _semantic_panels(source: ProductSource, stored: Mapping[str, np.ndarray], context: PanelContext) -> list[Panel]:
    return [Panel(source.key, source.title, panels.semantic_panel(stored["semantic_s1"]))]


def _instance_panels(source: ProductSource, stored: Mapping[str, np.ndarray], context: PanelContext) -> list[Panel]:
    threshold = context.config.report.detection_score_threshold if source.detections else None
    masks, scores = stored["masks_s1"], stored["scores"]
    shown = len(scores) if threshold is None else int(np.count_nonzero(scores >= threshold))
    title = f"{source.title} ({shown}" + (")" if threshold is None else f" with score ≥ {threshold:g})")
    return [Panel(source.key, title, panels.instance_panel(masks, scores, min_score=threshold))]


PanelBuilder = Callable[[ProductSource, Mapping[str, np.ndarray], PanelContext], list[Panel]]

PANEL_BUILDERS: dict[str, PanelBuilder] = {
    "cam": _cam_panels,
    "irnet": _irnet_panels,
    "semantic": _semantic_panels,
    "instances": _instance_panels,
}


def shard_files(run_dir: Path, source: ProductSource) -> list[Path]:
    """The finished shard files of ``source`` in ``run_dir`` (temporary files are hidden and skipped)."""
    return sorted((run_dir / source.directory).glob("shard-*.h5"))


@dataclass
class RunSources:
    """The shard stores of the registry products present in a run folder (open until :meth:`close`)."""

    run_dir: Path
    stores: dict[ProductSource, ShardedStore] = field(default_factory=dict)

    @classmethod
    def open(cls, run_dir: Path, sources: Sequence[ProductSource] = PRODUCT_SOURCES) -> RunSources:
        opened = cls(run_dir)
        try:
            for source in sources:
                files = shard_files(run_dir, source)
                if files:
                    opened.stores[source] = ShardedStore(files, product=source.product)
        except BaseException:
            opened.close()
            raise
        return opened

    def holding(self, image_id: str) -> list[ProductSource]:
        """The present products that hold ``image_id``, in registry order."""
        return [source for source, store in self.stores.items() if image_id in store]

    def of_kind(self, kind: str) -> list[ProductSource]:
        return [source for source in self.stores if source.kind == kind]

    def read(self, source: ProductSource, image_id: str) -> dict[str, np.ndarray]:
        return self.stores[source].read(image_id, DATASETS[source.kind])

    def close(self) -> None:
        for store in self.stores.values():
            store.close()
        self.stores = {}

    def __enter__(self) -> RunSources:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def ground_truth(dataset: SegmentationDataset, image_id: str) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """(semantic (H, W) uint8, instance masks (M, H, W) bool, class ids (M,)) of ``image_id``, or
    None where the dataset has no annotation for it (logged)."""
    try:
        semantic = dataset.semantic_mask(image_id)
        masks, class_ids = dataset.instance_masks(image_id)
    except IrnError as error:
        logger.warning("no ground truth shown for %s: %s", image_id, error)
        return None
    return semantic, masks, class_ids


def image_panels(
    image_id: str, sources: RunSources, dataset: SegmentationDataset, config: RunConfig
) -> list[Panel]:
    """Every panel of one image: the image, each present product's panels (registry order), the
    ground truth (semantic, instances; not with ``evaluation.ground_truth: false``)."""
    image = dataset.image(image_id)
    context = PanelContext(image=image, class_names=list(dataset.class_names), config=config)
    result = [Panel("image", f"image {image_id}", panels.image_panel(image))]
    for source in sources.holding(image_id):
        result.extend(PANEL_BUILDERS[source.kind](source, sources.read(source, image_id), context))
    truth = ground_truth(dataset, image_id) if config.evaluation.ground_truth else None
    if truth is not None:
        semantic, masks, _ = truth
        result.append(Panel("ground-truth-semantic", "ground truth (semantic)", panels.semantic_panel(semantic)))
        result.append(
            Panel("ground-truth-instances", f"ground truth ({len(masks)} instance{'' if len(masks) == 1 else 's'})",
                  panels.instance_panel(masks))
        )
    for panel in result:
        if panel.rgb.shape != (*context.image_size, 3):
            raise IrnError(f"image id {image_id!r}: panel {panel.key} is {panel.rgb.shape}, the image {image.shape}")
    return result

