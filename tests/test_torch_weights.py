"""The safe PyTorch state-dict reader (tfmodels.models.torch_weights), on files PyTorch wrote.

The fixtures come from tests/fixtures/efficientnet_lite/make_fixtures.py (run once
with PyTorch in a throwaway venv); these tests need no PyTorch.
"""

import os
import pickle

import numpy as np
import pytest

from tfmodels.models import torch_weights as tw

FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures", "efficientnet_lite")


def expected_tiny():
    base = np.arange(12, dtype=np.float64).reshape(3, 4)
    return {"w": np.arange(6, dtype=np.float32).reshape(2, 3), "w_t": np.arange(6, dtype=np.float32).reshape(2, 3).T,
            "row": base[1], "base": base, "half": np.array([0.5, -2.0], np.float16),
            "bf16": np.array([1.5, -3.0], np.float32), "count": np.array(7, np.int64),
            "flags": np.array([True, False]), "bytes": np.arange(4, dtype=np.uint8)}


@pytest.mark.parametrize("layout", ["legacy", "zip"])
def test_reads_every_dtype_stride_and_offset(layout):
    got = tw.load_state_dict(os.path.join(FIXTURES, f"tiny_{layout}.pth"))
    want = expected_tiny()
    assert list(got) == list(want)  # file order kept
    for name, value in want.items():
        assert got[name].dtype == value.dtype, name
        np.testing.assert_array_equal(got[name], value, err_msg=name)
    got["row"][0] = -1.0  # arrays are copies, not views into one shared buffer
    assert got["base"][1, 0] == 4.0


def test_refuses_a_pickled_module_naming_the_global():
    with pytest.raises(tw.StateDictError, match=r"torch\.nn\.modules\.linear\.Linear.*state_dict\(\)"):
        tw.load_state_dict(os.path.join(FIXTURES, "module_legacy.pth"))


class _RunsCode:
    def __reduce__(self):
        return (os.system, ("echo should-never-run",))


def _legacy_file(tmp_path, state, storages=(), system_info=None):
    """A legacy torch.save layout around ``state`` (pickled with the standard pickler)."""
    path = tmp_path / "weights.pth"
    with open(path, "wb") as f:
        for obj in (tw.MAGIC_NUMBER, tw.PROTOCOL_VERSION,
                    system_info or {"protocol_version": 1001, "little_endian": True}, state, list(storages)):
            pickle.dump(obj, f, protocol=2)
    return str(path)


def test_refuses_code_execution_before_running_it(tmp_path, capfd):
    path = _legacy_file(tmp_path, {"w": _RunsCode()})
    with pytest.raises(tw.StateDictError, match=r"global (posix|os)\.system"):
        tw.load_state_dict(path)
    assert "should-never-run" not in capfd.readouterr().out


def test_refuses_a_checkpoint_that_is_not_a_plain_state_dict(tmp_path):
    with pytest.raises(tw.StateDictError, match=r"entry 'epoch' is a int, not a tensor"):
        tw.load_state_dict(_legacy_file(tmp_path, {"epoch": 3}))
    with pytest.raises(tw.StateDictError, match="holds a list, not a state dict"):
        tw.load_state_dict(_legacy_file(tmp_path, [1, 2]))


def test_refuses_files_that_are_not_torch_files(tmp_path):
    path = tmp_path / "model.h5"
    path.write_bytes(b"\x89HDF\r\n\x1a\n" + b"\0" * 64)
    with pytest.raises(tw.StateDictError, match="model.h5: not a PyTorch state dict file"):
        tw.load_state_dict(str(path))
    path.write_bytes(pickle.dumps(12345))
    with pytest.raises(tw.StateDictError, match="no torch.save magic number"):
        tw.load_state_dict(str(path))
    with pytest.raises(FileNotFoundError, match="missing.pth"):
        tw.load_state_dict(str(tmp_path / "missing.pth"))


def test_refuses_a_truncated_storage(tmp_path):
    data = open(os.path.join(FIXTURES, "tiny_legacy.pth"), "rb").read()
    path = tmp_path / "cut.pth"
    path.write_bytes(data[:-3])
    with pytest.raises(tw.StateDictError, match="truncated inside storage"):
        tw.load_state_dict(str(path))
