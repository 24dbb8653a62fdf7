"""Label files and class orders.

A *label order* names how class indices are numbered.  ImageNet has two in use here:

- ``synset``: the 1000 WordNet ids sorted (Caffe's ``val.txt`` and ``synset_words.txt``, torchvision);
- ``senet``: the order the SENet release was trained with (its ``ILSVRC2017_val.txt``).

Both label files are 0-based (classes 0..999): validation image 1 is 65 in ``val.txt`` and 489 in
``ILSVRC2017_val.txt``.  Pairing the two files image by image gives the permutation between the orders;
the package carries it (``_senet_label_map.py``, made by ``_generate_label_map.py``) so that no one needs
both files.  Orders are pluggable: :func:`register_label_map` adds a pair, e.g. for a small test net.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from contextlib import contextmanager
from typing import Iterator, NamedTuple, Sequence

import numpy as np

from caffe2torch.errors import InputError
from caffe2torch.runtime._senet_label_map import SYNSET_TO_SENET

_WNID = re.compile(r"n\d{8}")

# (source order, target order) -> array a with target_label = a[source_label]
_LABEL_MAPS: dict[tuple[str, str], np.ndarray] = {}
_ORDER_SIZES: dict[str, int] = {}


def register_label_map(source: str, target: str, source_to_target: Sequence[int]) -> None:
    """Declare two label orders of the same classes: ``source_to_target[i]`` is source class i's index
    in ``target``.  The reverse direction is registered too."""
    forward = np.asarray(source_to_target, dtype=np.int64)
    if sorted(forward.tolist()) != list(range(len(forward))):
        raise InputError(f"label map {source} -> {target} is not a permutation of 0..{len(forward) - 1}")
    backward = np.empty_like(forward)
    backward[forward] = np.arange(len(forward))
    _LABEL_MAPS[(source, target)] = forward
    _LABEL_MAPS[(target, source)] = backward
    _ORDER_SIZES[source] = _ORDER_SIZES[target] = len(forward)


@contextmanager
def registered_label_map(source: str, target: str, source_to_target: Sequence[int]) -> Iterator[None]:
    """:func:`register_label_map` for the ``with`` block only: the orders known before are back on exit."""
    saved = (dict(_LABEL_MAPS), dict(_ORDER_SIZES))
    register_label_map(source, target, source_to_target)
    try:
        yield
    finally:
        for table, contents in zip((_LABEL_MAPS, _ORDER_SIZES), saved):
            table.clear()
            table.update(contents)


def label_orders() -> list[str]:
    """The names of the label orders known."""
    return sorted(_ORDER_SIZES)


def label_map(source: str, target: str) -> np.ndarray | None:
    """The array taking ``source`` labels to ``target`` labels; ``None`` when the orders are the same."""
    if source == target:
        return None
    try:
        return _LABEL_MAPS[(source, target)]
    except KeyError:
        known = ", ".join(label_orders()) or "none"
        raise InputError(f"no map from label order {source!r} to {target!r} (known orders: {known})") from None


def to_net_order(source: str | None, net_order: str | None, classes: int, what: str) -> np.ndarray | None:
    """The one translation of class indices into the order of the net's outputs: ``a[i]`` is the output of
    class ``i`` of order ``source``; None when the orders are the same.  ``what`` (``"labels"``, ``"class
    names"``) names what is in ``source`` order, for the error when the net's order is unknown."""
    if source == net_order:
        return None
    if net_order is None:
        raise InputError(f"{what} in {source!r} order, but the order of the net's outputs is unknown: name the "
                         "model (--model), a preset with a label order, or the order with --label-order "
                         "(taken to be the net's too)")
    mapping = label_map(source, net_order)
    if len(mapping) != classes:
        raise InputError(f"label order {source!r} has {len(mapping)} classes, the net has {classes} outputs")
    return mapping


class LabelLine(NamedTuple):
    """One ``name label`` line of a label file; ``line`` is 1-based, for error messages (a tuple: label
    files have 50,000 lines)."""

    name: str
    label: int
    line: int


def read_label_file(path: str | Path) -> list[LabelLine]:
    """Caffe's image-list format: ``<relative path> <integer label>`` per line; blank lines skipped.

    The name is everything before the last run of spaces, as in Caffe's ImageData layer, so names may
    contain spaces.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InputError(f"{path}: no such label file") from None
    except (OSError, UnicodeDecodeError) as error:
        raise InputError(f"{path}: cannot read the label file ({error})") from None
    entries = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        parts = line.strip().rsplit(None, 1)
        if len(parts) != 2 or not (parts[1].isascii() and parts[1].isdigit()):
            raise InputError(f"{path}:{number}: expected '<image> <label>' with a non-negative integer "
                             f"label, got {line.strip()!r}")
        entries.append(LabelLine(parts[0], int(parts[1]), number))
    if not entries:
        raise InputError(f"{path}: the label file lists no images")
    return entries


def derive_label_map(source_file: str | Path, target_file: str | Path) -> np.ndarray:
    """The permutation between the label orders of two label files of the same images.

    Returns ``a`` with ``a[source_label] = target_label``, checking that every image agrees and that
    every class of both files is paired (a bijection).
    """
    target = {entry.name: entry for entry in read_label_file(target_file)}
    pairs: dict[int, tuple[int, LabelLine]] = {}
    for entry in read_label_file(source_file):
        match = target.get(entry.name)
        if match is None:
            continue
        known = pairs.setdefault(entry.label, (match.label, entry))
        if known[0] != match.label:
            raise InputError(f"{source_file}:{entry.line}: class {entry.label} is {match.label} in "
                             f"{target_file}:{match.line} but {known[0]} for {known[1].name}")
    if not pairs:
        raise InputError(f"{source_file} and {target_file} share no image names")
    size = max(pairs) + 1
    mapping = np.full(size, -1, dtype=np.int64)
    for source_label, (target_label, _) in pairs.items():
        mapping[source_label] = target_label
    if (mapping < 0).any() or sorted(mapping.tolist()) != list(range(size)):
        raise InputError(f"the images shared by {source_file} and {target_file} do not pair all {size} "
                         "classes one to one")
    return mapping


@dataclass(frozen=True)
class ClassNames:
    """Human-readable class names; ``wnids`` when the file gives WordNet ids (``synset_words.txt``)."""

    names: list[str]
    wnids: list[str] | None

    @property
    def sorted_synsets(self) -> bool:
        """A file of sorted WordNet ids is, by definition, in ``synset`` order."""
        return self.wnids is not None and self.wnids == sorted(self.wnids)


def read_class_names(path: str | Path) -> ClassNames:
    """One class per line: ``<wnid> <name>`` (``synset_words.txt``) or just a name."""
    path = Path(path)
    try:
        lines = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    except FileNotFoundError:
        raise InputError(f"{path}: no such class-name file") from None
    except (OSError, UnicodeDecodeError) as error:
        raise InputError(f"{path}: cannot read the class names ({error})") from None
    if not lines:
        raise InputError(f"{path}: no class names")
    split = [line.split(None, 1) for line in lines]
    if all(_WNID.fullmatch(parts[0]) for parts in split):
        return ClassNames([parts[1] if len(parts) > 1 else parts[0] for parts in split],
                          [parts[0] for parts in split])
    return ClassNames(lines, None)


register_label_map("synset", "senet", SYNSET_TO_SENET)
