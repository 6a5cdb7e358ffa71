"""Reference-format CAM files: round trip, the reference's own layout, clear errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from irn_core.errors import DatasetError
from irn_core.interop import read_reference_cam, write_reference_cam


def test_round_trip_in_the_reference_layout(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    class_ids = np.array([4, 11])
    cam = rng.random((2, 10, 13), dtype=np.float32)
    high_res = rng.random((2, 37, 50), dtype=np.float32)
    path = tmp_path / "2007_000032.npy"
    write_reference_cam(path, class_ids, cam, high_res)
    raw = np.load(path, allow_pickle=True).item()
    # what the reference's make_cam writes: torch tensors for keys and cam, numpy for high_res
    assert isinstance(raw["keys"], torch.Tensor) and raw["keys"].dtype == torch.int64
    assert isinstance(raw["cam"], torch.Tensor) and raw["cam"].dtype == torch.float32
    assert isinstance(raw["high_res"], np.ndarray)
    read_ids, read_cam, read_high_res = read_reference_cam(path)
    np.testing.assert_array_equal(read_ids, class_ids)
    np.testing.assert_array_equal(read_cam, cam)
    np.testing.assert_array_equal(read_high_res, high_res)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["2007_000032.npy"]


def test_reads_a_file_written_like_the_reference(tmp_path: Path) -> None:
    path = tmp_path / "x.npy"
    np.save(path, {"keys": torch.tensor([0]), "cam": torch.ones(1, 3, 4), "high_res": np.ones((1, 9, 13), np.float32)})
    class_ids, cam, high_res = read_reference_cam(path)
    assert class_ids.tolist() == [0] and cam.shape == (1, 3, 4) and high_res.shape == (1, 9, 13)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ({"keys": np.array([0]), "cam": np.ones((1, 3, 4))}, "expected a dict with keys"),
        ({"keys": np.array([0, 1]), "cam": np.ones((1, 3, 4)), "high_res": np.ones((1, 9, 13))}, "inconsistent"),
        ({"keys": np.array([0]), "cam": np.ones((1, 2, 4)), "high_res": np.ones((1, 9, 13))}, "stride-4 size"),
    ],
)
def test_bad_files_name_the_file_and_the_problem(tmp_path: Path, content: dict, message: str) -> None:
    path = tmp_path / "bad.npy"
    np.save(path, content)
    with pytest.raises(DatasetError, match=f"bad.npy.*{message}"):
        read_reference_cam(path)
    with pytest.raises(DatasetError, match="missing"):
        read_reference_cam(tmp_path / "absent.npy")
    (tmp_path / "garbage.npy").write_bytes(b"\x93NUMPY garbage")
    with pytest.raises(DatasetError, match="garbage.npy"):
        read_reference_cam(tmp_path / "garbage.npy")
