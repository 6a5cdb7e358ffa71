"""VOC 2012 + SBD reader on the real samples and on generated VOC/SBD-layout folders."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import scipy.io
from PIL import Image

from irn_core.data.classes import VOC_CLASSES
from irn_core.data.palette import write_indexed_png
from irn_core.data.voc import VOCDataset, read_id_list
from irn_core.errors import DatasetError

HEIGHT, WIDTH = 8, 10

# ---------------------------------------------------------------------------------------------- real samples


@pytest.fixture(scope="module")
def real_voc(real_samples: Path) -> VOCDataset:
    return VOCDataset(real_samples / "voc")


def test_real_split_and_images(real_voc: VOCDataset) -> None:
    assert real_voc.class_names == list(VOC_CLASSES)
    assert real_voc.ids("val") == ["2007_000063", "2011_000003", "2011_000006", "2011_000025"]
    assert real_voc.available_splits() == ["val"]
    for image_id in real_voc.ids("val"):
        image = real_voc.image(image_id)
        assert image.dtype == np.uint8 and image.shape[2] == 3
        assert image.shape[:2] == real_voc.image_size(image_id)


def test_real_labels_from_xml_and_from_masks(real_voc: VOCDataset) -> None:
    # 2007_000063.xml names a dog and a chair: VOC ids 11 and 8.
    np.testing.assert_array_equal(real_voc.class_labels("2007_000063"), [8, 11])
    # No XML for the others: labels from SegmentationClass (values k + 1).
    np.testing.assert_array_equal(real_voc.class_labels("2011_000003"), [4, 14])  # bottle, person
    np.testing.assert_array_equal(real_voc.class_labels("2011_000006"), [8, 14, 17])  # chair, person, sofa
    np.testing.assert_array_equal(real_voc.class_labels("2011_000025"), [5, 6])  # bus, car
    for image_id in real_voc.ids("val"):
        labels = real_voc.class_labels(image_id)
        assert labels.dtype == np.int64
        semantic = real_voc.semantic_mask(image_id)
        from_mask = sorted({int(value) - 1 for value in np.unique(semantic) if value not in (0, 255)})
        assert labels.tolist() == from_mask


def test_real_instances_follow_the_chainercv_rule(real_voc: VOCDataset, real_samples: Path) -> None:
    expected_classes = {
        "2007_000063": [11, 8],  # instance 1 dog, instance 2 chair
        "2011_000003": [14, 14, 4],
        "2011_000006": [14, 14, 14, 8, 14, 17],  # instance ids 1..5 and 7 (6 unused)
        "2011_000025": [5, 5, 6],
    }
    for image_id, classes in expected_classes.items():
        masks, class_ids = real_voc.instance_masks(image_id)
        assert masks.dtype == bool and class_ids.dtype == np.int64
        assert class_ids.tolist() == classes
        objects = np.asarray(Image.open(real_samples / "voc" / "SegmentationObject" / f"{image_id}.png"))
        semantic = real_voc.semantic_mask(image_id)
        # Instances are disjoint and cover exactly the object pixels (not background, not void).
        assert masks.sum(axis=0).max() == 1
        np.testing.assert_array_equal(masks.any(axis=0), (objects != 0) & (objects != 255))
        for mask, class_id in zip(masks, class_ids):
            assert (semantic[mask] == class_id + 1).all()


# ---------------------------------------------------------------------------------------------- generated layout

CLASSES = ["cat", "dog", "cow"]


def write_jpeg(path: Path, height: int = HEIGHT, width: int = WIDTH) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = (np.arange(height * width * 3) % 251).astype(np.uint8).reshape(height, width, 3)
    Image.fromarray(pixels).save(path, quality=90)


def write_xml(path: Path, objects: list[tuple[str, int]], parts: tuple[str, ...] = ()) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    body = ""
    for name, difficult in objects:
        part_text = "".join(f"<part><name>{part}</name></part>" for part in parts)
        body += f"<object><name>{name}</name><difficult>{difficult}</difficult>{part_text}</object>"
    path.write_text(f"<annotation><filename>x.jpg</filename>{body}</annotation>")


def write_list(path: Path, ids: list[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"{image_id}\n" for image_id in ids))


def class_map() -> np.ndarray:
    """cat (1) on the left, cow (3) on the right, void (255) between them."""
    labels = np.zeros((HEIGHT, WIDTH), dtype=np.uint8)
    labels[1:5, 1:4] = 1
    labels[1:5, 4] = 255
    labels[2:7, 6:9] = 3
    return labels


def object_map() -> np.ndarray:
    objects = np.zeros((HEIGHT, WIDTH), dtype=np.uint8)
    objects[1:5, 1:4] = 1
    objects[1:5, 4] = 255
    objects[2:7, 6:9] = 2
    return objects


def save_sbd(sbd: Path, image_id: str, segmentation: np.ndarray, instances: np.ndarray, categories: list[int]) -> None:
    (sbd / "cls").mkdir(parents=True, exist_ok=True)
    (sbd / "inst").mkdir(parents=True, exist_ok=True)
    scipy.io.savemat(
        sbd / "cls" / f"{image_id}.mat",
        {"GTcls": {"Segmentation": segmentation, "Boundaries": np.zeros(3), "CategoriesPresent": np.unique(segmentation)}},
    )
    scipy.io.savemat(
        sbd / "inst" / f"{image_id}.mat",
        {"GTinst": {"Segmentation": instances, "Categories": np.array(categories, dtype=np.uint8), "Boundaries": np.zeros(3)}},
    )


@pytest.fixture()
def layout(tmp_path: Path) -> tuple[Path, Path]:
    """A VOC root with classes.txt and an SBD root.

    - v_xml: JPEG, XML (cat difficult + dog, with a 'head' part), VOC class + object PNGs.
    - v_mask: JPEG, VOC class + object PNGs, no XML.
    - s_only: JPEG, SBD cls/inst only (one dog instance, so GTinst.Categories is a scalar once loaded).
    - s_two: JPEG, SBD cls/inst with two instances (cow, cat).
    - a_aug: JPEG, SegmentationClassAug PNG only.
    """
    root, sbd = tmp_path / "VOC2012", tmp_path / "sbd"
    (root / "classes.txt").parent.mkdir(parents=True)
    (root / "classes.txt").write_text("\n".join(CLASSES) + "\n")
    for image_id in ("v_xml", "v_mask", "s_only", "s_two", "a_aug"):
        write_jpeg(root / "JPEGImages" / f"{image_id}.jpg")
    write_xml(root / "Annotations" / "v_xml.xml", [("cat", 1), ("dog", 0)], parts=("head",))
    for image_id in ("v_xml", "v_mask"):
        write_indexed_png(root / "SegmentationClass" / f"{image_id}.png", class_map())
        write_indexed_png(root / "SegmentationObject" / f"{image_id}.png", object_map())
    one = np.zeros((HEIGHT, WIDTH), dtype=np.uint8)
    one[3:6, 2:7] = 1
    save_sbd(sbd, "s_only", one * 2, one, [2])
    two_instances = np.zeros((HEIGHT, WIDTH), dtype=np.uint8)
    two_instances[0:3, 0:3] = 1
    two_instances[5:8, 5:9] = 2
    two_classes = np.select([two_instances == 1, two_instances == 2], [3, 1], 0).astype(np.uint8)
    save_sbd(sbd, "s_two", two_classes, two_instances, [3, 1])
    aug = np.zeros((HEIGHT, WIDTH), dtype=np.uint8)
    aug[4:, :] = 2
    write_indexed_png(root / "SegmentationClassAug" / "a_aug.png", aug)
    splits = root / "ImageSets" / "Segmentation"
    write_list(splits / "train.txt", ["v_xml", "t_only"])
    write_list(splits / "val.txt", ["v_mask", "s_two"])
    write_list(splits / "trainval.txt", ["v_xml", "t_only", "v_mask", "s_two"])
    write_list(sbd / "train.txt", ["s_only", "v_mask", "x_1"])
    write_list(sbd / "val.txt", ["s_two", "x_2"])
    return root, sbd


def test_class_names_from_classes_txt_or_argument(layout: tuple[Path, Path]) -> None:
    root, _ = layout
    assert VOCDataset(root).class_names == CLASSES
    assert VOCDataset(root, class_names=["a", "b", "c", "d"]).class_names == ["a", "b", "c", "d"]
    (root / "classes.txt").unlink()
    assert VOCDataset(root).class_names == list(VOC_CLASSES)


def test_xml_labels_count_difficult_objects_and_skip_parts(layout: tuple[Path, Path]) -> None:
    root, _ = layout
    dataset = VOCDataset(root)
    # XML: cat (difficult) + dog -> [0, 1], although the masks show cat and cow: the XML wins, as in the reference.
    np.testing.assert_array_equal(dataset.class_labels("v_xml"), [0, 1])
    np.testing.assert_array_equal(dataset.class_labels("v_mask"), [0, 2])


def test_xml_naming_unknown_class_raises(layout: tuple[Path, Path]) -> None:
    root, _ = layout
    write_xml(root / "Annotations" / "v_xml.xml", [("cat", 0), ("unicorn", 0)])
    with pytest.raises(DatasetError, match=r"v_xml\.xml \(image id v_xml\): object 2 names unknown class 'unicorn'"):
        VOCDataset(root).class_labels("v_xml")
    (root / "Annotations" / "v_xml.xml").write_text("<annotation><object>")
    with pytest.raises(DatasetError, match=r"v_xml\.xml \(image id v_xml\): unreadable XML"):
        VOCDataset(root).class_labels("v_xml")


def test_splits_and_duplicate_ids(layout: tuple[Path, Path]) -> None:
    root, sbd = layout
    dataset = VOCDataset(root, sbd_root=sbd)
    assert dataset.ids("trainval") == ["v_xml", "t_only", "v_mask", "s_two"]
    assert dataset.available_splits() == ["train", "train_aug", "trainval", "val"]
    with pytest.raises(DatasetError, match="split 'test' not found"):
        dataset.ids("test")
    write_list(root / "ImageSets" / "Segmentation" / "val.txt", ["v_mask", "s_two", "v_mask"])
    with pytest.raises(DatasetError, match=r"val\.txt:3: image id v_mask listed twice \(first on line 1\)"):
        VOCDataset(root).ids("val")
    (root / "ImageSets" / "Segmentation" / "val.txt").write_text("v_mask extra\n")
    with pytest.raises(DatasetError, match="one image id per line"):
        read_id_list(root / "ImageSets" / "Segmentation" / "val.txt")


def test_train_aug_from_sbd_lists(layout: tuple[Path, Path]) -> None:
    root, sbd = layout
    # (SBD train {s_only, v_mask, x_1} ∪ SBD val {s_two, x_2} ∪ VOC train {v_xml, t_only}) − VOC val {v_mask, s_two}.
    assert VOCDataset(root, sbd_root=sbd).ids("train_aug") == ["s_only", "t_only", "v_xml", "x_1", "x_2"]
    # The SBD release folder (holding dataset/) is accepted too.
    release = sbd.parent / "benchmark_RELEASE"
    release.mkdir()
    sbd.rename(release / "dataset")
    assert VOCDataset(root, sbd_root=release).ids("train_aug") == ["s_only", "t_only", "v_xml", "x_1", "x_2"]


def test_train_aug_from_augmented_folder_then_list_file(layout: tuple[Path, Path]) -> None:
    root, _ = layout
    aug = root / "SegmentationClassAug"
    for image_id in ("v_mask", "s_only", "s_two"):
        write_indexed_png(aug / f"{image_id}.png", np.zeros((HEIGHT, WIDTH), np.uint8))
    # Aug ids {a_aug, v_mask, s_only, s_two} ∪ VOC train {v_xml, t_only} − VOC val {v_mask, s_two}.
    assert VOCDataset(root).ids("train_aug") == ["a_aug", "s_only", "t_only", "v_xml"]
    for path in aug.glob("*.png"):
        path.unlink()
    aug.rmdir()
    with pytest.raises(DatasetError, match="cannot form split 'train_aug'"):
        VOCDataset(root).ids("train_aug")
    write_list(root / "ImageSets" / "Segmentation" / "train_aug.txt", ["v_xml", "s_only"])
    assert VOCDataset(root).ids("train_aug") == ["v_xml", "s_only"]


def test_semantic_mask_sources_and_precedence(layout: tuple[Path, Path]) -> None:
    root, sbd = layout
    dataset = VOCDataset(root, sbd_root=sbd)
    np.testing.assert_array_equal(dataset.semantic_mask("v_mask"), class_map())
    aug = dataset.semantic_mask("a_aug")
    assert aug.dtype == np.uint8 and set(np.unique(aug).tolist()) == {0, 2}
    sbd_mask = dataset.semantic_mask("s_two")
    assert sbd_mask.dtype == np.uint8 and set(np.unique(sbd_mask).tolist()) == {0, 1, 3}
    assert sbd_mask[0, 0] == 3 and sbd_mask[6, 6] == 1
    np.testing.assert_array_equal(dataset.class_labels("s_two"), [0, 2])
    # SegmentationClassAug wins over SBD, SegmentationClass over both.
    write_indexed_png(root / "SegmentationClassAug" / "s_two.png", np.full((HEIGHT, WIDTH), 2, np.uint8))
    assert (dataset.semantic_mask("s_two") == 2).all()
    write_indexed_png(root / "SegmentationClass" / "s_two.png", np.full((HEIGHT, WIDTH), 1, np.uint8))
    assert (dataset.semantic_mask("s_two") == 1).all()
    with pytest.raises(DatasetError, match="image id nothing: no class map found"):
        dataset.semantic_mask("nothing")


def test_instances_from_voc_pngs_and_sbd(layout: tuple[Path, Path]) -> None:
    root, sbd = layout
    dataset = VOCDataset(root, sbd_root=sbd)
    masks, class_ids = dataset.instance_masks("v_mask")
    assert masks.shape == (2, HEIGHT, WIDTH) and class_ids.tolist() == [0, 2]
    np.testing.assert_array_equal(masks[0], object_map() == 1)
    np.testing.assert_array_equal(masks[1], object_map() == 2)
    masks, class_ids = dataset.instance_masks("s_only")  # one instance: Categories loads as a scalar
    assert masks.shape == (1, HEIGHT, WIDTH) and class_ids.tolist() == [1]
    assert masks[0].sum() == 15
    masks, class_ids = dataset.instance_masks("s_two")
    assert class_ids.tolist() == [2, 0]
    assert masks[0][:3, :3].all() and masks[0].sum() == 9 and masks[1].sum() == 12
    with pytest.raises(DatasetError, match="image id a_aug: no instance annotation found"):
        dataset.instance_masks("a_aug")


def test_instance_over_background_raises(layout: tuple[Path, Path]) -> None:
    root, _ = layout
    objects = object_map()
    objects[7, 0] = 3  # an instance where the class map says background
    write_indexed_png(root / "SegmentationObject" / "v_mask.png", objects)
    with pytest.raises(DatasetError, match=r"v_mask\.png \(image id v_mask\): instance 3 covers background"):
        VOCDataset(root).instance_masks("v_mask")


def test_mask_size_differing_from_image_raises(layout: tuple[Path, Path]) -> None:
    root, sbd = layout
    write_indexed_png(root / "SegmentationClass" / "v_mask.png", np.zeros((HEIGHT + 1, WIDTH), np.uint8))
    dataset = VOCDataset(root, sbd_root=sbd)
    with pytest.raises(DatasetError, match=r"v_mask\.png \(image id v_mask\): mask size \(9, 10\) differs from image size \(8, 10\)"):
        dataset.semantic_mask("v_mask")
    with pytest.raises(DatasetError, match="differs from image size"):
        dataset.instance_masks("v_mask")
    write_jpeg(root / "JPEGImages" / "s_two.jpg", HEIGHT, WIDTH + 2)
    with pytest.raises(DatasetError, match=r"s_two\.mat \(image id s_two\): mask size"):
        dataset.semantic_mask("s_two")


def test_missing_image_and_bad_class_values(layout: tuple[Path, Path]) -> None:
    root, _ = layout
    (root / "JPEGImages" / "v_mask.jpg").unlink()
    dataset = VOCDataset(root)
    with pytest.raises(DatasetError, match=r"v_mask\.jpg \(image id v_mask\): image file is missing"):
        dataset.image("v_mask")
    with pytest.raises(DatasetError, match="image file is missing"):
        dataset.semantic_mask("v_mask")
    bad = class_map()
    bad[0, 0] = 7  # only 3 classes
    write_indexed_png(root / "SegmentationClass" / "v_xml.png", bad)
    with pytest.raises(DatasetError, match=r"v_xml\.png \(image id v_xml\): class map holds values \[7\]"):
        dataset.semantic_mask("v_xml")


def test_missing_root_raises(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="VOC root folder does not exist"):
        VOCDataset(tmp_path / "absent")
