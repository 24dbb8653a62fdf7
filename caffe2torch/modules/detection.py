"""The SSD fork's layers (weiliu89/caffe, branch ssd): Permute, PriorBox, Normalize and DetectionOutput.

Each follows the fork's CPU code, including its float32 arithmetic where that decides bits: PriorBox
computes in float where Caffe does (and truncates sizes to int as Caffe does), DetectionOutput compares
overlaps and thresholds in float32 and keeps Caffe's order of detections.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from caffe2torch.modules.shapes import check_channels

FLT_MAX = 3.4028234663852886e38  # Caffe's -FLT_MAX is DetectionOutput's "no confidence threshold"
BOX_CODES = ("CORNER", "CENTER_SIZE", "CORNER_SIZE")  # PriorBoxParameter.CodeType 1, 2, 3


def round_to_float32(value: float) -> float:
    """``value`` rounded to the nearest float32 (ties to even), as a C++ ``float`` would hold it.

    Plain math rather than a tensor: it runs in constructors, which the converter calls on the meta device.
    Parameters here are sizes and ratios, so subnormals and overflow need no care."""
    if value == 0 or not math.isfinite(value):
        return value
    mantissa, exponent = math.frexp(value)
    return math.ldexp(round(mantissa * 2 ** 24), exponent - 24)


def legacy_height_width(shape: tuple[int, ...] | torch.Size) -> tuple[int, int]:
    """Caffe's ``Blob::height()`` and ``width()``: axes 2 and 3, 1 where the blob has fewer axes."""
    return (shape[2] if len(shape) > 2 else 1), (shape[3] if len(shape) > 3 else 1)


class Permute(nn.Module):
    """The input's axes in ``order`` (a full permutation; the converter completes a partial one)."""

    def __init__(self, order: tuple[int, ...]) -> None:
        super().__init__()
        self.order = order

    def output_shapes(self, input_shapes: list[tuple[int, ...]]) -> list[tuple[int, ...]]:
        shape = tuple(input_shapes[0])
        if sorted(self.order) != list(range(len(shape))):
            raise ValueError(f"order {list(self.order)} is not a permutation of the {len(shape)} axes of the input")
        return [tuple(shape[axis] for axis in self.order)]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.permute(self.order).contiguous()


def prior_aspect_ratios(aspect_ratios: tuple[float, ...], flip: bool) -> list[float]:
    """PriorBoxLayer::LayerSetUp's list: 1 first, then each given ratio not within 1e-6 of one already
    listed, followed by its inverse when ``flip`` (the inverse is not checked for duplicates, as in Caffe).
    Values are float32, as Caffe's ``vector<float>`` holds them."""
    ratios = [1.0]
    for given in aspect_ratios:
        ratio = round_to_float32(given)
        if any(abs(round_to_float32(ratio - known)) < 1e-6 for known in ratios):
            continue
        ratios.append(ratio)
        if flip:
            ratios.append(round_to_float32(1.0 / ratio))
    return ratios


def prior_box_sizes(min_sizes: tuple[float, ...], max_sizes: tuple[float, ...],
                    aspect_ratios: list[float]) -> list[tuple[float, float]]:
    """(width, height) of each prior of one cell in Caffe's order: per min_size, the min_size square, the
    sqrt(min_size * max_size) square when max sizes are given, then one box per aspect ratio other than 1.

    Caffe truncates the sizes to int (``int min_size_ = min_sizes_[s]``), takes square roots in double and
    stores the results in float; so does this."""
    sizes = []
    for index, min_size in enumerate(min_sizes):
        low = int(min_size)
        sizes.append((float(low), float(low)))
        if max_sizes:
            side = round_to_float32(math.sqrt(low * int(max_sizes[index])))
            sizes.append((side, side))
        for ratio in aspect_ratios:
            if abs(ratio - 1.0) < 1e-6:
                continue
            sizes.append((round_to_float32(low * math.sqrt(ratio)), round_to_float32(low / math.sqrt(ratio))))
    return sizes


class PriorBox(nn.Module):
    """SSD's prior (default) boxes of a feature map: 1 x 2 x (H * W * priors * 4), the first channel the
    boxes (xmin, ymin, xmax, ymax, normalised by the image size), the second their variances.

    Computed at each call from the two inputs' shapes only (the feature map's H x W, the image's size
    unless ``img_size`` fixes it), in Caffe's precision: cell centres in float32, corners in double from
    the float32 centres and sizes, stored as float32.
    """

    def __init__(self, min_sizes: tuple[float, ...], max_sizes: tuple[float, ...],
                 aspect_ratios: tuple[float, ...], flip: bool, clip: bool, variances: tuple[float, ...],
                 img_size: tuple[int, int] | None, step: tuple[float, float] | None, offset: float) -> None:
        super().__init__()
        self.min_sizes, self.max_sizes, self.aspect_ratios = min_sizes, max_sizes, aspect_ratios
        self.flip, self.clip, self.variances = flip, clip, variances
        self.img_size, self.step, self.offset = img_size, step, offset  # (height, width) pairs
        self.box_sizes = prior_box_sizes(min_sizes, max_sizes, prior_aspect_ratios(aspect_ratios, flip))

    @property
    def num_priors(self) -> int:
        return len(self.box_sizes)

    def output_shapes(self, input_shapes: list[tuple[int, ...]]) -> list[tuple[int, ...]]:
        """1 x 2 x (H * W * priors * 4), H x W the feature map's (Caffe's legacy height and width)."""
        feature, image = input_shapes
        for what, shape in (("the feature map", feature), ("the image", image)):
            if len(shape) > 4:
                raise ValueError(f"{what} has shape {list(shape)}: at most 4 axes (num/channels/height/width)")
        layer_h, layer_w = legacy_height_width(feature)
        return [(1, 2, layer_h * layer_w * self.num_priors * 4)]

    def forward(self, feature: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
        layer_h, layer_w = legacy_height_width(feature.shape)
        img_h, img_w = self.img_size if self.img_size is not None else legacy_height_width(image.shape)
        if self.step is not None:
            step_h, step_w = self.step
        else:  # Caffe: static_cast<float>(img_width) / layer_width, a float division
            step_h, step_w = round_to_float32(img_h / layer_h), round_to_float32(img_w / layer_w)
        device = feature.device
        f32 = dict(dtype=torch.float32, device=device)
        # center = (w + offset) * step: two float32 operations, each rounded.
        center_x = (torch.arange(layer_w, **f32) + round_to_float32(self.offset)) * round_to_float32(step_w)
        center_y = (torch.arange(layer_h, **f32) + round_to_float32(self.offset)) * round_to_float32(step_h)
        sizes = torch.tensor(self.box_sizes, dtype=torch.float64, device=device)  # already float32 values
        half_w, half_h = sizes[:, 0] / 2, sizes[:, 1] / 2
        cx = center_x.double().view(1, layer_w, 1)
        cy = center_y.double().view(layer_h, 1, 1)
        shape = (layer_h, layer_w, self.num_priors)
        boxes = torch.stack([((cx - half_w) / img_w).expand(shape), ((cy - half_h) / img_h).expand(shape),
                             ((cx + half_w) / img_w).expand(shape), ((cy + half_h) / img_h).expand(shape)],
                            dim=-1).float().reshape(-1)
        if self.clip:
            boxes = boxes.clamp(0.0, 1.0)
        variance = torch.tensor(self.variances, **f32)
        variances = variance.expand(boxes.numel()) if variance.numel() == 1 else variance.repeat(boxes.numel() // 4)
        return torch.stack([boxes, variances]).unsqueeze(0)


class Normalize(nn.Module):
    """SSD's L2 normalisation, then a learned scale.

    ``across_spatial``: one norm per image over all its values, ``x * (1 / sqrt(sum(x^2) + eps))``; else one
    norm per position over the channels, ``x / sqrt(sum_c(x^2) + eps)``.  eps is inside the square root,
    so an all-zero input gives 0.  The scale is one value (``channel_shared``, a blob with no axes) or
    one per channel.  Inputs have 2 to 4 axes (Caffe's legacy num, channels, height, width).
    """

    def __init__(self, channels: int, across_spatial: bool, channel_shared: bool, eps: float) -> None:
        super().__init__()
        self.across_spatial, self.channel_shared, self.eps = across_spatial, channel_shared, eps
        self.weight = nn.Parameter(torch.ones(() if channel_shared else (channels,)))

    def output_shapes(self, input_shapes: list[tuple[int, ...]]) -> list[tuple[int, ...]]:
        shape = check_channels(input_shapes[0], None if self.channel_shared else self.weight.shape[0])
        if len(shape) > 4:
            raise ValueError(f"needs 2 to 4 axes (num/channels/height/width), got shape {list(shape)}")
        return [shape]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.reshape(x.shape[0], x.shape[1], -1)
        squares = flat * flat
        if self.across_spatial:
            norm = torch.sqrt(squares.sum(dim=(1, 2), keepdim=True) + self.eps)
            y = flat * (1.0 / norm)
        else:
            norm = torch.sqrt(squares.sum(dim=1, keepdim=True) + self.eps)
            y = flat / norm
        y = y * (self.weight if self.channel_shared else self.weight.view(1, -1, 1))
        return y.reshape(x.shape)


def decode_boxes(loc: torch.Tensor, priors: torch.Tensor, variances: torch.Tensor | None, code_type: str
                 ) -> torch.Tensor:
    """SSD's DecodeBBox for every prediction: ``loc`` (..., P, L, 4) against ``priors`` (P, 4) and
    ``variances`` (P, 4; None when the variance is encoded in the target), in float32 as Caffe computes.
    No clipping: Caffe-SSD's DetectionOutput decodes with clip_bbox false (OpenCV's clip is DetectionOutput's)."""
    prior = priors.unsqueeze(1)  # P x 1 x 4, against the L location classes
    var = variances.unsqueeze(1) if variances is not None else None
    px0, py0, px1, py1 = prior.unbind(-1)
    dx0, dy0, dx1, dy1 = loc.unbind(-1)
    if code_type == "CORNER":
        if var is not None:
            dx0, dy0, dx1, dy1 = var[..., 0] * dx0, var[..., 1] * dy0, var[..., 2] * dx1, var[..., 3] * dy1
        return torch.stack([px0 + dx0, py0 + dy0, px1 + dx1, py1 + dy1], dim=-1)
    prior_w, prior_h = px1 - px0, py1 - py0
    if code_type == "CORNER_SIZE":
        if var is not None:
            dx0, dy0, dx1, dy1 = var[..., 0] * dx0, var[..., 1] * dy0, var[..., 2] * dx1, var[..., 3] * dy1
        return torch.stack([px0 + dx0 * prior_w, py0 + dy0 * prior_h, px1 + dx1 * prior_w, py1 + dy1 * prior_h],
                           dim=-1)
    # CENTER_SIZE
    prior_cx, prior_cy = (px0 + px1) / 2, (py0 + py1) / 2
    if var is not None:
        cx = var[..., 0] * dx0 * prior_w + prior_cx
        cy = var[..., 1] * dy0 * prior_h + prior_cy
        w = torch.exp(var[..., 2] * dx1) * prior_w
        h = torch.exp(var[..., 3] * dy1) * prior_h
    else:
        cx = dx0 * prior_w + prior_cx
        cy = dy0 * prior_h + prior_cy
        w = torch.exp(dx1) * prior_w
        h = torch.exp(dy1) * prior_h
    return torch.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], dim=-1)


def box_areas(boxes: torch.Tensor) -> torch.Tensor:
    """SSD's BBoxSize of normalised boxes: width * height, 0 for a box whose max is below its min."""
    x0, y0, x1, y1 = boxes.unbind(-1)
    invalid = (x1 < x0) | (y1 < y0)
    return torch.where(invalid, torch.zeros_like(x0), (x1 - x0) * (y1 - y0))


def jaccard_overlaps(box: torch.Tensor, area: torch.Tensor, boxes: torch.Tensor, areas: torch.Tensor
                     ) -> torch.Tensor:
    """SSD's JaccardOverlap (normalised: no +1) of one box with each of ``boxes``, in float32."""
    inter_w = torch.minimum(boxes[:, 2], box[2]) - torch.maximum(boxes[:, 0], box[0])
    inter_h = torch.minimum(boxes[:, 3], box[3]) - torch.maximum(boxes[:, 1], box[1])
    inter = inter_w * inter_h
    overlap = inter / (areas + area - inter)
    return torch.where((inter_w > 0) & (inter_h > 0), overlap, torch.zeros_like(overlap))


def ssd_nms(boxes: torch.Tensor, areas: torch.Tensor, scores: torch.Tensor, score_threshold: float,
            nms_threshold: float, eta: float, top_k: int) -> torch.Tensor:
    """SSD's ApplyNMSFast: the indices kept, in the order kept (score descending).

    Candidates score strictly above ``score_threshold``, sorted by score (stable: ties in index order),
    the first ``top_k`` (-1: all); a candidate is kept when its overlap with every box kept before it is at
    most the threshold, which after each kept box is multiplied by ``eta`` while it is above 0.5.
    Implemented by tracking each candidate's largest overlap with the boxes kept so far: one vector
    step per kept box rather than a loop over all pairs.
    """
    candidates = torch.nonzero(scores > score_threshold).flatten()
    order = torch.sort(scores[candidates], descending=True, stable=True).indices
    candidates = candidates[order]
    if top_k > -1:
        candidates = candidates[:top_k]
    boxes, areas = boxes[candidates], areas[candidates]
    largest_overlap = torch.full((len(candidates),), -math.inf, dtype=boxes.dtype, device=boxes.device)
    threshold = round_to_float32(nms_threshold)
    eta = round_to_float32(eta)
    kept = []
    start = 0
    while start < len(candidates):
        acceptable = torch.nonzero(largest_overlap[start:] <= threshold)
        if acceptable.numel() == 0:
            break
        index = start + int(acceptable[0, 0])
        kept.append(index)
        start = index + 1
        if start < len(candidates):
            largest_overlap[start:] = torch.maximum(
                largest_overlap[start:], jaccard_overlaps(boxes[index], areas[index], boxes[start:], areas[start:]))
        if eta < 1 and threshold > 0.5:
            threshold = round_to_float32(threshold * eta)
    return candidates[torch.tensor(kept, dtype=torch.long, device=candidates.device)]


class DetectionOutput(nn.Module):
    """SSD's DetectionOutput: decode the location predictions against the priors, per-class NMS, then the
    best ``keep_top_k`` of an image over all classes.

    Inputs: loc (N x P * L * 4, L = 1 with share_location else num_classes), conf (N x P * num_classes, the
    net's softmax already applied), prior (1 x 2 x P * 4: boxes then variances; 1 x 1 x P * 4 will do when
    the variance is encoded in the target); a further input is ignored.  Output: 1 x 1 x D x 7 rows
    ``[image_id, label, score, xmin, ymin, xmax, ymax]``, as Caffe orders them: by image, then label
    ascending, then score descending.  When no image has a detection, Caffe's placeholder: one row per
    image, ``[image_id, -1, -1, -1, -1, -1, -1]``.  With ``clip`` (OpenCV's field; Caffe-SSD decodes unclipped) each
    decoded box is clipped to [0, 1] before NMS, and its area is that of the clipped box.

    D depends on the data; :meth:`output_shapes` declares an upper bound.
    """

    def __init__(self, num_classes: int, share_location: bool, background_label_id: int, code_type: str,
                 variance_encoded_in_target: bool, keep_top_k: int, confidence_threshold: float,
                 nms_threshold: float, top_k: int, eta: float, clip: bool = False) -> None:
        super().__init__()
        if code_type not in BOX_CODES:
            raise ValueError(f"code_type must be one of {BOX_CODES}, got {code_type!r}")
        self.num_classes, self.share_location = num_classes, share_location
        self.background_label_id, self.code_type = background_label_id, code_type
        self.variance_encoded_in_target, self.keep_top_k = variance_encoded_in_target, keep_top_k
        self.confidence_threshold, self.nms_threshold = confidence_threshold, nms_threshold
        self.top_k, self.eta, self.clip = top_k, eta, clip

    @property
    def num_loc_classes(self) -> int:
        return 1 if self.share_location else self.num_classes

    def output_shapes(self, input_shapes: list[tuple[int, ...]]) -> list[tuple[int, ...]]:
        """An upper bound on the output's shape: 1 x 1 x D x 7 with D the batch size N times the most rows an
        image can give (keep_top_k, or without it every foreground class's top_k or P candidates), and at
        least N (the placeholder rows).  The actual D is known only after NMS."""
        batch = input_shapes[0][0]
        num_priors = legacy_height_width(input_shapes[2])[0] // 4
        foreground = sum(1 for c in range(self.num_classes) if c != self.background_label_id)
        per_class = num_priors if self.top_k < 0 else min(self.top_k, num_priors)
        per_image = foreground * per_class
        if self.keep_top_k > -1:
            per_image = min(per_image, self.keep_top_k)
        return [(1, 1, max(batch * per_image, batch), 7)]

    def forward(self, loc: torch.Tensor, conf: torch.Tensor, prior: torch.Tensor,
                *ignored: torch.Tensor) -> torch.Tensor:
        if loc.is_meta:  # a meta run of a model holding it: no data to decide on, so the declared bound
            shapes = [tuple(t.shape) for t in (loc, conf, prior)]
            return torch.empty(self.output_shapes(shapes)[0], dtype=loc.dtype, device=loc.device)
        batch = loc.shape[0]
        num_priors = legacy_height_width(prior.shape)[0] // 4
        prior = prior.reshape(prior.shape[0], prior.shape[1], -1)
        priors = prior[0, 0].reshape(num_priors, 4)
        variances = None if self.variance_encoded_in_target else prior[0, 1].reshape(num_priors, 4)
        boxes = decode_boxes(loc.reshape(batch, num_priors, self.num_loc_classes, 4), priors, variances,
                             self.code_type)
        if self.clip:  # OpenCV's DecodeBBox with clip_bbox: each corner into [0, 1], the size from the clipped box
            boxes = boxes.clamp(0.0, 1.0)
        areas = box_areas(boxes)
        scores = conf.reshape(batch, num_priors, self.num_classes)
        rows = []
        for image in range(batch):
            rows.extend(self._detect(image, boxes[image], areas[image], scores[image]))
        if not rows:
            placeholder = torch.full((batch, 7), -1.0, dtype=loc.dtype, device=loc.device)
            placeholder[:, 0] = torch.arange(batch, dtype=loc.dtype, device=loc.device)
            return placeholder.view(1, 1, batch, 7)
        return torch.cat(rows).view(1, 1, -1, 7)

    def _detect(self, image: int, boxes: torch.Tensor, areas: torch.Tensor, scores: torch.Tensor
                ) -> list[torch.Tensor]:
        """The rows of one image: ``boxes`` P x L x 4, ``areas`` P x L, ``scores`` P x num_classes."""
        labels, kept = [], []
        for label in range(self.num_classes):
            if label == self.background_label_id:
                continue
            column = 0 if self.share_location else label
            indices = ssd_nms(boxes[:, column], areas[:, column], scores[:, label], self.confidence_threshold,
                              self.nms_threshold, self.eta, self.top_k)
            labels.append(torch.full_like(indices, label))
            kept.append(indices)
        if not kept:
            return []
        labels_all, indices_all = torch.cat(labels), torch.cat(kept)
        if len(indices_all) == 0:
            return []
        chosen_scores = scores[indices_all, labels_all]
        if -1 < self.keep_top_k < len(indices_all):
            # Caffe sorts the (score, label, index) of all classes by score and keeps keep_top_k, then
            # regroups them by label (a std::map: ascending), each label's in that score order.
            best = torch.sort(chosen_scores, descending=True, stable=True).indices[:self.keep_top_k]
            best = best[torch.sort(labels_all[best], stable=True).indices]
            labels_all, indices_all, chosen_scores = labels_all[best], indices_all[best], chosen_scores[best]
        if len(indices_all) == 0:
            return []
        columns = torch.zeros_like(indices_all) if self.share_location else labels_all
        chosen_boxes = boxes[indices_all, columns]
        dtype = boxes.dtype
        image_ids = torch.full((len(indices_all), 1), float(image), dtype=dtype, device=boxes.device)
        return [torch.cat([image_ids, labels_all.to(dtype).unsqueeze(1), chosen_scores.unsqueeze(1), chosen_boxes],
                          dim=1)]
