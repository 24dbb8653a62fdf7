"""Caffe's file formats: the schema bindings and the readers and writers built on them."""

from caffe2torch.caffe_proto import caffe_pb2
from caffe2torch.caffe_proto.schema import Schema, UntypedMessage, load_schema, parse_net_binary, using_schema
from caffe2torch.caffe_proto.text import parse_prototxt, read_prototxt
from caffe2torch.caffe_proto.upgrade import CaffeFormatWarning, upgrade_net
from caffe2torch.caffe_proto.weights import (
    Weights,
    read_blob,
    read_weights,
    write_caffemodel,
    write_hdf5,
)

__all__ = [
    "CaffeFormatWarning",
    "Schema",
    "UntypedMessage",
    "Weights",
    "caffe_pb2",
    "load_schema",
    "parse_net_binary",
    "parse_prototxt",
    "read_blob",
    "read_prototxt",
    "read_weights",
    "upgrade_net",
    "using_schema",
    "write_caffemodel",
    "write_hdf5",
]
