"""Layer-by-layer construction of a ``NetParameter``, in the idiom of the SENet release prototxts.

Every helper writes exactly the fields the release files write and nothing more: protobuf equality
distinguishes an absent field from one set to its default (``stride: 1`` is written in the ResNet
family and omitted in SE-BN-Inception), so callers say which optional fields appear.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from caffe2torch.caffe_proto import caffe_pb2

PoolMethod = caffe_pb2.PoolingParameter.PoolMethod


def _fill(message: Any, fields: Mapping[str, Any]) -> None:
    """Set ``fields`` on ``message``: mappings fill sub-messages; a repeated field takes a sequence or one item."""
    for key, value in fields.items():
        field = message.DESCRIPTOR.fields_by_name[key]
        values = value if isinstance(value, Sequence) and not isinstance(value, str) else [value]
        if field.message_type is not None and field.is_repeated:
            for item in values:
                _fill(getattr(message, key).add(), item)
        elif field.message_type is not None:
            _fill(getattr(message, key), value)
        elif field.is_repeated:
            getattr(message, key).extend(values)
        else:
            setattr(message, key, value)


class NetBuilder:
    """Appends layers to a net and hands out the common layer shapes of the release files."""

    def __init__(self, net_name: str, input_shape: Sequence[int] = (1, 3, 224, 224)) -> None:
        self.net = caffe_pb2.NetParameter(name=net_name)
        self.layer("data", "Input", [], ["data"], input_param={"shape": {"dim": list(input_shape)}})

    def layer(
        self, name: str, type_: str, bottoms: Sequence[str], tops: Sequence[str], **params: Mapping[str, Any]
    ) -> None:
        """Append one layer; ``params`` are ``<type>_param`` sub-messages given as mappings."""
        layer = self.net.layer.add(name=name, type=type_)
        layer.bottom.extend(bottoms)
        layer.top.extend(tops)
        _fill(layer, params)

    def conv(
        self,
        name: str,
        bottom: str,
        num_output: int,
        kernel_size: int,
        *,
        stride: int | None = None,
        pad: int | None = None,
        group: int | None = None,
        bias_term: bool = True,
    ) -> str:
        """A Convolution whose top is its name; ``None`` leaves a field unwritten (Caffe's default)."""
        param: dict[str, Any] = {"num_output": num_output}
        if not bias_term:
            param["bias_term"] = False
        optional = {"pad": pad, "kernel_size": kernel_size, "group": group, "stride": stride}
        param.update({key: value for key, value in optional.items() if value is not None})
        self.layer(name, "Convolution", [bottom], [name], convolution_param=param)
        return name

    def batch_norm_scale(self, blob: str) -> None:
        """Inference BatchNorm (global statistics) and its learned affine Scale, both in place."""
        self.layer(f"{blob}/bn", "BatchNorm", [blob], [blob], batch_norm_param={"use_global_stats": True})
        self.layer(f"{blob}/bn/scale", "Scale", [blob], [blob], scale_param={"bias_term": True})

    def relu(self, name: str, blob: str) -> None:
        self.layer(name, "ReLU", [blob], [blob])

    def conv_bn(self, name: str, bottom: str, num_output: int, kernel_size: int, **conv: int | None) -> str:
        """Bias-free convolution + BatchNorm + Scale: the unit every conv of these nets is made of."""
        self.conv(name, bottom, num_output, kernel_size, bias_term=False, **conv)
        self.batch_norm_scale(name)
        return name

    def conv_bn_relu(
        self, name: str, bottom: str, num_output: int, kernel_size: int, *, relu: str, **conv: int | None
    ) -> str:
        self.conv_bn(name, bottom, num_output, kernel_size, **conv)
        self.relu(relu, name)
        return name

    def pool(self, name: str, bottom: str, method: int, kernel_size: int, stride: int, pad: int | None = None) -> str:
        param: dict[str, Any] = {"pool": method, "kernel_size": kernel_size, "stride": stride}
        if pad is not None:
            param["pad"] = pad
        self.layer(name, "Pooling", [bottom], [name], pooling_param=param)
        return name

    def squeeze_excitation_gate(self, prefix: str, bottom: str, channels: int, reduction: int = 16) -> str:
        """The SE branch up to its gate: global average -> 1x1 down, ReLU -> 1x1 up -> Sigmoid (in place).

        Returns the gate blob (N x C x 1 x 1), named ``<prefix>_1x1_up`` because the Sigmoid is in place.
        """
        pooled = f"{prefix}_global_pool"
        self.layer(
            pooled,
            "Pooling",
            [bottom],
            [pooled],
            pooling_param={"pool": PoolMethod.AVE, "engine": caffe_pb2.PoolingParameter.CAFFE, "global_pooling": True},
        )
        down = self.conv(f"{prefix}_1x1_down", pooled, channels // reduction, 1, stride=1)
        self.relu(f"{down}/relu", down)
        up = self.conv(f"{prefix}_1x1_up", down, channels, 1, stride=1)
        self.layer(f"{prefix}_prob", "Sigmoid", [up], [up])
        return up

    def classifier_head(self, bottom: str, dropout_ratio: float | None = None) -> None:
        """7x7 average pool, optional in-place Dropout, 1000-way InnerProduct and Softmax."""
        pooled = self.pool("pool5/7x7_s1", bottom, PoolMethod.AVE, 7, 1)
        if dropout_ratio is not None:
            dropout = {"dropout_ratio": dropout_ratio}
            self.layer("pool5/dropout_7x7_s1", "Dropout", [pooled], [pooled], dropout_param=dropout)
        self.layer("classifier", "InnerProduct", [pooled], ["classifier"], inner_product_param={"num_output": 1000})
        self.layer("prob", "Softmax", ["classifier"], ["prob"])
