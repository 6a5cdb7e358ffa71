"""COCO's -1 ("no ground-truth object in this area range") is shown as not applicable: null in JSON,
"n/a" in the summary and the report, never -100."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from pycocotools.coco import COCO

from irn_core.config import load_config
from irn_core.evaluation import coco_mask_ap
from irn_core.report.page import _metrics_html, read_metrics
from irn_core.steps.evaluate import run_summary

CONFIG = Path(__file__).resolve().parents[1] / "config" / "config.yaml"


def _one_large_object() -> tuple[COCO, np.ndarray]:
    """One 200 x 200 image holding one 120 x 120 square (area 14,400 > 96², a 'large' object only)."""
    mask = np.zeros((200, 200), dtype=bool)
    mask[40:160, 40:160] = True
    polygon = [40.0, 40.0, 160.0, 40.0, 160.0, 160.0, 40.0, 160.0]
    coco = COCO()
    coco.dataset = {
        "images": [{"id": 1, "file_name": "big.jpg", "height": 200, "width": 200}],
        "categories": [{"id": 1, "name": "thing"}],
        "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "segmentation": [polygon], "area": 14400.0,
                         "bbox": [40.0, 40.0, 120.0, 120.0], "iscrowd": 0}],
    }
    coco.createIndex()
    return coco, mask


def test_coco_stats_without_small_objects_are_none_not_minus_one() -> None:
    coco, mask = _one_large_object()
    stats = coco_mask_ap({1: (mask[None], np.array([0]), np.array([0.9]))}, coco)
    assert stats["AP"] is not None and stats["AP"] > 0.9
    assert stats["AP_large"] is not None and stats["AP_large"] > 0.9
    for name in ("AP_small", "AP_medium", "AR_small", "AR_medium"):
        assert stats[name] is None, (name, stats[name])
    assert "null" in json.dumps(stats) and "-1" not in json.dumps(stats)


def test_summary_and_report_show_not_applicable(tmp_path: Path) -> None:
    metrics = tmp_path / "evaluation" / "maskrcnn.json"
    metrics.parent.mkdir()
    metrics.write_text(json.dumps({"mAP@0.5": 0.5, "COCO AP": 0.25, "COCO AP_small": None, "images": 3}))
    summary = tmp_path / "summary.md"
    run_summary(load_config([CONFIG]), {"maskrcnn": metrics}, summary)
    text = summary.read_text()
    assert "-100" not in text
    line = next(line for line in text.splitlines() if "COCO AP_small" in line)
    assert "n/a" in line
    assert "25.00" in next(line for line in text.splitlines() if "COCO AP " in line or line.rstrip().endswith("25.00"))
    read = read_metrics(tmp_path / "evaluation")
    assert read["maskrcnn"]["COCO AP_small"] is None
    html = _metrics_html(read)
    assert "<td class=\"name\">COCO AP_small</td><td>n/a</td>" in html and "-100" not in html
