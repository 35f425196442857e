"""Reader for PyTorch's legacy (pre-1.6, non-zip) checkpoint format, without PyTorch.

Layout of such a file (torch.save with _use_new_zipfile_serialization=False):
  pickle 1: magic number 0x1950a86a20f9469cfc6c
  pickle 2: protocol version 1001
  pickle 3: system info dict (byte order, type sizes)
  pickle 4: the object itself (here a state dict); each tensor is a call
            torch._utils._rebuild_tensor_v2(storage, offset, size, stride, requires_grad, hooks)
            whose storage is a persistent id ('storage', StorageType, key, location, numel, view)
  pickle 5: list of storage keys
  then, for each key in that order: int64 little-endian element count + raw little-endian data.

The unpickler only resolves the handful of globals this needs; anything else (os.system, ...)
is refused, so a malicious checkpoint cannot run code.
"""

import collections
import io
import pickle
import struct

import numpy as np

MAGIC_NUMBER = 0x1950A86A20F9469CFC6C
PROTOCOL_VERSION = 1001

# Storage types we accept, with their numpy dtype (little endian).
_STORAGE_DTYPES = {
    "FloatStorage": np.dtype("<f4"),
    "DoubleStorage": np.dtype("<f8"),
    "HalfStorage": np.dtype("<f2"),
    "LongStorage": np.dtype("<i8"),
    "IntStorage": np.dtype("<i4"),
}


class CheckpointError(Exception):
    """The file is not a valid legacy PyTorch checkpoint (truncated, corrupted or unsafe)."""


class _StorageType:
    def __init__(self, name):
        self.name = name
        self.dtype = _STORAGE_DTYPES[name]


class _TensorRef:
    """A tensor whose storage has not been read yet."""

    def __init__(self, storage, offset, size, stride):
        self.storage = storage  # (key, StorageType, numel)
        self.offset = offset
        self.size = tuple(size)
        self.stride = tuple(stride)


def _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad=False,
                       backward_hooks=None, metadata=None):
    if not isinstance(storage, tuple) or not isinstance(storage_offset, int):
        raise CheckpointError("malformed tensor record")
    if not all(isinstance(v, int) and v >= 0 for v in tuple(size) + tuple(stride)):
        raise CheckpointError("malformed tensor size/stride")
    return _TensorRef(storage, storage_offset, size, stride)


class _SafeUnpickler(pickle.Unpickler):
    def find_class(self, module, name):
        if module == "collections" and name == "OrderedDict":
            return collections.OrderedDict
        if module == "torch._utils" and name == "_rebuild_tensor_v2":
            return _rebuild_tensor_v2
        if module == "torch" and name in _STORAGE_DTYPES:
            return _StorageType(name)
        raise CheckpointError(f"refusing to load global {module}.{name} from the checkpoint")

    def persistent_load(self, pid):
        if (not isinstance(pid, tuple) or len(pid) != 6 or pid[0] != "storage"
                or not isinstance(pid[1], _StorageType) or not isinstance(pid[2], str)
                or not isinstance(pid[4], int) or pid[4] < 0):
            raise CheckpointError(f"unsupported persistent id in checkpoint: {pid!r:.120}")
        if pid[5] is not None:
            raise CheckpointError("storage views are not supported")
        return (pid[2], pid[1], pid[4])


def _load_one(f, what):
    try:
        return _SafeUnpickler(f).load()
    except CheckpointError:
        raise
    except EOFError:
        raise CheckpointError(f"checkpoint is truncated (end of file while reading the {what})")
    except Exception as e:  # UnpicklingError, ValueError, ... from corrupted bytes
        raise CheckpointError(f"checkpoint is corrupted (cannot read the {what}: {e})") from None


def load_state_dict(data):
    """Parse a legacy checkpoint held in `data` (bytes). Returns an OrderedDict name -> ndarray."""
    f = io.BytesIO(data)
    if _load_one(f, "magic number") != MAGIC_NUMBER:
        raise CheckpointError("not a legacy PyTorch checkpoint (bad magic number)")
    if _load_one(f, "protocol version") != PROTOCOL_VERSION:
        raise CheckpointError("unsupported checkpoint protocol version")
    sys_info = _load_one(f, "system info")
    if not isinstance(sys_info, dict) or sys_info.get("little_endian") is not True:
        raise CheckpointError("checkpoint is not little endian or has no system info")
    obj = _load_one(f, "state dict")
    if not isinstance(obj, dict):
        raise CheckpointError("checkpoint does not hold a state dict")
    keys = _load_one(f, "storage key list")
    if not isinstance(keys, list) or not all(isinstance(k, str) for k in keys):
        raise CheckpointError("malformed storage key list")

    wanted = {}  # key -> (StorageType, numel)
    for name, t in obj.items():
        if not isinstance(name, str) or not isinstance(t, _TensorRef):
            raise CheckpointError(f"state dict entry {name!r} is not a tensor")
        key, stype, numel = t.storage
        wanted[key] = (stype, numel)
    if set(wanted) != set(keys):
        raise CheckpointError("storage key list does not match the tensors in the state dict")

    storages = {}
    for key in keys:
        stype, numel = wanted[key]
        head = f.read(8)
        if len(head) != 8:
            raise CheckpointError(f"checkpoint is truncated (storage {key} header missing)")
        (count,) = struct.unpack("<q", head)
        if count != numel:
            raise CheckpointError(f"checkpoint is corrupted (storage {key}: {count} elements, "
                                  f"expected {numel})")
        nbytes = count * stype.dtype.itemsize
        raw = f.read(nbytes)
        if len(raw) != nbytes:
            raise CheckpointError(f"checkpoint is truncated (storage {key}: {len(raw)} of "
                                  f"{nbytes} bytes)")
        storages[key] = np.frombuffer(raw, dtype=stype.dtype)
    if f.read(1):
        raise CheckpointError("checkpoint is corrupted (trailing bytes after the last storage)")

    out = collections.OrderedDict()
    for name, t in obj.items():
        key, stype, numel = t.storage
        buf = storages[key]
        item = buf.itemsize
        # Bounds check before striding into the buffer.
        if any(s == 0 for s in t.size):
            out[name] = np.zeros(t.size, dtype=buf.dtype)
            continue
        last = t.offset + sum((n - 1) * s for n, s in zip(t.size, t.stride))
        if t.offset < 0 or last >= numel:
            raise CheckpointError(f"tensor {name} lies outside its storage")
        arr = np.lib.stride_tricks.as_strided(
            buf[t.offset:], shape=t.size, strides=tuple(s * item for s in t.stride),
            writeable=False)
        out[name] = np.array(arr, copy=True, order="C")
    return out


def load_state_dict_file(path):
    with open(path, "rb") as fh:
        return load_state_dict(fh.read())
