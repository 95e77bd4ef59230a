"""Reading PyTorch state dicts (``torch.save(model.state_dict(), f)`` files) without PyTorch.

A state dict maps parameter names to tensors. ``load_state_dict(path)`` returns
it as ``{name: np.ndarray}`` (in file order), for the two layouts ``torch.save``
writes:

- **legacy** (PyTorch < 1.6, or ``_use_new_zipfile_serialization=False``): five
  consecutive pickles -- the magic number 0x1950a86a20f9469cfc6c, the protocol
  version 1001, a system-info dict (byte order, C type sizes), the state dict
  itself and the list of storage keys -- followed by the raw storages in that
  order, each an int64 element count then ``count * itemsize`` bytes;
- **zip** (the default since 1.6): ``<prefix>/data.pkl`` holds the state dict,
  ``<prefix>/data/<key>`` the raw bytes of each storage.

In both, a tensor is pickled as a call ``torch._utils._rebuild_tensor_v2(storage,
offset, size, stride, requires_grad, hooks)`` whose storage is a *persistent id*
``("storage", torch.FloatStorage, key, location, numel[, view])``, so the element
at index ``(i_0, ..., i_n)`` of a tensor is ``storage[offset + sum_k i_k * stride_k]``.

Unpickling can run arbitrary code: a pickle names any importable callable
(``os.system`` ...) and calls it. The unpickler here resolves only the names a
state dict needs -- ``collections.OrderedDict``, ``torch._utils._rebuild_tensor_v2``
(replaced by a function of ours that records where the tensor lies) and the
``torch.*Storage`` type names (mapped to NumPy dtypes) -- and refuses every other
name with ``StateDictError`` naming it. A file holding anything but names mapped
to tensors (a whole pickled ``nn.Module``, a training checkpoint with an epoch
counter, ...) is refused the same way.
"""

from __future__ import annotations

import collections
import dataclasses
import io
import os
import pickle
import struct
import zipfile

import numpy as np

MAGIC_NUMBER = 0x1950A86A20F9469CFC6C
"""First pickle of a legacy ``torch.save`` file."""
PROTOCOL_VERSION = 1001
"""Second pickle of a legacy ``torch.save`` file."""

# torch.<name>Storage -> NumPy dtype of its elements. bfloat16 has no NumPy dtype:
# its 16-bit patterns are the high halves of float32 numbers, widened on reading.
_STORAGE_DTYPES = {
    "DoubleStorage": np.float64, "FloatStorage": np.float32, "HalfStorage": np.float16,
    "BFloat16Storage": "bfloat16", "LongStorage": np.int64, "IntStorage": np.int32,
    "ShortStorage": np.int16, "CharStorage": np.int8, "ByteStorage": np.uint8, "BoolStorage": np.bool_,
}


class StateDictError(ValueError):
    """The file is not a plain PyTorch state dict this reader can read safely."""


@dataclasses.dataclass(frozen=True)
class _StorageType:
    """What the unpickler returns for a ``torch.<name>Storage`` global."""

    name: str

    @property
    def itemsize(self) -> int:
        return 2 if self.name == "BFloat16Storage" else np.dtype(_STORAGE_DTYPES[self.name]).itemsize

    def decode(self, raw: bytes) -> np.ndarray:
        """Raw little-endian bytes -> 1-D array (bfloat16 widened to float32)."""
        if self.name == "BFloat16Storage":
            return (np.frombuffer(raw, "<u2").astype(np.uint32) << 16).view(np.float32)
        return np.frombuffer(raw, np.dtype(_STORAGE_DTYPES[self.name]).newbyteorder("<"))


@dataclasses.dataclass
class _Storage:
    key: str
    type: _StorageType
    numel: int
    data: np.ndarray | None = None
    """1-D, filled once the raw bytes are read (legacy files store them after the pickles)."""


@dataclasses.dataclass(frozen=True)
class _TensorRef:
    """A tensor as ``_rebuild_tensor_v2`` describes it: a strided view of a storage."""

    storage: _Storage
    offset: int
    size: tuple
    stride: tuple

    def array(self, where: str) -> np.ndarray:
        data = self.storage.data
        if data is None:
            raise StateDictError(f"{where}: its storage {self.storage.key!r} is missing from the file")
        if 0 in self.size:
            return np.zeros(self.size, data.dtype)
        last = self.offset + sum((n - 1) * s for n, s in zip(self.size, self.stride))
        if self.offset < 0 or min(self.stride, default=0) < 0 or last >= len(data):
            raise StateDictError(f"{where}: size {self.size} stride {self.stride} at offset {self.offset} "
                                 f"reaches past its storage of {len(data)} elements")
        view = np.lib.stride_tricks.as_strided(data[self.offset:], shape=self.size,
                                               strides=[s * data.itemsize for s in self.stride])
        return np.array(view)


def _rebuild_tensor_v2(storage, storage_offset, size, stride, *_requires_grad_hooks_metadata):
    if not isinstance(storage, _Storage):
        raise StateDictError(f"a tensor refers to {type(storage).__name__}, not to a storage")
    return _TensorRef(storage, int(storage_offset), tuple(int(n) for n in size), tuple(int(s) for s in stride))


_ALLOWED = {("collections", "OrderedDict"): collections.OrderedDict,
            ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2}


class _RestrictedUnpickler(pickle.Unpickler):
    """An Unpickler that resolves only the names a state dict needs (see the module docstring)."""

    def __init__(self, file, path: str, storage_for):
        super().__init__(file)
        self._path = path
        self._storage_for = storage_for

    def find_class(self, module, name):
        if (module, name) in _ALLOWED:
            return _ALLOWED[(module, name)]
        if module == "torch" and name in _STORAGE_DTYPES:
            return _StorageType(name)
        raise StateDictError(
            f"{self._path}: refusing to unpickle the global {module}.{name}: a plain state dict holds only "
            f"tensors in a dict (save it with torch.save(model.state_dict(), path))")

    def persistent_load(self, pid):
        if self._storage_for is None:
            raise StateDictError(f"{self._path}: unexpected persistent id {pid!r} outside the state dict")
        if not (isinstance(pid, tuple) and len(pid) in (5, 6) and pid[0] == "storage"
                and isinstance(pid[1], _StorageType)):
            raise StateDictError(f"{self._path}: unsupported persistent id {pid!r} (expected a tensor storage)")
        if len(pid) == 6 and pid[5] is not None:
            raise StateDictError(f"{self._path}: storage views (files of PyTorch < 0.4) are not supported")
        return self._storage_for(pid[1], str(pid[2]), int(pid[4]))


def load_state_dict(path: str) -> dict[str, np.ndarray]:
    """Reads a PyTorch state dict file (legacy or zip layout) into NumPy arrays, safely.

    Args:
      path: a ``.pth`` / ``.pt`` file written by ``torch.save(state_dict, path)``.

    Returns:
      ``{parameter name: np.ndarray}`` in the file's order, each array a copy with
      the tensor's shape and dtype (bfloat16 as float32).

    Raises:
      FileNotFoundError: ``path`` does not exist.
      StateDictError: the file is neither layout, names a global outside the
        allow-list (the message names it), holds something other than a dict of
        tensors, or is truncated.
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f"PyTorch weights file {path!r} does not exist")
    if zipfile.is_zipfile(path):
        state = _read_zip(path)
    else:
        with open(path, "rb") as f:
            state = _read_legacy(f, path)
    return _to_arrays(state, path)


def _pickle(f, path, storage_for=None):
    try:
        return _RestrictedUnpickler(f, path, storage_for).load()
    except StateDictError:
        raise
    except Exception as e:  # a malformed pickle raises anything from EOFError to KeyError
        raise StateDictError(f"{path}: not a PyTorch state dict file ({type(e).__name__}: {e})") from None


def _read_legacy(f, path: str):
    magic = _pickle(f, path)
    if magic != MAGIC_NUMBER:
        raise StateDictError(f"{path}: not a PyTorch file (no torch.save magic number, found {magic!r:.40})")
    version = _pickle(f, path)
    if version != PROTOCOL_VERSION:
        raise StateDictError(f"{path}: legacy torch.save protocol {version!r}, this reader knows {PROTOCOL_VERSION}")
    sys_info = _pickle(f, path)
    if not isinstance(sys_info, dict) or not sys_info.get("little_endian", False):
        raise StateDictError(f"{path}: only little-endian files are supported (system info {sys_info!r:.80})")
    storages: dict[str, _Storage] = {}

    def storage_for(stype, key, numel):
        return storages.setdefault(key, _Storage(key, stype, numel))

    state = _pickle(f, path, storage_for)
    keys = _pickle(f, path)
    if not isinstance(keys, list) or set(keys) != set(storages):
        raise StateDictError(f"{path}: the storage key list does not match the storages the tensors use")
    for key in keys:
        storage = storages[key]
        header = f.read(8)
        if len(header) != 8:
            raise StateDictError(f"{path}: truncated before storage {key!r}")
        (numel,) = struct.unpack("<q", header)
        if numel != storage.numel:
            raise StateDictError(f"{path}: storage {key!r} holds {numel} elements, its tensors say {storage.numel}")
        raw = f.read(numel * storage.type.itemsize)
        if len(raw) != numel * storage.type.itemsize:
            raise StateDictError(f"{path}: truncated inside storage {key!r}")
        storage.data = storage.type.decode(raw)
    return state


def _read_zip(path: str):
    with zipfile.ZipFile(path) as archive:
        pickles = [n for n in archive.namelist() if n.endswith("/data.pkl") and n.count("/") == 1]
        if len(pickles) != 1:
            raise StateDictError(f"{path}: a zip file but not a torch.save archive (no single <prefix>/data.pkl)")
        prefix = pickles[0][:-len("data.pkl")]
        if f"{prefix}byteorder" in archive.namelist() and archive.read(f"{prefix}byteorder").strip() != b"little":
            raise StateDictError(f"{path}: only little-endian files are supported")
        storages: dict[str, _Storage] = {}

        def storage_for(stype, key, numel):
            if key not in storages:
                name = f"{prefix}data/{key}"
                try:
                    raw = archive.read(name)
                except KeyError:
                    raise StateDictError(f"{path}: storage record {name} is missing") from None
                if len(raw) != numel * stype.itemsize:
                    raise StateDictError(f"{path}: {name} holds {len(raw)} bytes, its tensors need "
                                         f"{numel} x {stype.itemsize}")
                storages[key] = _Storage(key, stype, numel, stype.decode(raw))
            return storages[key]

        return _pickle(io.BytesIO(archive.read(pickles[0])), path, storage_for)


def _to_arrays(state, path: str) -> dict[str, np.ndarray]:
    if not isinstance(state, dict):
        raise StateDictError(f"{path}: holds a {type(state).__name__}, not a state dict (a dict of tensors)")
    out = {}
    for name, value in state.items():
        if not isinstance(name, str) or not isinstance(value, _TensorRef):
            raise StateDictError(f"{path}: entry {name!r} is a {type(value).__name__}, not a tensor; a plain "
                                 f"state dict maps parameter names to tensors")
        out[name] = value.array(f"{path}: tensor {name!r}")
    return out
