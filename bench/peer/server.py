"""The study's model server, reimplemented from the paper's description, as a
benchmark peer (never part of the product).

What the paper describes, and what this file does:
- FastAPI behind Uvicorn, one process; POST /predict/ takes JSON
  {"images": ["<base64>", ...]} and returns {"class_ids": [...]}, the argmax
  per image;
- PyTorch with torchvision's ResNet18 and its transforms: Resize(256),
  CenterCrop(224), ToTensor, Normalize(ImageNet mean/std); the batch is
  stacked and run in one forward pass under torch.no_grad().

What differs, and why:
- No weights can be downloaded here, so the network is
  torchvision.models.resnet18(weights=None) with a fixed seed: the same
  architecture and arithmetic as the study's, random parameters. Ours is
  benchmarked with models/resnet18-synthetic (the same architecture, also
  synthetic weights), so both do the same compute per image.
- The endpoint is a plain `def`, so FastAPI runs it in its thread pool, and
  torch uses one intra-op thread per core (set explicitly below).
- GET /health answers 200 once the model is loaded (the bench waits for it).

Usage: python server.py --port PORT [--host 127.0.0.1]
"""

import argparse
import base64
import io
import os

import torch
import torchvision
from fastapi import FastAPI, HTTPException
from PIL import Image
from pydantic import BaseModel
from torchvision import transforms

torch.manual_seed(0)
torch.set_num_threads(os.cpu_count() or 1)
MODEL = torchvision.models.resnet18(weights=None).eval()
PREPROCESS = transforms.Compose(
    [
        transforms.Resize(256),
        transforms.CenterCrop(224),
        transforms.ToTensor(),
        transforms.Normalize(mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225]),
    ]
)

app = FastAPI()


class Images(BaseModel):
    images: list[str]


@app.get("/health")
def health():
    return {"status": "ok", "torch": torch.__version__, "threads": torch.get_num_threads()}


@app.post("/predict/")
def predict(req: Images):
    if not req.images:
        raise HTTPException(status_code=400, detail="no images")
    try:
        batch = torch.stack(
            [PREPROCESS(Image.open(io.BytesIO(base64.b64decode(b))).convert("RGB")) for b in req.images]
        )
    except Exception as e:  # the study's server answered 500; a 400 is kinder
        raise HTTPException(status_code=400, detail=f"bad image: {e}")
    with torch.no_grad():
        out = MODEL(batch)
    return {"class_ids": out.argmax(dim=1).tolist()}


if __name__ == "__main__":
    import uvicorn

    ap = argparse.ArgumentParser()
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=18090)
    a = ap.parse_args()
    uvicorn.run(app, host=a.host, port=a.port, log_level="warning")
