"""ResNet18: the ONNX Model Zoo file (pinned download or local file), and a synthetic copy.

The synthetic model has torchvision's resnet18 architecture exactly (11,689,512 parameters
counting BatchNorm weight and bias) with seeded random weights; it is for tests and benchmarks,
its predictions mean nothing. BatchNorm is folded into the convolutions in the graph.
"""

import os
import shutil

import numpy as np

import fetch
from onnx_graph import BN_EPS_TORCH, GraphBuilder, fold_bn

ZOO_URL = ("https://github.com/onnx/models/raw/main/validated/vision/classification/resnet/"
           "model/resnet18-v1-7.onnx")
ZOO_SHA256 = "4e8f8653e7a2222b3904cc3fe8e304cd8b339ce1d05fd24688162f86fb6df52c"
ZOO_SIZE = 46_820_737

SYNTHETIC_SEED = 20240243
EXPECTED_PARAMS = 11_689_512
NUM_CLASSES = 1000


def install_zoo(dest, cache_dir, local_file=None):
    """Put the verified zoo model at dest. local_file (RESNET18_ONNX) skips the download."""
    if local_file:
        if not os.path.isfile(local_file):
            raise fetch.FetchError(f"RESNET18_ONNX={local_file}: no such file")
        size = os.path.getsize(local_file)
        got = fetch.sha256_file(local_file)
        if got != ZOO_SHA256 or size != ZOO_SIZE:
            raise fetch.FetchError(
                f"RESNET18_ONNX={local_file} is not the pinned resnet18-v1-7.onnx:\n"
                f"  expected sha256 {ZOO_SHA256} ({ZOO_SIZE} bytes)\n"
                f"  got      sha256 {got} ({size} bytes)\nrefusing to install it")
        src = local_file
    else:
        src = fetch.curl(ZOO_URL, os.path.join(cache_dir, "resnet18-v1-7.onnx"), ZOO_SHA256,
                         ZOO_SIZE)
    tmp = dest + ".tmp"
    shutil.copyfile(src, tmp)
    fetch.check_sha256(tmp, ZOO_SHA256, "copied resnet18-v1-7.onnx")
    os.replace(tmp, dest)
    return ZOO_SHA256


# ---- synthetic ---------------------------------------------------------------------------

def _uniform(rng, shape, bound):
    # rng.random is exact integer->float arithmetic: the same bits on every platform.
    return ((rng.random(shape, dtype=np.float64) * 2.0 - 1.0) * bound).astype(np.float32)


def synthetic_state_dict(seed=SYNTHETIC_SEED):
    """torchvision resnet18 parameter names and shapes, He-uniform weights, mild BN stats."""
    rng = np.random.default_rng(seed)
    sd = {}

    def conv(name, cout, cin, k):
        bound = np.sqrt(6.0 / (cin * k * k))  # He (Kaiming) uniform, gain sqrt(2)
        sd[name + ".weight"] = _uniform(rng, (cout, cin, k, k), bound)

    def bn(name, c, gamma=1.0):
        sd[name + ".weight"] = (gamma * (1.0 + _uniform(rng, (c,), 0.1))).astype(np.float32)
        sd[name + ".bias"] = _uniform(rng, (c,), 0.1)
        sd[name + ".running_mean"] = _uniform(rng, (c,), 0.1)
        sd[name + ".running_var"] = (1.0 + _uniform(rng, (c,), 0.1)).astype(np.float32)

    conv("conv1", 64, 3, 7)
    bn("bn1", 64)
    cin = 64
    for li, (c, stride) in enumerate([(64, 1), (128, 2), (256, 2), (512, 2)], start=1):
        for bi in range(2):
            p = f"layer{li}.{bi}"
            s = stride if bi == 0 else 1
            conv(p + ".conv1", c, cin, 3)
            bn(p + ".bn1", c)
            conv(p + ".conv2", c, c, 3)
            # Smaller last-BN scale per block keeps the residual stream from growing.
            bn(p + ".bn2", c, gamma=0.5)
            if s != 1 or cin != c:
                conv(p + ".downsample.0", c, cin, 1)
                bn(p + ".downsample.1", c)
            cin = c
    bound = 1.0 / np.sqrt(512)
    sd["fc.weight"] = _uniform(rng, (NUM_CLASSES, 512), bound)
    sd["fc.bias"] = _uniform(rng, (NUM_CLASSES,), bound)
    return sd


def count_params(sd):
    return sum(int(v.size) for k, v in sd.items()
               if not k.endswith(("running_mean", "running_var")))


def build_synthetic(seed=SYNTHETIC_SEED):
    sd = synthetic_state_dict(seed)
    n = count_params(sd)
    if n != EXPECTED_PARAMS:
        raise AssertionError(f"synthetic resnet18 has {n} parameters, expected {EXPECTED_PARAMS}")
    g = GraphBuilder("resnet18_synthetic")

    def conv_bn(x, conv, bn, stride, pad):
        w, b = fold_bn(sd[conv + ".weight"], None, sd[bn + ".weight"], sd[bn + ".bias"],
                       sd[bn + ".running_mean"], sd[bn + ".running_var"], BN_EPS_TORCH)
        return g.conv(x, conv, w, b, stride=stride, pads=(pad,) * 4)

    x = g.input("data", [1, 3, 224, 224])
    x = conv_bn(x, "conv1", "bn1", 2, 3)
    x = g.node("Relu", [x], "relu")
    x = g.node("MaxPool", [x], "maxpool", kernel_shape=[3, 3], strides=[2, 2],
               pads=[1, 1, 1, 1])
    cin = 64
    for li, (c, stride) in enumerate([(64, 1), (128, 2), (256, 2), (512, 2)], start=1):
        for bi in range(2):
            p = f"layer{li}.{bi}"
            s = stride if bi == 0 else 1
            idt = x
            y = conv_bn(x, p + ".conv1", p + ".bn1", s, 1)
            y = g.node("Relu", [y], p + ".relu1")
            y = conv_bn(y, p + ".conv2", p + ".bn2", 1, 1)
            if s != 1 or cin != c:
                idt = conv_bn(x, p + ".downsample.0", p + ".downsample.1", s, 0)
            y = g.node("Add", [y, idt], p + ".add")
            x = g.node("Relu", [y], p + ".relu2")
            cin = c
    x = g.node("GlobalAveragePool", [x], "avgpool")
    x = g.node("Flatten", [x], "flatten", axis=1)
    fw = g.const("fc.weight", sd["fc.weight"])
    fb = g.const("fc.bias", sd["fc.bias"])
    g.node("Gemm", [x, fw, fb], "fc", out="logits", transB=1)
    g.output("logits", [1, NUM_CLASSES])
    return g.model(f"SYNTHETIC ResNet18 (torchvision architecture, {EXPECTED_PARAMS} parameters "
                   f"before BN folding), seeded random weights (numpy default_rng seed "
                   f"{seed}): not a trained model")
