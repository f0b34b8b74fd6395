"""Smoke tests of the benchmark scripts on tiny inputs: they run and write their tables."""

from __future__ import annotations

from pathlib import Path

from conftest import sample_root, write_image

from benchmarks import geometry_cv, perf_geometry, table5


def _fake_scene15(root: Path, classes: int = 3, per_class: int = 6) -> Path:
    for c in range(classes):
        for j in range(per_class):
            write_image(root / f"Scene_{c}" / f"image_{j:04d}.jpg", (64 + 4 * j, 48), seed=100 * c + j, mode="L")
    return root


def test_table5_writes_paper_rows_beside_featkit(tmp_path: Path) -> None:
    root = _fake_scene15(tmp_path / "Scene15")
    out = tmp_path / "results"
    code = table5.main(["--root", f"scene15={root}", "--train-per-class", "3", "--out", str(out),
                        "--cache", str(tmp_path / "cache"), "--image-size", "64", "--workers", "0"])
    assert code == 0
    text = (out / "table5.md").read_text()
    assert "| gap from GoogLeNet-GAP (paper) | 51.31 | 66.61 | 88.3 |" in text
    featkit_row = next(line for line in text.splitlines() if "(featkit)" in line)
    cells = [c.strip() for c in featkit_row.strip("|").split("|")]
    assert cells[1] == "missing" and cells[3].endswith("*") and "+-" in cells[3]
    assert (out / "table5.csv").is_file()
    by_geometry = (out / "table5_geometry.md").read_text().splitlines()
    assert by_geometry[0] == "| model | dataset | warp | short-side | crop |"
    assert by_geometry[2].startswith("| efficientnet_lite0 | 15-Scene |") and by_geometry[2].count("+-") == 3


def test_table5_on_the_stanford40_sample(tmp_path: Path) -> None:
    root = sample_root("Stanford40")
    out = tmp_path / "results"
    assert table5.main(["--root", f"stanford40={root}", "--out", str(out), "--cache", str(tmp_path),
                        "--geometries", "warp"]) == 0
    featkit_row = next(line for line in (out / "table5.md").read_text().splitlines() if "(featkit)" in line)
    accuracy = float(featkit_row.strip("|").split("|")[7])
    assert 50.0 <= accuracy <= 100.0


def test_geometry_cv_scores_every_geometry_on_train_images_only(tmp_path: Path) -> None:
    _fake_scene15(tmp_path / "data" / "Scene15")
    out = tmp_path / "results"
    assert geometry_cv.main(["--data-dir", str(tmp_path / "data"), "--out", str(out), "--cache",
                             str(tmp_path / "cache"), "--model", "tiny_test"]) == 0
    lines = (out / "geometry_cv.md").read_text().splitlines()
    assert [line.split("|")[1].strip() for line in lines[2:6]] == ["warp", "short-side", "crop", "short-side + flip"]
    assert all("(n=9)" in line for line in lines[2:6])  # 3 of the 6 images per class: the training part only
    assert "the default resize is the best mean without TTA -> **" in lines[-1]


def test_perf_geometry_reports_img_per_s_beside_warp(tmp_path: Path) -> None:
    root = _fake_scene15(tmp_path / "Scene15", classes=2, per_class=4)
    out = tmp_path / "results"
    assert perf_geometry.main(["--root", str(root), "--dataset", "scene15", "--model", "tiny_test", "--workers", "0",
                               "--repeats", "1", "--out", str(out)]) == 0
    rows = [line.split("|")[1:-1] for line in (out / "perf_geometry.md").read_text().splitlines()[2:6]]
    assert [(r[0].strip(), r[1].strip()) for r in rows] == [
        ("warp", "none"), ("short-side", "none"), ("crop", "none"), ("short-side", "flip")]
    assert rows[0][4].strip() == "1.00x" and all(float(r[3]) > 0 for r in rows)
