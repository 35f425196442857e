"""A small, deterministic ONNX graph builder on top of onnx.helper + numpy.

Every model in tools/models is built with it, so the bytes of model.onnx depend only on the
weights and the code: no timestamps, no random names, a fixed IR version and opset.
"""

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 13
IR_VERSION = 7  # the IR version that goes with opset 13 (onnx 1.8), readable by every runtime
PRODUCER = "tools/models"

BN_EPS_TORCH = 1e-5


def fold_bn(weight, bias, gamma, beta, mean, var, eps):
    """Fold an inference-mode BatchNorm into the preceding conv/linear (output channel axis 0).

    Computed in float64 and rounded once to float32; IEEE arithmetic makes it bit-exact on
    every platform.
    """
    w = weight.astype(np.float64)
    b = np.zeros(w.shape[0]) if bias is None else bias.astype(np.float64)
    scale = gamma.astype(np.float64) / np.sqrt(var.astype(np.float64) + eps)
    w = w * scale.reshape((-1,) + (1,) * (w.ndim - 1))
    b = (b - mean.astype(np.float64)) * scale + beta.astype(np.float64)
    return w.astype(np.float32), b.astype(np.float32)


def same_pads(size, k, s, d=1):
    """TensorFlow 'SAME' padding for one spatial axis: (begin, end, out_size).

    Output is ceil(size / s); when the total padding is odd the extra pixel goes at the end.
    """
    out = -(-size // s)
    total = max((out - 1) * s + (k - 1) * d + 1 - size, 0)
    return total // 2, total - total // 2, out


class GraphBuilder:
    def __init__(self, name):
        self.name = name
        self.nodes = []
        self.initializers = []
        self.inputs = []
        self.outputs = []
        self._names = set()
        self._clip = None

    def _unique(self, name):
        if name in self._names:
            raise ValueError(f"duplicate name {name}")
        self._names.add(name)
        return name

    def input(self, name, shape):
        self.inputs.append(helper.make_tensor_value_info(self._unique(name), TensorProto.FLOAT,
                                                         list(shape)))
        return name

    def output(self, name, shape):
        self.outputs.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, list(shape)))

    def const(self, name, array):
        array = np.ascontiguousarray(array)
        if array.dtype == np.float64:
            raise TypeError(f"{name}: float64 initializer")
        self.initializers.append(numpy_helper.from_array(array, self._unique(name)))
        return name

    def node(self, op, inputs, name, out=None, **attrs):
        out = out or name
        self.nodes.append(helper.make_node(op, list(inputs), [self._unique(out)],
                                           name=self._unique(name + ":" + op), **attrs))
        return out

    def conv(self, x, name, w, b, stride=1, pads=(0, 0, 0, 0), group=1):
        wn = self.const(name + ".weight", w)
        bn = self.const(name + ".bias", b)
        k = list(w.shape[2:])
        return self.node("Conv", [x, wn, bn], name, kernel_shape=k, strides=[stride, stride],
                         pads=list(pads), group=group, dilations=[1, 1])

    def relu6(self, x, name):
        if self._clip is None:
            self._clip = (self.const("relu6.min", np.array(0.0, np.float32)),
                          self.const("relu6.max", np.array(6.0, np.float32)))
        return self.node("Clip", [x, *self._clip], name)

    def model(self, doc):
        graph = helper.make_graph(self.nodes, self.name, self.inputs, self.outputs,
                                  initializer=self.initializers)
        m = helper.make_model(graph, producer_name=PRODUCER, producer_version="1",
                              opset_imports=[helper.make_opsetid("", OPSET)], doc_string=doc)
        m.ir_version = IR_VERSION
        onnx.checker.check_model(m, full_check=True)
        return m


def serialize(model):
    return model.SerializeToString(deterministic=True)
