"""Input geometry (warp, short-side, crop; flip TTA): shapes, provenance, and boxes that land where the object is."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from featkit.cam import CamBoxer
from featkit.cam.placement import trim_padding
from featkit.data.base import ImageRecord
from featkit.data.geometry import RESIZE_POLICIES, frame, input_shape
from featkit.errors import FeatkitError
from featkit.features import ExtractOptions, FeatureFile, MapSource
from featkit.features.extractor import ExtractJob, extract_rows
from featkit.models.registry import Backbone, BackboneSpec, WeightsInfo, backbone_names, register_backbone

BRIGHT = "test_brightness"
"""A hand-made backbone: one unit whose map is the mean brightness of each 8 x 8 input cell."""


def _build(weights: str | None) -> tuple[Backbone, WeightsInfo]:
    conv = nn.Conv2d(3, 1, 8, stride=8, bias=False)
    with torch.no_grad():
        conv.weight.fill_(1.0 / (3 * 64))
    return Backbone(nn.Sequential(conv), None), WeightsInfo("hand-made", hashlib.sha256(b"brightness").hexdigest())


if BRIGHT not in backbone_names():
    register_backbone(BackboneSpec(
        name=BRIGHT, channels=1, stride=8, input_size=64, feature_layer="8x8 mean", weights_source="hand-made",
        build=_build, default_weights_available=lambda: True, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0), head="",
    ))


def _square_image(path: Path, size: tuple[int, int], square: tuple[int, int, int, int]) -> None:
    pixels = np.full((size[1], size[0], 3), 10, dtype=np.uint8)
    x0, y0, x1, y1 = square
    pixels[y0:y1, x0:x1] = 250
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)  # PNG: no compression artefacts around the square


CASES = [  # (width, height), bright square inside the centre crop of every shape
    ((240, 120), (130, 40, 170, 80)),
    ((120, 240), (40, 100, 80, 130)),
    ((160, 160), (50, 60, 100, 110)),
    ((330, 110), (150, 30, 190, 70)),  # aspect 3: beyond the short-side cap, squeezed along its long side
]


def _extract(tmp_path: Path, resize: str, tta: str = "none", name: str = "f.h5") -> Path:
    records = []
    for i, (size, square) in enumerate(CASES):
        _square_image(tmp_path / "img" / f"{i}.png", size, square)
        records.append(ImageRecord(f"{i}.png", 0, "train", (tuple(map(float, square)),)))
    out = tmp_path / f"{resize}-{tta}-{name}"
    options = ExtractOptions(model=BRIGHT, maps=True, resize=resize, tta=tta, workers=0, batch_size=3)
    extract_rows(ExtractJob(tmp_path / "img", records, ["square"], np.full((len(records), 1), "train", object),
                            "squares", out, options))
    return out


@pytest.mark.parametrize("tta", ["none", "flip"])
@pytest.mark.parametrize("resize", RESIZE_POLICIES)
def test_bright_square_lands_in_its_box_for_every_geometry(tmp_path: Path, resize: str, tta: str) -> None:
    path = _extract(tmp_path, resize, tta)
    with FeatureFile(path) as features:
        assert features.attrs["resize"] == resize and features.attrs["tta"] == tta
        rows = np.arange(len(CASES))
        source = MapSource.of(features)
        maps = source.maps(rows)
        boxes = CamBoxer(np.ones((1, 1), np.float32)).boxes(maps, np.zeros(len(rows), int), features.sizes,
                                                              source.frames(rows))
    for (size, square), box in zip(CASES, boxes):
        if resize == "warp":
            cell = (size[0] / 8, size[1] / 8)
        else:
            fx0, fy0, fx1, fy1 = frame(*size, resize)
            iw, ih = input_shape(fx1 - fx0, fy1 - fy0, resize, 64, 8)
            cell = ((fx1 - fx0) * 8 / iw, (fy1 - fy0) * 8 / ih)
        for k in range(4):  # every edge within one map cell of the square's
            assert abs(box[k] - square[k]) <= cell[k % 2] + 1e-6, (resize, size, box, square)


def test_short_side_keeps_the_aspect_ratio_and_pads_maps_with_nan(tmp_path: Path) -> None:
    path = _extract(tmp_path, "short-side")
    with h5py.File(path) as h5:
        maps = h5["features/maps"][:]
        assert tuple(h5.attrs["map_size"]) == (16, 16)  # canvas of a 128 x 128 input: the 2x cap either way
    valid = [(int((~np.isnan(m[0])).any(axis=1).sum()), int((~np.isnan(m[0])).any(axis=0).sum())) for m in maps]
    assert valid == [(8, 16), (16, 8), (8, 8), (8, 16)]  # (h, w): 64 x 128, 128 x 64, 64 x 64, capped 64 x 128
    with FeatureFile(path) as features:
        assert np.isfinite(features.gap).all()
        expected = np.nanmean(maps.astype(np.float32), axis=(2, 3))
        np.testing.assert_allclose(features.gap, expected, rtol=2e-3)  # GAP over the valid cells only


def test_crop_cam_is_no_evidence_outside_the_centre_square(tmp_path: Path) -> None:
    _square_image(tmp_path / "img" / "0.png", (300, 100), (10, 20, 60, 80))  # bright, but left of the crop
    out = tmp_path / "crop.h5"
    options = ExtractOptions(model=BRIGHT, maps=True, resize="crop", workers=0)
    extract_rows(ExtractJob(tmp_path / "img", [ImageRecord("0.png", 0, "train")], ["a"],
                            np.full((1, 1), "train", object), "x", out, options))
    with FeatureFile(out) as features:
        source = MapSource.of(features)
        frames = source.frames([0])
        assert frames is not None
        np.testing.assert_allclose(frames[0], (106.25, 6.25, 193.75, 93.75))
        up = CamBoxer(np.ones((1, 1), np.float32)).upsample(source.maps([0])[0, 0], (300, 100), frames[0])
    assert up.shape == (100, 300)
    assert up[:, :106].max() <= up[:, 107:193].min()  # the bright square outside the crop left no trace


def test_flip_maps_are_flipped_back_before_averaging(tmp_path: Path) -> None:
    """The brightness map of a mirror is the mirrored map (cells are stride-aligned): flipped back, the average
    equals the map of the image itself; without the flip back it would be the blur (m + mirror(m)) / 2."""
    none, flip = _extract(tmp_path, "short-side", "none"), _extract(tmp_path, "short-side", "flip", "g.h5")
    with h5py.File(none) as a, h5py.File(flip) as b:
        m, f = a["features/maps"][:].astype(np.float32), b["features/maps"][:].astype(np.float32)
        assert b.attrs["tta"] == "flip"
    np.testing.assert_allclose(f, m, atol=2e-3)  # NaN padding in the same places too
    assert np.abs(m[0, 0, :8, :16] - m[0, 0, :8, :16][:, ::-1]).max() > 0.1  # the image is not symmetric


def test_unknown_geometry_is_refused_with_the_keyword() -> None:
    with pytest.raises(FeatkitError, match="resize must be one of warp, short-side, crop"):
        ExtractOptions(resize="squash").validate()
    with pytest.raises(FeatkitError, match="tta must be one of none, flip"):
        ExtractOptions(tta="five-crop").validate()


def test_svm_eval_cam_and_localize_refuse_features_of_another_geometry(
    tmp_path: Path, fake_cub: Callable[..., Path], capsys: pytest.CaptureFixture[str]
) -> None:
    from featkit.cli import main

    root = fake_cub(n_classes=2, per_class=4)
    common = ["--dataset", "cub200", "--model", "tiny_test", "--maps", "--workers", "0"]
    warp, short = tmp_path / "warp.h5", tmp_path / "short.h5"
    assert main(["extract", str(root), *common, "-o", str(warp), "--resize", "warp"]) == 0
    assert main(["extract", str(root), *common, "-o", str(short), "--resize", "short-side", "--tta", "flip"]) == 0
    assert main(["svm-train", str(warp), "-o", str(tmp_path / "svm.h5"), "--C", "1"]) == 0
    capsys.readouterr()
    for verb in (["svm-eval"], ["cam", "-o", str(tmp_path / "cams")], ["localize"]):
        assert main([verb[0], str(short), str(tmp_path / "svm.h5"), *verb[1:]]) == 2
        err = capsys.readouterr().err
        assert f"featkit {verb[0]}: error:" in err and "resize: warp there, short-side in" in err, err


GRAYS = [(96, 64), (64, 64), (64, 128), (96, 64), (128, 64), (64, 96), (64, 64), (96, 64), (64, 128), (80, 64)]
"""(width, height) of uniform gray images: five input shapes under ``short-side`` at 64 px, mixed in every batch."""


def _grays(tmp_path: Path, broken: int | None = None) -> list[ImageRecord]:
    records = []
    for i, (w, h) in enumerate(GRAYS):
        path = tmp_path / "gray" / f"{i}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        if i == broken:
            path.write_bytes(b"not a png")
        else:
            Image.fromarray(np.full((h, w, 3), 20 + 20 * i, np.uint8)).save(path)
        records.append(ImageRecord(f"{i}.png", 0, "train"))
    return records


def _extract_grays(tmp_path: Path, records: list[ImageRecord], out: Path, window: int,
                   progress: Callable[[int, int], None] | None = None) -> None:
    options = ExtractOptions(model=BRIGHT, maps=True, resize="short-side", workers=0, batch_size=2,
                             shape_window=window)
    extract_rows(ExtractJob(tmp_path / "gray", records, ["gray"], np.full((len(records), 1), "train", object),
                            "grays", out, options, progress))


def test_shape_windows_keep_every_row_in_its_place(tmp_path: Path) -> None:
    """Images regrouped by shape across batches: row i still holds image i (its gray level), maps included."""
    records = _grays(tmp_path)
    per_batch, windowed = tmp_path / "per-batch.h5", tmp_path / "windowed.h5"
    _extract_grays(tmp_path, records, per_batch, window=1)
    _extract_grays(tmp_path, records, windowed, window=6)
    with FeatureFile(windowed) as got, FeatureFile(per_batch) as want:
        np.testing.assert_allclose(got.gap[:, 0], [(20 + 20 * i) / 255 for i in range(len(GRAYS))], rtol=1e-5)
        np.testing.assert_array_equal(got.gap, want.gap)
        np.testing.assert_array_equal(got.h5["features/maps"][:], want.h5["features/maps"][:])
        assert got.sizes.tolist() == [list(s) for s in GRAYS]


def test_interrupted_shape_window_resumes_bit_identical(tmp_path: Path) -> None:
    """A window is committed as a whole: rows_done stops on a window boundary and the resumed file is
    the uninterrupted one, byte for byte in every array."""
    records = _grays(tmp_path)
    reference, out = tmp_path / "ref.h5", tmp_path / "resumed.h5"
    _extract_grays(tmp_path, records, reference, window=4)
    seen: list[int] = []

    def stop_after_first_window(done: int, total: int) -> None:
        seen.append(done)
        if done > 0:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        _extract_grays(tmp_path, records, out, window=4, progress=stop_after_first_window)
    with FeatureFile(out) as half:
        assert not half.complete and half.attrs["rows_done"] == 4 and seen == [0, 4]
    _extract_grays(tmp_path, records, out, window=4)
    with FeatureFile(out) as got, FeatureFile(reference) as want:
        assert got.complete
        for name in ("features/gap", "features/maps", "images/size", "images/status"):
            np.testing.assert_array_equal(got.h5[name][:], want.h5[name][:])


def test_unreadable_image_in_a_shape_window_keeps_the_rows_before_its_batch(tmp_path: Path) -> None:
    records = _grays(tmp_path, broken=5)  # batch 2 (rows 4, 5) of the first window (rows 0..5)
    out = tmp_path / "f.h5"
    with pytest.raises(FeatkitError, match="cannot read image 5.png"):
        _extract_grays(tmp_path, records, out, window=6)
    with FeatureFile(out) as half:
        assert half.attrs["rows_done"] == 4
        np.testing.assert_allclose(half.gap[:4, 0], [(20 + 20 * i) / 255 for i in range(4)], rtol=1e-5)


def test_short_side_padding_is_not_damage_but_a_nan_inside_an_image_is(tmp_path: Path) -> None:
    """Stored short-side maps sit top-left in a NaN canvas: readers accept the padding, and refuse a NaN inside
    an image's own extent or a row without any number (both are damage, not padding)."""
    from featkit.cli import main

    root = tmp_path / "imgs"
    (root / "a").mkdir(parents=True)
    for j, size in enumerate([(96, 64), (64, 96), (64, 64)]):
        Image.new("RGB", size, (40 * j, 90, 160)).save(root / "a" / f"{j}.png")
    path = tmp_path / "f.h5"
    assert main(["extract", str(root), "--dataset", "folder", "--model", "tiny_test", "--workers", "0", "--maps",
                 "--resize", "short-side", "-o", str(path)]) == 0
    with FeatureFile(path) as features:
        maps = features.maps([0, 1, 2])  # padded, and readable
        extents = [trim_padding(one).shape[-2:] for one in maps]
        assert extents[0][::-1] == extents[1] and extents[0][1] > extents[0][0]  # landscape, portrait: own shapes
        assert all(np.isfinite(trim_padding(one)).all() for one in maps)  # NaN only in the padding
    for row, cell in ((0, (0, 0)), (1, None)):
        damaged = tmp_path / f"damaged{row}.h5"
        damaged.write_bytes(path.read_bytes())
        with h5py.File(damaged, "r+") as h5:
            value = h5["features/maps"][row]
            if cell is None:
                value[:] = np.nan
            else:
                value[:, cell[0], cell[1]] = np.nan
            h5["features/maps"][row] = value
        with FeatureFile(damaged) as features, pytest.raises(FeatkitError, match=f"NaN or inf in row {row}"):
            features.maps([0, 1, 2])
