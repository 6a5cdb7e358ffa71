"""Fetching the public datasets: download (resuming with HTTP Range), verify, unpack, record.

The archives, their checksums and sizes live in one table, ``resources/datasets.yaml``
(:func:`load_resources`). For each archive of a dataset :func:`fetch_dataset`

1. downloads it to ``<root>/<name>.part``, resuming a partial file with ``Range: bytes=N-``; a server
   that ignores the Range header (answers 200 with the whole body) is read again from byte 0, never
   appended; a dropped connection is retried from where it stopped (``retries`` times);
2. verifies its size and checksum(s) and only then renames ``<name>.part`` to ``<name>``; a mismatch
   raises :class:`FetchError` naming the file, the expected and the actual checksum (the ``.part`` file is
   removed, nothing is unpacked);

then unpacks every archive into a temporary folder inside ``root`` and renames the top-level folders
into place, and writes ``<root>/.irn-fetch-<dataset>.json`` recording the verified checksums. A dataset
whose marker matches the table is left alone; a destination folder that exists without that marker is
never overwritten (:class:`FetchError`).
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import json
import logging
import os
import shutil
import tarfile
import tempfile
import urllib.error
import urllib.request
import zipfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml
from tqdm import tqdm

from irn_core.atomic import write_text_atomic
from irn_core.errors import IrnError

logger = logging.getLogger(__name__)

RESOURCES_VARIABLE = "IRN_DATA_RESOURCES"
"""Environment variable naming another resource table (as ``--resources``)."""
MIRROR_VARIABLE = "IRN_DATA_MIRROR"
"""Environment variable holding a mirror URL prefix (as ``--mirror``)."""
CHECKSUM_ALGORITHMS: tuple[str, ...] = ("md5", "sha256")
CHUNK_BYTES = 1 << 20


class FetchError(IrnError):
    """A download failed, an archive's checksum or size is wrong, or a destination exists unverified."""


def default_resources_path() -> Path:
    """``resources/datasets.yaml`` of this checkout, or the file named by ``IRN_DATA_RESOURCES``."""
    override = os.environ.get(RESOURCES_VARIABLE)
    if override:
        return Path(override)
    return Path(__file__).resolve().parents[2] / "resources" / "datasets.yaml"


@dataclass(frozen=True)
class Archive:
    """One downloadable file: ``checksums`` maps an algorithm of :data:`CHECKSUM_ALGORITHMS` to its hex digest."""

    name: str
    url: str
    checksums: Mapping[str, str]
    size: int | None = None


@dataclass(frozen=True)
class DatasetResource:
    """A dataset of the resource table (see ``resources/datasets.yaml`` for the fields)."""

    name: str
    description: str
    archives: tuple[Archive, ...]
    folders: tuple[str, ...]
    config: Mapping[str, str]
    base_config: str | None = None
    expected_ids: Mapping[str, int] = field(default_factory=dict)
    expected_images: Mapping[str, int] = field(default_factory=dict)

    def marker_path(self, root: Path) -> Path:
        return root / f".irn-fetch-{self.name}.json"

    def with_mirror(self, prefix: str) -> DatasetResource:
        """The same dataset with every archive downloaded from ``prefix/<archive name>``."""
        archives = tuple(replace(archive, url=f"{prefix.rstrip('/')}/{archive.name}") for archive in self.archives)
        return replace(self, archives=archives)


def _archive(entry: Mapping[str, Any], source: Path, dataset: str) -> Archive:
    try:
        name, url = str(entry["name"]), str(entry["url"])
    except (KeyError, TypeError):
        raise FetchError(f"{source}: dataset {dataset!r}: an archive needs 'name' and 'url'") from None
    if Path(name).name != name or name in ("", ".", ".."):
        raise FetchError(f"{source}: dataset {dataset!r}: archive name {name!r} must be a plain file name")
    checksums = {algorithm: str(entry[algorithm]).lower() for algorithm in CHECKSUM_ALGORITHMS if entry.get(algorithm)}
    if not checksums:
        raise FetchError(f"{source}: archive {name}: no checksum ({' or '.join(CHECKSUM_ALGORITHMS)})")
    size = entry.get("size")
    return Archive(name, url, checksums, int(size) if size is not None else None)


def load_resources(path: str | os.PathLike[str] | None = None) -> dict[str, DatasetResource]:
    """The resource table: dataset name -> :class:`DatasetResource` (default: :func:`default_resources_path`)."""
    source = Path(path) if path is not None else default_resources_path()
    try:
        data = yaml.safe_load(source.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as error:
        raise FetchError(f"{source}: resource table unreadable ({error})") from error
    if not isinstance(data, dict) or not isinstance(data.get("datasets"), dict):
        raise FetchError(f"{source}: resource table needs a 'datasets' mapping")
    table = {}
    for name, entry in data["datasets"].items():
        archives = tuple(_archive(archive, source, name) for archive in entry.get("archives") or [])
        if not archives:
            raise FetchError(f"{source}: dataset {name!r} lists no archives")
        table[str(name)] = DatasetResource(
            name=str(name),
            description=str(entry.get("description", "")),
            archives=archives,
            folders=tuple(str(folder) for folder in entry.get("folders") or []),
            config={str(key): str(value) for key, value in (entry.get("config") or {}).items()},
            base_config=entry.get("base_config"),
            expected_ids={str(key): int(value) for key, value in (entry.get("expected_ids") or {}).items()},
            expected_images={str(key): int(value) for key, value in (entry.get("expected_images") or {}).items()},
        )
    return table


# ---------------------------------------------------------------------------------------------- download


def _open(url: str, start: int, timeout: float) -> http.client.HTTPResponse:
    request = urllib.request.Request(url, headers={"Range": f"bytes={start}-"} if start else {})
    return urllib.request.urlopen(request, timeout=timeout)  # noqa: S310 (the table's own URLs)


def _download_once(url: str, part: Path, timeout: float, progress: bool) -> None:
    """Append the rest of ``url`` to ``part`` (from byte 0 when the server ignores Range)."""
    start = part.stat().st_size if part.exists() else 0
    try:
        response = _open(url, start, timeout)
    except urllib.error.HTTPError as error:
        if error.code == 416 and start:  # the part file already holds the whole body
            return
        raise
    with response:
        if start and response.status != 206:
            logger.info("%s: the server ignored the Range request; downloading from the start", url)
            start = 0
        elif start and not str(response.headers.get("Content-Range", "")).startswith(f"bytes {start}-"):
            raise FetchError(f"{url}: asked for the bytes from {start} on, the server sent "
                             f"{response.headers.get('Content-Range')!r}; delete {part} and run again")
        length = response.headers.get("Content-Length")
        total = start + int(length) if length is not None else None
        with open(part, "ab" if start else "wb") as handle, tqdm(
            total=total, initial=start, unit="B", unit_scale=True, unit_divisor=1024, desc=part.name[: -len(".part")],
            disable=not progress, leave=False,
        ) as bar:
            received = start
            while chunk := response.read(CHUNK_BYTES):
                handle.write(chunk)
                received += len(chunk)
                bar.update(len(chunk))
        if total is not None and received < total:
            raise http.client.IncompleteRead(b"", total - received)


def download(url: str, part: Path, *, retries: int = 3, timeout: float = 60.0, progress: bool = True) -> None:
    """Download ``url`` into ``part``, resuming what ``part`` already holds; a dropped connection is
    resumed up to ``retries`` times. Raises :class:`FetchError` naming the URL when it keeps failing."""
    part.parent.mkdir(parents=True, exist_ok=True)
    for attempt in range(1, retries + 2):
        try:
            _download_once(url, part, timeout, progress)
            return
        except (OSError, http.client.HTTPException) as error:
            held = part.stat().st_size if part.exists() else 0
            if isinstance(error, urllib.error.HTTPError) or attempt > retries:
                raise FetchError(
                    f"{url}: download failed ({error}); {held} bytes kept in {part}, run the command again to resume"
                ) from error
            logger.warning("%s: connection lost after %d bytes (%s); resuming (attempt %d)", url, held, error,
                           attempt + 1)


def file_checksums(path: Path, algorithms: tuple[str, ...] | list[str], *, progress: bool = True) -> dict[str, str]:
    """Hex digests of ``path`` for each algorithm (one read of the file)."""
    digests = {algorithm: hashlib.new(algorithm) for algorithm in algorithms}
    with open(path, "rb") as handle, tqdm(
        total=path.stat().st_size, unit="B", unit_scale=True, unit_divisor=1024, desc=f"verify {path.name}",
        disable=not progress, leave=False,
    ) as bar:
        while chunk := handle.read(CHUNK_BYTES):
            for digest in digests.values():
                digest.update(chunk)
            bar.update(len(chunk))
    return {algorithm: digest.hexdigest() for algorithm, digest in digests.items()}


def verify(path: Path, archive: Archive, *, progress: bool = True) -> None:
    """Raise :class:`FetchError` naming ``path``, the expected and the actual value when the size or a
    checksum of ``archive`` differs."""
    size = path.stat().st_size
    if archive.size is not None and size != archive.size:
        raise FetchError(f"{path}: size {size} bytes, expected {archive.size} bytes ({archive.url})")
    actual = file_checksums(path, list(archive.checksums), progress=progress)
    for algorithm, expected in archive.checksums.items():
        if actual[algorithm] != expected:
            raise FetchError(
                f"{path}: {algorithm} checksum mismatch: expected {expected}, got {actual[algorithm]} "
                f"({archive.url}); the file is corrupt or not the official archive"
            )


def fetch_archive(archive: Archive, directory: Path, *, progress: bool = True, retries: int = 3) -> Path:
    """``directory/<name>``, downloaded and verified (an already complete, verified file is reused)."""
    target = directory / archive.name
    if target.is_file():
        verify(target, archive, progress=progress)
        logger.info("%s: already downloaded and verified", target)
        return target
    part = directory / f"{archive.name}.part"
    logger.info("downloading %s -> %s", archive.url, target)
    download(archive.url, part, retries=retries, progress=progress)
    try:
        verify(part, archive, progress=progress)
    except FetchError:
        part.unlink()  # a wrong complete file cannot be resumed into a right one
        raise
    os.replace(part, target)
    return target


# ---------------------------------------------------------------------------------------------- unpack


def _extract(archive: Path, destination: Path) -> None:
    if zipfile.is_zipfile(archive):
        with zipfile.ZipFile(archive) as opened:
            for member in opened.namelist():
                if Path(member).is_absolute() or ".." in Path(member).parts:
                    raise FetchError(f"{archive}: member {member!r} would unpack outside the destination")
            opened.extractall(destination)
        return
    try:
        with tarfile.open(archive) as opened:
            opened.extractall(destination, filter="data")
    except (tarfile.TarError, OSError) as error:
        raise FetchError(f"{archive}: cannot unpack ({error})") from error


@contextlib.contextmanager
def _temporary_folder(root: Path) -> Iterator[Path]:
    folder = Path(tempfile.mkdtemp(prefix=".irn-unpack-", dir=root))
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def unpack(archives: list[Path], root: Path, folders: tuple[str, ...], *, progress: bool = True) -> None:
    """Unpack ``archives`` into a temporary folder in ``root``, then rename each of ``folders`` into
    ``root`` (an archive that does not hold one of them raises :class:`FetchError`, nothing is moved)."""
    with _temporary_folder(root) as temporary:
        for archive in tqdm(archives, desc="unpack", unit="archive", disable=not progress, leave=False):
            logger.info("unpacking %s", archive)
            _extract(archive, temporary)
        missing = [folder for folder in folders if not (temporary / folder).is_dir()]
        if missing:
            found = sorted(path.name for path in temporary.iterdir())
            raise FetchError(f"{', '.join(map(str, archives))}: no folder {missing} inside (found {found})")
        for folder in folders:
            os.replace(temporary / folder, root / folder)


# ---------------------------------------------------------------------------------------------- dataset


@dataclass(frozen=True)
class FetchResult:
    """What :func:`fetch_dataset` did, and the dataset fields of a run config (absolute paths)."""

    dataset: str
    root: Path
    config: dict[str, str]
    already_present: bool


def _marker_matches(resource: DatasetResource, root: Path) -> bool:
    marker = resource.marker_path(root)
    if not marker.is_file():
        return False
    try:
        recorded = json.loads(marker.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return False
    wanted = {archive.name: dict(archive.checksums) for archive in resource.archives}
    return recorded.get("archives") == wanted and all((root / folder).is_dir() for folder in resource.folders)


def config_fields(resource: DatasetResource, root: Path) -> dict[str, str]:
    """The dataset fields of a run config for ``resource`` unpacked under ``root``."""
    return {key: str((root / value).resolve()) for key, value in resource.config.items()}


def fetch_dataset(
    resource: DatasetResource, root: Path, *, progress: bool = True, keep_archives: bool = False, retries: int = 3
) -> FetchResult:
    """Download, verify and unpack ``resource`` under ``root`` (see the module docstring)."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    if _marker_matches(resource, root):
        logger.info("%s: already fetched and verified under %s; nothing to do", resource.name, root)
        return FetchResult(resource.name, root, config_fields(resource, root), already_present=True)
    existing = [str(root / folder) for folder in resource.folders if (root / folder).exists()]
    if existing:
        raise FetchError(
            f"{', '.join(existing)}: already exists but was not fetched and verified by irn data fetch "
            f"{resource.name}; not overwritten (move it away, or point the config at it and run irn data check)"
        )
    paths = [fetch_archive(archive, root, progress=progress, retries=retries) for archive in resource.archives]
    unpack(paths, root, resource.folders, progress=progress)
    record = {
        "dataset": resource.name,
        "archives": {archive.name: dict(archive.checksums) for archive in resource.archives},
        "folders": list(resource.folders),
    }
    write_text_atomic(resource.marker_path(root), json.dumps(record, indent=1, sort_keys=True) + "\n")
    if not keep_archives:
        for path in paths:
            path.unlink()
    logger.info("%s: fetched, verified and unpacked under %s", resource.name, root)
    return FetchResult(resource.name, root, config_fields(resource, root), already_present=False)


def config_overlay_text(results: list[FetchResult], resources: Mapping[str, DatasetResource]) -> str:
    """A config file holding the dataset fields of ``results``, to merge onto the dataset's base config
    (``irn run --config config/voc12.yaml --config THIS_FILE``)."""
    bases = sorted({str(resources[result.dataset].base_config) for result in results
                    if resources[result.dataset].base_config})
    fields: dict[str, str] = {}
    for result in results:
        fields.update(result.config)
    usage = " ".join(f"--config {base}" for base in bases)
    header = (
        f"# Written by irn data fetch {' '.join(result.dataset for result in results)}: the dataset folders.\n"
        f"# Merged onto the base config: irn run {usage} --config THIS_FILE\n"
    )
    return header + yaml.safe_dump({"dataset": fields}, sort_keys=False)
