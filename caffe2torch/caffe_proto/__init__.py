"""Caffe's file formats: the schema bindings and the readers and writers built on them."""

from caffe2torch.caffe_proto import caffe_pb2
from caffe2torch.caffe_proto.text import parse_prototxt, read_prototxt
from caffe2torch.caffe_proto.upgrade import CaffeFormatWarning, upgrade_net

__all__ = ["CaffeFormatWarning", "caffe_pb2", "parse_prototxt", "read_prototxt", "upgrade_net"]
