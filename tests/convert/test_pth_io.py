"""Reading/writing PyTorch checkpoints without torch (grm_jax.convert.pth_io).

torch is used here only as the reference implementation; one test re-runs the loader in a subprocess in
which ``import torch`` fails.
"""

from __future__ import annotations

import argparse
import collections
import os
import pathlib
import subprocess
import sys
import zipfile

import ml_dtypes
import numpy as np
import pytest
import torch

from grm_jax.convert.pth_io import (
    CheckpointFormatError,
    SkippedObject,
    UnsafeCheckpointError,
    load_checkpoint_file,
    load_pth,
    load_safetensors,
    save_pth,
    save_safetensors,
)

ROOT = pathlib.Path(__file__).resolve().parents[2]
FIXTURE = ROOT / "tests" / "fixtures" / "official" / "grm_tiny" / "state_dict.pth"


def _np_of(tensor: torch.Tensor) -> np.ndarray:
    """A torch tensor as NumPy, bfloat16 included (reinterpreting the 16-bit pattern)."""
    if tensor.dtype == torch.bfloat16:
        return tensor.contiguous().view(torch.int16).numpy().view(ml_dtypes.bfloat16)
    return tensor.contiguous().numpy()


def _assert_bit_equal(ours: np.ndarray, ref: np.ndarray, name: str):
    # exact: same dtype, same shape, same bytes (NaN payloads and signed zeros included)
    assert isinstance(ours, np.ndarray), name
    assert ours.dtype == ref.dtype, (name, ours.dtype, ref.dtype)
    assert ours.shape == ref.shape, (name, ours.shape, ref.shape)
    assert ours.tobytes() == np.ascontiguousarray(ref).tobytes(), name


@pytest.fixture(scope="module")
def torch_fixture():
    return torch.load(FIXTURE, map_location="cpu", weights_only=True)


def _rezip(src: pathlib.Path, dst: pathlib.Path, edit):
    """Copy a zip record by record; ``edit(name, data)`` returns new bytes, or None to drop the record."""
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w", zipfile.ZIP_STORED) as zout:
        for info in zin.infolist():
            data = edit(info.filename, zin.read(info.filename))
            if data is not None:
                zout.writestr(info.filename, data)


# ------------------------------------------------------------------------------------------------ load_pth


def test_fixture_matches_torch_load_bit_exact(torch_fixture):
    ours = load_pth(FIXTURE)
    assert isinstance(ours, collections.OrderedDict)  # torch's state_dict() is an OrderedDict
    assert list(ours) == list(torch_fixture)  # same keys, same order
    for key, tensor in torch_fixture.items():
        _assert_bit_equal(ours[key], _np_of(tensor), key)
    nbt = ours["box_head.conv1_ctr.1.num_batches_tracked"]
    assert nbt.dtype == np.int64 and nbt.shape == ()  # 0-d int64 buffer stays a 0-d array
    assert all(v.flags["C_CONTIGUOUS"] and v.flags["OWNDATA"] for v in ours.values())


def test_fixture_loads_in_a_process_without_torch(tmp_path, torch_fixture):
    reference = tmp_path / "reference.npz"
    np.savez(reference, **{k: _np_of(v) for k, v in torch_fixture.items()})
    script = f"""
import sys
sys.modules["torch"] = None  # any `import torch` now raises ImportError
try:
    import torch
except ImportError:
    pass
else:
    raise SystemExit("torch import was not blocked")
import numpy as np
from grm_jax.convert.pth_io import load_pth
ours = load_pth({str(FIXTURE)!r})
ref = np.load({str(reference)!r})
assert list(ours) == list(ref.files), "key order"
for key in ref.files:
    a, b = ours[key], ref[key]
    assert a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes(), key
assert sys.modules["torch"] is None
print("OK", len(ours))
"""
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.strip() == f"OK {len(torch_fixture)}"


def test_views_shared_storages_and_v3_dtypes(tmp_path):
    base = torch.arange(24, dtype=torch.float32).reshape(4, 6)
    obj = {
        "transposed": base.t(),  # non-contiguous strides
        "slice": base[1:, 2:5],  # storage offset 8, shares the storage with `transposed`
        "scalar": torch.tensor(3.5, dtype=torch.float64),
        "bf16": torch.randn(7, generator=torch.Generator().manual_seed(0)).bfloat16(),
        "u16": torch.arange(5).to(torch.uint16),  # saved via UntypedStorage + _rebuild_tensor_v3
        "empty": torch.zeros(0, 3),
        "param": torch.nn.Parameter(torch.ones(2)),  # _rebuild_parameter
        "misc": [1, -2**70, 2.5, "a", (3, None), b"raw", {5: True}, {1, 2}],
    }
    torch.save(obj, tmp_path / "views.pth")
    ours = load_pth(tmp_path / "views.pth")
    for key in ("transposed", "slice", "scalar", "bf16", "u16", "empty", "param"):
        _assert_bit_equal(ours[key], _np_of(obj[key].detach()), key)
    assert ours["misc"] == obj["misc"]


def test_grm_style_checkpoint_refuses_objects_unless_allow_skip(tmp_path, torch_fixture):
    net = torch.nn.Linear(3, 2)
    opt = torch.optim.AdamW(net.parameters(), lr=1e-4)
    net(torch.ones(1, 3)).sum().backward()
    opt.step()
    ckpt = {"net": torch_fixture, "optimizer": opt.state_dict(), "epoch": 300, "net_type": "GRM",
            "settings": argparse.Namespace(lr=1e-4, name="vitb_256_ep300")}
    path = tmp_path / "GRM_ep0300.pth.tar"
    torch.save(ckpt, path)

    with pytest.raises(UnsafeCheckpointError) as err:
        load_pth(path)
    assert "argparse.Namespace" in str(err.value) and str(path) in str(err.value)

    ours = load_checkpoint_file(path, allow_skip=True)  # .pth.tar dispatches to load_pth
    assert ours["epoch"] == 300 and ours["net_type"] == "GRM"
    for key, tensor in torch_fixture.items():
        _assert_bit_equal(ours["net"][key], _np_of(tensor), key)
    settings = ours["settings"]
    assert isinstance(settings, SkippedObject) and settings.name == "argparse.Namespace"
    assert settings.state == {"lr": 1e-4, "name": "vitb_256_ep300"}  # recorded, never instantiated
    ref_state = opt.state_dict()
    assert ours["optimizer"]["param_groups"][0]["betas"] == ref_state["param_groups"][0]["betas"]
    for name in ("exp_avg", "exp_avg_sq", "step"):
        _assert_bit_equal(ours["optimizer"]["state"][0][name], _np_of(ref_state["state"][0][name]), name)


def _torch_like_zip(path: pathlib.Path, pickled: bytes, storages: dict[str, bytes] | None = None):
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as zf:
        zf.writestr("evil/data.pkl", pickled)
        zf.writestr("evil/byteorder", b"little")
        for key, data in (storages or {}).items():
            zf.writestr(f"evil/data/{key}", data)
        zf.writestr("evil/version", b"3\n")


def test_malicious_global_is_refused_and_never_run(tmp_path):
    marker = tmp_path / "pwned"
    command = f"touch {marker}".encode()
    # protocol 2: GLOBAL os.system, the command string, TUPLE1, REDUCE, STOP
    pickled = (b"\x80\x02cos\nsystem\nq\x00X" + len(command).to_bytes(4, "little") + command
               + b"q\x01\x85q\x02Rq\x03.")
    path = tmp_path / "evil.pth"
    _torch_like_zip(path, pickled)
    with pytest.raises(UnsafeCheckpointError) as err:
        load_pth(path)
    assert "os.system" in str(err.value) and str(path) in str(err.value)
    assert not marker.exists()
    # allow_skip records the call instead of making it
    skipped = load_pth(path, allow_skip=True)
    assert isinstance(skipped, SkippedObject) and skipped.args == (command.decode(),)
    assert not marker.exists()


def test_storage_type_must_be_a_storage(tmp_path):
    # persistent id whose "storage type" is an arbitrary allowed callable (OrderedDict) → refused
    pickled = (b"\x80\x02ctorch._utils\n_rebuild_tensor_v2\n((X\x07\x00\x00\x00storage"
               b"ccollections\nOrderedDict\nX\x01\x00\x00\x000X\x03\x00\x00\x00cpuK\x01tQK\x00K\x01\x85K\x01\x85"
               b"\x89ccollections\nOrderedDict\n)RtR.")
    path = tmp_path / "bad_storage.pth"
    _torch_like_zip(path, pickled, {"0": b"\0" * 4})
    with pytest.raises(UnsafeCheckpointError, match="storage type"):
        load_pth(path)



def _one_tensor_pickle(size, stride) -> bytes:
    """data.pkl of a single float32 tensor on storage '0' (numel 1) with the given geometry (protocol 2)."""
    ints = lambda xs: b"(" + b"".join(b"J" + int(x).to_bytes(4, "little", signed=True) for x in xs) + b"t"
    return (b"\x80\x02ctorch._utils\n_rebuild_tensor_v2\n((X\x07\x00\x00\x00storagectorch\nFloatStorage\n"
            b"X\x01\x00\x00\x000X\x03\x00\x00\x00cpuK\x01tQK\x00" + ints(size) + ints(stride)
            + b"\x89ccollections\nOrderedDict\n)RtR.")


@pytest.mark.parametrize("size,stride,message", [
    ((3,), (1,), "needs element 2, storage has 1"),  # reads past the end of the storage
    ((100000, 100000), (0, 0), "would expand"),  # stride-0 memory bomb: 4 bytes → 40 GB
])
def test_tensor_geometry_is_checked_against_its_storage(tmp_path, size, stride, message):
    path = tmp_path / "geometry.pth"
    _torch_like_zip(path, _one_tensor_pickle(size, stride), {"0": b"\0" * 4})
    with pytest.raises(CheckpointFormatError, match=message) as err:
        load_pth(path)
    assert str(path) in str(err.value)
    _torch_like_zip(path, _one_tensor_pickle((), ()), {"0": np.float32(1.25).tobytes()})
    assert load_pth(path) == np.float32(1.25)  # the same builder with a valid 0-d geometry loads

def test_truncated_file_is_a_format_error(tmp_path):
    data = FIXTURE.read_bytes()
    path = tmp_path / "truncated.pth"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointFormatError) as err:
        load_pth(path)
    assert str(path) in str(err.value)


def test_missing_and_short_storage_records(tmp_path):
    missing = tmp_path / "missing.pth"
    _rezip(FIXTURE, missing, lambda name, data: None if name == "state_dict/data/3" else data)
    with pytest.raises(CheckpointFormatError, match="missing storage record 'state_dict/data/3'"):
        load_pth(missing)
    short = tmp_path / "short.pth"
    _rezip(FIXTURE, short, lambda name, data: data[:-4] if name == "state_dict/data/1" else data)
    with pytest.raises(CheckpointFormatError, match="'state_dict/data/1' holds"):
        load_pth(short)


def test_not_a_checkpoint_and_legacy_format(tmp_path):
    legacy = tmp_path / "legacy.pth"
    torch.save({"w": torch.ones(2)}, legacy, _use_new_zipfile_serialization=False)
    with pytest.raises(CheckpointFormatError, match="legacy"):
        load_pth(legacy)
    text = tmp_path / "notes.pth"
    text.write_text("hello")
    with pytest.raises(CheckpointFormatError, match="not a PyTorch zip checkpoint"):
        load_pth(text)


def test_big_endian_archive(tmp_path):
    # torch writes byteorder "big" on big-endian hosts: storages are then big-endian on disk
    arrays = {"f": np.arange(6, dtype=np.float32).reshape(2, 3) - 2.5, "i": np.array(-7, np.int64),
              "bf": np.array([1.5, -3.0], ml_dtypes.bfloat16)}
    little = tmp_path / "little.pth"
    save_pth(arrays, little)
    itemsize = {"0": 4, "1": 8, "2": 2}

    def to_big(name, data):
        if name.endswith("/byteorder"):
            return b"big"
        key = name.rsplit("/", 1)[-1]
        if "/data/" in name:
            return np.frombuffer(data, f"<u{itemsize[key]}").astype(f">u{itemsize[key]}").tobytes()
        return data

    big = tmp_path / "big.pth"
    _rezip(little, big, to_big)
    ours = load_pth(big)
    for key, arr in arrays.items():
        _assert_bit_equal(ours[key], arr, key)


# ------------------------------------------------------------------------------------------------ save_pth


def _sample_tree():
    rng = np.random.default_rng(0)
    return collections.OrderedDict(
        f32=rng.standard_normal((3, 4)).astype(np.float32),
        f16=rng.standard_normal(5).astype(np.float16),
        bf16=rng.standard_normal((2, 3)).astype(ml_dtypes.bfloat16),
        i64_0d=np.array(123456789012, np.int64),
        f32_0d=np.array(-0.0, np.float32),
        i32=np.arange(-3, 3, dtype=np.int32),
        u8=np.arange(250, 256, dtype=np.uint8),
        b=np.array([True, False, True]),
        empty=np.zeros((0, 2), np.float32),
        fortran=np.asfortranarray(rng.standard_normal((3, 2)).astype(np.float32)),
        nested={"w": np.full((2,), np.nan, np.float64), "epoch": 300, "lr": 1e-4, "name": "GRM",
                "betas": (0.9, 0.999), "ids": [1, 2, -2**40], "none": None, "flag": True},
    )


def test_save_pth_is_read_by_torch_weights_only(tmp_path):
    tree = _sample_tree()
    path = tmp_path / "saved.pth"
    save_pth(tree, path)
    for mmap in (False, True):  # mmap=True also checks the 64-byte alignment of the storage records
        loaded = torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
        assert isinstance(loaded, collections.OrderedDict) and list(loaded) == list(tree)
        for key, value in tree.items():
            if key != "nested":
                _assert_bit_equal(_np_of(loaded[key]), value, key)
        nested = loaded["nested"]
        _assert_bit_equal(_np_of(nested["w"]), tree["nested"]["w"], "nested.w")
        assert {k: v for k, v in nested.items() if k != "w"} == {k: v for k, v in tree["nested"].items()
                                                                   if k != "w"}


def test_save_then_load_pth_bit_exact(tmp_path):
    tree = _sample_tree()
    path = tmp_path / "roundtrip.pth"
    save_pth(tree, path)
    ours = load_pth(path)
    assert list(ours) == list(tree)
    for key, value in tree.items():
        if key != "nested":
            _assert_bit_equal(ours[key], value, key)
    _assert_bit_equal(ours["nested"]["w"], tree["nested"]["w"], "nested.w")
    assert {k: v for k, v in ours["nested"].items() if k != "w"} == {k: v for k, v in tree["nested"].items()
                                                                      if k != "w"}


def test_fixture_round_trip_through_save_pth(tmp_path, torch_fixture):
    path = tmp_path / "copy.pth"
    save_pth(load_pth(FIXTURE), path)
    again = torch.load(path, weights_only=True)
    for key, tensor in torch_fixture.items():
        _assert_bit_equal(_np_of(again[key]), _np_of(tensor), key)


def test_save_pth_is_atomic_and_validates_first(tmp_path):
    path = tmp_path / "keep.pth"
    save_pth({"a": np.ones(2, np.float32)}, path)
    before = path.read_bytes()
    with pytest.raises(TypeError, match="uint16"):
        save_pth({"a": np.ones(2, np.uint16)}, path)  # no legacy storage type for uint16
    with pytest.raises(TypeError, match="object"):
        save_pth({"a": object()}, path)
    assert path.read_bytes() == before  # the old file is untouched
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.pth"]  # no temporary files left behind


# ------------------------------------------------------------------------------------------------ safetensors


def test_safetensors_round_trip_and_dispatch(tmp_path):
    tree = {k: v for k, v in _sample_tree().items() if k != "nested"}
    path = tmp_path / "weights.safetensors"
    save_safetensors(tree, path)
    for loaded in (load_safetensors(path), load_checkpoint_file(path)):
        assert sorted(loaded) == sorted(tree)
        for key, value in tree.items():
            _assert_bit_equal(loaded[key], value, key)
    with pytest.raises(TypeError, match="'nested'"):
        save_safetensors({"ok": np.ones(1), "nested": {"w": np.ones(1)}}, tmp_path / "nested.safetensors")
    with pytest.raises(ValueError, match="unknown checkpoint extension"):
        load_checkpoint_file(tmp_path / "weights.npz")
    (tmp_path / "broken.safetensors").write_bytes(b"\x10\x00")
    with pytest.raises(CheckpointFormatError, match="broken.safetensors"):
        load_safetensors(tmp_path / "broken.safetensors")

