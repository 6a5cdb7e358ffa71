"""The HTML report of a fabricated run: valid HTML whose every image exists, is not blank and has
its stated size; panels equal to the stored HDF5 content; downstream products picked up from their
shard files; precision-recall curves consistent with the evaluation's AP; selection of the best,
median and worst images; rendering in headless Chromium without console errors."""

from __future__ import annotations

import base64
import io
import json
import shutil
import socket
import subprocess
import time
import urllib.request
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from report_fabrication import FabricatedRun

from irn_core import evaluation
from irn_core.report import colours
from irn_core.report.page import read_benchmarks, write_report
from irn_core.report.scores import image_miou, select_images
from irn_core.steps.common import open_run_dataset
from irn_core.store import ShardedStore

VOID_ELEMENTS = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}


class StrictParser(HTMLParser):
    """Collects images and links; fails on unclosed or mismatched tags."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.stack: list[str] = []
        self.images: list[dict[str, str]] = []
        self.links: list[str] = []
        self.ids: list[str] = []
        self.problems: list[str] = []
        self.doctype = False

    def handle_decl(self, declaration: str) -> None:
        self.doctype = declaration.lower() == "doctype html"

    def handle_starttag(self, tag: str, attributes: list[tuple[str, str | None]]) -> None:
        values = {name: value or "" for name, value in attributes}
        if "id" in values:
            self.ids.append(values["id"])
        if tag == "img":
            self.images.append(values)
        if tag == "a":
            self.links.append(values.get("href", ""))
        if tag not in VOID_ELEMENTS:
            self.stack.append(tag)

    def handle_endtag(self, tag: str) -> None:
        if not self.stack or self.stack[-1] != tag:
            self.problems.append(f"</{tag}> closes {self.stack[-1] if self.stack else 'nothing'}")
            return
        self.stack.pop()


@pytest.fixture(scope="module")
def report(fabricated: FabricatedRun) -> tuple[FabricatedRun, Path]:
    run = fabricated
    role_ids = {"infer": run.plan.all_ids("infer"), "val": run.plan.all_ids("val")}
    page = write_report(run.config, open_run_dataset(run.config), role_ids, run.run_dir / "report")
    return run, page


def parse(page: Path) -> StrictParser:
    parser = StrictParser()
    parser.feed(page.read_text(encoding="utf-8"))
    parser.close()
    return parser


def test_page_is_valid_html_and_every_image_exists_with_its_size(report: tuple[FabricatedRun, Path]) -> None:
    run, page = report
    parser = parse(page)
    assert parser.doctype and not parser.problems and not parser.stack
    assert len(parser.ids) == len(set(parser.ids))
    assert len(parser.images) > 30
    dataset = open_run_dataset(run.config)
    for attributes in parser.images:
        path = page.parent / attributes["src"]
        assert path.is_file(), attributes["src"]
        assert attributes["alt"]
        with Image.open(path) as image:
            image.load()
            assert image.format == "PNG"
            assert image.size == (int(attributes["width"]), int(attributes["height"])), attributes["src"]
            pixels = np.asarray(image.convert("RGB"))
        assert pixels.std() > 0, f"{attributes['src']} is blank"
        parts = Path(attributes["src"]).parts
        if parts[0] == "images" and len(parts) == 3:  # a panel: the image's own size
            assert pixels.shape[:2] == dataset.image_size(parts[1]), attributes["src"]
    for link in parser.links:
        assert (page.parent / link).is_file(), link
    # nothing left beside the report but the report
    assert not [path for path in page.parent.parent.iterdir() if path.name.startswith(".report")]


def test_panels_equal_the_stored_products(report: tuple[FabricatedRun, Path]) -> None:
    run, page = report
    palette = colours.palette_array()
    dataset = open_run_dataset(run.config)
    folders = sorted(path for path in (page.parent / "images").iterdir() if path.is_dir())
    checked = 0
    for folder in folders:
        image_id = folder.name
        with ShardedStore(sorted((run.run_dir / "instances").glob("*.h5")), product="instances") as store:
            if image_id not in store:
                continue
            stored = store.read(image_id)
        instance_panel = np.asarray(Image.open(folder / "instances.png").convert("RGB"))
        covered = np.zeros(instance_panel.shape[:2], bool)
        for index in np.argsort(stored["scores"], kind="stable")[::-1]:  # most confident drawn last: on top
            visible = stored["masks_s1"][index] & ~covered
            assert np.all(instance_panel[visible] == palette[index + 1]), (image_id, index)
            covered |= stored["masks_s1"][index]
        assert np.all(instance_panel[~covered] == 0)
        with ShardedStore(sorted((run.run_dir / "semantic").glob("*.h5")), product="semantic") as store:
            semantic = store.read(image_id)["semantic_s1"]
        np.testing.assert_array_equal(np.asarray(Image.open(folder / "semantic.png").convert("RGB")), palette[semantic])
        truth = np.asarray(Image.open(folder / "ground-truth-semantic.png").convert("RGB"))
        np.testing.assert_array_equal(truth, palette[dataset.semantic_mask(image_id)])
        np.testing.assert_array_equal(np.asarray(Image.open(folder / "image.png")), dataset.image(image_id))
        with ShardedStore(sorted((run.run_dir / "cam").glob("*.h5")), product="cam") as store:
            class_ids = store.read(image_id, ["class_ids"])["class_ids"]
        assert sorted(path.name for path in folder.glob("cam-*.png")) == sorted(f"cam-{k}.png" for k in class_ids)
        checked += 1
    assert checked >= 3


def test_downstream_products_appear_with_their_panels(report: tuple[FabricatedRun, Path]) -> None:
    run, page = report
    text = page.read_text(encoding="utf-8")
    assert "Downstream models (val split)" in text
    palette = colours.palette_array()
    val_ids = run.plan.all_ids("val")
    shown = [image_id for image_id in val_ids if (page.parent / "images" / image_id).is_dir()]
    assert shown
    for image_id in shown:
        folder = page.parent / "images" / image_id
        assert {"deeplab_pseudo.png", "deeplab_ground_truth.png", "maskrcnn.png"} <= {p.name for p in folder.iterdir()}
        assert not (folder / "semantic.png").exists()  # pseudo labels are not made for val ids here
        with ShardedStore(sorted((run.run_dir / "maskrcnn").glob("*.h5")), product="maskrcnn") as store:
            stored = store.read(image_id)
        panel = np.asarray(Image.open(folder / "maskrcnn.png").convert("RGB"))
        low = int(np.argmin(stored["scores"]))
        assert stored["scores"][low] < run.config.report.detection_score_threshold
        only_low = stored["masks_s1"][low] & ~stored["masks_s1"][np.arange(len(stored["scores"])) != low].any(axis=0)
        assert np.all(panel[only_low] == 0)  # the low-score detection is not drawn
        for index in np.flatnonzero(stored["scores"] >= 0.5):
            assert np.all(panel[stored["masks_s1"][index]] == palette[index + 1])
    assert "deeplab_pseudo" in text and "Precision-recall curves: maskrcnn" in text


def test_precision_recall_curves_carry_the_evaluation_ap(report: tuple[FabricatedRun, Path]) -> None:
    run, _ = report
    from irn_core.report.scores import precision_recall_curves

    dataset = open_run_dataset(run.config)
    accumulator = evaluation.InstanceAPAccumulator(len(dataset.class_names), run.config.evaluation.iou_thresholds)
    predicted_masks, predicted_classes, predicted_scores, truth_masks, truth_classes = [], [], [], [], []
    with ShardedStore(sorted((run.run_dir / "maskrcnn").glob("*.h5")), product="maskrcnn") as store:
        for image_id in run.plan.all_ids("val"):
            stored = store.read(image_id)
            masks, classes = dataset.instance_masks(image_id)
            accumulator.add(stored["masks_s1"], stored["class_ids"], stored["scores"], masks, classes)
            predicted_masks.append(stored["masks_s1"])
            predicted_classes.append(stored["class_ids"])
            predicted_scores.append(stored["scores"])
            truth_masks.append(masks)
            truth_classes.append(classes)
    curves = precision_recall_curves(accumulator)
    for threshold, per_class in curves.items():
        expected, expected_map = evaluation.instance_ap(
            predicted_masks, predicted_classes, predicted_scores, truth_masks, truth_classes,
            iou_threshold=threshold, num_classes=len(dataset.class_names),
        )
        for class_index, curve in enumerate(per_class):
            if curve is None:
                assert np.isnan(expected[class_index])
                continue
            precision, recall, ap = curve
            assert len(precision) == len(recall) and np.all(np.diff(recall) >= 0)
            assert ap == pytest.approx(expected[class_index])
    # the fabricated detector finds every instance; its one false detection (class 0, low score) comes last
    precision, recall, _ = curves[0.5][0]
    assert recall[-1] == 1.0 and precision[-1] < 1.0


def test_best_median_worst_follow_the_per_image_miou(report: tuple[FabricatedRun, Path]) -> None:
    run, page = report
    dataset = open_run_dataset(run.config)
    scores = {}
    with ShardedStore(sorted((run.run_dir / "semantic").glob("*.h5")), product="semantic") as store:
        for image_id in run.plan.all_ids("infer"):
            prediction = store.read(image_id)["semantic_s1"]
            truth = dataset.semantic_mask(image_id)
            valid = truth != 255
            ious = []
            for label in np.union1d(np.unique(prediction[valid]), np.unique(truth[valid])):
                intersection = np.sum((prediction == label) & (truth == label) & valid)
                union = np.sum(((prediction == label) | (truth == label)) & valid)
                ious.append(intersection / union)
            scores[image_id] = float(np.mean(ious))
            assert image_miou(prediction, truth, len(dataset.class_names) + 1) == pytest.approx(scores[image_id])
    ranked = sorted(scores, key=lambda image_id: (-scores[image_id], image_id))
    text = page.read_text(encoding="utf-8")
    for reason, image_id in (("best", ranked[0]), ("median", ranked[len(ranked) // 2]), ("worst", ranked[-1])):
        assert f"{image_id} ({reason}, semantic pseudo label mIoU {100 * scores[image_id]:.1f}%)" in text
    selections = select_images(list(scores), scores, random_count=2, seed=0)
    assert [s.reason for s in selections] == ["best", "median", "worst", "random", "random"]
    assert len({s.image_id for s in selections}) == 5
    assert select_images(list(scores), scores, random_count=2, seed=0) == selections  # seeded
    assert len(select_images(["a", "b"], {"a": 0.5, "b": 0.5}, random_count=5, seed=1)) == 2


def test_benchmarks_sum_per_rule(report: tuple[FabricatedRun, Path]) -> None:
    run, page = report
    costs = read_benchmarks(run.run_dir / "benchmarks")
    assert costs.loc["make_cam", "jobs"] == 2 and costs.loc["make_cam", "seconds"] == pytest.approx(90.0)
    assert costs.loc["make_cam", "peak_rss_mib"] == pytest.approx(900.5)
    assert costs.loc["train_cam", "cpu_seconds"] == pytest.approx(190.1)
    assert "<b>192.5</b>" in page.read_text(encoding="utf-8")


def test_metrics_of_every_stage_are_in_the_table(report: tuple[FabricatedRun, Path]) -> None:
    run, page = report
    text = page.read_text(encoding="utf-8")
    for stage_file in (run.run_dir / "evaluation").glob("*.json"):
        assert f">{stage_file.stem}</td>" in text
        for name, value in json.loads(stage_file.read_text()).items():
            if name != "images" and isinstance(value, (int, float)):  # the CAM threshold curve is a chart
                assert f">{name}</td><td>{100 * value:.1f}</td>" in text
    assert ">best_threshold_mIoU</td><td>100.0</td>" in text


def test_cam_threshold_curve_chart(report: tuple[FabricatedRun, Path]) -> None:
    run, page = report
    text = page.read_text(encoding="utf-8")
    assert "CAM mIoU against the background threshold" in text
    chart = page.parent / "charts" / "threshold-cam_thresholds.png"
    with Image.open(chart) as image:
        pixels = np.asarray(image.convert("RGB"))
    assert 'src="charts/threshold-cam_thresholds.png"' in text
    assert pixels.std() > 10  # not blank


# ------------------------------------------------------------------------------------------ Chromium

CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]


class WebDriver:
    """The few W3C WebDriver calls the test needs, over HTTP to a local chromedriver."""

    def __init__(self, driver: str, chromium: str, profile: Path) -> None:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        self.base = f"http://127.0.0.1:{port}"
        self.process = subprocess.Popen([driver, f"--port={port}"], stdout=subprocess.DEVNULL,
                                        stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 30
        while True:
            try:
                if self.call("GET", "/status")["value"]["ready"]:
                    break
            except OSError:
                if time.monotonic() > deadline:
                    self.process.kill()
                    raise
                time.sleep(0.1)
        arguments = [*CHROMIUM_FLAGS, f"--user-data-dir={profile}", "--window-size=1400,1000"]
        options = {"binary": chromium, "args": arguments}
        capabilities = {"browserName": "chrome", "goog:chromeOptions": options, "goog:loggingPrefs": {"browser": "ALL"}}
        created = self.call("POST", "/session", {"capabilities": {"alwaysMatch": capabilities}})
        self.session = created["value"]["sessionId"]

    def call(self, method: str, path: str, body: object = None) -> dict:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.base + path, data=data, method=method,
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=120) as response:
            return json.loads(response.read())

    def session_call(self, method: str, path: str, body: object = None) -> object:
        return self.call(method, f"/session/{self.session}{path}", body)["value"]

    def close(self) -> None:
        try:
            self.call("DELETE", f"/session/{self.session}")
        finally:
            self.process.terminate()
            self.process.wait(timeout=30)


def test_page_renders_in_headless_chromium(report: tuple[FabricatedRun, Path], tmp_path: Path) -> None:
    _, page = report
    chromium, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if chromium is None or driver is None:
        pytest.skip("Debian's chromium and chromium-driver are not installed (.ci/run installs them with apt-get)")
    browser = WebDriver(driver, chromium, tmp_path / "profile")
    try:
        browser.session_call("POST", "/url", {"url": page.resolve().as_uri()})
        images = browser.session_call("POST", "/execute/sync", {
            "script": "return Array.from(document.images).map(i => [i.getAttribute('src'), i.complete, "
                      "i.naturalWidth, i.naturalHeight, i.getBoundingClientRect().height])",
            "args": []})
        logs = browser.session_call("POST", "/se/log", {"type": "browser"})
        shot = browser.session_call("POST", "/goog/cdp/execute", {
            "cmd": "Page.captureScreenshot", "params": {"format": "png", "captureBeyondViewport": True}})
    finally:
        browser.close()
    assert images and all(complete and width > 0 and height > 0 and shown > 0
                          for _, complete, width, height, shown in images), images
    errors = [entry for entry in logs if entry["level"] in ("SEVERE", "WARNING")]
    assert not errors, errors
    screenshot = Image.open(io.BytesIO(base64.b64decode(shot["data"]))).convert("RGB")
    (tmp_path / "screenshot.png").write_bytes(base64.b64decode(shot["data"]))
    pixels = np.asarray(screenshot)
    assert screenshot.size[0] >= 1000 and screenshot.size[1] > 2000  # the whole page, not one screen
    assert pixels.std() > 20 and len(np.unique(pixels.reshape(-1, 3), axis=0)) > 500
