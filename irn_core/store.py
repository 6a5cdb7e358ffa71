"""The HDF5 shard store: one file per shard per product, one group per image id.

Layout of ``<run>/<product>/shard-00003.h5``::

    /                       attrs: schema_version, product, config_hash, code_version,
                                   shard_index, image_ids (JSON list, in write order), config (JSON),
                                   skipped (JSON {id: reason}; only when ids were left out)
    /<image_id>/            attrs: per-image metadata (e.g. height, width)
    /<image_id>/cam_s4      datasets named with their stride: cam_s4, cam_s1, boundary_s4,
    /<image_id>/class_ids   displacement_s4, affinity_s4_r5, ir_label_s1, semantic_s1, ...

Datasets are chunked and gzip-compressed (with the shuffle filter); floating-point datasets
listed in ``float16`` are stored as float16 (e.g. CAMs, to halve their size). Object times are not
recorded, so the same inputs give the same bytes. A file is built in memory, written to a temporary
sibling and renamed into place when complete, so a file at its final path is always whole (a write
that fails, e.g. on a full disk, raises :class:`~irn_core.errors.StoreError` and leaves nothing); readers still check
the schema version, the product and the presence of every image id, and fail with a
:class:`~irn_core.errors.StoreError` naming the file, the image id and the problem.
"""

from __future__ import annotations

import io
import json
import os
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any

import h5py
import numpy as np

from irn_core.atomic import atomic_path
from irn_core.errors import StoreError

SCHEMA_VERSION = 1
"""Bump when the layout of a product changes; readers refuse other versions."""

_RESERVED_ATTRIBUTES = ("schema_version", "product", "config_hash", "code_version", "shard_index", "image_ids")


def shard_file_name(shard_index: int) -> str:
    """``shard-00003.h5`` for shard 3."""
    return f"shard-{shard_index:05d}.h5"


def _check_image_id(path: Path, image_id: str) -> None:
    if not isinstance(image_id, str) or not image_id or "/" in image_id or image_id in (".", ".."):
        raise StoreError(f"{path}: image id {image_id!r} is not a valid group name (non-empty string without '/')")


def _to_numpy(value: Any) -> np.ndarray:
    if hasattr(value, "detach"):
        value = value.detach().cpu().numpy()
    return np.asarray(value)


class ShardWriter:
    """Write one shard file atomically. Use as a context manager::

        with ShardWriter(path, product="cam", config_hash=h, shard_index=3) as writer:
            writer.add("2007_000032", {"cam_s4": cam, "class_ids": ids}, {"height": 375, "width": 500})

    The file appears at ``path`` only when the ``with`` block ends without an exception.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        product: str,
        config_hash: str,
        shard_index: int,
        code_version: str | None = None,
        config: Mapping[str, Any] | None = None,
        float16: Iterable[str] = (),
        compression_level: int = 4,
    ) -> None:
        from irn_core.version import code_version as current_code_version

        self.path = Path(path)
        self.product = product
        self.config_hash = config_hash
        self.shard_index = shard_index
        self.code_version = code_version if code_version is not None else current_code_version()
        self.config = dict(config or {})
        self.float16 = frozenset(float16)
        self.compression_level = compression_level
        self._image_ids: list[str] = []
        self.skipped_ids: dict[str, str] = {}
        """Ids left out of the shard -> reason (see :meth:`skip`)."""
        self._buffer = io.BytesIO()
        self._file: h5py.File | None = None

    def __enter__(self) -> ShardWriter:
        # The file is built in memory and written out in one piece when complete: HDF5 crashes the
        # process (SIGSEGV) when a write fails on a full disk, Python's own write raises OSError.
        self._buffer = io.BytesIO()
        self._file = h5py.File(self._buffer, "w", track_order=True)
        return self

    def add(
        self,
        image_id: str,
        datasets: Mapping[str, Any],
        attributes: Mapping[str, Any] | None = None,
    ) -> None:
        """Store ``datasets`` (name -> array) and ``attributes`` under the group ``image_id``."""
        if self._file is None:
            raise StoreError(f"{self.path}: ShardWriter.add called outside its 'with' block")
        _check_image_id(self.path, image_id)
        if image_id in self._file:
            raise StoreError(f"{self.path}: image id {image_id!r} written twice")
        if image_id in self.skipped_ids:
            raise StoreError(f"{self.path}: image id {image_id!r} was skipped, cannot also be written")
        group = self._file.create_group(image_id, track_order=True)
        for name, value in datasets.items():
            array = _to_numpy(value)
            if name in self.float16 and np.issubdtype(array.dtype, np.floating):
                array = array.astype(np.float16)
            if array.ndim == 0 or array.size == 0:
                group.create_dataset(name, data=array, track_times=False)
            else:
                group.create_dataset(
                    name,
                    data=array,
                    chunks=True,
                    compression="gzip",
                    compression_opts=self.compression_level,
                    shuffle=True,
                    track_times=False,
                )
        for key, value in (attributes or {}).items():
            group.attrs[key] = value
        self._image_ids.append(image_id)

    def skip(self, image_id: str, reason: str) -> None:
        """Record that ``image_id`` was left out of this shard and why (``dataset.on_unreadable: skip``);
        readers list it in :attr:`ShardReader.skipped`."""
        if image_id in self._image_ids:
            raise StoreError(f"{self.path}: image id {image_id!r} was written, cannot also be skipped")
        self.skipped_ids[image_id] = reason

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        assert self._file is not None
        try:
            if exc_type is None:
                attributes = self._file.attrs
                attributes["schema_version"] = SCHEMA_VERSION
                attributes["product"] = self.product
                attributes["config_hash"] = self.config_hash
                attributes["code_version"] = self.code_version
                attributes["shard_index"] = self.shard_index
                attributes["image_ids"] = json.dumps(self._image_ids)
                attributes["config"] = json.dumps(self.config, sort_keys=True, default=str)
                if self.skipped_ids:
                    attributes["skipped"] = json.dumps(self.skipped_ids, sort_keys=True)
            self._file.close()
        finally:
            self._file = None
        if exc_type is None:
            self._write_out()
        self._buffer = io.BytesIO()

    def _write_out(self) -> None:
        """Write the finished file to a temporary sibling and rename it into place."""
        try:
            with atomic_path(self.path) as temporary, open(temporary, "wb") as handle:
                handle.write(self._buffer.getbuffer())
                handle.flush()
                os.fsync(handle.fileno())
        except OSError as error:
            raise StoreError(
                f"{self.path}: could not write the shard file ({error.strerror or error}; disk full?); "
                "nothing was written at this path"
            ) from error


class ShardReader:
    """Read a shard file, checking its schema version, product and integrity.

    >>> with ShardReader(path, product="cam") as shard:
    ...     cam = shard.read("2007_000032")["cam_s4"]
    """

    def __init__(self, path: str | os.PathLike[str], *, product: str | None = None) -> None:
        self.path = Path(path)
        if not self.path.exists():
            raise StoreError(f"{self.path}: shard file is missing")
        try:
            self._file = h5py.File(self.path, "r")
        except OSError as error:
            raise StoreError(f"{self.path}: not a readable HDF5 file (truncated or corrupted?): {error}") from error
        try:
            self._check_header(product)
        except BaseException:
            self._file.close()
            raise

    def _check_header(self, product: str | None) -> None:
        attributes = self._file.attrs
        missing = [key for key in _RESERVED_ATTRIBUTES if key not in attributes]
        if missing:
            raise StoreError(f"{self.path}: not an irn shard file (missing attributes {missing})")
        version = int(attributes["schema_version"])
        if version != SCHEMA_VERSION:
            raise StoreError(
                f"{self.path}: schema version {version}, this code reads version {SCHEMA_VERSION}; "
                "re-run the step that wrote it"
            )
        if product is not None and attributes["product"] != product:
            raise StoreError(f"{self.path}: holds product {attributes['product']!r}, expected {product!r}")
        self.image_ids: list[str] = json.loads(attributes["image_ids"])
        self.skipped: dict[str, str] = json.loads(attributes["skipped"]) if "skipped" in attributes else {}
        """Ids of the shard left out (``dataset.on_unreadable: skip``) -> the reason."""
        absent = [image_id for image_id in self.image_ids if image_id not in self._file]
        if absent:
            raise StoreError(f"{self.path}: truncated; groups missing for image ids {absent[:5]}")

    @property
    def product(self) -> str:
        return str(self._file.attrs["product"])

    @property
    def config_hash(self) -> str:
        return str(self._file.attrs["config_hash"])

    @property
    def code_version(self) -> str:
        return str(self._file.attrs["code_version"])

    @property
    def config(self) -> dict[str, Any]:
        return json.loads(self._file.attrs["config"])

    def __contains__(self, image_id: object) -> bool:
        return image_id in self.image_ids

    def __iter__(self) -> Iterator[str]:
        return iter(self.image_ids)

    def __len__(self) -> int:
        return len(self.image_ids)

    def attributes(self, image_id: str) -> dict[str, Any]:
        """Per-image attributes of ``image_id``."""
        return {key: _plain(value) for key, value in self._group(image_id).attrs.items()}

    def read(self, image_id: str, names: Iterable[str] | None = None) -> dict[str, np.ndarray]:
        """Datasets of ``image_id`` (all, or only ``names``) as numpy arrays."""
        group = self._group(image_id)
        wanted = list(group.keys()) if names is None else list(names)
        out: dict[str, np.ndarray] = {}
        for name in wanted:
            if name not in group:
                raise StoreError(f"{self.path}: image id {image_id!r} has no dataset {name!r}")
            try:
                out[name] = group[name][()]
            except OSError as error:
                raise StoreError(f"{self.path}: image id {image_id!r}, dataset {name!r} unreadable: {error}") from error
        return out

    def _group(self, image_id: str) -> h5py.Group:
        if image_id not in self.image_ids:
            raise StoreError(f"{self.path}: image id {image_id!r} is not in this shard")
        return self._file[image_id]

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> ShardReader:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def _plain(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, bytes):
        return value.decode()
    return value


class ShardedStore:
    """Look up image ids across the shard files of one product (opens files lazily, keeps them open)."""

    def __init__(self, paths: Iterable[str | os.PathLike[str]], *, product: str | None = None) -> None:
        self._readers: list[ShardReader] = []
        self._location: dict[str, ShardReader] = {}
        for path in paths:
            reader = ShardReader(path, product=product)
            self._readers.append(reader)
            for image_id in reader.image_ids:
                self._location[image_id] = reader
        self.product = product

    def __contains__(self, image_id: object) -> bool:
        return image_id in self._location

    @property
    def image_ids(self) -> list[str]:
        return list(self._location)

    @property
    def skipped(self) -> dict[str, str]:
        """Ids left out of any of the files (``dataset.on_unreadable: skip``) -> the reason."""
        return {image_id: reason for reader in self._readers for image_id, reason in reader.skipped.items()}

    def reader_for(self, image_id: str) -> ShardReader:
        try:
            return self._location[image_id]
        except KeyError:
            files = ", ".join(str(reader.path) for reader in self._readers) or "no files"
            raise StoreError(f"image id {image_id!r} is in none of the {self.product or ''} shard files ({files})") from None

    def read(self, image_id: str, names: Iterable[str] | None = None) -> dict[str, np.ndarray]:
        return self.reader_for(image_id).read(image_id, names)

    def attributes(self, image_id: str) -> dict[str, Any]:
        return self.reader_for(image_id).attributes(image_id)

    def close(self) -> None:
        for reader in self._readers:
            reader.close()

    def __enter__(self) -> ShardedStore:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
