"""Content fingerprints of the dataset files a job reads, and the manifests that carry them.

Snakemake decides what to re-run from file modification times. A dataset folder as one input only
tells it when the folder's own entries change, never when an image inside is replaced. The workflow
therefore gives every per-shard job a small *manifest* as input: the ids the job reads and the content
hash of every dataset file it reads for them. The manifests are refreshed at DAG-build time and a
manifest file is rewritten only when its content changes, so a changed image re-runs exactly the jobs
whose manifest lists it, and an unchanged dataset re-runs nothing, whatever the files' times.

Hashing a whole dataset on every DAG build would be slow (COCO: 19 GB), so a :class:`FingerprintCache`
keeps each file's hash under its (size, modification time in ns): a file whose size and time are
unchanged is not read again; one stat per file remains (about a second per 100k files, see
``docs/cluster.md``).

What is read, per image id (:data:`READS`):

``image``         the photograph
``labels``        the image-level labels: VOC's XML annotation, else its class map; COCO: the image's
                  annotation records (their JSON, hashed)
``ground_truth``  what the evaluation reads: class map and instance map (VOC: SegmentationClass /
                  SegmentationObject, else SegmentationClassAug / SBD), COCO: the annotation records
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from irn_core.atomic import write_text_atomic

logger = logging.getLogger(__name__)

READS = ("image", "labels", "ground_truth")
MANIFEST_VERSION = 1
_HASH_CHARS = 32


@dataclass(frozen=True)
class Source:
    """One thing a job reads for an image: a file (``path``) or an in-memory record (``digest``)."""

    key: str
    """A name stable across machines: the path relative to the dataset root, or ``<kind>:<id>``."""
    path: Path | None = None
    digest: str | None = None


def _relative(path: Path, root: Path) -> str:
    """``path`` relative to ``root`` (string arithmetic: this runs for every file of the dataset)."""
    text, prefix = str(path), str(root).rstrip("/") + "/"
    return text[len(prefix):] if text.startswith(prefix) else text


def _record_digest(record: Any) -> str:
    text = json.dumps(record, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:_HASH_CHARS]


def image_sources(
    dataset: Any, image_id: str, reads: Iterable[str], exists: Any = None
) -> list[Source]:
    """The :class:`Source` list of ``image_id`` for the kinds of input in ``reads`` (:data:`READS`).

    Works with :class:`~irn_core.data.voc.VOCDataset` (VOC, SBD, synthetic) and
    :class:`~irn_core.data.coco.COCODataset`; a file that does not exist is listed all the same (its
    fingerprint is then ``None``, and the job reading it fails or skips it with a clear error).
    """
    reads = tuple(reads)
    unknown = set(reads) - set(READS)
    if unknown:
        raise ValueError(f"unknown reads {sorted(unknown)} (known: {', '.join(READS)})")
    if hasattr(dataset, "coco_image_id"):  # COCODataset (its ``coco`` property refuses multi-file datasets)
        return _coco_sources(dataset, image_id, reads)
    return _voc_sources(dataset, image_id, reads, exists or (lambda path: path.is_file()))


def _first_existing(candidates: list[Path | None], exists: Any) -> Path:
    """The first candidate that exists (the reader's order of precedence), else the first one."""
    present = [path for path in candidates if path is not None]
    return next((path for path in present if exists(path)), present[0])


def _voc_sources(dataset: Any, image_id: str, reads: tuple[str, ...], exists: Any) -> list[Source]:
    root = Path(dataset.root)
    paths: list[Path] = []

    def class_maps() -> list[Path | None]:
        return [dataset.class_mask_path(image_id), dataset.augmented_class_mask_path(image_id),
                dataset.sbd_class_path(image_id)]

    if "image" in reads:
        paths.append(dataset.image_path(image_id))
    if "labels" in reads:
        annotation = dataset.annotation_path(image_id)
        paths.append(annotation if exists(annotation) else _first_existing(class_maps(), exists))
    if "ground_truth" in reads:
        paths.append(_first_existing(class_maps(), exists))
        paths.append(_first_existing([dataset.object_mask_path(image_id), dataset.sbd_instance_path(image_id)], exists))
    unique = list(dict.fromkeys(paths))
    return [Source(_relative(path, root), path=path) for path in unique]


def _coco_sources(dataset: Any, image_id: str, reads: tuple[str, ...]) -> list[Source]:
    sources = []
    if "image" in reads:
        path = dataset.image_path(image_id)
        key = dataset.coco_file_name(image_id) if hasattr(dataset, "coco_file_name") else path.name
        sources.append(Source(key, path=path))
    if "labels" in reads or "ground_truth" in reads:
        record = dataset._record(image_id)  # noqa: SLF001 (the image's own entry of the annotation file)
        annotations = dataset.annotations(image_id, crowd=None)
        digest = _record_digest({"image": record, "annotations": annotations})
        sources.append(Source(f"annotations:{image_id}", digest=digest))
    return sources


class FingerprintCache:
    """Content hashes of files keyed by (path, size, modification time in ns), kept in a JSON file.

    ``fingerprint(path)`` reads and hashes a file only when it is new or its size or time changed;
    :meth:`save` writes the cache back (atomically) when something was added.
    """

    def __init__(self, path: str | os.PathLike[str] | None) -> None:
        self.path = Path(path) if path is not None else None
        self._entries: dict[str, list[Any]] = {}
        self._status: dict[str, tuple[int, int] | None] = {}
        self._digests: dict[str, str | None] = {}
        self._sources: dict[tuple[str, str], list[Source]] = {}
        self._dirty = False
        if self.path is not None and self.path.is_file():
            try:
                self._entries = json.loads(self.path.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                logger.warning("%s: unreadable fingerprint cache, starting a new one", self.path)
                self._entries = {}

    def status(self, path: Path) -> tuple[int, int] | None:
        """(size, modification time in ns) of ``path``, or None if it is missing; one ``stat`` per path
        for the life of this object (one DAG build)."""
        name = str(path)
        if name not in self._status:
            try:
                result = os.stat(name)
                self._status[name] = (result.st_size, result.st_mtime_ns)
            except OSError:
                self._status[name] = None
        return self._status[name]

    def exists(self, path: Path) -> bool:
        return self.status(path) is not None

    def sources(self, dataset: Any, image_id: str, reads: tuple[str, ...]) -> list[Source]:
        """:func:`image_sources`, each (image id, kind of input) resolved once per DAG build (the
        products of a shard ask for the same images)."""
        found: list[Source] = []
        for read in reads:
            key = (image_id, read)
            if key not in self._sources:
                self._sources[key] = image_sources(dataset, image_id, (read,), self.exists)
            found += [source for source in self._sources[key] if source not in found]
        return found

    def fingerprints(self, paths: Sequence[Path], *, workers: int = 4) -> dict[Path, str | None]:
        """The content hash of every path (None for a missing file); new or changed files are hashed
        in ``workers`` threads."""
        results: dict[Path, str | None] = {}
        to_hash: list[tuple[Path, str, int, int]] = []
        for path in paths:
            name = str(path)
            if name in self._digests:
                results[path] = self._digests[name]
                continue
            status = self.status(path)
            if status is None:
                results[path] = None
                continue
            entry = self._entries.get(name)
            if entry is not None and entry[0] == status[0] and entry[1] == status[1]:
                results[path] = self._digests[name] = entry[2]
            else:
                to_hash.append((path, name, *status))
        if to_hash:
            with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
                digests = list(pool.map(lambda item: _file_digest(item[0]), to_hash))
            for (path, name, size, mtime), digest in zip(to_hash, digests):
                results[path] = self._digests[name] = digest
                if digest is not None:
                    self._entries[name] = [size, mtime, digest]
                    self._dirty = True
        return results

    def save(self) -> None:
        if self.path is not None and self._dirty:
            write_text_atomic(self.path, json.dumps(self._entries, separators=(",", ":")))
            self._dirty = False


def _file_digest(path: Path) -> str | None:
    try:
        with open(path, "rb") as handle:
            return hashlib.file_digest(handle, "sha256").hexdigest()[:_HASH_CHARS]
    except OSError:
        return None


def manifest(
    dataset: Any,
    image_ids: Sequence[str],
    reads: Iterable[str],
    cache: FingerprintCache,
    *,
    description: Mapping[str, Any] | None = None,
) -> str:
    """The manifest text of ``image_ids``: per id, each source's key and content fingerprint.

    ``description`` (e.g. product and shard) is recorded too. The text depends only on the ids, the
    sources and their content, never on times or the machine.
    """
    reads = tuple(reads)
    per_image = {image_id: cache.sources(dataset, image_id, reads) for image_id in image_ids}
    files = [source.path for sources in per_image.values() for source in sources if source.path is not None]
    hashes = cache.fingerprints(files)
    content = {
        image_id: {source.key: hashes[source.path] if source.path is not None else source.digest for source in sources}
        for image_id, sources in per_image.items()
    }
    data = {"version": MANIFEST_VERSION, **(description or {}), "reads": list(reads), "ids": list(image_ids),
            "sources": content}
    return json.dumps(data, separators=(",", ":")) + "\n"  # compact: the C encoder (indent is 5x slower)


def write_if_changed(path: str | os.PathLike[str], text: str) -> bool:
    """Write ``text`` to ``path`` (atomically) unless it already holds exactly that; True if written."""
    path = Path(path)
    try:
        if path.read_text(encoding="utf-8") == text:
            return False
    except (FileNotFoundError, UnicodeDecodeError):
        pass
    write_text_atomic(path, text)
    return True
