"""--layer NAME: GAP features (and maps) of an inner stage, recorded in provenance, usable by every later verb."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import make_fake_cub

from featkit.cli.main import main
from featkit.errors import FeatkitError
from featkit.features import FeatureFile
from featkit.features.replay import Replay
from featkit.models import load_backbone


def test_inner_layer_features_maps_and_svm_cams(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = make_fake_cub(tmp_path / "cub", 2, 4)
    out, svm = tmp_path / "f.h5", tmp_path / "svm.h5"
    assert main(["extract", str(root), "-o", str(out), "--model", "tiny_test", "--layer", "3", "--maps",
                 "--resize", "crop"]) == 0
    with FeatureFile(out) as features:
        a = features.attrs
        assert (a["feature_layer"], a["channels"], a["map_size"]) == ("3", 16, [16, 16]) and features.head() is None
        [(positions, x)] = next(Replay.of(a, "cpu").input_groups(root, list(features.paths), 8))
        assert positions.tolist() == list(range(len(features)))  # crop: one input shape, in row order
        _, full, _ = load_backbone("tiny_test")
        with torch.no_grad():
            expected = full.body[:4](x.contiguous()).mean(dim=(2, 3)).numpy()  # conv1, relu, conv2, relu
        np.testing.assert_allclose(features.gap[:], expected, rtol=1e-5, atol=1e-6)
        assert features.maps([0]).shape == (1, 16, 16, 16)
    capsys.readouterr()
    assert main(["cam", str(out), "head", "-o", str(tmp_path / "c")]) == 2
    assert "its features come from layer '3', which has no classifier of its own" in capsys.readouterr().err
    assert main(["svm-train", str(out), "-o", str(svm), "--C", "1"]) == 0
    assert main(["cam", str(out), str(svm), "-o", str(tmp_path / "cams")]) == 0
    assert main(["localize", str(out), str(svm)]) == 0


def test_inner_layer_maps_recomputed_from_provenance(tmp_path: Path) -> None:
    """A file without stored maps: CAMs recompute them at the recorded layer, not the last one."""
    root = make_fake_cub(tmp_path / "cub", 2, 4)
    out, svm = tmp_path / "f.h5", tmp_path / "svm.h5"
    assert main(["extract", str(root), "-o", str(out), "--model", "tiny_test", "--layer", "1"]) == 0
    assert main(["svm-train", str(out), "-o", str(svm), "--C", "1"]) == 0
    assert main(["localize", str(out), str(svm)]) == 0


def test_unknown_layer_lists_names() -> None:
    with pytest.raises(FeatkitError, match=r"the backbone has no layer 'layer9'; use one of 0, 1, 2, 3, 4, 5"):
        load_backbone("tiny_test", None, "layer9")
