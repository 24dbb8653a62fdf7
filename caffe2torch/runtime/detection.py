"""Detections of a net ending in SSD's ``DetectionOutput``: its rows read into :class:`Detection` records,
boxes put back on the original image, and drawn.

``DetectionOutput`` gives 1 x 1 x N x 7 rows ``[image_id, label, score, xmin, ymin, xmax, ymax]`` with the
box relative to the net's input ([0, 1] across it; SSD's decoding can reach a little past either end).
Rows with label -1 are Caffe's "nothing found" placeholders, not detections.  A box is put in pixels of
the image the user gave, as SSD's own ``ssd_detect`` does (``x * width``, ``y * height`` for a warped
image), through the region of the image the input covers (which is the whole image unless a crop cut part
of it), then clipped to the image.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

from caffe2torch.errors import InputError
from caffe2torch.files import atomic_output

DETECTION_OUTPUT = "DetectionOutput"
DEFAULT_THRESHOLD = 0.5  # a confident detection; the net keeps many weak ones (its confidence_threshold is low)
BOX_COLOUR = (0, 255, 0)  # BGR
CAPTION_TEXT_COLOUR = (0, 0, 0)
CAPTION_FONT_SCALE = 0.5
CAPTION_MARGIN = 2  # pixels around the caption text

Region = tuple[float, float, float, float]  # x0, y0, x1, y1 in the image's pixels

if TYPE_CHECKING:  # the command line's option parsing imports this module and must not pay for torch
    import numpy as np
    import torch


@dataclass(frozen=True)
class Detection:
    """One detection: the class ``label`` (and its ``name`` when a label file gives one), the ``score``,
    and the box ``(xmin, ymin, xmax, ymax)`` in pixels of the original image."""

    label: int
    score: float
    box: tuple[float, float, float, float]
    name: str | None = None

    @property
    def caption(self) -> str:
        return f"{self.name if self.name is not None else self.label} {self.score:.2f}"


@dataclass(frozen=True)
class ImageDetections:
    """An image's detections at or above ``threshold``, best first, and how many weaker ones were hidden."""

    shown: list[Detection]
    hidden: int
    threshold: float


def is_detection_output(output_types: dict[str, str | None], output: str | None) -> bool:
    """Whether the output a command reads (``output``, else the net's only one) is written by a
    DetectionOutput layer, as the converter recorded (``module.output_types``)."""
    if output is None:
        return len(output_types) == 1 and next(iter(output_types.values())) == DETECTION_OUTPUT
    return output_types.get(output) == DETECTION_OUTPUT


def check_threshold(threshold: float) -> float:
    """A score threshold: a number in [0, 1] (scores are probabilities)."""
    if not 0.0 <= float(threshold) <= 1.0:
        raise InputError(f"--threshold {threshold}: expected a score between 0 and 1")
    return float(threshold)


def detection_rows(output: torch.Tensor | np.ndarray) -> np.ndarray:
    """DetectionOutput's rows as an R x 7 float array, checked to be of its 1 x 1 x R x 7 shape."""
    import numpy as np

    rows = np.asarray(output.detach().cpu().numpy() if hasattr(output, "detach") else output)
    if rows.ndim != 4 or rows.shape[:2] != (1, 1) or rows.shape[3] != 7:
        raise InputError(f"expected DetectionOutput rows of shape 1 x 1 x R x 7, the net gives {list(rows.shape)}")
    return rows.reshape(-1, 7).astype(np.float64)


def to_pixels(row: np.ndarray, region: Region, height: int, width: int) -> tuple[float, float, float, float]:
    """A row's box, relative to the net's input, in pixels of the ``height`` x ``width`` image whose
    ``region`` the input covers; clipped to the image."""
    x0, y0, x1, y1 = region
    xmin, ymin, xmax, ymax = (float(v) for v in row[3:7])
    return (min(max(x0 + xmin * (x1 - x0), 0.0), float(width)), min(max(y0 + ymin * (y1 - y0), 0.0), float(height)),
            min(max(x0 + xmax * (x1 - x0), 0.0), float(width)), min(max(y0 + ymax * (y1 - y0), 0.0), float(height)))


def image_detections(rows: np.ndarray, image_index: int, region: Region, height: int, width: int, *,
                     threshold: float = DEFAULT_THRESHOLD, names: Sequence[str] | None = None) -> ImageDetections:
    """The detections of batch item ``image_index`` among ``rows`` (R x 7), by score, best first; those
    under ``threshold`` are counted, not returned; placeholders (label -1) are neither."""
    mine = rows[(rows[:, 0] == image_index) & (rows[:, 1] >= 0)]
    shown = [Detection(int(row[1]), float(row[2]), to_pixels(row, region, height, width),
                       names[int(row[1])] if names is not None and int(row[1]) < len(names) else None)
             for row in mine if row[2] >= threshold]
    shown.sort(key=lambda detection: -detection.score)  # stable: equal scores keep Caffe's label order
    return ImageDetections(shown, len(mine) - len(shown), threshold)


def _cv2() -> Any:
    from caffe2torch.runtime.preprocess import _cv2

    return _cv2()


def line_thickness(height: int, width: int) -> int:
    """Box lines 2 pixels wide, thicker on large images so that they stay visible."""
    return max(2, round(max(height, width) / 500))


def pixel_box(detection: Detection, height: int, width: int) -> tuple[int, int, int, int]:
    """The box's corners as pixel indices inside the image (where its lines are drawn)."""
    xmin, ymin, xmax, ymax = detection.box
    return (min(int(round(xmin)), width - 1), min(int(round(ymin)), height - 1),
            min(int(round(xmax)), width - 1), min(int(round(ymax)), height - 1))


def caption_rectangle(detection: Detection, height: int, width: int) -> tuple[int, int, int, int]:
    """Where a box's caption (label and score, on a filled background of the box's colour) is drawn,
    ``(x0, y0, x1, y1)`` inclusive: on the box's top edge, above it, or just inside when there is no room
    above."""
    cv2 = _cv2()
    (text_width, text_height), baseline = cv2.getTextSize(detection.caption, cv2.FONT_HERSHEY_SIMPLEX,
                                                          CAPTION_FONT_SCALE, 1)
    box_x0, box_y0, _, _ = pixel_box(detection, height, width)
    caption_height = text_height + baseline + 2 * CAPTION_MARGIN
    top = box_y0 - caption_height if box_y0 - caption_height >= 0 else box_y0
    return (box_x0, top, min(box_x0 + text_width + 2 * CAPTION_MARGIN, width - 1),
            min(top + caption_height, height - 1))


def draw_detections(image: np.ndarray, detections: Sequence[Detection]) -> np.ndarray:
    """A copy of ``image`` (H x W x 3, BGR uint8) with each detection's box and caption drawn, the best
    last so that it is on top where boxes overlap."""
    import numpy as np

    cv2 = _cv2()
    drawn = np.ascontiguousarray(image).copy()
    height, width = drawn.shape[:2]
    thickness = line_thickness(height, width)
    for detection in sorted(detections, key=lambda d: d.score):
        x0, y0, x1, y1 = pixel_box(detection, height, width)
        cv2.rectangle(drawn, (x0, y0), (x1, y1), BOX_COLOUR, thickness)
        cx0, cy0, cx1, cy1 = caption_rectangle(detection, height, width)
        cv2.rectangle(drawn, (cx0, cy0), (cx1, cy1), BOX_COLOUR, cv2.FILLED)
        (_, text_height), _ = cv2.getTextSize(detection.caption, cv2.FONT_HERSHEY_SIMPLEX, CAPTION_FONT_SCALE, 1)
        cv2.putText(drawn, detection.caption, (cx0 + CAPTION_MARGIN, cy0 + CAPTION_MARGIN + text_height),
                    cv2.FONT_HERSHEY_SIMPLEX, CAPTION_FONT_SCALE, CAPTION_TEXT_COLOUR, 1, cv2.LINE_AA)
    return drawn


def check_drawing_path(path: str | Path, *, force: bool = False) -> Path:
    """Refuse, before any work, a drawing that cannot be written: an existing file (without ``force``),
    a missing folder, or an image format OpenCV cannot write."""
    path = Path(path)
    if path.exists() and not force:
        raise InputError(f"{path} already exists; use --force to overwrite it")
    if path.is_dir():
        raise InputError(f"{path} is a folder; --draw takes an image file name such as boxes.png")
    if not path.parent.is_dir():
        raise InputError(f"{path}: the folder {path.parent} does not exist")
    if not path.suffix or not _cv2().haveImageWriter(str(path)):
        raise InputError(f"{path}: OpenCV cannot write images of this kind; use .png or .jpg")
    return path


def write_drawing(path: str | Path, image: np.ndarray, detections: Sequence[Detection], *,
                  force: bool = False) -> Path:
    """``image`` with ``detections`` drawn, written to ``path`` atomically (the format by its suffix)."""
    path = check_drawing_path(path, force=force)
    ok, encoded = _cv2().imencode(path.suffix, draw_detections(image, detections))
    if not ok:
        raise InputError(f"{path}: OpenCV could not encode the image as {path.suffix}")
    with atomic_output(path, force=force) as temporary:
        temporary.write_bytes(encoded.tobytes())
    return path
