#!/usr/bin/env python3
"""Write real photos for tests under testdata/, taken from the pinned scikit-image wheel.

  chelsea.png          tabby cat (scikit-image's `chelsea`)
  chelsea.jpg          JPEG copy of chelsea.png (Pillow, quality 90)
  coffee.png           a cup of coffee
  rocket.jpg           a rocket launch (ImageNet has no 'rocket': missile/projectile/shuttle)
  motorcycle.png       a motorcycle (scikit-image's motorcycle_left; ImageNet: moped/scooter)
  expected.txt         `file = class_id[,class_id...]`: the classes EfficientNet-Lite0 may give

Needs Pillow only for chelsea.jpg (installed with the test requirements).
"""

import argparse
import io
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import fetch  # noqa: E402

REPO = os.path.dirname(os.path.dirname(HERE))

# member in the wheel -> file name under testdata/ (the wheel itself is pinned by SHA-256)
PHOTOS = {
    "skimage/data/chelsea.png": "chelsea.png",
    "skimage/data/coffee.png": "coffee.png",
    "skimage/data/rocket.jpg": "rocket.jpg",
    "skimage/data/motorcycle_left.png": "motorcycle.png",
}

# Allowed top-1 ImageNet classes (torchvision order) for EfficientNet-Lite0, checked with
# onnxruntime on the converted model (top-1 in brackets):
#   chelsea   281 tabby, 282 tiger cat [282], 285 Egyptian cat
#   coffee    967 espresso [967], 968 cup, 504 coffee mug
#   rocket    657 missile [657], 744 projectile, 812 space shuttle
#   motorcycle 665 moped [665], 670 motor scooter
EXPECTED = [
    ("chelsea.png", [281, 282, 285]),
    ("chelsea.jpg", [281, 282, 285]),
    ("coffee.png", [967, 968, 504]),
    ("rocket.jpg", [657, 744, 812]),
    ("motorcycle.png", [665, 670]),
]


def main(argv=None):
    ap = argparse.ArgumentParser(description="write test photos under testdata/")
    ap.add_argument("--out", default=os.path.join(REPO, "testdata"))
    ap.add_argument("--cache", default=os.path.join(REPO, "models", ".cache"))
    a = ap.parse_args(argv)
    try:
        wheel = fetch.pypi_wheel(fetch.SCIKIT_IMAGE_WHEEL, os.path.join(a.cache, "pypi"))
    except fetch.FetchError as e:
        print(f"testdata: error: {e}", file=sys.stderr)
        return 1
    os.makedirs(a.out, exist_ok=True)
    for member, name in PHOTOS.items():
        data = fetch.read_from_zip(wheel, member)
        with open(os.path.join(a.out, name), "wb") as f:
            f.write(data)
    from PIL import Image
    with Image.open(os.path.join(a.out, "chelsea.png")) as im:
        buf = io.BytesIO()
        im.convert("RGB").save(buf, "JPEG", quality=90)
    with open(os.path.join(a.out, "chelsea.jpg"), "wb") as f:
        f.write(buf.getvalue())
    with open(os.path.join(a.out, "expected.txt"), "w", encoding="utf-8") as f:
        f.write("# Allowed top-1 classes per photo for efficientnet-lite0 (torchvision ImageNet "
                "ids), written by tools/models/testdata.py\n")
        for name, ids in EXPECTED:
            f.write(f"{name} = {','.join(map(str, ids))}\n")
    print(f"testdata: wrote {len(EXPECTED)} photos and expected.txt to {a.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
