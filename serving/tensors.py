"""Tensor conversions: TensorProto <-> NumPy (gRPC) and JSON <-> NumPy (REST).

JSON follows TensorFlow Serving's REST encoding: numbers and booleans as JSON
values, strings as UTF-8 JSON strings, binary strings as ``{"b64": "<base64>"}``.
Output strings are base64-encoded when the output key ends in ``_bytes`` (as TF
Serving does) and, so the JSON stays valid, also when they are not UTF-8.
Runs on the server's request threads and in the clients.
"""

from __future__ import annotations

import base64
import math
import sys

import numpy as np
import tensorflow as tf
from tensorflow.core.framework import tensor_pb2, tensor_shape_pb2, types_pb2

from serving.errors import invalid, too_large

# Dtypes a request may carry; anything else (resources, variants, refs) is refused.
_ALLOWED_DTYPES = {
    types_pb2.DT_FLOAT, types_pb2.DT_DOUBLE, types_pb2.DT_HALF, types_pb2.DT_BFLOAT16,
    types_pb2.DT_INT8, types_pb2.DT_INT16, types_pb2.DT_INT32, types_pb2.DT_INT64,
    types_pb2.DT_UINT8, types_pb2.DT_UINT16, types_pb2.DT_UINT32, types_pb2.DT_UINT64,
    types_pb2.DT_BOOL, types_pb2.DT_STRING,
}
_ITEMSIZE = {d: tf.dtypes.as_dtype(d).size for d in _ALLOWED_DTYPES if d != types_pb2.DT_STRING}


def proto_to_array(name: str, proto: tensor_pb2.TensorProto, max_bytes: int) -> np.ndarray:
    """Decodes a request TensorProto, refusing corrupt or oversized ones.

    The element count implied by the shape is checked before decoding: a proto
    may legally carry one value and a huge shape (TensorFlow repeats the last
    value), which would otherwise allocate without bound.
    """
    if proto.dtype not in _ALLOWED_DTYPES:
        dname = types_pb2.DataType.Name(proto.dtype) if proto.dtype in types_pb2.DataType.values() else proto.dtype
        raise invalid(f"input '{name}': unsupported dtype {dname}")
    if proto.tensor_shape.unknown_rank:
        raise invalid(f"input '{name}': tensor_shape has unknown rank")
    dims = [d.size for d in proto.tensor_shape.dim]
    if any(d < 0 for d in dims):
        raise invalid(f"input '{name}': negative dimension in shape {dims}")
    count = math.prod(dims)
    is_string = proto.dtype == types_pb2.DT_STRING
    itemsize = 1 if is_string else _ITEMSIZE[proto.dtype]
    if count * itemsize > max_bytes:
        raise too_large(f"input '{name}': shape {dims} ({count} elements) exceeds the "
                              f"request limit of {max_bytes} bytes")
    if is_string and len(proto.string_val) != count:
        raise invalid(f"input '{name}': shape {dims} needs {count} strings, got {len(proto.string_val)}")
    if not is_string and proto.tensor_content:
        if len(proto.tensor_content) != count * itemsize:
            dname = tf.dtypes.as_dtype(proto.dtype).name
            raise invalid(f"input '{name}': tensor_content has {len(proto.tensor_content)} bytes, "
                          f"shape {dims} of {dname} needs {count * itemsize}")
    try:
        arr = decode(proto)
    except Exception as e:  # corrupt content: any decoding failure is the caller's fault
        raise invalid(f"input '{name}': cannot decode TensorProto ({type(e).__name__}: {e})") from None
    if list(arr.shape) != dims:
        raise invalid(f"input '{name}': decoded shape {list(arr.shape)} != declared {dims}")
    return arr


# Dtypes whose packed tensor_content NumPy reads directly (little-endian hosts).
_NUMPY_DTYPES = {
    types_pb2.DT_FLOAT: np.float32, types_pb2.DT_DOUBLE: np.float64, types_pb2.DT_HALF: np.float16,
    types_pb2.DT_INT8: np.int8, types_pb2.DT_INT16: np.int16, types_pb2.DT_INT32: np.int32,
    types_pb2.DT_INT64: np.int64, types_pb2.DT_UINT8: np.uint8, types_pb2.DT_UINT16: np.uint16,
    types_pb2.DT_UINT32: np.uint32, types_pb2.DT_UINT64: np.uint64, types_pb2.DT_BOOL: np.bool_,
} if sys.byteorder == "little" else {}
# The repeated field holding each dtype's values when tensor_content is empty.
_VALUE_FIELDS = {
    types_pb2.DT_FLOAT: "float_val", types_pb2.DT_DOUBLE: "double_val", types_pb2.DT_INT8: "int_val",
    types_pb2.DT_INT16: "int_val", types_pb2.DT_INT32: "int_val", types_pb2.DT_UINT8: "int_val",
    types_pb2.DT_UINT16: "int_val", types_pb2.DT_INT64: "int64_val", types_pb2.DT_UINT32: "uint32_val",
    types_pb2.DT_UINT64: "uint64_val", types_pb2.DT_BOOL: "bool_val",
}


def decode(proto: tensor_pb2.TensorProto) -> np.ndarray:
    """TensorProto -> NumPy, as tf.make_ndarray, without its per-call overhead for the
    common encodings (string_val, packed tensor_content), which dominates small messages."""
    dims = [d.size for d in proto.tensor_shape.dim]
    if proto.dtype == types_pb2.DT_STRING and len(proto.string_val) == math.prod(dims):
        arr = np.empty(len(proto.string_val), dtype=object)
        arr[:] = list(proto.string_val)
        return arr.reshape(dims)
    np_dtype = _NUMPY_DTYPES.get(proto.dtype)
    if np_dtype is not None and proto.tensor_content:
        return np.frombuffer(proto.tensor_content, dtype=np_dtype).reshape(dims).copy()
    field = _VALUE_FIELDS.get(proto.dtype)
    if np_dtype is not None and field and len(getattr(proto, field)) == math.prod(dims):
        return np.array(getattr(proto, field), dtype=np_dtype).reshape(dims)
    return tf.make_ndarray(proto)  # half_val, bfloat16, or fewer values than elements


def array_to_proto(value) -> tensor_pb2.TensorProto:
    """Encodes a NumPy array (or anything np.asarray accepts) as a TensorProto.

    Same encoding as tf.make_tensor_proto (string_val for strings, packed
    little-endian tensor_content for numbers) without its per-call overhead,
    which dominates small requests.
    """
    arr = value if isinstance(value, np.ndarray) else np.asarray(value)
    if arr.dtype.kind == "U":
        arr = np.char.encode(arr, "utf-8").astype(object)
    proto = tensor_pb2.TensorProto()
    proto.tensor_shape.dim.extend(tensor_shape_pb2.TensorShapeProto.Dim(size=d) for d in arr.shape)
    if arr.dtype == object or arr.dtype.kind == "S":
        proto.dtype = types_pb2.DT_STRING
        proto.string_val.extend(v if isinstance(v, bytes) else str(v).encode("utf-8") for v in arr.reshape(-1))
        return proto
    try:
        proto.dtype = tf.dtypes.as_dtype(arr.dtype).as_datatype_enum
    except TypeError:
        return tf.make_tensor_proto(arr)
    proto.tensor_content = np.ascontiguousarray(arr, dtype=arr.dtype.newbyteorder("<")).tobytes()
    return proto


# ----------------------------------------------------------------------------- JSON

MAX_JSON_RANK = 32  # deeper nesting is a malformed tensor, refused before any recursion over it


def _json_shape(name: str, value) -> list:
    """Shape of a nested-list JSON tensor, read along first elements (raggedness is found later)."""
    shape = []
    while isinstance(value, list):
        if len(shape) == MAX_JSON_RANK:
            raise invalid(f"input '{name}': nested deeper than {MAX_JSON_RANK} levels")
        shape.append(len(value))
        value = value[0] if value else None
    return shape


def _decode_strings(name, value, depth=0):
    """Nested JSON (str / {"b64": ...} / lists) -> nested bytes."""
    if isinstance(value, list):
        if depth == MAX_JSON_RANK:
            raise invalid(f"input '{name}': nested deeper than {MAX_JSON_RANK} levels")
        return [_decode_strings(name, v, depth + 1) for v in value]
    if isinstance(value, str):
        try:
            return value.encode("utf-8")
        except UnicodeEncodeError:  # a lone surrogate such as "\ud800" is valid JSON, not UTF-8
            raise invalid(f"input '{name}': string is not valid Unicode (lone surrogate)") from None
    if isinstance(value, dict):
        if set(value) != {"b64"} or not isinstance(value["b64"], str):
            raise invalid(f"input '{name}': a binary value must be {{\"b64\": \"<base64>\"}}, got keys {sorted(value)}")
        try:
            return base64.b64decode(value["b64"], validate=True)
        except Exception:
            raise invalid(f"input '{name}': invalid base64 in b64 value") from None
    raise invalid(f"input '{name}': expected a string, got {type(value).__name__}")


def json_to_array(name: str, value, dtype: tf.DType, shape: tf.TensorShape | None = None) -> np.ndarray:
    """Parses one JSON tensor for a signature input of ``dtype`` (and ``shape``, when given).

    Raises INVALID_ARGUMENT for ragged lists, strings given for numbers (and the
    reverse), non-integral numbers given for integer inputs, nesting deeper than
    MAX_JSON_RANK, and (before converting anything) a rank or size ``shape`` refuses.
    """
    found = _json_shape(name, value)
    if shape is not None and not shape.is_compatible_with(found):
        raise invalid(f"input '{name}' expects shape {shape}, got {found}")
    if dtype == tf.string:
        nested = _decode_strings(name, value)
        try:
            arr = np.array(nested, dtype=object)
            if arr.dtype != object or any(not isinstance(x, bytes) for x in arr.flat):
                raise ValueError
        except ValueError:
            raise invalid(f"input '{name}': ragged or mixed nested lists") from None
        return arr
    try:
        arr = np.array(value)
    except (ValueError, RecursionError):  # NumPy also refuses nesting deeper than its 64 dims
        raise invalid(f"input '{name}': ragged nested lists") from None
    if arr.dtype == object or arr.dtype.kind in "USV":
        raise invalid(f"input '{name}': expected {dtype.name} numbers, got non-numeric or ragged JSON")
    if arr.size == 0:
        return np.zeros(arr.shape, dtype=dtype.as_numpy_dtype)
    if dtype == tf.bool:
        if arr.dtype != np.bool_:
            raise invalid(f"input '{name}': expected true/false values for bool input")
        return arr
    if arr.dtype == np.bool_:
        raise invalid(f"input '{name}': expected {dtype.name} numbers, got booleans")
    if dtype.is_integer:
        if arr.dtype.kind == "f":
            if not np.all(np.isfinite(arr)) or np.any(arr != np.round(arr)):
                raise invalid(f"input '{name}': expected integers for {dtype.name} input")
        info = np.iinfo(dtype.as_numpy_dtype)
        if arr.min() < info.min or arr.max() > info.max:
            raise invalid(f"input '{name}': value out of range for {dtype.name}")
    return arr.astype(dtype.as_numpy_dtype)


def _encode_string(key: str, b: bytes):
    if key.endswith("_bytes"):
        return {"b64": base64.b64encode(b).decode("ascii")}
    try:
        return b.decode("utf-8")
    except UnicodeDecodeError:
        return {"b64": base64.b64encode(b).decode("ascii")}


def array_to_json(key: str, arr: np.ndarray):
    """NumPy array -> nested JSON-able lists following TF Serving's REST encoding."""
    if arr.dtype == object or arr.dtype.kind == "S":
        flat = [_encode_string(key, bytes(b)) for b in arr.reshape(-1)]
        if arr.ndim == 0:
            return flat[0]
        out = np.empty(len(flat), dtype=object)
        out[:] = flat
        return out.reshape(arr.shape).tolist()
    return arr.tolist()


def json_to_output(value):
    """Client side: JSON output (possibly with {"b64"} objects) -> NumPy array."""
    def dec(v):
        if isinstance(v, list):
            return [dec(x) for x in v]
        if isinstance(v, dict) and "b64" in v:
            return base64.b64decode(v["b64"])
        if isinstance(v, str):
            return v.encode("utf-8")
        return v

    decoded = dec(value)
    arr = np.array(decoded, dtype=object) if _has_bytes(decoded) else np.array(decoded)
    return arr


def _has_bytes(v) -> bool:
    while isinstance(v, list) and v:
        v = v[0]
    return isinstance(v, bytes)
