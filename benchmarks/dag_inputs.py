"""How long the DAG-build refresh of the input manifests takes on a large dataset.

Writes a VOC-layout folder of N tiny images with XML annotations (2N files; the content does not
matter, only the count), then times what the Snakefile does at DAG-build time: the recorded shard plan
and the manifests of the CAM, confident-region and IRNet shards and of the training set, (1) the first
time (every file hashed), (2) again with nothing changed (one stat per file), (3) after one image
changed.

    python benchmarks/dag_inputs.py [N=100000] [FOLDER]
"""

from __future__ import annotations

import shutil
import sys
import tempfile
import time
from pathlib import Path

from irn_core.workflow_support import prepare

XML = "<annotation><object><name>dog</name></object></annotation>\n"


def make_dataset(root: Path, count: int) -> None:
    images, annotations, splits = root / "JPEGImages", root / "Annotations", root / "ImageSets" / "Segmentation"
    for folder in (images, annotations, splits):
        folder.mkdir(parents=True, exist_ok=True)
    ids = [f"{index:08d}" for index in range(count)]
    for image_id in ids:
        (images / f"{image_id}.jpg").write_bytes(b"\xff\xd8" + image_id.encode() * 64 + b"\xff\xd9")
        (annotations / f"{image_id}.xml").write_text(XML)
    (splits / "train.txt").write_text("\n".join(ids) + "\n")


def refresh(root: Path, output: Path) -> float:
    started = time.perf_counter()
    context = prepare({"name": "bench", "output_dir": str(output), "dataset": {
        "kind": "voc12", "root": str(root), "train_split": "train", "infer_split": "train"}}, Path("unused"))
    for product in ("cam", "ir_labels", "irnet"):
        context.shard_inputs(product)
    context.training_inputs("train")
    return time.perf_counter() - started


def main() -> None:
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 100_000
    folder = Path(sys.argv[2]) if len(sys.argv) > 2 else Path(tempfile.mkdtemp(prefix="irn-dag-"))
    try:
        root, output = folder / "data", folder / "results"
        started = time.perf_counter()
        make_dataset(root, count)
        print(f"{count} images + {count} annotations written in {time.perf_counter() - started:.1f} s")
        print(f"first refresh (hash every file): {refresh(root, output):.1f} s")
        print(f"unchanged refresh (stat only):   {refresh(root, output):.1f} s")
        changed = root / "JPEGImages" / f"{count // 2:08d}.jpg"
        changed.write_bytes(changed.read_bytes() + b"\0")
        manifests = sorted(path for path in (output / "bench" / "inputs").rglob("*.json")
                           if not path.name.startswith("."))
        times = {path: path.stat().st_mtime_ns for path in manifests}
        print(f"one image changed:               {refresh(root, output):.1f} s")
        rewritten = [path.name for path in manifests if path.stat().st_mtime_ns != times[path]]
        print(f"manifests rewritten: {len(rewritten)} of {len(manifests)}")
    finally:
        if len(sys.argv) <= 2:
            shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
