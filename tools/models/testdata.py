#!/usr/bin/env python3
"""Write real photos for tests under testdata/, taken from the pinned scikit-image wheel.

  chelsea.png          tabby cat (scikit-image's `chelsea`)
  chelsea.jpg          JPEG copy of chelsea.png (Pillow, quality 90)
  coffee.png           a cup of coffee
  rocket.jpg           a rocket launch (ImageNet has no 'rocket': missile/projectile/shuttle)
  motorcycle.png       a motorcycle (scikit-image's motorcycle_left; ImageNet: moped/scooter)
  chelsea_study.jpg    chelsea in the format of the study's benchmark photo (see below)
  expected.txt         `file = class_id[,class_id...]`: the classes EfficientNet-Lite0 may give
  jpeg/                JPEGs large enough for the model server's reduced-size decode
                       (enclave/src/jpeg.rs), one per kind it decodes (JPEG_VARIANTS), each
                       with NAME.draft.png: libjpeg-turbo's own decode of it at 1/scale (Pillow's
                       `draft`), the reference the tests hold that decode to, and NAME.full.png:
                       its full-size decode (Pillow's), which the full-size decode must equal
  pillow/              torchvision's resize and centre crop done by Pillow (PILLOW_CROPS), the
                       reference the model server's resampler is held to byte for byte: source
                       PNGs (the photos as Pillow decodes them, and synthetic shapes), raw RGB
                       crops, and index.txt naming them

The study's benchmark photo (a tabby/tiger cat from a Canon EOS 100D) is not ours to publish, so
the tests and the bench use chelsea_study.jpg, made here to have its properties: 960x640 pixels,
baseline JPEG, IJG quality 92 tables (the study photo's tables are exactly IJG quality 92), 4:2:0
chroma subsampling, optimised Huffman tables, JFIF 300 dpi, and about its size (192,607 bytes
against 194,824). Steps: chelsea (451x300) centre-cropped to 3:2 (450x300) and upscaled 2.133x
with Pillow's Lanczos filter; then a fixed film grain (triangular, +-10 levels, the same on R, G
and B, from an integer hash of the pixel index: no random generator whose stream could change),
which gives the upscaled photo the sensor noise, and so the entropy-coded size and decode work,
of a real camera photo at that size (without grain it is 110 KB); then Pillow's JPEG encoder
(libjpeg-turbo, from the hash-pinned Pillow wheel). The result is checked against
STUDY_STANDIN_SHA256: the same bytes on every machine, or `make testdata` fails.

Needs Pillow (installed with the test requirements) for chelsea.jpg and chelsea_study.jpg.
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
#   chelsea_study  as chelsea, the three domestic cats lead: 285 Egyptian cat [285, 0.388],
#                  282 tiger cat 0.359, 281 tabby 0.175 (the study's own photo: 282, 0.47)
EXPECTED = [
    ("chelsea.png", [281, 282, 285]),
    ("chelsea.jpg", [281, 282, 285]),
    ("coffee.png", [967, 968, 504]),
    ("rocket.jpg", [657, 744, 812]),
    ("motorcycle.png", [665, 670]),
    ("chelsea_study.jpg", [281, 282, 285]),
]

STUDY_STANDIN = "chelsea_study.jpg"
STUDY_STANDIN_SHA256 = "76a817ccf5f8f98a26e1fa57c3e097e1f9fa17fad17b2367e63ef385511367cb"
STUDY_SIZE = (960, 640)
STUDY_QUALITY = 92
GRAIN = 10  # grain amplitude in levels; sets the file size (192,607 bytes)


def _hash32(x):
    """A 32-bit integer mix (Chris Wellons' lowbias32) on a uint32 array: exact everywhere."""
    import numpy as np
    x = x ^ (x >> np.uint32(16))
    x = x * np.uint32(0x7FEB352D)
    x = x ^ (x >> np.uint32(15))
    x = x * np.uint32(0x846CA68B)
    return x ^ (x >> np.uint32(16))


def study_standin(chelsea_png):
    """chelsea.png's bytes -> the JPEG bytes of chelsea_study.jpg (see the module docstring)."""
    import numpy as np
    from PIL import Image
    w, h = STUDY_SIZE
    with Image.open(io.BytesIO(chelsea_png)) as im:
        src = im.convert("RGB")
    sw, sh = src.size  # 451x300: the centred 3:2 box is 450x300
    bw = sh * w // h
    box = ((sw - bw) / 2, 0, (sw + bw) / 2, sh)
    big = np.asarray(src.resize((w, h), Image.LANCZOS, box=box), dtype=np.int16)
    x = _hash32(np.arange(w * h, dtype=np.uint32))
    lo, hi = x & np.uint32(0xFFFF), x >> np.uint32(16)
    grain = ((lo % np.uint32(GRAIN + 1)).astype(np.int16)
             + (hi % np.uint32(GRAIN + 1)).astype(np.int16) - GRAIN)
    pixels = np.clip(big + grain.reshape(h, w, 1), 0, 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels, "RGB").save(buf, "JPEG", quality=STUDY_QUALITY, subsampling="4:2:0",
                                        optimize=True, progressive=False, dpi=(300, 300))
    return buf.getvalue()


# name -> (source photo, size, Pillow mode, chroma subsampling, extra save options, scale the
# model server decodes it at for a resize to 256: the largest of 8, 4, 2 leaving the short side
# at least 256). Upscaled with Lanczos; odd sizes leave partial blocks at the edges.
JPEG_VARIANTS = {
    "coffee-420.jpg": ("coffee.png", (1200, 800), "RGB", "4:2:0", {}, 2),
    "coffee-444.jpg": ("coffee.png", (1200, 800), "RGB", "4:4:4", {}, 2),
    "motorcycle-422-restarts.jpg": ("motorcycle.png", (1111, 749), "RGB", "4:2:2",
                                    {"restart_marker_blocks": 7}, 2),
    "motorcycle-grey.jpg": ("motorcycle.png", (1557, 1050), "L", None, {}, 4),
    "chelsea-420-eighth.jpg": ("chelsea.png", (3090, 2055), "RGB", "4:2:0",
                               {"restart_marker_rows": 3}, 8),
    "coffee-progressive.jpg": ("coffee.png", (1200, 800), "RGB", "4:2:0", {"progressive": True}, 2),
}


def jpeg_variants(out):
    """Writes JPEG_VARIANTS under out/jpeg/, each with its full and scaled decodes by libjpeg-turbo."""
    from PIL import Image
    os.makedirs(os.path.join(out, "jpeg"), exist_ok=True)
    for name, (source, size, mode, subsampling, extra, scale) in JPEG_VARIANTS.items():
        with Image.open(os.path.join(out, source)) as im:
            big = im.convert("RGB").resize(size, Image.LANCZOS).convert(mode)
        path = os.path.join(out, "jpeg", name)
        options = dict(quality=90, **extra)
        if subsampling:
            options["subsampling"] = subsampling
        big.save(path, "JPEG", **options)
        with Image.open(path) as im:
            im.convert("RGB").save(path[:-len(".jpg")] + ".full.png")
        with Image.open(path) as im:
            w, h = im.size
            im.draft(im.mode, (w // scale, h // scale))
            assert im.size == (-(-w // scale), -(-h // scale)), (name, im.size)
            im.convert("RGB").save(path[:-len(".jpg")] + ".draft.png")


# Sources for pillow/: the photos (decoded by Pillow), and synthetic shapes (w, h): square, wide,
# tall, one pixel thin both ways, smaller than the crop (upscaled), odd sizes. Each is resized
# and centre-cropped for every (resize, crop size) and both filters.
PILLOW_PHOTOS = ["chelsea.png", "chelsea.jpg", "coffee.png", "rocket.jpg", "motorcycle.png",
                 STUDY_STANDIN]
PILLOW_SHAPES = [(64, 64), (300, 200), (200, 300), (1, 300), (300, 1), (7, 5), (1000, 37),
                 (333, 999)]
PILLOW_CROPS = [(256, 224), (36, 32), (40, 40)]


def shape(w, h, seed):
    """A synthetic image with hard edges everywhere, where the filters' negative lobes clamp."""
    data = bytearray()
    for y in range(h):
        for x in range(w):
            v = ((x * (31 + seed)) ^ (y * (17 + 3 * seed))) & 0xFFFFFFFF
            data += bytes((v % 251, (x + y + seed) % 256, (x * y) % 241))
    return bytes(data)


def resize_crop(im, resize, size, resample):
    """torchvision's Resize(resize) then CenterCrop(size) on a PIL image."""
    w, h = im.size
    nw, nh = (resize, int(resize * h / w)) if w <= h else (int(resize * w / h), resize)
    im = im.resize((nw, nh), resample)
    left, top = int(round((nw - size) / 2.0)), int(round((nh - size) / 2.0))
    return im.crop((left, top, left + size, top + size))


def pillow_crops(out):
    """Writes pillow/: each source as a PNG, its crops as raw RGB, and index.txt."""
    from PIL import Image
    d = os.path.join(out, "pillow")
    os.makedirs(d, exist_ok=True)
    sources = []
    for name in PILLOW_PHOTOS:
        with Image.open(os.path.join(out, name)) as im:
            sources.append((os.path.splitext(name)[0] + "-" + name.rsplit(".", 1)[1], im.convert("RGB")))
    for seed, (w, h) in enumerate(PILLOW_SHAPES):
        sources.append((f"shape-{w}x{h}", Image.frombytes("RGB", (w, h), shape(w, h, seed))))
    lines = []
    for stem, im in sources:
        im.save(os.path.join(d, stem + ".png"))
        for resize, size in PILLOW_CROPS:
            for fname, resample in (("bilinear", Image.BILINEAR), ("bicubic", Image.BICUBIC)):
                crop = f"{stem}.{fname}-{resize}-{size}.rgb"
                with open(os.path.join(d, crop), "wb") as f:
                    f.write(resize_crop(im, resize, size, resample).tobytes())
                lines.append(f"{stem}.png {fname} {resize} {size} {crop}\n")
    with open(os.path.join(d, "index.txt"), "w", encoding="utf-8") as f:
        f.write("# source filter resize crop-size crop (raw RGB), written by tools/models/testdata.py\n")
        f.writelines(lines)


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
    with open(os.path.join(a.out, "chelsea.png"), "rb") as f:
        study = study_standin(f.read())
    got = fetch.sha256_bytes(study)
    if got != STUDY_STANDIN_SHA256:
        print(f"testdata: error: {STUDY_STANDIN} is not the expected photo:\n"
              f"  expected sha256 {STUDY_STANDIN_SHA256}\n  got      sha256 {got} "
              f"({len(study)} bytes)\nIs .venv's Pillow the pinned one "
              f"(tools/models/requirements-test.txt)?", file=sys.stderr)
        return 1
    with open(os.path.join(a.out, STUDY_STANDIN), "wb") as f:
        f.write(study)
    jpeg_variants(a.out)
    pillow_crops(a.out)
    with open(os.path.join(a.out, "expected.txt"), "w", encoding="utf-8") as f:
        f.write("# Allowed top-1 classes per photo for efficientnet-lite0 (torchvision ImageNet "
                "ids), written by tools/models/testdata.py\n")
        for name, ids in EXPECTED:
            f.write(f"{name} = {','.join(map(str, ids))}\n")
    print(f"testdata: wrote {len(EXPECTED)} photos and expected.txt to {a.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
