"""Running converted nets: device and precision (:mod:`.device`), Caffe-faithful preprocessing
(:mod:`.preprocess`, :mod:`.presets`), image sets and label orders (:mod:`.data`, :mod:`.labels`),
top-1/top-5 evaluation (:mod:`.evaluate`, :mod:`.verify`), :mod:`.predict` and :mod:`.bench`.

This package file imports nothing heavy, so the command line can read these constants without torch.
"""

# fp32 is exact IEEE float32 (TF32 off); bf16/fp16 run under autocast.
PRECISIONS = ("fp32", "bf16", "fp16")
