"""``irn data fetch`` against a local HTTP server on 127.0.0.1 serving small archives of the real layouts:
a clean download, an interrupted one resumed with Range, a corrupted one, a server that ignores Range."""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
import threading
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
import yaml

from irn_core.cli import main
from irn_core.data.fetch import Archive, DatasetResource, FetchError, fetch_dataset, load_resources


@dataclass
class ServerState:
    files: dict[str, bytes] = field(default_factory=dict)
    drop_after: int | None = None  # the first GET of a file stops after this many bytes
    ignore_range: bool = False
    corrupt: set[str] = field(default_factory=set)
    requests: list[tuple[str, str | None, int]] = field(default_factory=list)  # (path, Range, status)
    dropped: set[str] = field(default_factory=set)


def _corrupted(body: bytes) -> bytes:
    """``body`` with byte 100 flipped."""
    return body[:100] + bytes([body[100] ^ 0xFF]) + body[101:]


class Handler(BaseHTTPRequestHandler):
    state: ServerState

    def log_message(self, *arguments: object) -> None:  # keep the test output quiet
        pass

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        name = self.path.lstrip("/")
        body = self.state.files.get(name)
        if body is None:
            self.send_error(404)
            self.state.requests.append((name, self.headers.get("Range"), 404))
            return
        if name in self.state.corrupt:
            body = _corrupted(body)
        start = 0
        requested = self.headers.get("Range")
        if requested and not self.state.ignore_range:
            start = int(requested.removeprefix("bytes=").rstrip("-"))
        status = 206 if start else 200
        self.state.requests.append((name, requested, status))
        self.send_response(status)
        self.send_header("Content-Length", str(len(body) - start))
        if start:
            self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
        self.end_headers()
        if self.state.drop_after is not None and name not in self.state.dropped:
            self.state.dropped.add(name)
            self.wfile.write(body[start: start + self.state.drop_after])
            self.wfile.flush()
            self.close_connection = True
            return
        self.wfile.write(body[start:])


@pytest.fixture()
def server() -> Iterator[tuple[str, ServerState]]:
    state = ServerState()
    handler = type("BoundHandler", (Handler,), {"state": state})
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}", state
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join()


def _noise(size: int, seed: int) -> bytes:
    return np.random.default_rng(seed).integers(0, 256, size, dtype=np.uint8).tobytes()


def _tar(members: dict[str, bytes], compression: str = "") -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode=f"w:{compression}") as archive:
        for name, content in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(content)
            archive.addfile(info, io.BytesIO(content))
    return buffer.getvalue()


def _zip(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, content in members.items():
            archive.writestr(name, content)
    return buffer.getvalue()


def voc_tar() -> bytes:
    voc = "VOCdevkit/VOC2012/"
    return _tar({
        voc + "JPEGImages/2007_000032.jpg": _noise(60_000, 1),
        voc + "Annotations/2007_000032.xml": b"<annotation><object><name>cat</name></object></annotation>",
        voc + "ImageSets/Segmentation/train.txt": b"2007_000032\n",
        voc + "SegmentationClass/2007_000032.png": _noise(500, 2),
    })


def sbd_tgz() -> bytes:
    dataset = "benchmark_RELEASE/dataset/"
    return _tar({dataset + "cls/2008_000002.mat": _noise(3000, 3), dataset + "train.txt": b"2008_000002\n"}, "gz")


def _resource(name: str, url: str, archives: dict[str, bytes], folders: tuple[str, ...], config: dict[str, str],
              *, sha256: bool = False) -> DatasetResource:
    entries = []
    for file_name, body in archives.items():
        checksums = {"md5": hashlib.md5(body).hexdigest()}
        if sha256:
            checksums["sha256"] = hashlib.sha256(body).hexdigest()
        entries.append(Archive(file_name, f"{url}/{file_name}", checksums, len(body)))
    return DatasetResource(name, name, tuple(entries), folders, config)


def voc_resource(url: str, state: ServerState) -> DatasetResource:
    state.files["VOCtrainval_11-May-2012.tar"] = voc_tar()
    return _resource("voc12", url, {"VOCtrainval_11-May-2012.tar": state.files["VOCtrainval_11-May-2012.tar"]},
                     ("VOCdevkit",), {"root": "VOCdevkit/VOC2012"})


def test_clean_download_unpacks_and_records(server: tuple[str, ServerState], tmp_path: Path) -> None:
    url, state = server
    resource = voc_resource(url, state)
    result = fetch_dataset(resource, tmp_path, progress=False)
    image = tmp_path / "VOCdevkit" / "VOC2012" / "JPEGImages" / "2007_000032.jpg"
    assert image.read_bytes() == _noise(60_000, 1)
    assert result.config == {"root": str((tmp_path / "VOCdevkit" / "VOC2012").resolve())}
    assert not result.already_present
    marker = json.loads(resource.marker_path(tmp_path).read_text())
    assert marker["archives"] == {"VOCtrainval_11-May-2012.tar": dict(resource.archives[0].checksums)}
    # no archive left, no temporary folder
    assert sorted(path.name for path in tmp_path.iterdir()) == [".irn-fetch-voc12.json", "VOCdevkit"]
    # fetched again: nothing downloaded, nothing overwritten
    image.write_bytes(b"edited by the user")
    again = fetch_dataset(resource, tmp_path, progress=False)
    assert again.already_present and len(state.requests) == 1
    assert image.read_bytes() == b"edited by the user"


def test_interrupted_download_resumes_with_range(server: tuple[str, ServerState], tmp_path: Path) -> None:
    url, state = server
    state.files["benchmark.tgz"] = sbd_tgz()
    resource = _resource("sbd", url, {"benchmark.tgz": state.files["benchmark.tgz"]}, ("benchmark_RELEASE",),
                         {"sbd_root": "benchmark_RELEASE/dataset"}, sha256=True)
    state.drop_after = 1000
    fetch_dataset(resource, tmp_path, progress=False, keep_archives=True)
    assert [(status, requested) for _, requested, status in state.requests] == [(200, None), (206, "bytes=1000-")]
    assert (tmp_path / "benchmark.tgz").read_bytes() == state.files["benchmark.tgz"]
    assert (tmp_path / "benchmark_RELEASE" / "dataset" / "train.txt").read_text() == "2008_000002\n"


def test_interrupted_download_without_retries_keeps_the_part_file(
    server: tuple[str, ServerState], tmp_path: Path
) -> None:
    url, state = server
    resource = voc_resource(url, state)
    state.drop_after = 5000
    with pytest.raises(FetchError, match="run the command again to resume"):
        fetch_dataset(resource, tmp_path, progress=False, retries=0)
    part = tmp_path / "VOCtrainval_11-May-2012.tar.part"
    assert part.stat().st_size == 5000 and not (tmp_path / "VOCdevkit").exists()
    fetch_dataset(resource, tmp_path, progress=False, retries=0)  # the next run resumes at byte 5000
    assert state.requests[-1][1:] == ("bytes=5000-", 206)
    assert (tmp_path / "VOCdevkit" / "VOC2012" / "ImageSets" / "Segmentation" / "train.txt").is_file()
    assert not part.exists()


def test_server_ignoring_range_restarts_from_zero(server: tuple[str, ServerState], tmp_path: Path) -> None:
    url, state = server
    resource = voc_resource(url, state)
    state.drop_after, state.ignore_range = 7000, True
    fetch_dataset(resource, tmp_path, progress=False, keep_archives=True)
    assert [status for _, _, status in state.requests] == [200, 200]
    assert state.requests[1][1] == "bytes=7000-"  # asked to resume, got the whole body: not appended
    assert (tmp_path / "VOCtrainval_11-May-2012.tar").read_bytes() == state.files["VOCtrainval_11-May-2012.tar"]


def test_corrupted_download_names_the_file_and_unpacks_nothing(
    server: tuple[str, ServerState], tmp_path: Path
) -> None:
    url, state = server
    resource = voc_resource(url, state)
    state.corrupt.add("VOCtrainval_11-May-2012.tar")
    expected = resource.archives[0].checksums["md5"]
    with pytest.raises(FetchError) as raised:
        fetch_dataset(resource, tmp_path, progress=False)
    message = str(raised.value)
    assert "VOCtrainval_11-May-2012.tar" in message and f"expected {expected}" in message
    actual = hashlib.md5(_corrupted(state.files["VOCtrainval_11-May-2012.tar"])).hexdigest()
    assert f"got {actual}" in message
    assert list(tmp_path.iterdir()) == []  # no destination folder, no part file, no marker


def test_existing_unverified_folder_is_never_overwritten(server: tuple[str, ServerState], tmp_path: Path) -> None:
    url, state = server
    resource = voc_resource(url, state)
    (tmp_path / "VOCdevkit").mkdir()
    with pytest.raises(FetchError, match="not overwritten"):
        fetch_dataset(resource, tmp_path, progress=False)
    assert state.requests == []


def _coco_archives() -> dict[str, bytes]:
    annotations = {"images": [{"id": 1, "file_name": "000000000001.jpg", "height": 4, "width": 4}],
                   "annotations": [], "categories": [{"id": 1, "name": "person"}]}
    return {
        "annotations_trainval2017.zip": _zip({"annotations/instances_train2017.json": json.dumps(annotations).encode(),
                                              "annotations/instances_val2017.json": json.dumps(annotations).encode()}),
        "val2017.zip": _zip({"val2017/000000000002.jpg": _noise(2000, 4)}),
        "train2017.zip": _zip({"train2017/000000000001.jpg": _noise(2000, 5)}),
    }


def test_cli_fetches_coco_through_a_mirror_and_writes_the_config(
    server: tuple[str, ServerState], tmp_path: Path, capsys: pytest.CaptureFixture[str], repo_root: Path
) -> None:
    url, state = server
    archives = _coco_archives()
    state.files.update({f"mirror/{name}": body for name, body in archives.items()})
    table = yaml.safe_load((repo_root / "resources" / "datasets.yaml").read_text())
    for entry in table["datasets"]["coco"]["archives"]:  # the real table's names, these archives' sums
        entry["md5"] = hashlib.md5(archives[entry["name"]]).hexdigest()
        entry["size"] = len(archives[entry["name"]])
    resources = tmp_path / "datasets.yaml"
    resources.write_text(yaml.safe_dump(table))
    written = tmp_path / "coco-paths.yaml"
    root = tmp_path / "data"
    arguments = ["data", "fetch", "coco", "--root", str(root), "--resources", str(resources), "--mirror",
                 f"{url}/mirror/", "--write-config", str(written), "--no-progress"]
    assert main(arguments) == 0
    assert "irn run --config config/coco.yaml --config" in capsys.readouterr().out
    assert sorted(path for path, _, _ in state.requests) == sorted(f"mirror/{name}" for name in archives)
    overlay = yaml.safe_load(written.read_text())["dataset"]
    assert overlay == {"root": str((root / "train2017").resolve()),
                       "annotation_file": str((root / "annotations" / "instances_train2017.json").resolve())}
    assert main(["show-config", "--config", str(repo_root / "config" / "coco.yaml"), "--config", str(written)]) == 0
    merged = yaml.safe_load(capsys.readouterr().out)
    assert merged["dataset"]["root"] == overlay["root"] and merged["name"] == "coco"


def test_the_real_table_lists_md5_and_size_of_every_archive() -> None:
    table = load_resources()
    assert set(table) >= {"voc12", "sbd", "coco"}
    for resource in table.values():
        for archive in resource.archives:
            assert len(archive.checksums["md5"]) == 32 and archive.size and archive.url.startswith("http")
    assert table["voc12"].expected_ids["train_aug"] == 10582
