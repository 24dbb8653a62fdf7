"""``python -m caffe2torch.cli``: the same command, for launchers such as torchrun -m."""

from caffe2torch.cli import run

run()
