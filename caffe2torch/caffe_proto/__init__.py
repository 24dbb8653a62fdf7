"""Caffe's file formats: the schema bindings and the readers and writers built on them."""

from caffe2torch.caffe_proto import caffe_pb2

__all__ = ["caffe_pb2"]
