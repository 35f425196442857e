"""python -m sealed_client --url URL [pins] IMAGE: attest, seal one image, print the answer's JSON.

    build/client-venv/bin/python -m sealed_client --url http://127.0.0.1:8080 \\
        --dev-root .run/dev-nsm-root.pem --measurements .run/dev-measurements.json \\
        testdata/chelsea.jpg

Prints the enclave's JSON answer on stdout and what was attested on stderr. Exit status, as the
Rust client's (tools/sealed-client): 0 the answer is a success, 1 the attestation was refused
(nothing was sent), 2 bad arguments, 3 any other failure (transport, answer), 4 the enclave
answered an error status (its JSON is printed all the same).
"""

import argparse
import json
import sys
import warnings

from . import attestation
from .client import fetch_and_verify, seal_and_send
from .errors import MeasurementsError, SealedClientError, VerificationError

BANNER = "!" * 78


def _arguments(argv):
    p = argparse.ArgumentParser(
        prog="python -m sealed_client", description=__doc__.split("\n", 1)[0]
    )
    p.add_argument("--url", required=True, help="the parent, e.g. http://127.0.0.1:8080")
    p.add_argument(
        "--measurements", metavar="FILE", help="nitro-cli's measurements JSON: pins its PCRs"
    )
    p.add_argument(
        "--pcr", metavar="N=HEX", action="append", default=[], help="pin PCR N (repeatable)"
    )
    p.add_argument(
        "--dev-root",
        metavar="PEM",
        help="also accept this development NSM root (never in production)",
    )
    p.add_argument(
        "--allow-debug", action="store_true", help="accept an all-zero PCR0 (debug-mode enclave)"
    )
    p.add_argument(
        "--no-pcr-check",
        action="store_true",
        help="accept any enclave when nothing is pinned (development)",
    )
    p.add_argument(
        "--max-age",
        type=float,
        default=attestation.DEFAULT_MAX_AGE,
        metavar="S",
        help="oldest document accepted (300)",
    )
    p.add_argument("--top-k", type=int, default=5, metavar="N", help="predictions to return (5)")
    p.add_argument(
        "--timeout", type=float, default=60.0, metavar="S", help="per HTTP exchange (60)"
    )
    p.add_argument("image", help="a JPEG or PNG file")
    return p.parse_args(argv)


def _policy(args):
    pcrs = attestation.load_measurements(args.measurements) if args.measurements else {}
    for text in args.pcr:
        index, value = attestation.parse_pcr_arg(text)
        pcrs[index] = value
    dev_root = None
    if args.dev_root:
        try:
            with open(args.dev_root, "rb") as f:
                dev_root = f.read()
        except OSError as err:
            raise MeasurementsError(f"--dev-root: {err}") from None
    return attestation.Policy(
        pcrs=pcrs,
        dev_root_pem=dev_root,
        allow_debug=args.allow_debug,
        no_pcr_check=args.no_pcr_check,
        max_age=args.max_age,
    )


def main(argv=None):
    args = _arguments(argv)
    try:
        with open(args.image, "rb") as f:
            image = f.read()
    except OSError as err:
        print(f"sealed_client: {err}", file=sys.stderr)
        return 2
    try:
        policy = _policy(args)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", attestation.DevRootWarning)  # said below, louder
            key = fetch_and_verify(args.url, policy, timeout=args.timeout)
        if key.root == "dev":
            print(
                f"{BANNER}\nWARNING: attested by the DEVELOPMENT root ({args.dev_root}), not by "
                "AWS Nitro:\nthis proves nothing about an enclave. Never use --dev-root in "
                f"production.\n{BANNER}",
                file=sys.stderr,
            )
        if key.debug:
            print(
                "WARNING: the enclave runs in DEBUG mode (PCR0 all zeros): the parent can read "
                "its memory",
                file=sys.stderr,
            )
        pinned = ", ".join(f"PCR{i}" for i in sorted(policy.pcrs)) or "nothing (--no-pcr-check)"
        print(
            f"attested: key {key.key_id}, module {key.module_id}, root {key.root}, "
            f"pinned {pinned}, model-sha256 {key.model_sha256}",
            file=sys.stderr,
        )
        status, answer = seal_and_send(args.url, key, image, top_k=args.top_k, timeout=args.timeout)
    except VerificationError as err:
        print(f"sealed_client: attestation refused ({type(err).__name__}): {err}", file=sys.stderr)
        return 1
    except MeasurementsError as err:
        print(f"sealed_client: {err}", file=sys.stderr)
        return 2
    except SealedClientError as err:
        print(f"sealed_client: {type(err).__name__}: {err}", file=sys.stderr)
        return 3
    except ValueError as err:  # a malformed --url
        print(f"sealed_client: {err}", file=sys.stderr)
        return 2
    print(json.dumps(answer))
    return 0 if 200 <= status < 300 else 4


if __name__ == "__main__":
    sys.exit(main())
