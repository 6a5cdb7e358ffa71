"""Dense CRF and confident-region (IR) labels on tiny images."""

from __future__ import annotations

import numpy as np
import pytest

import irn_core.ir_labels
from irn_core.crf import dense_crf_labels
from irn_core.errors import InputError
from irn_core.ir_labels import confident_region_labels, foreground_thresholds


def _three_band_image() -> np.ndarray:
    """24×36 image: red | green | blue vertical bands of 12 columns."""
    image = np.zeros((24, 36, 3), dtype=np.uint8)
    image[:, :12, 0] = 220
    image[:, 12:24, 1] = 220
    image[:, 24:, 2] = 220
    return image


def test_crf_keeps_labels_that_follow_the_image_and_fixes_a_stray_pixel() -> None:
    image = _three_band_image()
    labels = np.zeros((24, 36), dtype=np.int64)
    labels[:, 12:24] = 1
    labels[:, 24:] = 2
    noisy = labels.copy()
    noisy[5, 5] = 2  # a single wrong pixel inside the red band
    refined = dense_crf_labels(image, noisy, 3)
    assert refined.shape == (24, 36)
    np.testing.assert_array_equal(refined, labels)


def test_crf_matches_pydensecrf_called_as_the_reference() -> None:
    import pydensecrf.densecrf as densecrf
    from pydensecrf.utils import unary_from_labels

    generator = np.random.default_rng(0)
    image = (generator.random((10, 14, 3)) * 255).astype(np.uint8)
    labels = generator.integers(0, 3, size=(10, 14))
    crf = densecrf.DenseCRF2D(14, 10, 3)
    crf.setUnaryEnergy(unary_from_labels(labels, 3, gt_prob=0.7, zero_unsure=False))
    crf.addPairwiseGaussian(sxy=3, compat=3)
    crf.addPairwiseBilateral(sxy=50, srgb=5, rgbim=np.ascontiguousarray(np.copy(image)), compat=10)
    expected = np.argmax(np.array(crf.inference(10)).reshape((3, 10, 14)), axis=0)
    np.testing.assert_array_equal(dense_crf_labels(image, labels, 3), expected)


def test_combination_rule_without_crf(monkeypatch: pytest.MonkeyPatch) -> None:
    """With the CRF replaced by the identity, the rule is visible pixel by pixel."""
    monkeypatch.setattr(irn_core.ir_labels, "dense_crf_labels", lambda image, labels, n_labels, **_: labels)
    cams = np.array(
        [
            [[0.9, 0.3, 0.2, 0.05, 0.01, 0.0]],  # class 4
            [[0.1, 0.1, 0.1, 0.0, 0.0, 0.5]],  # class 11
        ],
        dtype=np.float32,
    )
    labels = confident_region_labels(np.zeros((1, 6, 3), np.uint8), cams, [4, 11])
    # ≥ 0.30 (strictly above: a tie goes to the background) → class; > 0.05 → unknown; else background
    np.testing.assert_array_equal(labels, [[5, 255, 255, 0, 0, 12]])
    assert labels.dtype == np.uint8


def test_ir_labels_on_a_tiny_image() -> None:
    image = _three_band_image()
    cams = np.zeros((1, 24, 36), dtype=np.float32)
    cams[0, :, :12] = 0.9  # confident foreground on the red band
    cams[0, :, 12:24] = 0.15  # between the thresholds on the green band
    labels = confident_region_labels(image, cams, [6])
    assert labels.shape == (24, 36) and labels.dtype == np.uint8
    assert np.all(labels[:, :12] == 7)
    assert np.all(labels[:, 12:24] == 255)
    assert np.all(labels[:, 24:] == 0)


def test_otsu_rule_keeps_only_the_high_part_of_a_cam_spread_over_the_scene(monkeypatch: pytest.MonkeyPatch) -> None:
    """``fg_threshold_rule="otsu"``, CRF replaced by the identity: per channel, the larger of 0.30 and Otsu's cut."""
    monkeypatch.setattr(irn_core.ir_labels, "dense_crf_labels", lambda image, labels, n_labels, **_: labels)
    spread = np.full((1, 10), 0.35, np.float32)
    spread[0, :4] = 0.95  # the object's peak; the scene at 0.35, above the fixed threshold
    narrow = np.zeros((1, 10), np.float32)
    narrow[0, 6:] = 0.2  # every value under 0.30: Otsu's cut (0.01) is raised to 0.30
    cams = np.stack([spread, narrow])
    thresholds = foreground_thresholds(cams, 0.30, "otsu")
    np.testing.assert_allclose(thresholds, [0.36, 0.30])  # the upper edge of the 0.35 bin; the floor
    image = np.zeros((1, 10, 3), np.uint8)
    fixed = confident_region_labels(image, cams, [2, 7])
    otsu = confident_region_labels(image, cams, [2, 7], fg_threshold_rule="otsu")
    np.testing.assert_array_equal(fixed, [[3, 3, 3, 3, 3, 3, 3, 3, 3, 3]])
    np.testing.assert_array_equal(otsu, [[3, 3, 3, 3, 255, 255, 255, 255, 255, 255]])
    np.testing.assert_allclose(foreground_thresholds(cams, 0.30, "fixed"), [0.30, 0.30])


def test_otsu_rule_equals_the_reference_rule_at_the_otsu_threshold() -> None:
    """One class, the real CRF: the otsu rule gives the reference's labels with ``fg_threshold`` = its threshold."""
    image = _three_band_image()
    cams = np.zeros((1, 24, 36), dtype=np.float32)
    cams[0, :, :12] = 0.9
    cams[0, :, 12:24] = 0.45  # the scene: foreground under 0.30, not under Otsu's cut
    cams[0, :, 24:] = 0.1
    threshold = float(foreground_thresholds(cams, 0.30, "otsu")[0])
    assert 0.45 < threshold < 0.95
    otsu = confident_region_labels(image, cams, [6], bg_threshold=0.05, fg_threshold_rule="otsu")
    reference = confident_region_labels(image, cams, [6], fg_threshold=threshold, bg_threshold=0.05)
    np.testing.assert_array_equal(otsu, reference)
    assert np.all(otsu[:, :12] == 7) and np.all(otsu[:, 12:24] == 255)
    assert np.all(confident_region_labels(image, cams, [6], bg_threshold=0.05)[:, 12:24] == 7)


def test_unknown_foreground_rule_is_an_input_error() -> None:
    with pytest.raises(InputError, match="fg_threshold_rule"):
        foreground_thresholds(np.zeros((1, 2, 2), np.float32), 0.30, "median")


@pytest.mark.parametrize(
    ("image", "cams", "class_ids", "message"),
    [
        (np.zeros((4, 5, 3), np.uint8), np.zeros((1, 4, 6), np.float32), [0], "mismatch"),
        (np.zeros((4, 5, 3), np.uint8), np.zeros((1, 4, 5), np.float32), [], "empty class list"),
        (np.zeros((4, 5, 3), np.uint8), np.full((1, 4, 5), np.nan, np.float32), [0], "NaN"),
        (np.zeros((4, 5), np.uint8), np.zeros((1, 4, 5), np.float32), [0], "uint8"),
        (np.zeros((4, 5, 3), np.float32), np.zeros((1, 4, 5), np.float32), [0], "uint8"),
        (np.zeros((4, 5, 3), np.uint8), np.zeros((2, 4, 5), np.float32), [0], "2 CAM channels"),
    ],
)
def test_bad_inputs(image: np.ndarray, cams: np.ndarray, class_ids: list[int], message: str) -> None:
    with pytest.raises(InputError, match=message):
        confident_region_labels(image, cams, class_ids, image_id="2011_000003")


def test_crf_bad_inputs() -> None:
    image = np.zeros((4, 5, 3), np.uint8)
    with pytest.raises(InputError, match="0..1"):
        dense_crf_labels(image, np.full((4, 5), 2), 2)
    with pytest.raises(InputError, match="n_labels"):
        dense_crf_labels(image, np.zeros((4, 5), np.int64), 1)
    with pytest.raises(InputError, match="mismatch"):
        dense_crf_labels(image, np.zeros((4, 6), np.int64), 2)
