"""Trained-model folders: safetensors weights, JSON model card and resumable training state.

Layout of ``models/<name>/``::

    model.json                          model card (JSON)
    weights.safetensors                 inference weights, flat name -> tensor
    state/training_state.<sha>.safetensors  tensors of the training state
    state/training_state.json           everything else, naming the tensor file and its sha256

Nothing here ever unpickles: a pickled checkpoint can run arbitrary code when loaded, and model
folders are shared between sites. Non-tensor training state (optimizer hyper-parameters, RNG
states, counters) is stored as JSON next to the tensors instead, see :func:`flatten_state`.
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import safetensors
import safetensors.torch
import torch
from torch import Tensor

from pseudopet_bids.errors import InputError, UsageError
from pseudopet_bids.io.files import (atomic_write_bytes, atomic_write_text, write_json)

WEIGHTS = "weights.safetensors"
CARD = "model.json"
STATE_DIR = "state"
STATE_TENSORS = "training_state.safetensors"
STATE_JSON = "training_state.json"
STATE_FORMAT_VERSION = 1
CARD_FORMAT_VERSION = 1
CARD_REQUIRED = ("format_version", "model", "preset", "weights_sha256")

# Single-key dicts with one of these keys are markers in a skeleton; user dicts that use such a
# key are written in the "__dict__" pair form so that they cannot be mistaken for markers.
_RESERVED = frozenset({"__tensor__", "__ndarray__", "__npscalar__", "__tuple__", "__dict__",
                       "__float__"})
_PICKLED = ("this looks like a pickled PyTorch checkpoint; pseudopet never unpickles files — "
            "convert it to safetensors")
_MAX_HEADER = 100 * 1024 * 1024  # the limit of the safetensors reference implementation


# --------------------------------------------------------------------------- weights files


def save_weights(path: Path, tensors: dict[str, Tensor],
                 metadata: dict[str, str] | None = None) -> str:
    """Write tensors to a safetensors file atomically.

    Parameters
    ----------
    path
        Target file; its folder is created.
    tensors
        Flat mapping name -> tensor, on any device, possibly non-contiguous or sharing memory.
    metadata
        Optional string metadata stored in the safetensors header.

    Returns
    -------
    str
        SHA-256 hex digest of the bytes written.
    """
    for name, value in tensors.items():
        if not isinstance(name, str) or not isinstance(value, Tensor):
            raise TypeError(f"save_weights needs str -> Tensor, got {name!r}: {type(value)}")
    if metadata is not None and not all(isinstance(k, str) and isinstance(v, str)
                                        for k, v in metadata.items()):
        raise TypeError("safetensors metadata must map str -> str")
    data = safetensors.torch.save(_cpu_copies(tensors), metadata=metadata)
    atomic_write_bytes(Path(path), data)
    return hashlib.sha256(data).hexdigest()


def _cpu_copies(tensors: dict[str, Tensor]) -> dict[str, Tensor]:
    # One fresh contiguous CPU copy per entry: safetensors refuses tensors that share storage
    # (tied weights, views of one buffer), and the copy also detaches from autograd.
    return {name: value.detach().to(device="cpu", memory_format=torch.contiguous_format,
                                    copy=True)
            for name, value in tensors.items()}


def load_weights(path: Path, device: str | torch.device = "cpu") -> dict[str, Tensor]:
    """Read a safetensors file, refusing anything else (pickles above all) with an InputError."""
    path = Path(path)
    return _parse_safetensors(_read_bytes(path), path, device)


def _read_bytes(path: Path) -> bytes:
    # Read once, and hash and parse those same bytes: no window for the file to change between.
    if not path.is_file():
        what = "is a folder, not a file" if path.is_dir() else "file not found"
        raise InputError(what, path, "train the model first, or check --model-name and the "
                                     "output folder")
    try:
        return path.read_bytes()
    except OSError as exc:
        raise InputError(f"cannot read ({exc.strerror or exc})", path,
                         "check the file permissions") from exc


def _parse_safetensors(data: bytes, path: Path,
                       device: str | torch.device) -> dict[str, Tensor]:
    problem = _safetensors_problem(data)
    if problem is None:
        try:
            tensors = safetensors.torch.load(data)
        except Exception as exc:  # SafetensorError and friends: all mean "not usable"
            problem = f"not a valid safetensors file ({exc})"
    if problem is not None:
        fix = ("convert it with safetensors.torch.save_file in a trusted environment, or retrain"
               if problem.endswith(_PICKLED) else
               "restore the file written by pseudopet training, or retrain the model")
        raise InputError(problem, path, fix)
    if torch.device(device) != torch.device("cpu"):
        tensors = {name: t.to(device) for name, t in tensors.items()}
    return tensors


def _safetensors_problem(data: bytes) -> str | None:
    """Why ``data`` is not a safetensors file, or None when its header is sound.

    The layout is an 8-byte little-endian header length, a JSON header, then the tensor bytes.
    The structure is checked before guessing at other formats, because a genuine header length
    can start with the pickle byte 0x80.
    """
    if not data:
        return "the file is empty, not a safetensors file"
    if len(data) >= 8:
        size = int.from_bytes(data[:8], "little")
        if 2 <= size <= min(_MAX_HEADER, len(data) - 8) and data[8:9] == b"{":
            try:
                header = json.loads(data[8:8 + size])
            except (UnicodeDecodeError, ValueError):
                header = None
            if isinstance(header, dict):
                offsets = [entry.get("data_offsets") for key, entry in header.items()
                           if key != "__metadata__" and isinstance(entry, dict)]
                end = 8 + size + max((o[-1] for o in offsets if isinstance(o, list) and o
                                      and isinstance(o[-1], int)), default=0)
                if end > len(data):
                    return (f"truncated safetensors file ({len(data)} of {end} bytes); the copy "
                            "or the training run was probably interrupted")
                return None
        if data[8:9] == b"{" and len(data) - 8 < size <= _MAX_HEADER:
            return (f"truncated safetensors file ({len(data)} bytes, header alone needs "
                    f"{8 + size}); the copy or the training run was probably interrupted")
    if data[:4] == b"PK\x03\x04" or (data[0] == 0x80 and len(data) > 1 and 2 <= data[1] <= 5):
        return f"not a safetensors file: {_PICKLED}"
    if data.lstrip()[:1] in (b"{", b"["):
        return "this is a JSON text file, not safetensors weights"
    if len(data) < 8:
        return f"too short ({len(data)} bytes) to be a safetensors file"
    return "not a safetensors file (its header is missing or unreadable)"


# --------------------------------------------------------------------------- nested state


def flatten_state(obj: Any, prefix: str = "") -> tuple[dict[str, Tensor], Any]:
    """Split a nested structure into tensors and a JSON-able skeleton.

    Parameters
    ----------
    obj
        Dicts (any str/int/float/bool/None/tuple keys), lists, tuples, tensors, numpy arrays and
        scalars, Python scalars (big ints included), strings and None, nested freely.
    prefix
        Prefix of the tensor names (dotted paths into ``obj``).

    Returns
    -------
    tensors
        Name -> tensor (detached, not copied) for every tensor and numpy array.
    skeleton
        ``obj`` with tensors replaced by ``{"__tensor__": name}``, numpy arrays by
        ``{"__ndarray__": name}``, numpy scalars by ``{"__npscalar__": name}``, tuples by
        ``{"__tuple__": [...]}``, non-finite floats by ``{"__float__": "nan"}`` and dicts whose
        keys are not all plain strings by ``{"__dict__": [[key, value], ...]}``.
        :func:`unflatten_state` inverts it. A tensor reached twice is stored twice.
    """
    tensors: dict[str, Tensor] = {}
    return tensors, _encode(obj, prefix, tensors)


def unflatten_state(tensors: dict[str, Tensor], skeleton: Any) -> Any:
    """Rebuild the structure given to :func:`flatten_state` (ValueError if a tensor is missing)."""
    if isinstance(skeleton, list):
        return [unflatten_state(tensors, item) for item in skeleton]
    if not isinstance(skeleton, dict):
        return skeleton
    if len(skeleton) == 1 and next(iter(skeleton)) in _RESERVED:
        kind, value = next(iter(skeleton.items()))
        if kind == "__tuple__":
            return tuple(unflatten_state(tensors, item) for item in value)
        if kind == "__dict__":
            return {_decode_key(k): unflatten_state(tensors, v) for k, v in value}
        if kind == "__float__":
            return float(value)
        if value not in tensors:
            raise ValueError(f"tensor {value!r} named in the skeleton is missing")
        if kind == "__tensor__":
            return tensors[value]
        array = tensors[value].cpu().numpy().copy()  # own, writable memory
        return array if kind == "__ndarray__" else array[()]
    return {key: unflatten_state(tensors, item) for key, item in skeleton.items()}


def _encode(obj: Any, path: str, tensors: dict[str, Tensor]) -> Any:
    # numpy first: np.float64 subclasses float and would silently lose its type.
    if isinstance(obj, (np.ndarray, np.generic)) and not isinstance(obj, np.str_):
        array = np.asarray(obj)
        if array.dtype.kind not in "biufc":
            raise TypeError(f"{path or '<root>'}: numpy dtype {array.dtype} cannot be saved")
        # torch.from_numpy refuses byte-swapped and non-contiguous arrays; np.asarray rather
        # than np.ascontiguousarray, which turns 0-d arrays into 1-d ones.
        array = np.asarray(array.astype(array.dtype.newbyteorder("="), copy=False), order="C")
        kind = "__ndarray__" if isinstance(obj, np.ndarray) else "__npscalar__"
        return {kind: _add(tensors, path, torch.from_numpy(array))}
    if obj is None or isinstance(obj, (bool, int, str)):
        return obj
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else {"__float__": repr(obj)}
    if isinstance(obj, Tensor):
        if obj.layout != torch.strided:
            raise TypeError(f"{path or '<root>'}: only dense tensors can be saved")
        return {"__tensor__": _add(tensors, path, obj.detach())}
    if isinstance(obj, tuple):
        return {"__tuple__": [_encode(v, _join(path, i), tensors) for i, v in enumerate(obj)]}
    if isinstance(obj, list):
        return [_encode(v, _join(path, i), tensors) for i, v in enumerate(obj)]
    if isinstance(obj, dict):
        if all(isinstance(k, str) for k in obj) and not _RESERVED.intersection(obj):
            return {k: _encode(v, _join(path, k), tensors) for k, v in obj.items()}
        # JSON object keys are strings only: keep int (and other) keys as explicit pairs.
        return {"__dict__": [[_encode_key(k, path), _encode(v, _join(path, k), tensors)]
                             for k, v in obj.items()]}
    raise TypeError(f"{path or '<root>'}: cannot save a {type(obj).__name__} without pickle")


def _encode_key(key: Any, path: str) -> Any:
    if key is None or isinstance(key, (bool, int, str)):
        return key
    if isinstance(key, float) and math.isfinite(key):
        return key
    if isinstance(key, tuple):
        return {"__tuple__": [_encode_key(k, path) for k in key]}
    raise TypeError(f"{path or '<root>'}: dict key {key!r} cannot be saved")


def _decode_key(key: Any) -> Any:
    if isinstance(key, dict):
        return tuple(_decode_key(k) for k in key["__tuple__"])
    return key


def _join(path: str, key: Any) -> str:
    return f"{path}.{key}" if path else str(key)


def _add(tensors: dict[str, Tensor], path: str, tensor: Tensor) -> str:
    """Store under a unique name: dotted paths can collide ({"a.b": x} vs {"a": {"b": y}})."""
    name, n = path or "tensor", 1
    while name in tensors:
        name, n = f"{path or 'tensor'}#{n}", n + 1
    tensors[name] = tensor
    return name


# --------------------------------------------------------------------------- training state


def save_training_state(model_dir: Path, state: dict[str, Any]) -> None:
    """Write ``state/training_state.json`` and the tensor file it names; the JSON, written
    last, seals the pair.

    The tensors go to a new file named after their sha256, and the previous one is deleted
    only once the JSON names the new one: a run killed at any point leaves the previous
    checkpoint whole (resuming loses at most one checkpoint interval).
    """
    state_dir = Path(model_dir) / STATE_DIR
    tensors, skeleton = flatten_state(state)
    data = safetensors.torch.save(_cpu_copies(tensors))
    digest = hashlib.sha256(data).hexdigest()
    name = f"training_state.{digest[:16]}.safetensors"
    atomic_write_bytes(state_dir / name, data)
    doc = {"format_version": STATE_FORMAT_VERSION, "tensors": name, "sha256": digest,
           "skeleton": skeleton}
    # Insertion order kept (no sort_keys); allow_nan=False because non-finite floats are markers.
    atomic_write_text(state_dir / STATE_JSON, json.dumps(doc, allow_nan=False) + "\n")
    for old in state_dir.glob("training_state*.safetensors"):
        if old.name != name:
            old.unlink(missing_ok=True)


def state_tensor_path(model_dir: Path) -> Path:
    """The tensor file named by ``state/training_state.json`` (files of earlier versions:
    ``training_state.safetensors``)."""
    state_dir = Path(model_dir) / STATE_DIR
    doc = json.loads((state_dir / STATE_JSON).read_text(encoding="utf-8"))
    name = doc.get("tensors", STATE_TENSORS)
    if not isinstance(name, str) or Path(name).name != name or not name.endswith(".safetensors"):
        raise ValueError(f"the training state names an invalid tensor file {name!r}")
    return state_dir / name


def load_training_state(model_dir: Path, device: str | torch.device = "cpu"
                        ) -> dict[str, Any]:
    """Read the state written by :func:`save_training_state`, verifying its sha256."""
    state_dir = Path(model_dir) / STATE_DIR
    json_path = state_dir / STATE_JSON
    fix = f"delete {state_dir} to start over, or rerun without --resume"
    if not json_path.is_file():
        raise InputError("no saved training state to resume from", state_dir,
                         "rerun without --resume")
    try:
        doc = json.loads(json_path.read_text(encoding="utf-8"))
        digest, skeleton, version = doc["sha256"], doc["skeleton"], doc["format_version"]
        tensor_path = state_tensor_path(model_dir)
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError,
            AttributeError) as exc:
        raise InputError(f"training state is incomplete or corrupt ({exc})", json_path,
                         fix) from exc
    if version != STATE_FORMAT_VERSION:
        raise InputError(f"training state format {version!r} is not supported "
                         f"(expected {STATE_FORMAT_VERSION})", json_path, fix)
    data = _read_bytes(tensor_path) if tensor_path.is_file() else b""
    if hashlib.sha256(data).hexdigest() != digest:
        raise InputError("training state is incomplete or corrupt: "
                         f"{tensor_path.name} does not match the sha256 in {STATE_JSON}",
                         state_dir, fix)
    try:
        return unflatten_state(_parse_safetensors(data, tensor_path, device), skeleton)
    except (ValueError, KeyError, TypeError) as exc:
        raise InputError(f"training state is incomplete or corrupt ({exc})", json_path,
                         fix) from exc


# --------------------------------------------------------------------------- model card


def write_card(model_dir: Path, card: dict[str, Any]) -> None:
    """Write ``model.json`` atomically (sorted keys, 2-space indent)."""
    missing = [key for key in CARD_REQUIRED if key not in card]
    if missing:  # a card read_card would refuse must never be written
        raise ValueError(f"model card lacks {', '.join(missing)}")
    write_json(Path(model_dir) / CARD, card)


def read_card(model_dir: Path) -> dict[str, Any]:
    """Read and check ``model.json``; InputError when missing, invalid or incomplete."""
    path = Path(model_dir) / CARD
    if not path.is_file():
        raise InputError("no model card: this is not a trained pseudopet model", path,
                         "train the model first, or check --model-name and the output folder")
    try:
        card = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise InputError(f"model card is not valid JSON ({exc})", path,
                         "restore it from the training run, or retrain the model") from exc
    if not isinstance(card, dict):
        raise InputError("model card is not a JSON object", path,
                         "restore it from the training run, or retrain the model")
    missing = [key for key in CARD_REQUIRED if key not in card]
    if missing:
        raise InputError(f"model card lacks required keys: {', '.join(missing)}", path,
                         "restore it from the training run, or retrain the model")
    version = card["format_version"]
    if not isinstance(version, int) or version > CARD_FORMAT_VERSION:
        raise InputError(f"model card format {version!r} is not supported "
                         f"(this pseudopet reads up to {CARD_FORMAT_VERSION})", path,
                         "use the pseudopet version that trained the model, or retrain")
    return card


def check_compatible(card: dict[str, Any], expected: dict[str, Any], model_dir: Path) -> None:
    """UsageError listing every key of ``expected`` whose value differs in ``card``."""
    missing = object()
    diffs = [f"{key}: model has {card.get(key, '<missing>')!r}, requested {value!r}"
             for key, value in expected.items() if card.get(key, missing) != value]
    if diffs:
        model_dir = Path(model_dir)
        raise UsageError("existing model was trained with different settings: "
                         + "; ".join(diffs), model_dir,
                         f"choose another --model-name / output folder, or delete {model_dir} "
                         "to retrain")


def load_model_dir(model_dir: Path, device: str | torch.device = "cpu"
                   ) -> tuple[dict[str, Any], dict[str, Tensor]]:
    """Model card and weights of a trained model, the weights verified against the card."""
    model_dir = Path(model_dir)
    card = read_card(model_dir)
    path = model_dir / WEIGHTS
    data = _read_bytes(path)
    weights = _parse_safetensors(data, path, device)  # format errors before the sha mismatch
    digest = hashlib.sha256(data).hexdigest()
    if digest != card["weights_sha256"]:
        raise InputError(f"weights do not match their model card (sha256 {digest[:12]}… vs "
                         f"{str(card['weights_sha256'])[:12]}… in {CARD})", path,
                         "retrain the model, or restore weights.safetensors and model.json "
                         "from the same training run")
    return card, weights
