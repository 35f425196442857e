#!/usr/bin/env python3
"""Quantise a float model directory to int8 (ONNX QOperator format) for tract, and compare.

  python tools/models/quantize.py --model models/resnet18-synthetic \\
      --out models/resnet18-synthetic-int8 [--calib testdata] [--compare]

Writes OUT/{model.onnx,labels.txt,manifest.txt}: model.onnx is MODEL's model.onnx quantised
statically by onnxruntime.quantization.quantize_static, labels.txt is MODEL's, and the manifest
is MODEL's with the new name, source and sha256 (the model server checks it). `make model
MODEL=resnet18-synthetic-int8` does the same through make_model.py's registry (the float model
first, then this), and checks the result against its pinned SHA-256.

What the quantised graph holds, and why (tract-onnx 0.23 is the consumer, not onnxruntime):
  - Conv -> QLinearConv: uint8 activations, int8 weights quantised per output channel
    (symmetric, zero point 0), int32 bias. tract-onnx imports QLinearConv, including per-channel
    weight scales and zero points.
  - Relu after a Conv is removed: the Conv's output range is the Relu's (min 0), so the
    requantisation clamps. MaxPool runs on the uint8 tensor (ONNX MaxPool takes uint8).
  - QuantizeLinear / DequantizeLinear where the graph goes between float and uint8.
  - Add, GlobalAveragePool, Flatten and Gemm stay float: their QOperator forms (QLinearAdd,
    QLinearGlobalAveragePool, QGemm) are onnxruntime contrib ops (com.microsoft), which tract
    does not import. They are a small share of ResNet18's work.

Calibration: MinMax over the test photos (CALIB/*.jpg, *.png, sorted), each preprocessed as the
model server does (bench/ort_engine.py's Reference.prepare: the manifest's resize, centre crop,
mean and std, as torchvision does on a PIL image). Every activation range is then rounded
outwards to 6 significant bits and given to the quantiser (TensorQuantOverrides), so the output
does not hang on the last bits of onnxruntime's float arithmetic: the same bytes on each run,
and very likely on another CPU too (AVX-512 against AVX2, Graviton), which the pin needs.

Needs onnxruntime, Pillow, numpy and onnx: the models' test virtualenv (.venv after
`make models-test-venv`), not the build-only one.
"""

import argparse
import glob
import logging
import os
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
REPO = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(REPO, "bench"))

import numpy as np  # noqa: E402
import onnx  # noqa: E402
import onnxruntime as ort  # noqa: E402
from onnxruntime.quantization import (  # noqa: E402
    CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType, quantize_static)
from onnxruntime.quantization.calibrate import create_calibrator  # noqa: E402

import fetch  # noqa: E402
import make_model  # noqa: E402
import ort_engine  # noqa: E402  (bench/: the model server's preprocessing, with Pillow)

# The ops quantised (QOperator); see the module's doc for the ones left float.
OP_TYPES = ["Conv", "Relu", "MaxPool"]
RANGE_BITS = 6  # significant bits kept of each calibrated activation range bound
DEFAULT_CALIB = os.path.join(REPO, "testdata")


class QuantiseError(Exception):
    pass


def calibration_photos(calib_dir):
    paths = sorted(glob.glob(os.path.join(calib_dir, "*.jpg")) +
                   glob.glob(os.path.join(calib_dir, "*.png")))
    if not paths:
        raise QuantiseError(f"no calibration photos (*.jpg, *.png) in {calib_dir}: "
                            f"run `make testdata`")
    return paths


def preprocessed(model_dir, paths):
    """The photos as the model's input tensors, preprocessed as the model server does."""
    ref = ort_engine.Reference(model_dir, threads=1)
    out = []
    for p in paths:
        with open(p, "rb") as f:
            out.append(ref.prepare(f.read()))
    return ref.input, out


class Photos(CalibrationDataReader):
    def __init__(self, input_name, tensors):
        self.feeds = iter([{input_name: x} for x in tensors])

    def get_next(self):
        return next(self.feeds, None)


def _round_away(x, up):
    """x rounded to RANGE_BITS significant bits, towards +inf if up else -inf (0 stays 0)."""
    x = float(np.asarray(x).reshape(-1)[0])
    if x == 0.0 or not np.isfinite(x):
        return np.float32(x)
    m, e = np.frexp(abs(x))  # abs(x) = m * 2**e, 0.5 <= m < 1
    q = m * (1 << RANGE_BITS)
    q = np.ceil(q) if (x > 0) == up else np.floor(q)
    return np.float32(np.copysign(np.ldexp(q / (1 << RANGE_BITS), int(e)), x))


def rounded_ranges(float_path, input_name, tensors, tmp):
    """MinMax ranges of the activations quantize_static quantises, widened to a coarse grid,
    as TensorQuantOverrides. A Relu's single-use input gets the Relu's range, as onnxruntime's
    quantiser does before it removes the Relu (the override would otherwise undo that)."""
    cal = create_calibrator(float_path, OP_TYPES,
                            augmented_model_path=os.path.join(tmp, "augmented.onnx"),
                            calibrate_method=CalibrationMethod.MinMax,
                            providers=["CPUExecutionProvider"])
    cal.collect_data(Photos(input_name, tensors))
    data = cal.compute_data()
    ranges = {name: (_round_away(td.range_value[0], up=False),
                     _round_away(td.range_value[1], up=True))
              for name, td in data.data.items()}
    del cal
    model = onnx.load(float_path)
    uses = {}
    for node in model.graph.node:
        for i in node.input:
            uses[i] = uses.get(i, 0) + 1
    for node in model.graph.node:
        if (node.op_type == "Relu" and uses.get(node.input[0]) == 1
                and node.input[0] in ranges and node.output[0] in ranges):
            ranges[node.input[0]] = ranges[node.output[0]]
    return {name: [{"rmin": lo, "rmax": hi}] for name, (lo, hi) in sorted(ranges.items())}


def quantise(float_dir, calib_dir=DEFAULT_CALIB):
    """Return the int8 QOperator model.onnx bytes for FLOAT_DIR's model."""
    with open(os.path.join(float_dir, "manifest.txt"), encoding="utf-8") as f:
        man = make_model.parse_manifest(f.read())
    float_path = os.path.join(float_dir, man["model"])
    input_name, tensors = preprocessed(float_dir, calibration_photos(calib_dir))
    level = logging.getLogger().level
    logging.getLogger().setLevel(logging.ERROR)  # the "consider pre-processing" advice
    try:
        with tempfile.TemporaryDirectory(prefix="quantize.") as tmp:
            overrides = rounded_ranges(float_path, input_name, tensors, tmp)
            out = os.path.join(tmp, "model.onnx")
            quantize_static(
                float_path, out, Photos(input_name, tensors),
                quant_format=QuantFormat.QOperator,
                op_types_to_quantize=OP_TYPES,
                per_channel=True,
                reduce_range=False,
                activation_type=QuantType.QUInt8,
                weight_type=QuantType.QInt8,
                calibrate_method=CalibrationMethod.MinMax,
                calibration_providers=["CPUExecutionProvider"],
                extra_options={"TensorQuantOverrides": overrides},
            )
            with open(out, "rb") as f:
                data = f.read()
    finally:
        logging.getLogger().setLevel(level)
    check_ops(data)
    return data


# The ops tract-onnx 0.23 imports among those the quantiser may write (all in the default
# ONNX domain); anything else, a com.microsoft contrib op above all, is an error.
TRACT_OPS = {"QuantizeLinear", "DequantizeLinear", "QLinearConv", "QLinearMatMul", "Conv",
             "Relu", "MaxPool", "Add", "GlobalAveragePool", "Flatten", "Gemm", "MatMul"}


def op_counts(data):
    counts = {}
    for node in onnx.load_from_string(data).graph.node:
        key = node.op_type if node.domain in ("", "ai.onnx") else f"{node.domain}.{node.op_type}"
        counts[key] = counts.get(key, 0) + 1
    return dict(sorted(counts.items()))


def check_ops(data):
    bad = sorted(set(op_counts(data)) - TRACT_OPS)
    if bad:
        raise QuantiseError(f"the quantised graph has ops tract-onnx does not import: {bad}")


def manifest_for(float_dir, name, sha256):
    """FLOAT_DIR's manifest for the quantised model: new name, source and sha256."""
    with open(os.path.join(float_dir, "manifest.txt"), encoding="utf-8") as f:
        man = make_model.parse_manifest(f.read())
    man.update(name=name, sha256=sha256, model="model.onnx", labels="labels.txt",
               source=f"{man['source']}; {make_model.INT8_SOURCE}")
    lines = ["# Model manifest for the appliance's model server (written by tools/models).",
             "# Plain 'key = value' lines; mean/std apply to pixels scaled to [0,1];",
             "# resize is the short side before the centre crop of input_size.",
             ""]
    lines += [f"{k} = {man[k]}" for k in make_model.MANIFEST_KEYS]
    return "\n".join(lines) + "\n"


def write_dir(float_dir, out_dir, data, name=None):
    name = name or os.path.basename(os.path.normpath(out_dir))
    os.makedirs(out_dir, exist_ok=True)
    man_path = os.path.join(out_dir, "manifest.txt")
    if os.path.exists(man_path):
        os.unlink(man_path)  # a half-written directory is never "up to date"
    make_model.write_atomic(os.path.join(out_dir, "model.onnx"), data)
    with open(os.path.join(float_dir, "labels.txt"), "rb") as f:
        make_model.write_atomic(os.path.join(out_dir, "labels.txt"), f.read())
    sha = fetch.sha256_bytes(data)
    make_model.write_atomic(man_path, manifest_for(float_dir, name, sha).encode())
    return sha


def softmax(logits):
    z = logits.astype(np.float64) - logits.max()
    e = np.exp(z)
    return e / e.sum()


def compare(float_dir, int8_dir, calib_dir=DEFAULT_CALIB):
    """onnxruntime on both models, every photo: top-1 agreement, the float top-5's overlap with
    the int8 top-5, the largest |probability difference| over each photo's float top-5, and the
    logits' error relative to their spread, |int8 - float| / |float - mean(float)| (L2)."""
    paths = calibration_photos(calib_dir)
    a = ort_engine.Reference(float_dir, threads=1)
    b = ort_engine.Reference(int8_dir, threads=1)
    rows = []
    for p in paths:
        with open(p, "rb") as f:
            raw = f.read()
        x, y = a.prepare(raw), b.prepare(raw)
        la = a.sess.run(None, {a.input: x})[0][0].astype(np.float64)
        lb = b.sess.run(None, {b.input: y})[0][0].astype(np.float64)
        pa, pb = softmax(la), softmax(lb)
        ta, tb = np.argsort(-pa)[:5], np.argsort(-pb)[:5]
        rows.append(dict(photo=os.path.basename(p), top1_float=int(ta[0]), top1_int8=int(tb[0]),
                         top5_overlap=len(set(ta) & set(tb)),
                         max_top5_prob_diff=float(np.abs(pa[ta] - pb[ta]).max()),
                         p_top1_float=float(pa[ta[0]]), p_top1_int8=float(pb[ta[0]]),
                         logit_rel_err=float(np.linalg.norm(lb - la) /
                                             np.linalg.norm(la - la.mean()))))
    return rows


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default=os.path.join(REPO, "models", "resnet18-synthetic"),
                    help="the float model directory")
    ap.add_argument("--out", help="output directory (default MODEL-int8)")
    ap.add_argument("--name", help="the manifest's name (default: OUT's last component)")
    ap.add_argument("--calib", default=DEFAULT_CALIB, help="calibration photos (*.jpg, *.png)")
    ap.add_argument("--compare", action="store_true",
                    help="then compare with the float model (onnxruntime, every photo)")
    a = ap.parse_args(argv)
    out = a.out or os.path.normpath(a.model) + "-int8"
    try:
        data = quantise(a.model, a.calib)
        sha = write_dir(a.model, out, data, a.name)
    except (QuantiseError, make_model.ModelError, OSError, KeyError) as e:
        print(f"quantize: error: {type(e).__name__}: {e}", file=sys.stderr)
        return 1
    print(f"quantize: wrote {out} (model.onnx {len(data)} bytes, sha256 {sha})")
    print(f"quantize: ops {op_counts(data)}")
    if a.compare:
        rows = compare(a.model, out, a.calib)
        for r in rows:
            print(f"  {r['photo']:<18} top-1 float {r['top1_float']:>4} int8 {r['top1_int8']:>4}"
                  f"  top-5 overlap {r['top5_overlap']}/5  max |dp| top-5 "
                  f"{r['max_top5_prob_diff']:.5f}  p(top-1) {r['p_top1_float']:.4f} -> "
                  f"{r['p_top1_int8']:.4f}  logits rel. err {r['logit_rel_err']:.4f}")
        agree = sum(r["top1_float"] == r["top1_int8"] for r in rows)
        print(f"quantize: top-1 agreement {agree}/{len(rows)}, max |prob diff| over the float "
              f"top-5 {max(r['max_top5_prob_diff'] for r in rows):.5f}, logits rel. error "
              f"max {max(r['logit_rel_err'] for r in rows):.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
