"""The benchmark's peer: a plain Python model server (never part of the product), with one of
two engines behind the same FastAPI code.

--engine torch (the default): the study's model server, reimplemented from the paper's
description. --engine onnxruntime: the same server with onnxruntime instead of PyTorch, serving
any of our model directories (models/NAME), so the peer runs the very model ours runs.

The server, whatever the engine:
- FastAPI behind Uvicorn, one process; POST /predict/ takes JSON
  {"images": ["<base64>", ...]} and returns {"class_ids": [...]}, the argmax per image; an
  image that does not decode is a 400 (the study's server answered 500);
- the endpoint is a plain `def`, so FastAPI runs it in its thread pool, and the engine uses one
  intra-op thread per core (os.cpu_count(), set explicitly below);
- GET /health answers 200 once the model is loaded (the bench waits for it), with the engine,
  its version, its intra-op threads and the model.

--engine torch, what the paper describes:
- PyTorch with torchvision's ResNet18 and its transforms: Resize(256), CenterCrop(224),
  ToTensor, Normalize(ImageNet mean/std); the batch is stacked and run in one forward pass
  under torch.no_grad().
  What differs, and why: no weights can be downloaded here, so the network is
  torchvision.models.resnet18(weights=None) with a fixed seed: the same architecture and
  arithmetic as the study's, random parameters. Ours is benchmarked with
  models/resnet18-synthetic (the same architecture, also synthetic weights), so both do the
  same compute per image. It runs in build/peer-venv (setup.sh torch: Debian's CPU-only torch).

--engine onnxruntime --model DIR:
- DIR is a model directory (manifest.txt, model.onnx); the preprocessing is the manifest's
  (resize the short side, centre crop, scale to [0,1], mean/std, bilinear or bicubic), done
  with Pillow as torchvision's transforms do on a PIL image: bench/ort_engine.py's Reference,
  imported, so the peer and the engine reference preprocess alike;
- one onnxruntime InferenceSession (CPU), shared by FastAPI's threads (its run is
  thread-safe). The batch is stacked and run at once when the model's batch dimension allows
  it; our models' is fixed at 1, so there each image is one run, as in our model server.
  It runs in build/peer-ort-venv (setup.sh onnxruntime: onnxruntime, numpy and Pillow pinned
  and hash-checked as in the models' .venv; no torch).

Usage: python server.py [--engine torch|onnxruntime] [--model DIR] --port PORT [--host 127.0.0.1]
"""

import argparse
import base64
import io
import os
import sys

from fastapi import FastAPI, HTTPException
from pydantic import BaseModel

THREADS = os.cpu_count() or 1


class BadImage(Exception):
    pass


class TorchEngine:
    """The study's: torchvision's ResNet18 (random weights, seed 0) and its transforms."""

    def __init__(self):
        import torch
        import torchvision
        from PIL import Image
        from torchvision import transforms

        torch.manual_seed(0)
        torch.set_num_threads(THREADS)
        self.torch, self.image = torch, Image
        self.model = torchvision.models.resnet18(weights=None).eval()
        self.preprocess = transforms.Compose(
            [
                transforms.Resize(256),
                transforms.CenterCrop(224),
                transforms.ToTensor(),
                transforms.Normalize(mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225]),
            ]
        )
        self.info = {"engine": "torch", "version": torch.__version__,
                     "model": "torchvision resnet18, random weights (seed 0)"}

    def threads(self):
        return self.torch.get_num_threads()

    def predict(self, blobs):
        try:
            batch = self.torch.stack(
                [self.preprocess(self.image.open(io.BytesIO(b)).convert("RGB")) for b in blobs]
            )
        except Exception as e:
            raise BadImage(e) from e
        with self.torch.no_grad():
            out = self.model(batch)
        return out.argmax(dim=1).tolist()


class OrtEngine:
    """onnxruntime on a model directory, with bench/ort_engine.py's preprocessing."""

    def __init__(self, model_dir):
        import numpy as np
        import onnxruntime as ort

        sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
        from ort_engine import Reference

        self.np = np
        self.ref = Reference(model_dir, threads=THREADS)
        dim = self.ref.sess.get_inputs()[0].shape[0]
        self.fixed_batch = dim if isinstance(dim, int) else None
        self.info = {"engine": "onnxruntime", "version": ort.__version__,
                     "model": os.path.normpath(model_dir)}

    def threads(self):
        return self.ref.sess.get_session_options().intra_op_num_threads

    def predict(self, blobs):
        try:
            xs = [self.ref.prepare(b) for b in blobs]  # each (1, 3, H, W) float32
        except Exception as e:
            raise BadImage(e) from e
        sess, name = self.ref.sess, self.ref.input
        if self.fixed_batch is None or self.fixed_batch == len(xs):
            logits = sess.run(None, {name: self.np.concatenate(xs)})[0]
        else:
            logits = self.np.concatenate([sess.run(None, {name: x})[0] for x in xs])
        return [int(i) for i in logits.argmax(axis=1)]


ENGINE = None  # set in main, before Uvicorn starts
app = FastAPI()


class Images(BaseModel):
    images: list[str]


@app.get("/health")
def health():
    return {"status": "ok", **ENGINE.info, "threads": ENGINE.threads()}


@app.post("/predict/")
def predict(req: Images):
    if not req.images:
        raise HTTPException(status_code=400, detail="no images")
    try:
        blobs = [base64.b64decode(b) for b in req.images]
    except ValueError as e:  # binascii.Error
        raise HTTPException(status_code=400, detail=f"bad image: {e}")
    try:
        return {"class_ids": ENGINE.predict(blobs)}
    except BadImage as e:
        raise HTTPException(status_code=400, detail=f"bad image: {e}")


def main():
    global ENGINE
    import uvicorn

    ap = argparse.ArgumentParser(description="The benchmark's peer model server.")
    ap.add_argument("--engine", choices=["torch", "onnxruntime"], default="torch")
    ap.add_argument("--model", help="model directory (manifest.txt, model.onnx); onnxruntime only")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=18090)
    a = ap.parse_args()
    if a.engine == "torch":
        if a.model:
            ap.error("--engine torch builds torchvision's ResNet18 itself: --model is for onnxruntime")
        ENGINE = TorchEngine()
    else:
        if not a.model:
            ap.error("--engine onnxruntime needs --model DIR (e.g. models/efficientnet-lite0)")
        if not os.path.isfile(os.path.join(a.model, "manifest.txt")):
            ap.error(f"{a.model}: no manifest.txt (run `make model MODEL=...`)")
        ENGINE = OrtEngine(a.model)
    uvicorn.run(app, host=a.host, port=a.port, log_level="warning")


if __name__ == "__main__":
    main()
