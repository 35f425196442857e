"""tritonclient[http], unchanged, against the parent's Open Inference Protocol V2 routes.

Run by parent/tests/oip_tritonclient.rs (which starts a real parent and two model servers, and
makes the venv with tools/oip/venv.sh):

    python client_test.py --url 127.0.0.1:PORT --model efficientnet-lite0 \
        --image testdata/chelsea.jpg --expected '[[282, 0.469932, "tiger cat"], ...]'

--expected is the study API's top-5 for the image (/predict-secure/), as [class_id, score, label].
Prints one line per check and ends with "N passed, M failed"; exits 1 if any failed.
"""

import argparse
import base64
import json
import sys
import traceback

import numpy as np
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

results = []


def check(name):
    def run(fn):
        try:
            fn()
            results.append(True)
            print(f"ok   {name}")
        except Exception:  # noqa: BLE001 - every failure is reported, then counted
            results.append(False)
            print(f"FAIL {name}")
            traceback.print_exc(file=sys.stdout)
        return fn

    return run


def parse_classes(arr):
    """Triton's classification strings "score:class_id:label" -> [(class_id, score, label)]."""
    out = []
    for s in arr:
        s = s.decode("utf-8") if isinstance(s, bytes) else s
        score, class_id, label = s.split(":", 2)
        out.append((int(class_id), float(score), label))
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--url", required=True)
    ap.add_argument("--model", required=True)
    ap.add_argument("--image", required=True)
    ap.add_argument("--expected", required=True)
    args = ap.parse_args()
    expected = [(int(c), float(s), l) for c, s, l in json.loads(args.expected)]
    image = open(args.image, "rb").read()
    client = httpclient.InferenceServerClient(url=args.url)
    names = {level: f"{args.model}-{level}" for level in ("secure", "public")}

    def infer(name, images, k=5, binary_in=True, binary_out=True, version=""):
        inp = httpclient.InferInput("image", [len(images)], "BYTES")
        if binary_in:
            inp.set_data_from_numpy(np.array(images, dtype=np.object_), binary_data=True)
        else:
            # JSON form: base64 strings, announced by the input's content_type parameter
            # (tritonclient has no public setter for an input's parameters).
            b64 = [base64.b64encode(i).decode("ascii") for i in images]
            inp.set_data_from_numpy(np.array(b64, dtype=np.object_), binary_data=False)
            inp._parameters["content_type"] = "base64"
        out = httpclient.InferRequestedOutput("probabilities", binary_data=binary_out, class_count=k)
        r = client.infer(name, [inp], outputs=[out], model_version=version, request_id="req-1")
        return r

    @check("server live, ready, metadata (classification and binary_tensor_data extensions)")
    def _():
        assert client.is_server_live()
        assert client.is_server_ready()
        md = client.get_server_metadata()
        assert "classification" in md["extensions"] and "binary_tensor_data" in md["extensions"], md

    for level, name in names.items():

        @check(f"{level}: model ready and metadata (BYTES image in, FP32 probabilities out)")
        def _():
            assert client.is_model_ready(name)
            assert client.is_model_ready(name, model_version="1")
            md = client.get_model_metadata(name)
            assert md["name"] == name and md["versions"] == ["1"], md
            assert md["inputs"] == [{"name": "image", "datatype": "BYTES", "shape": [-1]}], md
            assert md["outputs"][0]["name"] == "probabilities" and md["outputs"][0]["datatype"] == "FP32", md
            assert md["outputs"][0]["shape"] == [-1, 1000], md

        for binary_in, binary_out in ((True, True), (True, False), (False, True), (False, False)):
            form = f"input {'binary' if binary_in else 'JSON base64'}, output {'binary' if binary_out else 'JSON'}"

            @check(f"{level}: chelsea top-5 equals the study API's ({form})")
            def _():
                r = infer(name, [image], binary_in=binary_in, binary_out=binary_out)
                resp = r.get_response()
                assert resp["model_name"] == name and resp["id"] == "req-1", resp
                arr = r.as_numpy("probabilities")
                assert arr.shape == (1, 5), arr.shape
                got = parse_classes(arr[0])
                assert [c for c, _, _ in got] == [c for c, _, _ in expected], (got, expected)
                assert [l for _, _, l in got] == [l for _, _, l in expected], (got, expected)
                for (_, s, _), (_, e, _) in zip(got, expected):
                    assert abs(s - e) <= 2e-6, (got, expected)

        @check(f"{level}: batch of 2 (shape [2, 3]) and the versions/1 form")
        def _():
            r = infer(name, [image, image], k=3, version="1")
            arr = r.as_numpy("probabilities")
            assert arr.shape == (2, 3), arr.shape
            assert parse_classes(arr[1])[0][0] == expected[0][0]

    @check("unknown model name: 404 in the protocol's error shape")
    def _():
        try:
            infer(f"{args.model}-elsewhere", [image])
        except InferenceServerException as e:
            assert e.status() == "404", (e.status(), e.message())
            assert "unknown model name" in e.message(), e.message()
        else:
            raise AssertionError("no error")
        assert not client.is_model_ready("nope-secure")

    @check("the full FP32 output (no classification): 400 saying why")
    def _():
        inp = httpclient.InferInput("image", [1], "BYTES")
        inp.set_data_from_numpy(np.array([image], dtype=np.object_), binary_data=True)
        out = httpclient.InferRequestedOutput("probabilities", binary_data=True)
        try:
            client.infer(names["secure"], [inp], outputs=[out])
        except InferenceServerException as e:
            assert e.status() == "400", (e.status(), e.message())
            assert "new frame kind" in e.message(), e.message()
        else:
            raise AssertionError("no error")

    @check("an unknown version: 404")
    def _():
        try:
            infer(names["public"], [image], version="2")
        except InferenceServerException as e:
            assert e.status() == "404", (e.status(), e.message())
        else:
            raise AssertionError("no error")

    passed = sum(results)
    failed = len(results) - passed
    print(f"{passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
