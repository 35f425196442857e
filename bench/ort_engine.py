#!/usr/bin/env python3
"""The engine reference: onnxruntime with no serving, next to our bare engine (`bench engine`).

What it measures, on the same model directory and photo as `bench engine`: images per second
when THREADS Python threads each classify the photo in a loop (Pillow decode, resize, centre
crop, normalise, as torchvision's transforms do on a PIL image, then one onnxruntime session
shared by the threads, one intra-op thread each, softmax, top-5), and on one thread alone the
time of the preprocessing and of the session's run. Pillow's decoder and resampler and
onnxruntime's run release the GIL, so the threads run in parallel where it matters.

It runs in the models' test virtualenv (.venv: onnxruntime and Pillow, pinned and hash-checked
in tools/models/requirements-test.txt), never in the enclave. Prints one JSON object. The
FastAPI + onnxruntime peer (bench/peer/server.py) imports its Reference, so both preprocess alike.

Usage: ort_engine.py --model DIR --image PATH [--threads N] [--seconds S]
       ort_engine.py --model DIR --scores --image PATH [PATH...]   (top-5 per image, no timing)
"""

import argparse
import io
import json
import os
import sys
import threading
import time

import numpy as np
import onnxruntime as ort
from PIL import Image

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tools", "models"))
import make_model  # noqa: E402  (tools/models: the manifest parser)
import testdata  # noqa: E402  (tools/models: torchvision's resize and centre crop)


class Reference:
    """A model directory (manifest.txt, model.onnx) with its preprocessing and one onnxruntime
    session of THREADS intra-op threads. bench/peer/server.py serves it (--engine onnxruntime)."""

    def __init__(self, model_dir, threads=1):
        with open(os.path.join(model_dir, "manifest.txt"), encoding="utf-8") as f:
            man = make_model.parse_manifest(f.read())
        self.resize, self.crop = int(man["resize"]), int(man["input_size"])
        self.filter = {"bicubic": Image.BICUBIC, "bilinear": Image.BILINEAR}[man["interpolation"]]
        self.mean = np.array([float(v) for v in man["mean"].split(",")], np.float32)
        self.std = np.array([float(v) for v in man["std"].split(",")], np.float32)
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        self.sess = ort.InferenceSession(os.path.join(model_dir, man["model"]), opts,
                                         providers=["CPUExecutionProvider"])
        self.input = self.sess.get_inputs()[0].name

    def prepare(self, data):
        """torchvision's Resize(resize), CenterCrop(crop), ToTensor, Normalize on a PIL image."""
        with Image.open(io.BytesIO(data)) as im:
            im = testdata.resize_crop(im.convert("RGB"), self.resize, self.crop, self.filter)
            a = np.asarray(im, dtype=np.float32) / 255.0
        a = (a - self.mean) / self.std
        return np.ascontiguousarray(a.transpose(2, 0, 1)[None], dtype=np.float32)

    def probabilities(self, x):
        logits = self.sess.run(None, {self.input: x})[0][0].astype(np.float64)
        e = np.exp(logits - logits.max())
        return e / e.sum()

    def infer(self, x):
        return np.argsort(-self.probabilities(x))[:5]

    def classify(self, data):
        return self.infer(self.prepare(data))


def stages(ref, data, seconds):
    """Preprocessing and inference time per image on one thread, in ms."""
    n, prep, run = 0, 0.0, 0.0
    start = time.perf_counter()
    while n == 0 or time.perf_counter() - start < seconds:
        t0 = time.perf_counter()
        x = ref.prepare(data)
        t1 = time.perf_counter()
        ref.infer(x)
        t2 = time.perf_counter()
        prep, run, n = prep + t1 - t0, run + t2 - t1, n + 1
    return prep / n * 1000, run / n * 1000


def throughput(ref, data, threads, seconds):
    done = threading.Event()
    counts = [0] * threads
    barrier = threading.Barrier(threads + 1)

    def work(i):
        barrier.wait()
        while not done.is_set():
            ref.classify(data)
            counts[i] += 1

    pool = [threading.Thread(target=work, args=(i,)) for i in range(threads)]
    for t in pool:
        t.start()
    barrier.wait()
    t0 = time.perf_counter()
    time.sleep(seconds)
    done.set()
    for t in pool:
        t.join()
    elapsed = time.perf_counter() - t0
    return sum(counts), elapsed


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--image", required=True)
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--scores", action="store_true",
                    help="print each --image's top-5 (class, probability) and stop: the "
                         "torchvision references of enclave/tests/jpeg.rs")
    ap.add_argument("more", nargs="*", help="with --scores: more images")
    a = ap.parse_args()
    if a.scores:
        ref = Reference(a.model)
        for path in [a.image] + a.more:
            with open(path, "rb") as f:
                p = ref.probabilities(ref.prepare(f.read()))
            top = [(int(i), round(float(p[i]), 4)) for i in np.argsort(-p)[:5]]
            print(json.dumps({"image": path, "top5": top}))
        return
    with open(a.image, "rb") as f:
        data = f.read()
    started = time.perf_counter()
    ref = Reference(a.model)
    top5 = [int(i) for i in ref.classify(data)]
    load_ms = (time.perf_counter() - started) * 1000
    prep_ms, run_ms = stages(ref, data, min(a.seconds, 3.0))
    images, elapsed = throughput(ref, data, a.threads, a.seconds)
    print(json.dumps({
        "engine": f"onnxruntime {ort.__version__}, Pillow {Image.__version__}",
        "threads": a.threads, "images": images, "seconds": elapsed,
        "images_per_s": images / elapsed, "preprocess_ms": prep_ms, "inference_ms": run_ms,
        "load_ms": load_ms, "top5": top5,
    }))


if __name__ == "__main__":
    main()
