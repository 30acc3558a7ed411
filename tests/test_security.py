"""Malicious checkpoints are refused before anything in them runs.

Every payload below would create a marker file if it ran; each test asserts the loader raised
:class:`UnsafeCheckpointError` (naming the offending global or opcode) AND that the marker does not
exist.
"""

from __future__ import annotations

import codecs
import collections
import io
import os
import pickle
import subprocess
import zipfile

import numpy as np
import pytest

from converters import formats
from converters.torch_pickle import CheckpointFormatError, UnsafeCheckpointError, read_torch_file


@pytest.fixture
def marker(tmp_path):
    path = tmp_path / "PWNED"
    yield path
    assert not path.exists(), "a payload ran"


def _shell_touch(path) -> str:
    return f"touch {path}"


class OsSystem:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (_shell_touch(self.marker),))


class Exec:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (exec, (f"open({str(self.marker)!r}, 'w').close()",))


class Eval:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (eval, (f"open({str(self.marker)!r}, 'w')",))


class Popen:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (subprocess.Popen, (["touch", str(self.marker)],))


@pytest.mark.parametrize("payload", [OsSystem, Exec, Eval, Popen])
def test_payloads_are_live(tmp_path, payload):
    """The payloads do run under a plain unpickler, so the marker checks in the other tests can
    fail."""
    live = tmp_path / "LIVE"
    result = pickle.loads(pickle.dumps(payload(live), protocol=2))
    if isinstance(result, subprocess.Popen):
        result.wait()
    assert live.exists()


def _write(tmp_path, data: bytes, name="evil.pkl"):
    path = tmp_path / name
    path.write_bytes(data)
    return path


def _assert_refused(path, match):
    with pytest.raises(UnsafeCheckpointError, match=match):
        read_torch_file(path)
    with pytest.raises(UnsafeCheckpointError, match=match):
        formats.load(path)  # the public entry point refuses too


@pytest.mark.parametrize(
    "payload, name",
    [
        (OsSystem, "posix.system"),
        (Exec, "builtins.exec"),
        (Eval, "builtins.eval"),
        (Popen, "(subprocess|commands).Popen"),
    ],
)
# 2: GLOBAL opcode; 4: STACK_GLOBAL with memoised names
@pytest.mark.parametrize("protocol", [2, 4])
def test_reduce_payloads(tmp_path, marker, payload, name, protocol):
    data = pickle.dumps({"G_ema": {"weight": [1.0]}, "x": payload(marker)}, protocol=protocol)
    _assert_refused(_write(tmp_path, data), name.replace(".", r"\."))


def test_payload_inside_a_torch_zip(tmp_path, marker):
    """torch.save's zip format: the payload sits in data.pkl next to real tensors."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("archive/data.pkl", pickle.dumps({"w": OsSystem(marker)}, protocol=2))
        zf.writestr("archive/version", "3\n")
    _assert_refused(_write(tmp_path, buf.getvalue(), "evil.pt"), r"posix\.system")


class _StoragePid(pickle.Pickler):
    """Writes a persistent id whose storage-type slot is a payload (a nested global inside the
    persistent id)."""

    def __init__(self, f, marker):
        super().__init__(f, protocol=2)
        self.marker = marker

    def persistent_id(self, obj):
        if isinstance(obj, str) and obj == "TENSOR":
            return ("storage", OsSystem(self.marker), "0", "cpu", 4)
        return None


def test_global_nested_in_a_persistent_id(tmp_path, marker):
    inner = io.BytesIO()
    _StoragePid(inner, marker).dump({"w": "TENSOR"})
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("archive/data.pkl", inner.getvalue())
        zf.writestr("archive/data/0", np.zeros(4, np.float32).tobytes())
    _assert_refused(_write(tmp_path, buf.getvalue(), "evil.pt"), r"posix\.system")


def test_persistence_global_other_than_reconstruct(tmp_path, marker):
    """torch_utils.persistence._src_to_module would exec its argument: only the reconstruct function
    is allowed."""
    src = f"open({str(marker)!r}, 'w').close()".encode()
    data = (
        b"\x80\x02ctorch_utils.persistence\n_src_to_module\nq\x00X"
        + len(src).to_bytes(4, "little")
        + src
        + b"q\x01\x85q\x02Rq\x03."
    )
    _assert_refused(_write(tmp_path, data), r"torch_utils\.persistence\._src_to_module")


def test_payload_in_an_embedded_storage(tmp_path, marker):
    """NVlabs pickles embed torch.save byte strings (torch.storage._load_from_bytes); those are
    vetted too."""
    inner = pickle.dumps(OsSystem(marker), protocol=2)
    data = (
        b"\x80\x03ctorch.storage\n_load_from_bytes\nq\x00B"
        + len(inner).to_bytes(4, "little")
        + inner
        + b"q\x01\x85q\x02Rq\x03."
    )
    _assert_refused(_write(tmp_path, data), r"posix\.system")


@pytest.mark.parametrize(
    "data, opcode",
    [
        # protocol 0 instantiation of os.system
        (b"(S'touch MARKER'\nios\nsystem\n.", "INST"),
        # even an allowed class: no checkpoint uses INST
        (b"(icollections\nOrderedDict\n.", "INST"),
        (b"\x80\x02(ccollections\nOrderedDict\no.", "OBJ"),  # protocol 1 OBJ opcode
    ],
)
def test_inst_and_obj_opcodes(tmp_path, marker, data, opcode):
    _assert_refused(_write(tmp_path, data.replace(b"MARKER", str(marker).encode())), opcode)


def test_object_arrays_are_refused(tmp_path, marker):
    arr = np.empty(1, dtype=object)
    arr[0] = OsSystem(marker)
    with pytest.raises(UnsafeCheckpointError):
        read_torch_file(_write(tmp_path, pickle.dumps({"a": arr}, protocol=2)))


def test_arbitrary_classes_are_refused(tmp_path, marker):
    # a harmless class, but not allow-listed
    data = pickle.dumps({"net": zipfile.ZipInfo("x")}, protocol=2)
    _assert_refused(_write(tmp_path, data), r"zipfile\.ZipInfo")


def test_out_of_bounds_tensor_is_refused(tmp_path):
    """A tensor claiming more elements than its storage holds must not read past the buffer."""
    pid = b"(X\x07\x00\x00\x00storagectorch\nFloatStorage\nX\x01\x00\x00\x000X\x03\x00\x00\x00cpuK\x04tQ"
    pkl = (
        b"\x80\x02}X\x01\x00\x00\x00wctorch._utils\n_rebuild_tensor_v2\n("
        + pid
        + b"K\x00M\x00\x04\x85K\x01\x85\x89ccollections\nOrderedDict\n)RtRs."
    )
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("archive/data.pkl", pkl)
        zf.writestr("archive/data/0", np.arange(4, dtype=np.float32).tobytes())
    path = _write(tmp_path, buf.getvalue(), "oob.pt")
    with pytest.raises(CheckpointFormatError, match="storage holding only 4"):
        read_torch_file(path)
    # The same bytes with a legal size read back correctly, so the refusal above is about the bounds
    # alone.
    ok = pkl.replace(b"M\x00\x04\x85", b"K\x04\x85")
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("archive/data.pkl", ok)
        zf.writestr("archive/data/0", np.arange(4, dtype=np.float32).tobytes())
    assert read_torch_file(_write(tmp_path, buf.getvalue(), "ok.pt"))["w"].tolist() == [0, 1, 2, 3]


# ---- protocol-2 bytes: _codecs.encode is allowed for exactly one construction --------------------


class _Call:
    """Pickles as ``func(*args)`` (a REDUCE of the global ``func``), the way a crafted file would
    call it."""

    def __init__(self, func, *args):
        self.func, self.args = func, args

    def __reduce__(self):
        return (self.func, self.args)


def test_protocol2_bytes_are_read(tmp_path):
    """Protocol 2 has no bytes opcode: pickle writes bytes as _codecs.encode(<str>, 'latin1'); that
    reads back."""
    raw = bytes(range(256)) * 3
    data = pickle.dumps({"raw": raw, "empty_list": []}, protocol=2)
    assert b"_codecs\nencode" in data  # the construction under test is really in the file
    assert read_torch_file(_write(tmp_path, data))["raw"] == raw


@pytest.mark.parametrize(
    "args, shown",
    [
        (("abc", "utf-8"), "'utf-8'"),  # another text codec
        (("abc", "rot13"), "'rot13'"),  # a str -> str codec
        # bytes -> bytes codecs (zlib, base64, hex) decode payloads
        ((b"x\x9c\x03\x00", "zlib"), "bytes"),
        (("abc", "latin-1"), "'latin-1'"),  # an alias: not what pickle writes
        (("abc", "latin1", "strict"), "'strict'"),  # any third argument
        # the default encoding is not the construction either
        (("abc",), r"\(str\)"),
        ((3, "latin1"), "int"),  # a non-str argument
    ],
)
def test_codecs_encode_other_uses_are_refused(tmp_path, args, shown):
    # protocol 3: bytes arguments are possible
    data = pickle.dumps(_Call(codecs.encode, *args), protocol=3)
    assert b"_codecs" in data
    with pytest.raises(UnsafeCheckpointError, match=r"_codecs\.encode.*" + shown):
        read_torch_file(_write(tmp_path, data))


def test_codecs_encode_of_a_built_object_is_refused(tmp_path):
    """encode()'s first argument built by an allowed global (an OrderedDict) is not a str:
    refused."""
    data = pickle.dumps(_Call(codecs.encode, collections.OrderedDict(a=1), "latin1"), protocol=2)
    with pytest.raises(UnsafeCheckpointError, match=r"_codecs\.encode\(OrderedDict"):
        read_torch_file(_write(tmp_path, data))


@pytest.mark.parametrize(
    "func, name",
    [
        (codecs.decode, r"_codecs\.decode"),
        (codecs.lookup, r"_codecs\.lookup"),
        (codecs.open, r"codecs\.open"),
    ],
)
def test_other_codecs_globals_are_refused(tmp_path, marker, func, name):
    data = pickle.dumps(_Call(func, str(marker), "w"), protocol=2)
    _assert_refused(_write(tmp_path, data), name)


def test_payload_inside_codecs_encode_is_refused(tmp_path, marker):
    """A payload in the argument slot is refused by the scan before anything is built."""
    data = pickle.dumps(_Call(codecs.encode, OsSystem(marker), "latin1"), protocol=2)
    _assert_refused(_write(tmp_path, data), r"posix\.system")
