"""featkit demo: the README's main command, offline, end to end."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from featkit.cli import main
from featkit.features import FeatureFile

CATS = {"tabby", "tiger cat", "Persian cat", "Siamese cat", "Egyptian cat"}


def test_demo_writes_top5_cams_boxes_and_an_index(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "demo"
    assert main(["demo", "-o", str(out)]) == 0
    assert "index.html" in capsys.readouterr().out
    predictions = {p["image"]: p for p in json.loads((out / "predictions.json").read_text())}
    assert predictions["coffee.jpg"]["top"][0]["class"] == "espresso"
    assert predictions["chelsea.jpg"]["top"][0]["class"] in CATS
    for name, p in predictions.items():
        assert len(p["top"]) == 5
        w, h = p["size"]
        x0, y0, x1, y1 = p["box"]
        assert 0 <= x0 < x1 <= w and 0 <= y0 < y1 <= h
        strip = Image.open(out / f"{Path(name).stem}_cam.png")
        assert strip.width > 5 * w  # the photo plus five overlays side by side
    # the espresso CAM box frames the cup, not the whole table
    x0, y0, x1, y1 = predictions["coffee.jpg"]["box"]
    assert (x1 - x0) * (y1 - y0) < 0.75 * 600 * 400
    page = (out / "index.html").read_text()
    assert page.count("<img") == 4 and "espresso" in page
    assert (out / "features.h5").is_file()
    # The default geometry sees the whole image: the cup's rim touches the photo's top edge, outside the
    # centre square a crop would see (y >= 25 px), and the espresso box reaches that edge.
    assert predictions["coffee.jpg"]["box"][1] <= 1.0
    with FeatureFile(out / "features.h5") as features:
        assert features.geometry == ("short-side", "none")


def test_demo_refuses_a_file_as_output(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    target = tmp_path / "file"
    target.write_text("keep me")
    assert main(["demo", "-o", str(target)]) == 2
    assert "is a file" in capsys.readouterr().err
    assert target.read_text() == "keep me"
