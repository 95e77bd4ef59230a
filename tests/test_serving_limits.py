"""Limits inside the exported graphs hold before anything is allocated (issue 17, items 1-2).

Bounded in time and memory: the pixel limit is lowered so small claimed sizes show
that the header is checked before decoding, and the range checks are shown to gate
every op that reads the checked input by walking the traced graph.
"""

import tfmodels  # noqa: F401

import numpy as np
import pytest
import tensorflow as tf

from export import signatures as S
from export.recommender import decode_images
from serving_fixtures import png_claiming


def jpeg_claiming(height: int, width: int) -> bytes:
    """A real JPEG's headers (up to its scan) with the scan data cut off."""
    jpg = tf.io.encode_jpeg(np.full((height, width, 3), 128, np.uint8)).numpy()
    return jpg[: jpg.index(b"\xff\xda") + 20]


def _decode(data: bytes, max_pixels: int):
    fn = tf.function(lambda b: decode_images(b, 8, max_pixels=max_pixels))
    return fn(tf.constant([data]))


@pytest.mark.parametrize("make", [png_claiming, jpeg_claiming])
def test_image_header_is_checked_before_decoding(make):
    data = make(20, 30)  # 600 pixels claimed; the pixel data itself is truncated
    with pytest.raises(tf.errors.InvalidArgumentError, match="limit of 599 pixels") as e:
        _decode(data, max_pixels=599)
    assert "20, 30" in str(e.value) or "[20 30]" in str(e.value)  # the claimed size is named
    # At a limit it fits, the same bytes reach the decoder, which refuses the truncated data:
    # so the limit above fired first, from the header alone.
    with pytest.raises(tf.errors.InvalidArgumentError) as e:
        _decode(data, max_pixels=600)
    assert "limit of" not in str(e.value)


def test_image_limit_lets_real_images_through():
    img = np.random.default_rng(0).integers(0, 255, (10, 12, 3), dtype=np.uint8)
    for data in (tf.io.encode_png(img).numpy(), tf.io.encode_jpeg(img).numpy()):
        assert _decode(data, max_pixels=120).shape == (1, 8, 8, 3)
        with pytest.raises(tf.errors.InvalidArgumentError, match="limit of 119 pixels"):
            _decode(data, max_pixels=119)


def test_default_limit_refuses_a_claimed_bomb_at_once():
    """12000 x 12000 claimed in under 100 bytes: refused by the documented default limit."""
    with pytest.raises(tf.errors.InvalidArgumentError, match=f"limit of {S.MAX_IMAGE_PIXELS} pixels"):
        _decode(png_claiming(12000, 12000), S.MAX_IMAGE_PIXELS)


# ----------------------------------------------------------------------------- range checks gate


def ungated_readers(concrete_fn, input_name: str) -> list:
    """Ops that read input ``input_name`` through a value that did not wait for its checks.

    The checks are the assertions that read the input (the ops feeding them are part
    of the checks). Every other op reading the input must have a check among its
    ancestors (data or control edges). Function calls and control flow are judged per
    input tensor: TensorFlow 2 inlines them with non-strict semantics, so an op inside
    a called function starts as soon as *its own* inputs are ready, whatever else the
    call waits for.
    """
    ops = concrete_fn.graph.get_operations()
    (source,) = [op for op in ops if op.type == "Placeholder" and op.name == input_name]
    memo = {}

    def ancestors(op):
        if op not in memo:
            seen, stack = set(), [op]
            while stack:
                o = stack.pop()
                for p in [t.op for t in o.inputs] + list(o.control_inputs):
                    if p not in seen:
                        seen.add(p)
                        stack.append(p)
            memo[op] = seen
        return memo[op]

    readers, stack = set(), [source]
    while stack:
        for out in stack.pop().outputs:
            for c in out.consumers():
                if c not in readers:
                    readers.add(c)
                    stack.append(c)
    # tf.debugging.Assert wraps itself in a cond when its data is not cheap to print.
    checks = [op for op in readers if op.type in ("Assert", "CheckNumerics")
              or (op.type in ("If", "StatelessIf") and "assert" in op.name.lower())]
    assert checks, f"no assertion reads input '{input_name}'"
    part_of_checks = set(checks).union(*(ancestors(c) for c in checks))

    def gated(op):
        return op is not source and any(c in ancestors(op) for c in checks)

    def waits(op):
        if op.type not in _NON_STRICT:
            return gated(op)
        return all(gated(t.op) for t in op.inputs if t.op is source or t.op in readers)

    return sorted(op.name for op in readers - part_of_checks if not waits(op))


# Ops whose inputs each flow on separately once inlined or lowered (function calls, control flow).
_NON_STRICT = {"PartitionedCall", "StatefulPartitionedCall", "While", "StatelessWhile", "If", "StatelessIf",
               "Case", "StatelessCase"}


def test_ungated_readers_finds_an_unchecked_allocation():
    """The helper is honest: an assert beside the allocation is reported."""
    @tf.function(input_signature=[tf.TensorSpec([], tf.int32, name="n")])
    def careless(n):
        tf.debugging.assert_less_equal(n, 64)
        return tf.random.stateless_normal(tf.stack([n, 4]), seed=[0, 0])

    @tf.function(input_signature=[tf.TensorSpec([], tf.int32, name="n")])
    def careful(n):
        with tf.control_dependencies([tf.debugging.assert_less_equal(n, 64)]):
            n = tf.identity(n)
        return tf.random.stateless_normal(tf.stack([n, 4]), seed=[0, 0])

    assert ungated_readers(careless.get_concrete_function(), "n")
    assert ungated_readers(careful.get_concrete_function(), "n") == []


@pytest.fixture(scope="module")
def designer():
    from test_design_savedmodel import tiny_nets

    from export.designer import DesignerModule

    g, d, tower, _ = tiny_nets(0)
    return DesignerModule(g, d, tower, np.ones([3, 6], np.float32), ["u0", "u1", "u2"], ["top", "bag", "hat"],
                          rec_resolution=24)


@pytest.mark.parametrize("signature, inputs", [
    (S.GENERATE, [S.N]), (S.DESIGN, [S.STARTS, S.STEPS, S.ETA]), (S.MODIFY, [S.STEPS, S.ETA, S.IMAGE_BYTES])])
def test_exported_designer_checks_gate_what_they_bound(designer, signature, inputs):
    fn = designer.signatures()[signature]
    for name in inputs:
        assert ungated_readers(fn, name) == [], (signature, name)


def test_exported_designer_refuses_huge_counts_as_invalid_argument(designer):
    """Beyond the limits (and beyond what memory could hold) is INVALID_ARGUMENT, not RESOURCE_EXHAUSTED."""
    big = tf.constant(2**31 - 1)
    with pytest.raises(tf.errors.InvalidArgumentError, match=f"{S.N} must be between 1 and {S.MAX_IMAGES}"):
        designer.generate(tf.constant("top"), big, tf.constant(0))
    with pytest.raises(tf.errors.InvalidArgumentError, match=f"{S.STARTS} must be between"):
        designer.design(tf.constant("u0"), tf.constant("top"), big, tf.constant(1), tf.constant(1.0),
                        tf.constant(0))
