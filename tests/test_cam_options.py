"""CamOptions beyond the paper's rule: closing of the thresholded mask, multi-scale inputs (through CamBoxer)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import write_features
from scipy import ndimage

from featkit.cam.boxer import CamBoxer
from featkit.cam.boxes import box_from_cam, boxes_from_cams, close_mask
from featkit.cam.calibration import calibrate
from featkit.cam.localization import localize
from featkit.cam.maps import CamOptions, class_activation_maps
from featkit.cam.placement import trim_padding
from featkit.cli import main
from featkit.errors import FeatkitError
from featkit.features import FeatureFile
from featkit.features.mapsource import MapSource
from featkit.features.replay import Replay
from featkit.linear import LinearClassifier, classifier_for

# ------------------------------------------------------------------ closing


def _two_blobs(gap: int = 1) -> np.ndarray:
    """A 20 x 30 map: a 6-px-wide blob and an 8-px-wide blob, ``gap`` px of zeros between them."""
    cam = np.zeros((20, 30), np.float32)
    cam[5:15, 4:10] = 1.0
    cam[5:15, 10 + gap : 18 + gap] = 1.0
    return cam


def test_closing_joins_blobs_split_by_a_narrow_gap() -> None:
    cam = _two_blobs(gap=1)
    assert box_from_cam(cam, 0.2) == (11.0, 5.0, 19.0, 15.0)  # the paper's rule: the larger blob only
    assert box_from_cam(cam, 0.2, close=3) == (4.0, 5.0, 19.0, 15.0)  # one component after closing
    assert box_from_cam(_two_blobs(gap=3), 0.2, close=3) == (13.0, 5.0, 21.0, 15.0)  # 3 px: too wide for 3 x 3
    assert box_from_cam(_two_blobs(gap=3), 0.2, close=5) == (4.0, 5.0, 21.0, 15.0)
    assert (boxes_from_cams(cam, [0.2, 0.9], close=3) == [4.0, 5.0, 19.0, 15.0]).all()


def test_close_zero_and_one_are_the_papers_rule_and_edges_do_not_erode() -> None:
    rng = np.random.default_rng(0)
    for _ in range(5):
        cam = ndimage.gaussian_filter(rng.normal(size=(37, 53)), 2).astype(np.float32)
        mask = cam >= 0.2 * cam.max()
        labels, _ = ndimage.label(mask, structure=np.ones((3, 3)))
        largest = np.argmax(np.bincount(labels.ravel())[1:]) + 1
        ys, xs = np.nonzero(labels == largest)
        expected = (float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1))
        assert box_from_cam(cam, 0.2) == box_from_cam(cam, 0.2, close=0) == box_from_cam(cam, 0.2, close=1) == expected
    edge = np.zeros((10, 10), bool)
    edge[:, :4] = True  # touches three borders
    assert (close_mask(edge, 5) == edge).all()


def _gap_store(folder: Path) -> Path:
    """Two labelled images whose one-unit map has two lit cells split by a dark column; the GT box spans both."""
    maps = np.zeros((2, 1, 3, 8), np.float32)
    maps[:, 0, 1, 1:4] = 1.0
    maps[:, 0, 1, 5:8] = 1.0
    boxes = [((10.0, 10.0, 80.0, 20.0),)] * 2  # cells are 10 px: columns 1..7 lit but column 4
    return write_features(folder / "gap.h5", np.ones((2, 1), np.float32), [0, 0], [["train"], ["test"]], ["bird"],
                          maps=maps, boxes=boxes, sizes=np.array([[80, 30]] * 2, np.int32))


def test_calibration_and_localize_close_the_same_way(tmp_path: Path) -> None:
    classifier = LinearClassifier(np.ones((1, 1)), np.zeros(1), ["bird"], "none", "one unit")
    with FeatureFile(_gap_store(tmp_path)) as features:
        plain = CamOptions(upsample="nearest", method="cam-positive")
        closed = CamOptions(upsample="nearest", method="cam-positive", close=11)
        assert calibrate(features, classifier, [0], plain, grid=(0.5,)).accuracy == 0.0
        chosen = calibrate(features, classifier, [0], closed, grid=(0.5,))
        assert chosen.accuracy == 1.0 and chosen.options.close == 11
        report = localize(features, classifier, [1], cam_options=chosen.options, calibration=chosen)
        assert report.per_image[0]["box"] == (10.0, 10.0, 80.0, 20.0) and report.summary["close"] == 11
        assert "threshold 0.5 (chosen train (1 images)), mask closed with a 11 px square, nearest" in report.to_markdown()
        assert report.summary["max_box_acc"] == 1.0  # the oracle sweep closes too
        unclosed = localize(features, classifier, [1], cam_options=plain)
        assert unclosed.per_image[0]["box"] == (10.0, 10.0, 40.0, 20.0) and unclosed.summary["max_box_acc"] == 0.0


def test_option_values_are_checked() -> None:
    assert CamOptions(scales=[1, 2]).scales == (1.0, 2.0) and CamOptions(scales=[1, 2]).multi_scale
    assert not CamOptions().multi_scale
    with pytest.raises(FeatkitError, match="close=-1 is not a size in pixels"):
        CamOptions(close=-1)
    with pytest.raises(FeatkitError, match="scales must be positive numbers"):
        CamOptions(scales=(1.0, 0.0))
    with pytest.raises(FeatkitError, match="enhance=0.5 applies to method='dgl' only"):
        CamOptions(enhance=0.5)
    with pytest.raises(FeatkitError, match="enhance=-1.0 is not a step size"):
        CamOptions(method="dgl", enhance=-1.0)


# ------------------------------------------------------------------ multi-scale

TINY = ["--model", "tiny_test", "--workers", "0", "--batch-size", "4"]


@pytest.fixture(scope="module")
def tiny_store(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    from conftest import make_fake_cub

    folder = tmp_path_factory.mktemp("tiny")
    root = make_fake_cub(folder / "CUB_200_2011", 2, 4)
    features, svm = folder / "f.h5", folder / "svm.h5"
    assert main(["extract", str(root), "--dataset", "cub200", "--maps", "--resize", "warp", "-o", str(features),
                 *TINY]) == 0
    assert main(["svm-train", str(features), "-o", str(svm), "--C", "1"]) == 0
    return features, svm


def _conv(features: FeatureFile, rows: list[int], side: int) -> torch.Tensor:
    replay = Replay.of(features.attrs, "cpu")
    ((_, x),) = next(replay.input_groups(features.attrs["dataset_root"], [features.paths[r] for r in rows],
                                         len(rows), side))
    with torch.no_grad():
        return replay.model.forward_features(x.contiguous()).float()


def test_scale_one_is_todays_maps_and_two_scales_average_on_the_scale_one_grid(tiny_store: tuple[Path, Path]) -> None:
    path, svm = tiny_store
    rows, classes = [0, 3, 5], np.array([0, 1, 1])
    with FeatureFile(path) as features:
        weight = classifier_for(features, str(svm)).weight
        source = MapSource.of(features, device="cpu")
        stored = source.maps(rows)
        one = CamBoxer(weight, CamOptions(scales=(1.0,)))
        assert not one.needs_images
        assert np.array_equal(one.row_cams(source, np.array(rows), stored, classes),
                              class_activation_maps(stored, weight, classes))
        # the recomputed scale-1 conv maps are the stored ones (stored as float16)
        assert np.allclose(_conv(features, rows, 64).numpy(), stored, atol=2e-2, rtol=1e-2)

        boxer = CamBoxer(weight, CamOptions(scales=(1.0, 2.0)))
        assert boxer.needs_images
        ((chunk, maps),) = list(boxer.batches(source, np.array(rows), 8))
        assert maps is None and list(chunk) == rows
        got = boxer.row_cams(source, chunk, None, classes)
        at_1 = class_activation_maps(_conv(features, rows, 64), weight, classes)
        at_2 = class_activation_maps(_conv(features, rows, 128), weight, classes)
        assert at_1.shape[-1] * 2 == at_2.shape[-1] == 16
        expected = (at_1 + F.interpolate(at_2, size=at_1.shape[-2:], mode="bilinear", align_corners=False)) / 2
        assert got.shape == (3, 1, 8, 8) and np.allclose(got, expected.numpy(), atol=1e-5)
        with pytest.raises(FeatkitError, match=r"maps at scales \[1.0, 2.0\] are computed from the images"):
            boxer.cams(stored, classes)
        # dgl averages its gradient maps the same way (at the last layer each is its scale's CAM / (h w))
        dgl = CamBoxer(weight, CamOptions(method="dgl", scales=(1.0, 2.0))).row_cams(source, chunk, None, classes)
        small = F.interpolate(at_2 / 256, size=(8, 8), mode="bilinear", align_corners=False)
        assert dgl.shape == (3, 1, 8, 8) and np.allclose(dgl, ((at_1 / 64 + small) / 2).numpy(), atol=1e-6)


def test_cli_close_scales_enhance(tiny_store: tuple[Path, Path], tmp_path: Path,
                                  capsys: pytest.CaptureFixture[str]) -> None:
    path, svm = tiny_store

    def run(*extra: str) -> dict:
        out = tmp_path / "out"
        assert main(["localize", str(path), str(svm), "--no-sweep", "-o", str(out), "--calibrate", "none",
                     *extra]) == 0
        return json.loads((out / "localization.json").read_text())["summary"]

    paper = run()
    assert (paper["close"], paper["scales"], paper["enhance"], paper["maps"]) == (0, [1.0], 0.0, "stored")
    scaled = run("--method", "cam-positive", "--scales", "1,1.5", "--close", "3")
    assert scaled["scales"] == [1.0, 1.5] and scaled["close"] == 3
    assert scaled["maps"] == "recomputed from the images at scales 1, 1.5"
    enhanced = run("--method", "dgl", "--enhance", "0.5")
    assert enhanced["maps"] == "gradients on layer last of the images, enhanced (step 0.5)"
    capsys.readouterr()
    with pytest.raises(SystemExit) as exited:  # argparse: one line, exit 2
        main(["localize", str(path), str(svm), "--scales", "1,-2"])
    assert exited.value.code == 2
    assert "scales must be positive numbers such as 1,1.5,2, got '1,-2'" in capsys.readouterr().err
    assert main(["localize", str(path), str(svm), "--enhance", "0.5"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == ("featkit localize: error: --enhance 0.5 applies to --method dgl only (gradients of the class "
                   "loss), not to --method cam; use --method dgl or --enhance 0")
    assert main(["crops", str(path.parent / "CUB_200_2011"), str(path), str(svm), "-o", str(tmp_path / "c.h5"), "--close", "-2"]) == 2
    assert "--close -2 is not a size in pixels" in capsys.readouterr().err
    assert main(["cam", str(path), str(svm), "-o", str(tmp_path / "pics"), "--limit", "1", "--scales", "1,2",
                 "--method", "objectness"]) == 0


@pytest.mark.parametrize(("resize", "tta"), [("short-side", "none"), ("short-side", "flip"), ("warp", "flip")])
def test_dgl_and_scales_rerun_every_geometry(fake_cub: Callable[..., Path], tmp_path: Path, resize: str,
                                             tta: str) -> None:
    """The backbone reruns each image as the file stored it (its own aspect ratio, its mirror averaged in):
    dgl at the last layer is the stored CAM / (h w) of that image's own grid, NaN padding included, and
    one scale of 1 equals the stored maps' method."""
    root = fake_cub(n_classes=2, per_class=3)  # images 120..136 x 98..102: several short-side shapes
    path = tmp_path / "f.h5"
    assert main(["extract", str(root), "--dataset", "cub200", "--maps", "--resize", resize, "--tta", tta,
                 "-o", str(path), *TINY]) == 0
    with FeatureFile(path) as features:
        weight = np.random.default_rng(0).normal(size=(2, features.gap.shape[1])).astype(np.float32)
        rows, classes = np.arange(len(features)), np.arange(len(features)) % 2
        source = MapSource.of(features, root)
        stored = CamBoxer(weight).cams(features.maps(rows), classes)
        rerun = CamBoxer(weight, CamOptions(method="dgl")).row_cams(source, rows, None, classes)
        scaled = CamBoxer(weight, CamOptions(method="objectness", scales=(1.0, 1.0))).row_cams(
            source, rows, None, classes)
        plain = CamBoxer(weight, CamOptions(method="objectness")).cams(features.maps(rows), classes)
        sizes = features.sizes[rows]
    for r in rows:
        one, again = trim_padding(stored[r]), trim_padding(rerun[r])
        h, w = one.shape[-2:]
        assert again.shape == one.shape  # each image on its own grid (short-side: its aspect ratio)
        assert np.allclose(again * h * w, one, rtol=1e-2, atol=1e-2 * float(np.abs(one).max()))
        assert np.allclose(trim_padding(scaled[r]), trim_padding(plain[r]), rtol=1e-2, atol=2e-2)
        boxer = CamBoxer(weight)
        size = (int(sizes[r][0]), int(sizes[r][1]))
        assert np.allclose(boxer.box(boxer.upsample(rerun[r, 0], size)), boxer.box(boxer.upsample(stored[r, 0], size)),
                           atol=1.0)


def test_dgl_on_a_crop_file_reruns_the_crop_view(fake_cub: Callable[..., Path], tmp_path: Path) -> None:
    """The backbone runs again on the same centre crop the file stored: dgl at the last layer is its CAM / (h w)."""
    root = fake_cub(n_classes=2, per_class=2)
    path = tmp_path / "crop.h5"
    assert main(["extract", str(root), "--dataset", "cub200", "--maps", "--resize", "crop", "-o", str(path),
                 *TINY]) == 0
    with FeatureFile(path) as features:
        weight = np.random.default_rng(0).normal(size=(2, features.gap.shape[1])).astype(np.float32)
        rows, classes = np.arange(len(features)), np.arange(len(features)) % 2
        source = MapSource.of(features, root)
        stored = CamBoxer(weight).cams(features.maps(rows), classes)
        rerun = CamBoxer(weight, CamOptions(method="dgl")).row_cams(source, rows, None, classes)
    h, w = stored.shape[-2:]
    assert np.allclose(rerun * h * w, stored, rtol=1e-2, atol=1e-2 * float(np.abs(stored).max()))


def test_method_strips_of_a_crop_file_keep_boxes_inside_the_centre_square(
    fake_cub: Callable[..., Path], tmp_path: Path
) -> None:
    """crop maps cover the centre square only: no predicted (red) box may reach the image's left or right border."""
    from PIL import Image

    from featkit.viz.overlay import STRIP_GAP

    root = fake_cub(n_classes=2, per_class=1)  # 120 x 91 and 120 x 95 px images: centre squares ~80 px wide
    path = tmp_path / "crop.h5"
    assert main(["extract", str(root), "--dataset", "cub200", "--maps", "--resize", "crop", "-o", str(path),
                 *TINY]) == 0
    assert main(["cam", str(path), "head", "--split", "train", "--class", "top1", "--method", "cam,objectness",
                 "-o", str(tmp_path / "strips")]) == 0
    pictures = sorted((tmp_path / "strips").glob("*.png"))
    assert len(pictures) == 2
    for picture in pictures:
        pixels = np.asarray(Image.open(picture).convert("RGB")).astype(int)
        red = (pixels[..., 0] > 200) & (pixels[..., 1] < 60) & (pixels[..., 2] < 60)
        for panel in (1, 2):  # the input, then one panel per method
            x0 = panel * (120 + STRIP_GAP)
            columns = np.flatnonzero(red[:, x0 : x0 + 120].any(axis=0))
            assert columns.size and columns.min() >= 15 and columns.max() <= 104, (picture.name, columns)
