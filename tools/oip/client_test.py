"""tritonclient[http], unchanged, against the parent's Open Inference Protocol V2 routes.

Run by parent/tests/oip_tritonclient.rs (which starts a real parent and two model servers, and
makes the venv with tools/oip/venv.sh):

    python client_test.py --url 127.0.0.1:PORT --model efficientnet-lite0 \
        --image testdata/chelsea.jpg --expected '[[282, 0.469932, "tiger cat"], ...]'

--expected is the study API's top-5 for the image (/predict-secure/), as [class_id, score, label].
Checks both names: metadata, readiness, the classification extension and the full FP32 output
[N, num_classes] (softmax probabilities: argmax and top-5 the study API's, rows summing to 1), each
in binary and JSON form, both forms in one request, and errors.
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

    def binary_input(images):
        inp = httpclient.InferInput("image", [len(images)], "BYTES")
        inp.set_data_from_numpy(np.array(images, dtype=np.object_), binary_data=True)
        return inp

    def check_full_row(row):
        """One row of the full output against the study API's top-5 for the photo."""
        assert row.dtype == np.float32 and row.shape == (1000,), (row.dtype, row.shape)
        assert abs(float(row.sum()) - 1.0) < 1e-4, row.sum()  # softmax probabilities
        assert bool(((row >= 0) & (row <= 1)).all())
        assert int(np.argmax(row)) == expected[0][0], (int(np.argmax(row)), expected[0])
        top5 = [int(i) for i in np.argsort(-row, kind="stable")[:5]]
        assert top5 == [c for c, _, _ in expected], (top5, expected)
        for c, e, _ in expected:
            assert abs(float(row[c]) - e) <= 2e-6, (c, float(row[c]), e)

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

        for binary_out in (True, False):
            form = "binary" if binary_out else "JSON"

            @check(f"{level}: the full FP32 output [2, 1000] ({form}): argmax and top-5 the study API's, rows sum to 1")
            def _():
                out = httpclient.InferRequestedOutput("probabilities", binary_data=binary_out)
                r = client.infer(name, [binary_input([image, image])], outputs=[out], request_id="req-1")
                resp = r.get_response()
                assert resp["outputs"][0]["datatype"] == "FP32" and resp["outputs"][0]["shape"] == [2, 1000], resp["outputs"][0].keys()
                assert ("binary_data_size" in resp["outputs"][0].get("parameters", {})) == binary_out
                arr = r.as_numpy("probabilities")
                assert arr.shape == (2, 1000) and arr.dtype == np.float32, (arr.shape, arr.dtype)
                for row in arr:
                    check_full_row(row)
                assert np.array_equal(arr[0], arr[1])

        @check(f"{level}: no outputs asked (all outputs, in full, binary as tritonclient asks)")
        def _():
            r = client.infer(name, [binary_input([image])])
            arr = r.as_numpy("probabilities")
            assert arr.shape == (1, 1000), arr.shape
            check_full_row(arr[0])

        @check(f"{level}: both forms at once (full binary, classification JSON), in the order asked")
        def _():
            outs = [
                httpclient.InferRequestedOutput("probabilities", binary_data=True),
                httpclient.InferRequestedOutput("probabilities", binary_data=False, class_count=5),
            ]
            r = client.infer(name, [binary_input([image])], outputs=outs)
            arr = r.as_numpy("probabilities")  # the first output of the name: the full tensor
            assert arr.shape == (1, 1000), arr.shape
            check_full_row(arr[0])
            second = r.get_response()["outputs"][1]
            assert second["datatype"] == "BYTES" and second["shape"] == [1, 5], second
            got = parse_classes(second["data"])
            assert [(c, l) for c, _, l in got] == [(c, l) for c, _, l in expected], (got, expected)
            for c, s, _ in got:
                assert abs(float(arr[0][c]) - s) <= 1e-6, (c, float(arr[0][c]), s)

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

    @check("both forms in binary form: 400 saying why (tritonclient finds binary data by name)")
    def _():
        outs = [
            httpclient.InferRequestedOutput("probabilities", binary_data=True),
            httpclient.InferRequestedOutput("probabilities", binary_data=True, class_count=5),
        ]
        try:
            client.infer(names["secure"], [binary_input([image])], outputs=outs)
        except InferenceServerException as e:
            assert e.status() == "400", (e.status(), e.message())
            assert '"binary_data": false' in e.message(), e.message()
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
