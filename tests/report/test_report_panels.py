"""Panels and colour conventions, against independent restatements on tiny arrays."""

from __future__ import annotations

import math

import numpy as np
import pytest

from irn_core.data.palette import voc_palette
from irn_core.errors import InputError
from irn_core.report import colours, panels


def test_palette_array_is_the_voc_palette() -> None:
    palette = colours.palette_array()
    flat = voc_palette()
    assert palette.shape == (256, 3) and palette.dtype == np.uint8
    for index in (0, 1, 2, 15, 20, 255):
        assert tuple(palette[index]) == tuple(flat[3 * index : 3 * index + 3])
    assert tuple(palette[1]) == (128, 0, 0) and tuple(palette[15]) == (192, 128, 128)
    assert tuple(palette[255]) == (224, 224, 192)


def test_colour_wheel_has_the_middlebury_ramps() -> None:
    wheel = colours.flow_colour_wheel()
    assert wheel.shape == (55, 3)
    # ramp starts: red, yellow, green, cyan, blue, magenta
    starts = {0: (255, 0, 0), 15: (255, 255, 0), 21: (0, 255, 0), 25: (0, 255, 255), 36: (0, 0, 255),
              49: (255, 0, 255)}
    for index, colour in starts.items():
        assert tuple(wheel[index]) == colour, index
    assert tuple(wheel[1]) == (255, math.floor(255 / 15), 0)  # red -> yellow: green rises
    assert tuple(wheel[54]) == (255, 0, 255 - math.floor(255 * 5 / 6))  # magenta -> red: blue falls


def test_flow_colours_follow_the_convention() -> None:
    # right, down, left, up (image axes: y down), unit length, plus no motion
    flow_y = np.array([[0.0, 1.0, 0.0, -1.0, 0.0]])
    flow_x = np.array([[1.0, 0.0, -1.0, 0.0, 0.0]])
    rgb = colours.flow_to_rgb(flow_y, flow_x).astype(int)
    right, down, left, up, still = rgb[0]
    assert tuple(still) == (255, 255, 255)
    assert right[0] == 255 and right[1] < 40 and right[2] < 80  # red
    assert down[0] == 255 and 150 < down[1] < 255 and down[2] == 0  # orange-yellow
    assert left[0] == 0 and left[1] > 150 and left[2] == 255  # cyan-blue
    assert up[2] == 255 and up[1] == 0 and 0 < up[0] < 255  # blue-violet
    # half length: halfway to white. Pointing right, -flow_y is -0.0, atan2 gives -pi: wheel entry 0
    half = colours.flow_to_rgb(np.array([[0.0, 0.0]]), np.array([[1.0, 0.5]]))[0, 1]
    assert tuple(half) == (255, 127, 127)


def test_flow_beyond_the_given_maximum_is_darkened() -> None:
    rgb = colours.flow_to_rgb(np.array([[0.0]]), np.array([[2.0]]), max_magnitude=1.0)
    assert tuple(rgb[0, 0]) == (191, 0, 0)  # floor(255 * 0.75 * red)


def test_colour_wheel_legend_is_white_outside_and_saturated_at_the_rim() -> None:
    legend = colours.colour_wheel_legend(33)
    assert legend.shape == (33, 33, 3)
    assert tuple(legend[0, 0]) == (255, 255, 255) and tuple(legend[16, 16]) == (255, 255, 255)
    assert tuple(legend[16, 32]) == tuple(colours.flow_to_rgb(np.array([[0.0]]), np.array([[1.0]]))[0, 0])


def test_upsample_is_nearest_or_bilinear_then_cropped() -> None:
    small = np.array([[0.0, 1.0], [2.0, 3.0]], np.float32)
    nearest = panels.upsample(small, (7, 5), smooth=False)
    assert nearest.shape == (7, 5)
    np.testing.assert_array_equal(nearest, np.kron(small, np.ones((4, 4)))[:7, :5])
    smooth = panels.upsample(small, (8, 8))
    assert smooth[0, 0] == 0.0 and smooth[7, 7] == 3.0 and 0 < smooth[3, 3] < 3
    with pytest.raises(InputError, match="does not cover"):
        panels.upsample(small, (9, 8))


def test_cam_panel_blends_jet_over_the_image() -> None:
    image = np.full((4, 6, 3), 100, np.uint8)
    cam = np.zeros((4, 6), np.float32)
    cam[:, 3:] = 1.0
    np.testing.assert_array_equal(panels.cam_panel(image, cam, opacity=0.0), image)
    full = panels.cam_panel(image, cam, opacity=1.0)
    assert tuple(full[0, 0]) == (0, 0, 128)  # jet(0): dark blue
    assert tuple(full[0, 5]) == (128, 0, 0)  # jet(1): dark red
    half = panels.cam_panel(image, cam, opacity=0.5)
    assert tuple(half[0, 0]) == (50, 50, 114)
    with pytest.raises(InputError, match="differ in size"):
        panels.cam_panel(image, cam[:3])


def test_boundary_panel_is_dark_on_boundaries() -> None:
    boundary = np.zeros((2, 2), np.float32)
    boundary[1, 1] = 1.0
    picture = panels.boundary_panel(boundary, (8, 8))
    assert picture.shape == (8, 8, 3) and picture.dtype == np.uint8
    assert tuple(picture[0, 0]) == (255, 255, 255) and tuple(picture[7, 7]) == (0, 0, 0)


def test_semantic_panel_uses_the_palette() -> None:
    labels = np.array([[0, 1, 255], [20, 3, 0]], np.uint8)
    picture = panels.semantic_panel(labels)
    np.testing.assert_array_equal(picture, colours.palette_array()[labels])


def test_instance_panel_colours_and_score_order() -> None:
    masks = np.zeros((3, 4, 4), bool)
    masks[0, :2] = True
    masks[1, 1:3] = True  # overlaps instance 0 on row 1
    masks[2, 3, 3] = True
    palette = colours.palette_array()
    plain = panels.instance_panel(masks)
    assert tuple(plain[0, 0]) == tuple(palette[1]) and tuple(plain[1, 0]) == tuple(palette[2])  # later on top
    assert tuple(plain[3, 0]) == (0, 0, 0)
    scored = panels.instance_panel(masks, np.array([0.9, 0.2, 0.05]), min_score=0.1)
    assert tuple(scored[1, 0]) == tuple(palette[1])  # the more confident instance 0 on top
    assert tuple(scored[2, 0]) == tuple(palette[2]) and tuple(scored[3, 3]) == (0, 0, 0)  # 2 under min_score


def test_instance_centres_find_the_points_pixels_converge_to() -> None:
    # two objects whose pixels point at their centres, and a background that does not move
    height, width = 12, 30
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    field = np.zeros((2, height, width), np.float32)
    for mask, (centre_y, centre_x) in (((x < 10), (5.0, 4.0)), (((x >= 10) & (x < 20)), (6.0, 15.0))):
        field[0][mask] = centre_y - y[mask]
        field[1][mask] = centre_x - x[mask]
    clusters, centres = panels.instance_centres(field, iterations=50, threshold=2.5)
    assert clusters.shape == (3, height, width) and clusters.sum(axis=0).max() == 1
    assert sorted(map(tuple, np.round(centres).astype(int))) == [(5, 4), (6, 15)]  # none for the background
    picture = panels.displacement_panel(field, (48, 120), centres_s4=centres)
    assert picture.shape == (48, 120, 3)
    assert tuple(picture[20, 110]) == (255, 255, 255)  # no motion: white
    # a white dot of radius 2 ringed in black (out to radius 3) at each centre, in image pixels
    rows, columns = np.mgrid[0:48, 0:120]
    for centre_y, centre_x in centres * 4 + 1.5:
        distance = np.hypot(rows - centre_y, columns - centre_x)
        assert np.all(picture[distance <= 2] == 255)
        assert np.all(picture[(distance > 2) & (distance <= 3)] == 0)
    map_picture = panels.instance_map_panel(clusters, (48, 120))
    assert len({tuple(pixel) for pixel in map_picture.reshape(-1, 3)}) == clusters.shape[0]
