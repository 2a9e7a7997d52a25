"""Pickle-free serialization of learner and engine state as one safetensors blob.

A *state* is a tree of dicts, lists and tuples whose leaves are
:class:`torch.Tensor`, numeric/bool :class:`numpy.ndarray` (or numpy scalars),
``int``, ``float``, ``bool``, ``str`` or ``None``. :func:`dumps_state` writes
every tensor/array leaf as a safetensors tensor named by its path in the tree
(``model/linear.weight``, ``optimizer/state/0/exp_avg``) and the *skeleton* --
the structure, the plain leaves, which leaves were numpy and their dtypes --
as JSON in the safetensors header metadata. :func:`loads_state` rebuilds the
exact tree: numpy leaves come back as numpy, tensors as tensors, ``int`` dict
keys stay ``int`` (torch optimizer state is keyed by parameter index) and
tuples stay tuples.

Nothing is ever unpickled: the format is a JSON header plus raw little-endian
tensor bytes, so a blob read from Redis, Kafka or disk cannot execute code.
Other tools read it too (``safetensors.safe_open``), and see the tensors under
their path names.

:func:`save_state_file` writes atomically (temp file in the same directory,
fsync, rename, fsync the directory): a crash leaves either the old file or the
new one, never a torn one.

Examples
--------
>>> import numpy as np, torch
>>> state = {"w": torch.ones(2), "buf": np.arange(3), "steps": 7, 3: ("a", None)}
>>> back = loads_state(dumps_state(state))
>>> back["w"], back["buf"], back["steps"], back[3]
(tensor([1., 1.]), array([0, 1, 2]), 7, ('a', None))
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import struct
import tempfile
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch
from safetensors.torch import load as _st_load
from safetensors.torch import save as _st_save

from stream.core.errors import CheckpointError

__all__ = [
    "FORMAT_VERSION",
    "dumps_state",
    "loads_state",
    "read_metadata",
    "save_state_file",
    "load_state_file",
    "atomic_write_bytes",
]

FORMAT_VERSION = 1

# Reserved safetensors metadata keys; user metadata may not use them.
_SKELETON_KEY = "streamlearn.skeleton"
_DIGEST_KEY = "streamlearn.blake2b"
_FORMAT_KEY = "streamlearn.format"

# Skeleton node tags. A JSON object in the skeleton is ALWAYS a tagged node
# ({"$": tag, ...}); plain dicts of the state are encoded as tagged "dict"
# nodes, so no user data can be mistaken for a node.
_TAG = "$"

_NUMPY_KINDS = frozenset("biufc")  # bool, signed, unsigned, float, complex

# The dtypes safetensors stores (complex128 and the quantized types are not).
_TORCH_DTYPES = frozenset(
    getattr(torch, name)
    for name in (
        "bool",
        "uint8",
        "int8",
        "int16",
        "int32",
        "int64",
        "uint16",
        "uint32",
        "uint64",
        "float16",
        "bfloat16",
        "float32",
        "float64",
        "complex64",
        "float8_e4m3fn",
        "float8_e4m3fnuz",
        "float8_e5m2",
        "float8_e5m2fnuz",
    )
    if hasattr(torch, name)
)


# ------------------------------------------------------------------ encoding
class _Encoder:
    """Walks a state tree once, collecting tensors and building the skeleton."""

    def __init__(self) -> None:
        self.tensors: dict[str, torch.Tensor] = {}
        self._seen_storages: set[int] = set()

    def _key_for(self, path: str) -> str:
        # Paths are unique except when a dict key itself contains "/"
        # ({"a/b": x} vs {"a": {"b": x}}); the skeleton records the real key,
        # so a numeric suffix is enough to disambiguate.
        key = path or "."
        if key in self.tensors:
            n = 1
            while f"{key}~{n}" in self.tensors:
                n += 1
            key = f"{key}~{n}"
        return key

    def _add_tensor(self, path: str, t: torch.Tensor) -> str:
        t = t.detach()
        if t.layout != torch.strided:
            raise TypeError(f"state leaf {path!r}: only dense tensors can be saved, got layout {t.layout}")
        if t.dtype not in _TORCH_DTYPES:
            raise TypeError(f"state leaf {path!r}: dtype {t.dtype} cannot be stored in safetensors")
        t = t.to("cpu").contiguous()
        if t.nbytes:
            # safetensors refuses tensors that share storage (tied weights, a
            # tensor stored twice, views of one buffer); copy the repeats.
            ptr = t.untyped_storage().data_ptr()
            if ptr in self._seen_storages or t.untyped_storage().nbytes() != t.nbytes:
                t = t.clone()
                ptr = t.untyped_storage().data_ptr()
            self._seen_storages.add(ptr)
        key = self._key_for(path)
        self.tensors[key] = t
        return key

    def encode(self, obj: Any, path: str) -> Any:
        # bool before int: bool is an int subclass and must stay a bool.
        if obj is None or isinstance(obj, (bool, str)):
            return obj
        if isinstance(obj, int):
            return int(obj)
        if isinstance(obj, float):
            if math.isfinite(obj):
                return float(obj)
            # JSON has no NaN/Infinity; keep the header strict JSON.
            return {_TAG: "float", "v": repr(float(obj))}
        if isinstance(obj, torch.Tensor):
            return {_TAG: "tensor", "key": self._add_tensor(path, obj)}
        if isinstance(obj, np.ndarray):
            return self._encode_array(obj, path, scalar=False)
        if isinstance(obj, np.generic):
            return self._encode_array(np.asarray(obj), path, scalar=True)
        if isinstance(obj, Mapping):
            items = []
            for k, v in obj.items():
                if isinstance(k, bool) or not isinstance(k, (str, int)):
                    raise TypeError(
                        f"state dict key {k!r} at {path or '<root>'!r} has type {type(k).__name__}; "
                        "only str and int keys can be saved"
                    )
                items.append([k, self.encode(v, f"{path}/{k}" if path else str(k))])
            return {_TAG: "dict", "items": items}
        if isinstance(obj, list):
            return [self.encode(v, f"{path}/{i}") for i, v in enumerate(obj)]
        if isinstance(obj, tuple):
            return {_TAG: "tuple", "items": [self.encode(v, f"{path}/{i}") for i, v in enumerate(obj)]}
        raise TypeError(
            f"state leaf {path or '<root>'!r} has unsupported type {type(obj).__name__}; "
            "use tensors, numeric numpy arrays, int, float, bool, str, None, dict, list or tuple"
        )

    def _encode_array(self, arr: np.ndarray, path: str, *, scalar: bool) -> dict:
        if arr.dtype.kind not in _NUMPY_KINDS:
            raise TypeError(
                f"state leaf {path!r} is a numpy array of dtype {arr.dtype} ; only numeric and bool "
                "arrays can be saved -- put strings in a plain list (arr.tolist())"
            )
        dtype_str = arr.dtype.str  # e.g. "<f4", ">i8": restores byte order too
        # astype, not ascontiguousarray: the latter turns 0-d arrays into 1-d.
        native = arr.astype(arr.dtype.newbyteorder("="), order="C", copy=False)
        # from_numpy shares memory; _add_tensor only reads it (or copies).
        key = self._add_tensor(path, torch.from_numpy(native))
        node = {_TAG: "ndarray", "key": key, "dtype": dtype_str}
        if scalar:
            node["scalar"] = True
        return node


def dumps_state(state: Mapping[str, Any], metadata: Mapping[str, str] | None = None) -> bytes:
    """Serialize a state tree to one safetensors blob (no pickle).

    Parameters
    ----------
    state
        A mapping whose values are nested dicts (``str``/``int`` keys), lists
        and tuples with leaves: ``torch.Tensor`` (dense, any device; saved
        from CPU, contiguous), numeric or bool ``numpy.ndarray`` / numpy
        scalars, ``int``, ``float`` (NaN/inf included), ``bool``, ``str``,
        ``None``.
    metadata
        Extra ``str -> str`` entries for the safetensors header (readable with
        :func:`read_metadata` without loading the tensors).

    Returns
    -------
    bytes
        A valid safetensors file; tensors are named by their path in ``state``.

    Raises
    ------
    TypeError
        A leaf or key has an unsupported type (e.g. a numpy array of strings:
        put strings in a plain list instead), or ``state`` is not a mapping.
    ValueError
        ``metadata`` uses a reserved ``streamlearn.*`` key or a non-str value.

    Examples
    --------
    >>> import torch
    >>> blob = dumps_state({"layer": {"weight": torch.eye(2)}}, metadata={"version": "3"})
    >>> read_metadata(blob)
    {'version': '3'}
    """
    if not isinstance(state, Mapping):
        raise TypeError(f"state must be a mapping, got {type(state).__name__}")
    meta: dict[str, str] = {}
    for k, v in (metadata or {}).items():
        if not isinstance(k, str) or not isinstance(v, str):
            raise ValueError(f"metadata must map str to str, got {k!r}: {v!r}")
        if k.startswith("streamlearn."):
            raise ValueError(f"metadata key {k!r} is reserved (streamlearn.* keys hold the state skeleton)")
        meta[k] = v
    enc = _Encoder()
    skeleton = enc.encode(state, "")
    meta[_FORMAT_KEY] = str(FORMAT_VERSION)
    meta[_SKELETON_KEY] = json.dumps(skeleton, separators=(",", ":"), allow_nan=False)
    meta[_DIGEST_KEY] = _digest(meta[_SKELETON_KEY], enc.tensors)
    return _st_save(enc.tensors, metadata=meta)


def _digest(skeleton_json: str, tensors: Mapping[str, torch.Tensor]) -> str:
    """BLAKE2b over the skeleton and every tensor's name, dtype, shape and bytes.

    # INVARIANT: any change to a stored blob (a flipped bit in a key name or in
    # weights) fails loads_state instead of yielding a plausible wrong state.
    """
    h = hashlib.blake2b(skeleton_json.encode(), digest_size=16)
    for name in sorted(tensors):
        t = tensors[name]
        h.update(f"\0{name}\0{t.dtype}\0{tuple(t.shape)}\0".encode())
        # uint8 view: bf16 and friends have no numpy dtype, bytes are bytes.
        # The array itself, not .tobytes(): hashing reads the buffer, a copy would double the cost.
        h.update(t.reshape(-1).view(torch.uint8).numpy() if t.numel() else b"")
    return h.hexdigest()


# ------------------------------------------------------------------ decoding
def _header(data: bytes) -> dict:
    """The safetensors JSON header (without reading any tensor bytes)."""
    if len(data) < 8:
        raise CheckpointError(f"state blob is {len(data)} bytes, too short to be a safetensors file")
    (n,) = struct.unpack("<Q", data[:8])
    if n > len(data) - 8:
        raise CheckpointError("state blob is truncated (header length exceeds the data)")
    try:
        header = json.loads(data[8 : 8 + n])
    except (UnicodeDecodeError, ValueError) as exc:
        raise CheckpointError(f"state blob has a corrupt header: {exc}") from exc
    if not isinstance(header, dict):
        raise CheckpointError("state blob has a corrupt header (not a JSON object)")
    return header


def read_metadata(data: bytes) -> dict[str, str]:
    """The user metadata of a :func:`dumps_state` blob, without loading tensors.

    Raises
    ------
    CheckpointError
        ``data`` is not a safetensors blob.

    Examples
    --------
    >>> read_metadata(dumps_state({}, metadata={"parent": "v1"}))
    {'parent': 'v1'}
    """
    meta = _header(data).get("__metadata__") or {}
    return {k: v for k, v in meta.items() if not k.startswith("streamlearn.")}


class _Decoder:
    def __init__(self, tensors: Mapping[str, torch.Tensor], device: torch.device | None) -> None:
        self._tensors = tensors
        self._device = device

    def _tensor(self, key: Any) -> torch.Tensor:
        if not isinstance(key, str) or key not in self._tensors:
            raise CheckpointError(f"state blob skeleton names tensor {key!r}, which the blob does not hold")
        return self._tensors[key]

    def decode(self, node: Any) -> Any:
        if node is None or isinstance(node, (bool, int, float, str)):
            return node
        if isinstance(node, list):
            return [self.decode(v) for v in node]
        if not isinstance(node, dict):
            raise CheckpointError(f"state blob skeleton has an unexpected node {node!r}")
        tag = node.get(_TAG)
        if tag == "dict":
            out: dict = {}
            for k, v in node["items"]:
                if isinstance(k, bool) or not isinstance(k, (str, int)):
                    raise CheckpointError(f"state blob skeleton has an invalid dict key {k!r}")
                out[k] = self.decode(v)
            return out
        if tag == "tuple":
            return tuple(self.decode(v) for v in node["items"])
        if tag == "float":
            return float(node["v"])
        if tag == "tensor":
            t = self._tensor(node["key"])
            return t if self._device is None else t.to(self._device)
        if tag == "ndarray":
            dtype = np.dtype(node["dtype"])
            if dtype.kind not in _NUMPY_KINDS:
                raise CheckpointError(f"state blob skeleton has a non-numeric array dtype {dtype}")
            arr = self._tensor(node["key"]).numpy().astype(dtype, copy=False)
            return arr[()] if node.get("scalar") else arr
        raise CheckpointError(f"state blob skeleton has an unknown node tag {tag!r}")


def loads_state(data: bytes, device: str | torch.device | None = None) -> dict:
    """Inverse of :func:`dumps_state`; never unpickles.

    Parameters
    ----------
    data
        Bytes produced by :func:`dumps_state`.
    device
        Where tensor leaves are placed (``None``: CPU). Numpy leaves always
        come back as numpy arrays (numpy scalars as numpy scalars).

    Returns
    -------
    dict
        The state tree, with the original container types and key types.

    Raises
    ------
    CheckpointError
        ``data`` is not a streamlearn state blob or is corrupt/truncated.

    Examples
    --------
    >>> import torch
    >>> loads_state(dumps_state({"opt": {0: {"step": torch.tensor(3.0)}}}))
    {'opt': {0: {'step': tensor(3.)}}}
    >>> loads_state(b"not a state")
    Traceback (most recent call last):
    ...
    stream.core.errors.CheckpointError: state blob is truncated (header length exceeds the data)
    """
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError(f"data must be bytes, got {type(data).__name__}")
    data = bytes(data)
    meta = _header(data).get("__metadata__") or {}
    if _SKELETON_KEY not in meta:
        raise CheckpointError("safetensors blob has no streamlearn skeleton (not written by dumps_state)")
    if meta.get(_FORMAT_KEY) != str(FORMAT_VERSION):
        raise CheckpointError(
            f"state blob has format {meta.get(_FORMAT_KEY)!r}; this version reads {FORMAT_VERSION}"
        )
    try:
        skeleton = json.loads(meta[_SKELETON_KEY])
        tensors = _st_load(data)
    except Exception as exc:  # SafetensorError is not exported as a stable type
        raise CheckpointError(f"state blob is corrupt: {exc}") from exc
    if meta.get(_DIGEST_KEY) != _digest(meta[_SKELETON_KEY], tensors):
        raise CheckpointError("state blob is corrupt: its checksum does not match its contents")
    dev = torch.device(device) if device is not None else None
    try:
        state = _Decoder(tensors, dev).decode(skeleton)
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(f"state blob skeleton is malformed: {exc!r}") from exc
    if not isinstance(state, dict):
        raise CheckpointError("state blob does not hold a mapping at its root")
    return state


# --------------------------------------------------------------------- files
def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # e.g. Windows cannot open directories; rename is still atomic
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def save_state_file(
    path: str | os.PathLike[str], state: Mapping[str, Any], metadata: Mapping[str, str] | None = None
) -> None:
    """Write ``state`` to ``path`` atomically and durably.

    Steps, in order: serialize (so a TypeError leaves the disk untouched);
    write a temp file in the same directory; flush and ``fsync`` it;
    ``os.replace`` it over ``path``; ``fsync`` the directory so the rename
    itself survives a power loss.

    Raises
    ------
    CheckpointError
        The file could not be written (the temp file is removed).
    TypeError
        ``state`` holds an unsupported leaf (see :func:`dumps_state`).

    Examples
    --------
    >>> import os, tempfile, torch
    >>> path = os.path.join(tempfile.mkdtemp(), "state.safetensors")
    >>> save_state_file(path, {"w": torch.zeros(2)})
    >>> load_state_file(path)
    {'w': tensor([0., 0.])}
    """
    blob = dumps_state(state, metadata)
    try:
        atomic_write_bytes(path, blob)
    except OSError as exc:
        raise CheckpointError(f"cannot write state file {path}: {exc}") from exc


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    """Replace ``path`` with ``data`` atomically and durably (temp file, fsync, rename, fsync dir).

    Readers see the old content or the new, never a torn file. Raises
    ``OSError`` (the temp file is removed).

    Examples
    --------
    >>> import os, tempfile
    >>> path = os.path.join(tempfile.mkdtemp(), "pointer.json")
    >>> atomic_write_bytes(path, b'{"version": 3}')
    >>> open(path, "rb").read()
    b'{"version": 3}'
    """
    target = Path(path)
    directory = target.parent if str(target.parent) else Path(".")
    tmp_name = None
    try:
        fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=directory)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp_name, target)
        tmp_name = None
        _fsync_dir(directory)
    finally:
        if tmp_name is not None:
            try:
                os.unlink(tmp_name)
            except OSError:
                pass


def load_state_file(path: str | os.PathLike[str], device: str | torch.device | None = None) -> dict:
    """Read a file written by :func:`save_state_file`.

    Raises
    ------
    CheckpointError
        The file is missing, unreadable or corrupt; the message names it.
    """
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise CheckpointError(f"cannot read state file {path}: {exc}") from exc
    try:
        return loads_state(data, device=device)
    except CheckpointError as exc:
        raise CheckpointError(f"state file {path} is unreadable: {exc}") from exc
