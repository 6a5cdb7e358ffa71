"""DeepLab v2 inference: the 8-way ensemble against its members computed one by one, the dense CRF."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from irn_core.crf import dense_crf_probabilities
from irn_core.data.transforms import hwc_to_chw, normalize
from irn_core.deeplab.infer import DeepLabCRFSettings, ensemble_probabilities, predict_labels
from irn_core.errors import InputError
from irn_core.models.backbones import build_backbone
from irn_core.models.deeplab import DeepLabV2


def _model(num_classes: int = 4) -> DeepLabV2:
    torch.manual_seed(0)
    model = DeepLabV2(build_backbone("resnet18", weights=None), num_classes)
    for branch in model.aspp.branches:  # larger logits than the N(0, 0.01) start, so members differ clearly
        torch.nn.init.normal_(branch.weight, std=0.05)
    return model.eval()


def _image(height: int = 37, width: int = 50) -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (height, width, 3)).astype(np.uint8)


def _member(model: DeepLabV2, image: np.ndarray, scale: float, flipped: bool) -> torch.Tensor:
    """One ensemble member on its own: resize, (flip), logits, upsample, softmax, (flip back)."""
    height, width = image.shape[:2]
    x = torch.from_numpy(hwc_to_chw(normalize(image)))[None]
    size = (round(height * scale), round(width * scale))
    x = F.interpolate(x, size=size, mode="bilinear", align_corners=False) if size != (height, width) else x
    if flipped:
        x = torch.flip(x, dims=[3])
    with torch.no_grad():
        logits = model(x)
    probabilities = torch.softmax(F.interpolate(logits, size=(height, width), mode="bilinear",
                                                align_corners=False), dim=1)[0]
    return torch.flip(probabilities, dims=[2]) if flipped else probabilities


def test_ensemble_is_the_mean_of_its_eight_members() -> None:
    model = _model()
    image = _image()
    members = [_member(model, image, scale, flipped) for scale in (0.5, 1.0, 1.5, 2.0) for flipped in (False, True)]
    expected = torch.stack(members).mean(dim=0)
    actual = ensemble_probabilities(model, image)
    assert actual.shape == (4, 37, 50)
    torch.testing.assert_close(actual, expected, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(actual.sum(dim=0), torch.ones(37, 50))
    # the members really differ (the test would not notice a missing member otherwise)
    assert float((members[0] - members[7]).abs().max()) > 1e-2
    single = ensemble_probabilities(model, image, scales=(1.5,), flip=False)
    torch.testing.assert_close(single, members[4], rtol=1e-5, atol=1e-6)
    with pytest.raises(InputError, match="at least one scale"):
        ensemble_probabilities(model, image, scales=())
    with pytest.raises(InputError, match="uint8 RGB"):
        ensemble_probabilities(model, image.astype(np.float32))


def test_dense_crf_sharpens_probabilities_along_colour_edges() -> None:
    image = np.zeros((30, 40, 3), np.uint8)
    image[:, 20:] = 255  # two flat halves
    probabilities = np.full((2, 30, 40), 0.5, np.float32)
    probabilities[0, :, :20] = probabilities[1, :, 20:] = 0.6  # weak, correct evidence
    probabilities[1, :, :20] = probabilities[0, :, 20:] = 0.4
    probabilities[:, 10:20, 5:10] = [[[0.3]], [[0.7]]]  # a wrong blob inside the left half
    refined = dense_crf_probabilities(image, probabilities)
    assert refined.shape == (2, 30, 40) and refined.dtype == np.float32
    np.testing.assert_allclose(refined.sum(axis=0), 1.0, atol=1e-4)
    labels = refined.argmax(axis=0)
    assert (labels[:, :20] == 0).all() and (labels[:, 20:] == 1).all()
    assert refined[0, :, :20].mean() > 0.6
    with pytest.raises(InputError, match=r"image img7.*probabilities must be"):
        dense_crf_probabilities(image, probabilities[:, :10], image_id="img7")
    with pytest.raises(InputError, match="non-finite"):
        dense_crf_probabilities(image, np.full((2, 30, 40), np.nan, np.float32))


def test_predict_labels_is_the_argmax_with_or_without_crf() -> None:
    model = _model()
    image = _image()
    probabilities = ensemble_probabilities(model, image).numpy()
    plain = predict_labels(model, image, crf=None)
    assert plain.dtype == np.uint8 and plain.shape == (37, 50)
    np.testing.assert_array_equal(plain, probabilities.argmax(axis=0))
    refined = predict_labels(model, image, crf=DeepLabCRFSettings(iterations=5))
    expected = dense_crf_probabilities(image, probabilities, iterations=5).argmax(axis=0)
    np.testing.assert_array_equal(refined, expected)
