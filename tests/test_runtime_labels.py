"""Label files, label orders (the SENet permutation), image sets, shards and the progress line."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest

from caffe2torch.errors import InputError
from caffe2torch.runtime import labels
from caffe2torch.runtime.data import Progress, images_from_class_folders, images_from_label_file, shard
from caffe2torch.runtime.labels import derive_label_map, label_map, read_class_names, read_label_file, \
    register_label_map, to_net_order
from tests.conftest import shared_path


def _label_map_txt() -> np.ndarray:
    """../shared/senet/label_map.txt as 0-based: line i (1-based synset class) -> 1-based SENet class."""
    lines = shared_path("senet", "label_map.txt").read_text().split()
    return np.array([int(v) for v in lines]) - 1


def test_both_label_files_are_zero_based() -> None:
    senet = read_label_file(shared_path("senet", "ILSVRC2017_val.txt"))
    synset = read_label_file(shared_path("realmodels", "imagenet-val-100", "val.txt"))
    assert (senet[0].name, senet[0].label, synset[0].name, synset[0].label) == \
        ("ILSVRC2012_val_00000001.JPEG", 489, "ILSVRC2012_val_00000001.JPEG", 65)
    for entries in (senet, synset):
        assert len(entries) == 50_000 and {e.label for e in entries} == set(range(1000))
    assert label_map("synset", "senet")[65] == 489


def test_derived_and_carried_maps_equal_label_map_txt() -> None:
    derived = derive_label_map(shared_path("realmodels", "imagenet-val-100", "val.txt"),
                               shared_path("senet", "ILSVRC2017_val.txt"))
    expected = _label_map_txt()
    assert derived.tolist() == expected.tolist()
    assert label_map("synset", "senet").tolist() == expected.tolist()
    back = label_map("senet", "synset")
    assert back[expected].tolist() == list(range(1000))


def test_translation_to_the_nets_order_and_a_pluggable_order() -> None:
    with labels.registered_label_map("abc", "cab", [1, 2, 0]):
        _check_abc_orders()
    assert "abc" not in labels.label_orders()


def _check_abc_orders() -> None:
    assert to_net_order("abc", "cab", 3, "labels").tolist() == [1, 2, 0]
    assert to_net_order("cab", "abc", 3, "labels").tolist() == [2, 0, 1]
    assert to_net_order("abc", "abc", 3, "labels") is None and to_net_order(None, None, 3, "labels") is None
    assert "abc" in labels.label_orders() and "senet" in labels.label_orders()
    with pytest.raises(InputError, match="no map from label order 'abc' to 'senet'"):
        to_net_order("abc", "senet", 3, "labels")
    with pytest.raises(InputError, match="class names in 'abc' order, but the order of the net's outputs is unknown"):
        to_net_order("abc", None, 3, "class names")
    with pytest.raises(InputError, match="label order 'abc' has 3 classes, the net has 1000 outputs"):
        to_net_order("abc", "cab", 1000, "labels")
    with pytest.raises(InputError, match="not a permutation"):
        register_label_map("x", "y", [0, 0, 1])


def test_label_file_format_errors(tmp_path: Path) -> None:
    good = tmp_path / "good.txt"
    good.write_text("a b.JPEG 3\n\nc.png 0\n")
    assert [(e.name, e.label, e.line) for e in read_label_file(good)] == [("a b.JPEG", 3, 1), ("c.png", 0, 3)]
    bad = tmp_path / "bad.txt"
    bad.write_text("a.JPEG 1\nb.JPEG minus\n")
    with pytest.raises(InputError, match=r"bad.txt:2: expected '<image> <label>'"):
        read_label_file(bad)
    (tmp_path / "empty.txt").write_text("\n")
    with pytest.raises(InputError, match="lists no images"):
        read_label_file(tmp_path / "empty.txt")
    with pytest.raises(InputError, match="no such label file"):
        read_label_file(tmp_path / "absent.txt")


def test_derive_label_map_rejects_disagreeing_files(tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_text("1.JPEG 0\n2.JPEG 1\n3.JPEG 0\n")
    (tmp_path / "b.txt").write_text("1.JPEG 1\n2.JPEG 0\n3.JPEG 0\n")
    with pytest.raises(InputError, match=r"a.txt:3: class 0 is 0 in .*b.txt:3 but 1 for 1.JPEG"):
        derive_label_map(tmp_path / "a.txt", tmp_path / "b.txt")
    (tmp_path / "c.txt").write_text("1.JPEG 1\n2.JPEG 1\n")
    with pytest.raises(InputError, match="do not pair all 2 classes one to one"):
        derive_label_map(tmp_path / "a.txt", tmp_path / "c.txt")


def test_class_names() -> None:
    names = read_class_names(shared_path("realmodels", "imagenet-val-100", "synset_words.txt"))
    assert names.sorted_synsets and len(names.names) == 1000
    assert names.names[0] == "tench, Tinca tinca" and names.wnids[0] == "n01440764"


def test_plain_class_names(tmp_path: Path) -> None:
    (tmp_path / "names.txt").write_text("cat\ndog\n")
    names = read_class_names(tmp_path / "names.txt")
    assert names.names == ["cat", "dog"] and names.wnids is None and not names.sorted_synsets


def test_images_from_label_file_checks_only_what_it_uses(tmp_path: Path) -> None:
    for name in ("a.png", "b.png"):
        (tmp_path / name).write_bytes(b"")
    (tmp_path / "labels.txt").write_text("a.png 1\nb.png 2\nmissing.png 0\n")
    images = images_from_label_file(tmp_path, tmp_path / "labels.txt", limit=2)
    assert [(i.path.name, i.label, i.origin.endswith("labels.txt:2")) for i in images.images] == \
        [("a.png", 1, False), ("b.png", 2, True)]
    with pytest.raises(InputError, match=r"labels.txt:3: image 'missing.png' is not in"):
        images_from_label_file(tmp_path, tmp_path / "labels.txt")


def test_class_folders_are_numbered_in_sorted_wnid_order(tmp_path: Path) -> None:
    for wnid, count in (("n02000000", 2), ("n01000000", 1), ("n03000000", 0)):
        (tmp_path / wnid).mkdir()
        for i in range(count):
            (tmp_path / wnid / f"{i}.JPEG").write_bytes(b"")
    image_set = images_from_class_folders(tmp_path)
    assert [(i.path.parent.name, i.label) for i in image_set.images] == \
        [("n01000000", 0), ("n02000000", 1), ("n02000000", 1)]
    assert (image_set.label_order, image_set.classes) == ("synset", 3)
    (tmp_path / "other").mkdir()
    with pytest.raises(InputError, match="one folder per class"):
        images_from_class_folders(tmp_path)


@pytest.mark.parametrize("count, world", [(10, 3), (2, 4), (0, 2), (7, 1)])
def test_shards_cover_every_item_once(count: int, world: int) -> None:
    items = list(range(count))
    shards = [shard(items, rank, world) for rank in range(world)]
    assert sorted(sum(shards, [])) == items
    assert max(map(len, shards)) - min(map(len, shards)) <= 1


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_only_on_a_terminal() -> None:
    silent = io.StringIO()
    with Progress(10, stream=silent) as bar:
        bar.update(10)
    assert silent.getvalue() == ""
    terminal = _Terminal()
    with Progress(10, stream=terminal, enabled=False) as bar:
        bar.update(10)
    assert terminal.getvalue() == ""
    with Progress(10, stream=terminal, interval=0.0) as bar:
        bar.update(4)
        bar.update(6)
    assert terminal.getvalue().startswith("\r4/10 images ") and "\r10/10 images " in terminal.getvalue()
    assert "images/s" in terminal.getvalue() and terminal.getvalue().endswith("\n")
    assert bar.line(2.0).startswith("10/10 images  5.0 images/s  ETA 0:00")
