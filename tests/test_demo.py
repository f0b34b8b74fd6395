"""featkit demo: the README's main command, offline, end to end."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from featkit.cli import main

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
        # The default geometry (crop) sees the central square only: no box reaches outside it.
        side = 0.875 * min(w, h)
        assert (w - side) / 2 - 1 <= x0 and x1 <= (w + side) / 2 + 1, (name, p["box"])
        assert (h - side) / 2 - 1 <= y0 and y1 <= (h + side) / 2 + 1, (name, p["box"])
        strip = Image.open(out / f"{Path(name).stem}_cam.png")
        assert strip.width > 5 * w  # the photo plus five overlays side by side
    # the espresso CAM box frames the cup, not the whole table
    x0, y0, x1, y1 = predictions["coffee.jpg"]["box"]
    assert (x1 - x0) * (y1 - y0) < 0.75 * 600 * 400
    page = (out / "index.html").read_text()
    assert page.count("<img") == 4 and "espresso" in page
    assert (out / "features.h5").is_file()


def test_demo_refuses_a_file_as_output(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    target = tmp_path / "file"
    target.write_text("keep me")
    assert main(["demo", "-o", str(target)]) == 2
    assert "is a file" in capsys.readouterr().err
    assert target.read_text() == "keep me"
