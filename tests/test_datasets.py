"""Dataset readers: fake trees in each official layout, error messages, and the real samples."""

from __future__ import annotations

import dataclasses
import os
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from featkit.data import Dataset, ImageRecord, Protocol, load_manifest, manifest_names, open_dataset, reader_names
from featkit.data.caltech import ANNOTATION_FOLDERS
from featkit.errors import FeatkitError

SAMPLE_DATA = Path(os.environ.get("FEATKIT_SAMPLE_DATA", Path(__file__).parents[1].parent / "shared" / "data"))


# ---------------------------------------------------------------- helpers


def jpeg(path: Path, size: tuple[int, int] = (8, 6), mode: str = "RGB") -> Path:
    """A tiny real JPEG at ``path`` (parents created)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size, 128).save(path, format="JPEG")
    return path


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def with_protocol(dataset: Dataset, **fields: object) -> Dataset:
    """The same reader class and root under a different protocol (for trees smaller than the real one)."""
    manifest = dataclasses.replace(dataset.manifest, protocol=Protocol(**fields))  # type: ignore[arg-type]
    reader_root = getattr(dataset.reader, "csv_path", dataset.root)
    return Dataset(type(dataset.reader)(reader_root, manifest))


def per_class_counts(labels: list[int], column: np.ndarray, split: str) -> Counter[int]:
    return Counter(label for label, s in zip(labels, column) if s == split)


def assert_random_draw(dataset: Dataset, records: list[ImageRecord], train: int, test: int | None) -> np.ndarray:
    """Exactly ``train`` (and ``test``, or all the rest) per class in every fold; same table twice."""
    table = dataset.split_table(records)
    protocol = dataset.manifest.protocol
    assert table.shape == (len(records), protocol.folds)
    labels = [r.label for r in records]
    sizes = Counter(labels)
    for f in range(protocol.folds):
        assert per_class_counts(labels, table[:, f], "train") == {c: train for c in sizes}
        expected_test = {c: (n - train if test is None else test) for c, n in sizes.items()}
        assert per_class_counts(labels, table[:, f], "test") == {c: k for c, k in expected_test.items() if k}
    np.testing.assert_array_equal(table, dataset.split_table(records))
    return table


def savemat(path: Path, **variables: object) -> None:
    import scipy.io

    path.parent.mkdir(parents=True, exist_ok=True)
    scipy.io.savemat(str(path), variables)


def cell(strings: list[str]) -> np.ndarray:
    """A MATLAB cell array (column) of strings, as scipy.io.savemat writes one."""
    out = np.empty((len(strings), 1), dtype=object)
    for i, s in enumerate(strings):
        out[i, 0] = s
    return out


# ---------------------------------------------------------------- manifests and registry


def test_every_manifest_loads_and_names_a_registered_reader() -> None:
    names = manifest_names()
    expected = {
        "caltech101", "caltech256", "csv", "cub200", "event8", "folder",
        "indoor67", "scene15", "stanford40", "sun397", "sun_attribute",
    }  # fmt: skip
    assert expected <= set(names)
    for name in expected:
        manifest = load_manifest(name)
        assert manifest.name == name and manifest.reader in reader_names()
        assert manifest.metric in ("accuracy", "mean_per_class_accuracy", "map")
        assert manifest.protocol.kind in ("official", "random", "none")
        assert manifest.layout and manifest.class_order


def test_table5_numbers_and_metrics() -> None:
    gap = {
        "sun397": 51.31, "indoor67": 66.61, "scene15": 88.30, "sun_attribute": 92.21,
        "caltech101": 91.98, "caltech256": 78.07, "stanford40": 70.62, "event8": 95.00,
    }  # fmt: skip
    for name, value in gap.items():
        paper = load_manifest(name).paper
        assert paper["table"] == 5 and paper["googlenet_gap"] == value
        assert {"alexnet_fc7", "googlenet_avgpool"} <= set(paper)
    assert load_manifest("caltech101").paper["alexnet_fc7"] == 87.22
    assert load_manifest("event8").paper["googlenet_avgpool"] == 95.42
    for name in ("caltech101", "caltech256", "scene15"):
        assert load_manifest(name).metric == "mean_per_class_accuracy"
    assert load_manifest("sun_attribute").metric == "map"
    assert load_manifest("stanford40").metric == "accuracy"
    for name in ("folder", "csv"):
        assert load_manifest(name).protocol.kind == "none" and not load_manifest(name).paper


def test_protocols_of_random_datasets() -> None:
    assert load_manifest("caltech101").protocol == Protocol("random", 30, 0, 3, 0)
    assert load_manifest("caltech256").protocol == Protocol("random", 60, 0, 3, 0)
    assert load_manifest("scene15").protocol == Protocol("random", 100, 0, 5, 0)
    assert load_manifest("event8").protocol == Protocol("random", 70, 60, 5, 0)
    assert load_manifest("sun397").protocol.official_folds == 10


def test_unknown_dataset_lists_known_names(tmp_path: Path) -> None:
    with pytest.raises(FeatkitError, match="unknown dataset 'imagenet7'") as info:
        open_dataset("imagenet7", tmp_path)
    assert "caltech101" in str(info.value) and "sun397" in str(info.value)


@pytest.mark.parametrize("name", ["caltech101", "stanford40", "folder", "scene15", "sun397", "indoor67"])
def test_missing_root_is_one_clear_error(tmp_path: Path, name: str) -> None:
    with pytest.raises(FeatkitError, match="does not exist") as info:
        open_dataset(name, tmp_path / "nowhere")
    assert str(tmp_path / "nowhere") in str(info.value) and "\n" not in str(info.value)


# ---------------------------------------------------------------- Caltech-101


def caltech101_tree(root: Path, per_class: int = 6, annotations: bool = True) -> None:
    for name in ("BACKGROUND_Google", "Faces_easy", "airplanes", "accordion", "Leopards"):
        for i in range(1, per_class + 1):
            jpeg(root / "101_ObjectCategories" / name / f"image_{i:04d}.jpg")
    write(root / "101_ObjectCategories" / "airplanes" / "Thumbs.db", "not an image")
    if annotations:
        # box_coord = [top, bottom, left, right], 1-based inclusive
        savemat(root / "Annotations/Airplanes_Side_2/annotation_0001.mat", box_coord=np.array([[3, 5, 2, 7]]))
        savemat(root / "Annotations/Faces_3/annotation_0002.mat", box_coord=np.array([[1, 6, 1, 8]], np.uint16))
        savemat(root / "Annotations/accordion/annotation_0003.mat", box_coord=np.array([[2, 4, 3, 5]], np.uint16))
        # Faces_easy is annotated in Faces_3, not a same-named folder: this one must be ignored.
        savemat(root / "Annotations/Faces_easy/annotation_0001.mat", box_coord=np.array([[1, 2, 1, 2]], np.uint16))


def test_caltech101_classes_paths_and_boxes(tmp_path: Path) -> None:
    caltech101_tree(tmp_path)
    dataset = open_dataset("caltech101", tmp_path)
    assert dataset.classes() == ["Faces_easy", "Leopards", "accordion", "airplanes"]  # no BACKGROUND_Google
    records = dataset.records()
    assert len(records) == 24
    assert records[0] == ImageRecord("101_ObjectCategories/Faces_easy/image_0001.jpg", 0)
    assert [r.path for r in records[18:20]] == [
        "101_ObjectCategories/airplanes/image_0001.jpg",
        "101_ObjectCategories/airplanes/image_0002.jpg",
    ]
    assert not any("BACKGROUND_Google" in r.path or r.path.endswith(".db") for r in records)
    boxes = {r.path: r.boxes for r in records if r.boxes}
    assert boxes == {
        "101_ObjectCategories/airplanes/image_0001.jpg": ((1.0, 2.0, 7.0, 5.0),),
        "101_ObjectCategories/Faces_easy/image_0002.jpg": ((0.0, 0.0, 8.0, 6.0),),
        "101_ObjectCategories/accordion/image_0003.jpg": ((2.0, 1.0, 5.0, 4.0),),
    }
    assert all(r.split == "" for r in records)


def test_caltech101_random_split_is_exact_and_seeded(tmp_path: Path) -> None:
    caltech101_tree(tmp_path, annotations=False)
    dataset = open_dataset("caltech101", tmp_path)
    records = dataset.records()
    assert all(r.boxes == () for r in records)  # no Annotations folder: no boxes
    small = with_protocol(dataset, kind="random", train_per_class=2, folds=3, seed=0)
    table = assert_random_draw(small, records, train=2, test=None)
    assert not all((table[:, 0] == table[:, f]).all() for f in (1, 2)), "folds should differ"
    other = with_protocol(dataset, kind="random", train_per_class=2, folds=3, seed=7).split_table(records)
    assert not np.array_equal(table, other)
    # the real protocol on a tree smaller than 30 per class: everything trains
    assert set(dataset.split_table(records).ravel()) == {"train"}


def test_caltech101_bad_annotation_names_the_file(tmp_path: Path) -> None:
    caltech101_tree(tmp_path, annotations=False)
    savemat(tmp_path / "Annotations/Airplanes_Side_2/annotation_0001.mat", obj_contour=np.zeros((2, 3)))
    with pytest.raises(FeatkitError, match="annotation_0001.mat: expected a 'box_coord'"):
        open_dataset("caltech101", tmp_path).records()


def test_unreadable_mat_file_is_one_error(tmp_path: Path) -> None:
    caltech101_tree(tmp_path, annotations=False)
    write(tmp_path / "Annotations/Airplanes_Side_2/annotation_0003.mat", "truncated")
    with pytest.raises(FeatkitError, match=r"annotation_0003\.mat: not a readable \.mat file"):
        open_dataset("caltech101", tmp_path).records()


def test_caltech101_missing_image_folder_names_it(tmp_path: Path) -> None:
    with pytest.raises(FeatkitError, match="missing folder .*101_ObjectCategories"):
        open_dataset("caltech101", tmp_path)


# ---------------------------------------------------------------- Stanford 40


def voc(*boxes: tuple[int, int, int, int]) -> str:
    objects = "".join(
        f"<object><name>person</name><bndbox><xmax>{x1}</xmax><xmin>{x0}</xmin>"
        f"<ymax>{y1}</ymax><ymin>{y0}</ymin></bndbox></object>"
        for x0, y0, x1, y1 in boxes
    )
    return f"<annotation><filename>x.jpg</filename>{objects}</annotation>"


def stanford40_tree(root: Path, xml: bool = True) -> None:
    actions = "action_name\t\t\tnumber_of_images\nwaving_hands\t\t\t3\napplauding\t\t\t2\n\n"
    write(root / "ImageSplits/actions.txt", actions)
    write(root / "ImageSplits/waving_hands_train.txt", "waving_hands_010.jpg\nwaving_hands_002.jpg\n")
    write(root / "ImageSplits/waving_hands_test.txt", "waving_hands_001.jpg\n")
    write(root / "ImageSplits/applauding_train.txt", "applauding_005.jpg\n\n")
    write(root / "ImageSplits/applauding_test.txt", "applauding_007.jpg\n")
    for name in ("waving_hands_010", "waving_hands_002", "waving_hands_001", "applauding_005", "applauding_007"):
        jpeg(root / "JPEGImages" / f"{name}.jpg")
    if xml:
        write(root / "XMLAnnotations/waving_hands_010.xml", voc((2, 3, 7, 5)))
        write(root / "XMLAnnotations/applauding_005.xml", voc((1, 1, 8, 6), (4, 2, 5, 3)))


def test_stanford40_official_split_order_and_boxes(tmp_path: Path) -> None:
    stanford40_tree(tmp_path)
    dataset = open_dataset("stanford40", tmp_path)
    assert dataset.classes() == ["waving_hands", "applauding"]
    records = dataset.records()
    assert [(r.path, r.label, r.split) for r in records] == [
        ("JPEGImages/waving_hands_010.jpg", 0, "train"),
        ("JPEGImages/waving_hands_002.jpg", 0, "train"),
        ("JPEGImages/waving_hands_001.jpg", 0, "test"),
        ("JPEGImages/applauding_005.jpg", 1, "train"),
        ("JPEGImages/applauding_007.jpg", 1, "test"),
    ]
    assert records[0].boxes == ((1.0, 2.0, 7.0, 5.0),)
    assert records[3].boxes == ((0.0, 0.0, 8.0, 6.0), (3.0, 1.0, 5.0, 3.0))
    assert records[1].boxes == ()  # no XML for this image
    table = dataset.split_table(records)
    assert table.shape == (5, 1) and list(table[:, 0]) == ["train", "train", "test", "train", "test"]


def test_stanford40_without_annotations_has_no_boxes(tmp_path: Path) -> None:
    stanford40_tree(tmp_path, xml=False)
    assert all(r.boxes == () for r in open_dataset("stanford40", tmp_path).records())


def test_stanford40_errors(tmp_path: Path) -> None:
    stanford40_tree(tmp_path)
    write(tmp_path / "XMLAnnotations/applauding_007.xml", "<annotation><object>")
    with pytest.raises(FeatkitError, match=r"applauding_007\.xml: malformed XML"):
        open_dataset("stanford40", tmp_path).records()
    write(tmp_path / "XMLAnnotations/applauding_007.xml", voc((1, 1, 2, 2)))
    write(tmp_path / "ImageSplits/applauding_test.txt", "applauding_007.jpg\nwaving_hands_003.jpg\n")
    with pytest.raises(FeatkitError, match=r"applauding_test\.txt:2: malformed line 'waving_hands_003.jpg'"):
        open_dataset("stanford40", tmp_path).records()
    (tmp_path / "ImageSplits/applauding_test.txt").unlink()
    with pytest.raises(FeatkitError, match=r"missing file .*applauding_test\.txt"):
        open_dataset("stanford40", tmp_path).records()
    (tmp_path / "ImageSplits/actions.txt").unlink()
    with pytest.raises(FeatkitError, match=r"missing file .*actions\.txt; expected layout"):
        open_dataset("stanford40", tmp_path)


# ---------------------------------------------------------------- plain folder tree


def test_folder_tree_sorted_classes_and_suffixes(tmp_path: Path) -> None:
    jpeg(tmp_path / "zebra/b.jpg")
    jpeg(tmp_path / "zebra/a.JPG")
    Image.new("RGB", (4, 4)).save(tmp_path / "Ant.png")  # not inside a class folder: ignored
    (tmp_path / "ant").mkdir()
    Image.new("RGB", (4, 4)).save(tmp_path / "ant/x.PNG")
    write(tmp_path / "ant/readme.txt", "no image")
    jpeg(tmp_path / "ant/deeper/nested.jpg")  # only images directly in the class folder count
    (tmp_path / "empty").mkdir()  # no images: not a class
    jpeg(tmp_path / ".cache/c.jpg")
    dataset = open_dataset("folder", tmp_path)
    assert dataset.classes() == ["ant", "zebra"]
    records = dataset.records()
    assert records == [ImageRecord("ant/x.PNG", 0), ImageRecord("zebra/a.JPG", 1), ImageRecord("zebra/b.jpg", 1)]
    assert dataset.split_table(records).shape == (3, 1)


def test_folder_tree_empty_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "cats").mkdir()
    with pytest.raises(FeatkitError, match="no class folders with images under"):
        open_dataset("folder", tmp_path).classes()


# ---------------------------------------------------------------- CSV list


def test_csv_with_header_boxes_and_first_appearance_order(tmp_path: Path) -> None:
    for name in ("img/a.jpg", "img/b.jpg", "img/c.jpg", "img/d.jpg"):
        jpeg(tmp_path / name)
    outside = jpeg(tmp_path / "elsewhere" / "e.jpg")
    csv_path = write(
        tmp_path / "lists" / "mine.csv",
        "path,label,split,x0,y0,x1,y1\n"
        "../img/a.jpg,zebra,train,1,2,7,5\n"
        "../img/b.jpg,ant,test,,,,\n"
        "../img/a.jpg,zebra,train,0,0,8,6\n"
        "../img/c.jpg,,,,,,\n"
        f"{outside},ant,Train,,,,\n",
    )
    dataset = open_dataset("csv", csv_path)
    assert dataset.root == tmp_path / "lists"
    assert dataset.classes() == ["zebra", "ant"]
    records = dataset.records()
    assert records == [
        ImageRecord("../img/a.jpg", 0, "train", ((1.0, 2.0, 7.0, 5.0), (0.0, 0.0, 8.0, 6.0))),
        ImageRecord("../img/b.jpg", 1, "test"),
        ImageRecord("../img/c.jpg", -1, ""),
        ImageRecord("../elsewhere/e.jpg", 1, "train"),
    ]
    assert all((dataset.root / r.path).is_file() for r in records)
    assert list(dataset.split_table(records)[:, 0]) == ["train", "test", "", "train"]


def test_csv_folder_with_list_csv_and_no_header(tmp_path: Path) -> None:
    jpeg(tmp_path / "a.jpg")
    jpeg(tmp_path / "sub/b.jpg")
    write(tmp_path / "list.csv", "a.jpg,cat\nsub/b.jpg,dog\n")
    dataset = open_dataset("csv", tmp_path)
    assert dataset.classes() == ["cat", "dog"]
    assert dataset.records() == [ImageRecord("a.jpg", 0), ImageRecord("sub/b.jpg", 1)]
    write(tmp_path / "six.csv", "a.jpg,cat,0.5,1,4,3\n")
    assert open_dataset("csv", tmp_path / "six.csv").records() == [ImageRecord("a.jpg", 0, "", ((0.5, 1.0, 4.0, 3.0),))]


def test_csv_errors(tmp_path: Path) -> None:
    jpeg(tmp_path / "a.jpg")
    with pytest.raises(FeatkitError, match="list.csv does not exist"):
        open_dataset("csv", tmp_path)
    cases = {
        "a.jpg,cat,validation\n": r"bad\.csv:1: malformed line .*split 'train', 'test' or empty",
        "a.jpg,cat\na.jpg\n": r"bad\.csv:2: malformed line 'a.jpg'",
        "a.jpg,cat,train,5,1,2,3\n": r"bad\.csv:1: .*x0 < x1",
        "a.jpg,cat,train,1,x,2,3\n": r"bad\.csv:1: .*four numbers",
        "path,label,colour\na.jpg,cat,red\n": r"bad\.csv:1: .*header",
        "a.jpg,cat,train\na.jpg,dog,train\n": r"bad\.csv:2: .*same label and split",
        "missing.jpg,cat\n": r"bad\.csv:1: image .*missing\.jpg does not exist",
        "path,label\n": r"bad\.csv: no image rows",
    }
    for text, message in cases.items():
        write(tmp_path / "bad.csv", text)
        with pytest.raises(FeatkitError, match=message):
            open_dataset("csv", tmp_path / "bad.csv").records()


# ---------------------------------------------------------------- 15-Scene and Event8


def test_scene15_grayscale_tree_and_random_protocol(tmp_path: Path) -> None:
    for name in ("Coast", "Bedroom", "kitchen"):
        for i in (1, 2, 5, 9, 12):
            jpeg(tmp_path / name / f"image_{i:04d}.jpg", mode="L")
    dataset = open_dataset("scene15", tmp_path)
    assert dataset.classes() == ["Bedroom", "Coast", "kitchen"]
    records = dataset.records()
    assert len(records) == 15 and records[5] == ImageRecord("Coast/image_0001.jpg", 1)
    assert set(dataset.split_table(records).ravel()) == {"train"}  # fewer than 100 per class
    small = with_protocol(dataset, kind="random", train_per_class=3, folds=5, seed=0)
    assert_random_draw(small, records, train=3, test=None)


EVENTS = ["RockClimbing", "badminton", "bocce", "croquet", "polo", "rowing", "sailing", "snowboarding"]


def test_event8_classes_and_train_test_counts(tmp_path: Path) -> None:
    for event in reversed(EVENTS):
        for i in range(5):
            jpeg(tmp_path / event / f"{event}_{i}.jpg")
    dataset = open_dataset("event8", tmp_path)
    assert dataset.classes() == EVENTS
    records = dataset.records()
    assert records[0] == ImageRecord("RockClimbing/RockClimbing_0.jpg", 0)
    small = with_protocol(dataset, kind="random", train_per_class=2, test_per_class=1, folds=5, seed=0)
    table = assert_random_draw(small, records, train=2, test=1)
    assert (table == "").sum() == 8 * 2 * 5  # 2 images per class per fold in neither split


# ---------------------------------------------------------------- Caltech-256


def test_caltech256_numbered_order_without_clutter(tmp_path: Path) -> None:
    base = tmp_path / "256_ObjectCategories"
    for name in ("010.beer-mug", "002.american-flag", "001.ak47", "257.clutter"):
        for i in range(1, 5):
            jpeg(base / name / f"{name[:3]}_{i:04d}.jpg")
    write(base / "002.american-flag" / "RENAME2", "stray file")
    dataset = open_dataset("caltech256", tmp_path)
    assert dataset.classes() == ["001.ak47", "002.american-flag", "010.beer-mug"]
    records = dataset.records()
    assert len(records) == 12 and records[4] == ImageRecord("256_ObjectCategories/002.american-flag/002_0001.jpg", 1)
    assert_random_draw(with_protocol(dataset, kind="random", train_per_class=3, folds=3), records, train=3, test=None)
    (base / "misc").mkdir()
    with pytest.raises(FeatkitError, match="misc: not a Caltech-256 class folder"):
        open_dataset("caltech256", tmp_path).classes()


# ---------------------------------------------------------------- MIT Indoor-67


def indoor67_tree(root: Path) -> None:
    names = ("kitchen/k1.jpg", "kitchen/k2.jpg", "bar/b1.jpg", "bar/b2.jpg", "bar/unlisted.jpg")
    names += ("airport_inside/a1.jpg",)
    for name in names:
        jpeg(root / "Images" / name)
    write(root / "TrainImages.txt", "kitchen/k2.jpg\r\nbar/b1.jpg\r\nairport_inside/a1.jpg\r\n")
    write(root / "TestImages.txt", "kitchen/k1.jpg\nbar/b2.jpg\n")


def test_indoor67_official_lists(tmp_path: Path) -> None:
    indoor67_tree(tmp_path)
    dataset = open_dataset("indoor67", tmp_path)
    assert dataset.classes() == ["airport_inside", "bar", "kitchen"]
    records = dataset.records()
    assert records == [
        ImageRecord("Images/kitchen/k2.jpg", 2, "train"),
        ImageRecord("Images/bar/b1.jpg", 1, "train"),
        ImageRecord("Images/airport_inside/a1.jpg", 0, "train"),
        ImageRecord("Images/kitchen/k1.jpg", 2, "test"),
        ImageRecord("Images/bar/b2.jpg", 1, "test"),
    ]
    assert dataset.split_table(records).shape == (5, 1)


def test_indoor67_errors(tmp_path: Path) -> None:
    indoor67_tree(tmp_path)
    write(tmp_path / "TestImages.txt", "kitchen/k1.jpg\nlibrary/l1.jpg\n")
    with pytest.raises(FeatkitError, match=r"TestImages\.txt:2: malformed line 'library/l1.jpg'"):
        open_dataset("indoor67", tmp_path).records()
    (tmp_path / "TestImages.txt").unlink()
    with pytest.raises(FeatkitError, match=r"missing file .*TestImages\.txt"):
        open_dataset("indoor67", tmp_path)


# ---------------------------------------------------------------- SUN397


SUN_CLASSES = ["/a/abbey", "/a/apartment_building/outdoor", "/b/bakery/shop"]


def sun397_tree(root: Path, images_under: str = "SUN397") -> None:
    write(root / "ClassName.txt", "\n".join(SUN_CLASSES) + "\n")
    for cls in SUN_CLASSES:
        (root / images_under / cls.lstrip("/")).mkdir(parents=True)
    for k in range(1, 11):
        # partition k trains on image k of each class and tests on image k + 1
        write(root / f"Partitions/Training_{k:02d}.txt", "".join(f"{c}/sun_{k:02d}.jpg\n" for c in SUN_CLASSES))
        write(root / f"Partitions/Testing_{k:02d}.txt", "".join(f"{c}/sun_{k + 1:02d}.jpg\n" for c in SUN_CLASSES))


@pytest.mark.parametrize("images_under", ["SUN397", ""])
def test_sun397_ten_partitions(tmp_path: Path, images_under: str) -> None:
    sun397_tree(tmp_path, images_under)
    prefix = "SUN397/" if images_under else ""
    dataset = open_dataset("sun397", tmp_path)
    assert dataset.classes() == ["abbey", "apartment_building/outdoor", "bakery/shop"]
    records = dataset.records()
    assert len(records) == 3 * 11  # images 01..11 of each class appear in some partition
    assert records[0] == ImageRecord(f"{prefix}a/abbey/sun_01.jpg", 0, "train")
    assert records[1] == ImageRecord(f"{prefix}a/abbey/sun_02.jpg", 0, "test")
    assert records[11] == ImageRecord(f"{prefix}a/apartment_building/outdoor/sun_01.jpg", 1, "train")
    assert records[-1] == ImageRecord(f"{prefix}b/bakery/shop/sun_11.jpg", 2, "")
    table = dataset.split_table(records)
    assert table.shape == (33, 10)
    assert list(table[1]) == ["test", "train"] + [""] * 8  # sun_02: test in 01, train in 02
    assert all((table[:, f] == "train").sum() == 3 and (table[:, f] == "test").sum() == 3 for f in range(10))


def test_sun397_errors(tmp_path: Path) -> None:
    sun397_tree(tmp_path)
    write(tmp_path / "Partitions/Testing_04.txt", "/a/abbey/sun_05.jpg\n/c/castle/sun_01.jpg\n")
    with pytest.raises(FeatkitError, match=r"Testing_04\.txt:2: malformed line '/c/castle/sun_01.jpg'"):
        open_dataset("sun397", tmp_path).records()
    write(tmp_path / "ClassName.txt", "/a/abbey\nabbey\n")
    with pytest.raises(FeatkitError, match=r"ClassName\.txt:2: malformed line 'abbey'"):
        open_dataset("sun397", tmp_path).classes()
    (tmp_path / "Partitions/Testing_07.txt").unlink()
    with pytest.raises(FeatkitError, match=r"missing file .*Testing_07\.txt"):
        open_dataset("sun397", tmp_path)


# ---------------------------------------------------------------- SUN Attribute


def sun_attribute_tree(root: Path) -> None:
    paths = ["a/abbey/sun_a.jpg", "b/bakery/shop/sun_b.jpg", "c/canal/sun_c.jpg", "c/canal/sun_d.jpg"]
    for path in paths:
        jpeg(root / "images" / path)
    db = root / "SUNAttributeDB"
    savemat(db / "images.mat", images=cell(paths))
    savemat(db / "attributes.mat", attributes=cell(["sailing/boating", "driving", "open area"]))
    third = 1.0 / 3.0
    votes = np.array([[0, third, 2 * third], [1, 0, third], [2 * third, 2 * third, 0], [0, 0, 1]])
    savemat(db / "attributeLabels_continuous.mat", labels_cv=votes)


def test_sun_attribute_multilabel_and_seeded_half_split(tmp_path: Path) -> None:
    sun_attribute_tree(tmp_path)
    dataset = open_dataset("sun_attribute", tmp_path)
    assert dataset.classes() == ["sailing/boating", "driving", "open area"]
    records = dataset.records()
    assert records == [
        ImageRecord("images/a/abbey/sun_a.jpg", -1, "", (), (0.0, 0.0, 1.0)),
        ImageRecord("images/b/bakery/shop/sun_b.jpg", -1, "", (), (1.0, 0.0, 0.0)),
        ImageRecord("images/c/canal/sun_c.jpg", -1, "", (), (1.0, 1.0, 0.0)),
        ImageRecord("images/c/canal/sun_d.jpg", -1, "", (), (0.0, 0.0, 1.0)),
    ]
    table = dataset.split_table(records)
    assert table.shape == (4, 3)
    assert all((table[:, f] == "train").sum() == 2 and (table[:, f] == "test").sum() == 2 for f in range(3))
    np.testing.assert_array_equal(table, dataset.split_table(records))
    other = with_protocol(dataset, kind="official", folds=3, seed=11).split_table(records)
    assert other.shape == (4, 3)


def test_sun_attribute_shape_mismatch_names_the_file(tmp_path: Path) -> None:
    sun_attribute_tree(tmp_path)
    savemat(tmp_path / "SUNAttributeDB/attributeLabels_continuous.mat", labels_cv=np.zeros((4, 2)))
    with pytest.raises(FeatkitError, match=r"attributeLabels_continuous\.mat: labels_cv is \(4, 2\)"):
        open_dataset("sun_attribute", tmp_path).records()
    (tmp_path / "SUNAttributeDB/images.mat").unlink()
    with pytest.raises(FeatkitError, match=r"missing file .*images\.mat"):
        open_dataset("sun_attribute", tmp_path)


# ---------------------------------------------------------------- real samples


def sample(name: str) -> Path:
    root = SAMPLE_DATA / name
    if not root.is_dir():
        pytest.skip(f"real sample data {root} is absent (set FEATKIT_SAMPLE_DATA to the shared data folder)")
    return root


def assert_boxes_inside(root: Path, record: ImageRecord, slack: float = 0.0) -> None:
    """Every box of ``record`` lies inside its image (PIL size), up to ``slack`` pixels."""
    with Image.open(root / record.path) as image:
        width, height = image.size
    for x0, y0, x1, y1 in record.boxes:
        assert -slack <= x0 < x1 <= width + slack, (record.path, record.boxes, image.size)
        assert -slack <= y0 < y1 <= height + slack, (record.path, record.boxes, image.size)


def test_real_cub200() -> None:
    root = sample("CUB_200_2011")
    dataset = open_dataset("cub200", root)
    records = dataset.records()
    assert len(dataset.classes()) == 10 and len(records) == 543
    assert Counter(r.split for r in records) == {"train": 300, "test": 243}
    for record in records:
        assert len(record.boxes) == 1
        # CUB's own annotation of Black_Footed_Albatross_0050_796125 (500 px wide) ends at x + w = 501.
        assert_boxes_inside(root, record, slack=1.0)


def test_real_stanford40() -> None:
    root = sample("Stanford40")
    dataset = open_dataset("stanford40", root)
    assert dataset.classes() == ["applauding", "climbing", "cooking", "fishing", "riding_a_horse"]
    records = dataset.records()
    assert len(records) == 120 and Counter(r.split for r in records) == {"train": 60, "test": 60}
    by_path = {r.path: r for r in records}
    # climbing_271.xml: xmin 39, ymin 87, xmax 127, ymax 306 (1-based, inclusive)
    assert by_path["JPEGImages/climbing_271.jpg"].boxes == ((38.0, 86.0, 127.0, 306.0),)
    for record in records:
        assert record.boxes
        assert_boxes_inside(root, record)


def test_real_caltech101() -> None:
    root = sample("Caltech101")
    dataset = open_dataset("caltech101", root)
    assert dataset.classes() == ["Faces_easy", "Leopards", "Motorbikes", "accordion", "airplanes"]
    records = dataset.records()
    assert len(records) == 50
    classes = dataset.classes()
    for record in records:
        name = classes[record.label]
        folder = root / "Annotations" / ANNOTATION_FOLDERS.get(name, name)
        if name == "airplanes" or folder.is_dir():  # the sample annotates only airplanes
            assert len(record.boxes) == 1
            assert_boxes_inside(root, record)
        else:
            assert record.boxes == ()
    first = next(r for r in records if r.path == "101_ObjectCategories/airplanes/image_0001.jpg")
    assert first.boxes == ((48.0, 29.0, 349.0, 137.0),)  # box_coord [30, 137, 49, 349]


def test_real_scene15() -> None:
    root = sample("Scene15")
    dataset = open_dataset("scene15", root)
    records = dataset.records()
    assert len(dataset.classes()) == 15 and len(records) == 60
    assert Counter(r.label for r in records) == {c: 4 for c in range(15)}
