"""Read CTranslate2's ``model.bin`` with the standard library and numpy (CTranslate2 not needed).

Layout of ``model.bin`` (little-endian), format version 6::

    uint32 version | string spec_name | uint32 revision | uint32 n_variables
    n_variables x (string name | uint8 rank | rank x uint32 dim | uint8 dtype | uint32 n_bytes | bytes)
    uint32 n_aliases | n_aliases x (string alias | string target)

where a string is a uint16 length (counting a trailing NUL) followed by the bytes, and dtype is
0 f32, 1 i8, 2 i16, 3 i32, 4 f16, 5 bf16.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from hf_transfer.errors import ModelError

_SUPPORTED_VERSIONS = (6,)
_SPEC_NAME = "WhisperSpec"

# CTranslate2 dtype codes (include/ctranslate2/types.h order).
_DTYPES: dict[int, str] = {0: "float32", 1: "int8", 2: "int16", 3: "int32", 4: "float16", 5: "bfloat16"}
_ITEM_SIZE = {"float32": 4, "int8": 1, "int16": 2, "int32": 4, "float16": 2, "bfloat16": 2}


@dataclass
class CT2Model:
    """What ``model.bin`` holds: format header, variables (aliases resolved) and the alias table."""

    version: int
    spec: str
    revision: int
    variables: dict[str, np.ndarray]
    aliases: dict[str, str] = field(default_factory=dict)


# --------------------------------------------------------------------------------------------
# model.bin reader
# --------------------------------------------------------------------------------------------


class _Reader:
    def __init__(self, data: memoryview, path: Path):
        self.data = data
        self.pos = 0
        self.path = path

    def _need(self, n: int, what: str) -> None:
        if self.pos + n > len(self.data):
            raise ModelError(
                f"{self.path} is truncated or corrupt: reading {what} needs {n} bytes at offset {self.pos}, "
                f"but the file has {len(self.data)} bytes. Re-download or re-convert the model."
            )

    def scalar(self, fmt: str, what: str) -> int:
        size = struct.calcsize("<" + fmt)
        self._need(size, what)
        (value,) = struct.unpack_from("<" + fmt, self.data, self.pos)
        self.pos += size
        return value

    def string(self, what: str) -> str:
        length = self.scalar("H", f"the length of {what}")
        self._need(length, what)
        raw = bytes(self.data[self.pos : self.pos + length])
        self.pos += length
        if raw.endswith(b"\x00"):
            raw = raw[:-1]
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError as err:
            raise ModelError(
                f"{self.path} is corrupt: {what} at offset {self.pos - length} is not text ({err})."
            ) from err

    def raw(self, n: int, what: str) -> memoryview:
        self._need(n, what)
        view = self.data[self.pos : self.pos + n]
        self.pos += n
        return view


def _decode_array(raw: memoryview, dtype: str, shape: tuple[int, ...]) -> np.ndarray:
    if dtype == "bfloat16":
        # bf16 is the top half of an f32: widen the bits and reinterpret.
        bits = np.frombuffer(raw, dtype="<u2").astype(np.uint32) << 16
        return bits.view(np.float32).reshape(shape)
    return np.frombuffer(raw, dtype=np.dtype(dtype).newbyteorder("<")).reshape(shape)


def read_ctranslate2_model(path: str | Path) -> CT2Model:
    """Parse a CTranslate2 ``model.bin`` into numpy arrays (zero-copy views for f32/ints).

    Aliases (e.g. ``decoder/projection/weight`` -> ``decoder/embeddings/weight``) are resolved into
    ``variables`` and also reported in ``aliases``. Raises :class:`ModelError` on a missing, truncated
    or foreign file.
    """
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"{path} does not exist: a CTranslate2 model directory must contain model.bin.")
    data = memoryview(path.read_bytes())
    reader = _Reader(data, path)

    version = reader.scalar("I", "the format version")
    if version not in _SUPPORTED_VERSIONS:
        raise ModelError(
            f"{path} is not a supported CTranslate2 model: format version {version}, expected "
            f"{' or '.join(map(str, _SUPPORTED_VERSIONS))} (written by CTranslate2 >= 3.x). "
            "Re-convert the model with a recent ct2-transformers-converter, "
            "or check that the file is a CTranslate2 model."
        )
    spec = reader.string("the spec name")
    revision = reader.scalar("I", "the spec revision")
    count = reader.scalar("I", "the number of variables")

    variables: dict[str, np.ndarray] = {}
    for index in range(count):
        name = reader.string(f"the name of variable {index}")
        rank = reader.scalar("B", f"the rank of {name!r}")
        shape = tuple(reader.scalar("I", f"dimension {d} of {name!r}") for d in range(rank))
        code = reader.scalar("B", f"the dtype of {name!r}")
        if code not in _DTYPES:
            raise ModelError(f"{path} is corrupt: variable {name!r} has unknown dtype code {code} (known: {_DTYPES}).")
        dtype = _DTYPES[code]
        n_bytes = reader.scalar("I", f"the byte count of {name!r}")
        expected = int(np.prod(shape, dtype=np.int64)) * _ITEM_SIZE[dtype]
        if n_bytes != expected:
            raise ModelError(
                f"{path} is corrupt: variable {name!r} of shape {shape} and dtype {dtype} should take "
                f"{expected} bytes but declares {n_bytes}."
            )
        variables[name] = _decode_array(reader.raw(n_bytes, f"the data of {name!r}"), dtype, shape)

    aliases: dict[str, str] = {}
    n_aliases = reader.scalar("I", "the number of aliases")
    for _ in range(n_aliases):
        alias = reader.string("an alias name")
        aliases[alias] = reader.string(f"the target of alias {alias!r}")
    if reader.pos != len(data):
        raise ModelError(
            f"{path} is corrupt: {len(data) - reader.pos} unexpected trailing bytes after the alias table."
        )

    for alias in aliases:
        target, seen = aliases[alias], {alias}
        while target in aliases and target not in seen:  # aliases of aliases
            seen.add(target)
            target = aliases[target]
        if target not in variables:
            raise ModelError(f"{path} is corrupt: alias {alias!r} points to missing variable {aliases[alias]!r}.")
        variables[alias] = variables[target]

    return CT2Model(version=version, spec=spec, revision=revision, variables=variables, aliases=aliases)
