"""Names shared by export, the server and the clients: models, signatures, tensor keys.

This module is plain Python (no TensorFlow import) so that `serving/` and any
client can use it without pulling in the training code.

The SavedModels follow TensorFlow Serving's layout ``<base>/<MODEL>/<version>/``.
Each signature has named inputs and stable output keys; ``SIGNATURES`` below is
the contract: for every (model, signature) the input and output keys with their
dtype and shape (``None`` = any size; ``()`` = scalar). The exporter must declare
exactly these keys; clients may rely on them.

Two choices worth knowing:

* Binary string outputs end in ``_bytes`` (``png_bytes``). TensorFlow Serving's
  REST API base64-encodes an output tensor as ``{"b64": ...}`` only when its key
  ends in ``_bytes``; any other string output is written raw into the JSON, which
  is invalid for PNG data. (Binary *inputs* may have any key: REST callers send
  ``{"b64": ...}`` objects for them.)
* Categories are passed by name (``category`` is a string, e.g. "bag"); the
  designer keeps the name -> index table and rejects unknown names.
* Scalar inputs (``k``, ``n``, ``seed``, ``starts``, ``steps``, ``eta``) have shape
  ``()``. TensorFlow Serving's server-side batching (``--enable_batching``) only
  batches signatures whose inputs all have a leading batch dimension, so the real
  server must not be run with batching on for a model that has such signatures;
  the embedded server batches the eligible signatures and runs the others as-is.
"""

from __future__ import annotations

import dataclasses

# --- Model names (the <MODEL> folder under the export base and the name in models.config).
RECOMMENDER = "recommender"
DESIGNER = "designer"
ITEM_ENCODER = "item_encoder"
MODEL_NAMES = (RECOMMENDER, DESIGNER, ITEM_ENCODER)

# --- Signature names.
SERVING_DEFAULT = "serving_default"  # recommender: same as SCORE; item_encoder: images -> embedding
SCORE = "score"
SCORE_IMAGES = "score_images"
ITEM_EMBEDDING = "item_embedding"
USER_EMBEDDING = "user_embedding"
RECOMMEND = "recommend"
GENERATE = "generate"
DESIGN = "design"
MODIFY = "modify"

# --- Input keys.
USER_ID = "user_id"  # string [B]: the caller's own ids (e.g. H&M customer_id)
ITEM_ID = "item_id"  # string [B]: the caller's own ids (e.g. H&M article_id)
IMAGE_BYTES = "image_bytes"  # string [B]: encoded JPEG or PNG
IMAGES = "images"  # float32 [B, R, R, 3] in [-1, 1] (item_encoder only)
K = "k"  # int32 scalar: how many items to return
EXCLUDE_PURCHASED = "exclude_purchased"  # bool scalar: drop the user's training items
CATEGORY = "category"  # string: category name, case-insensitive, or decimal index "2" (scalar; [B] in modify)
N = "n"  # int32 scalar: how many images to generate
SEED = "seed"  # int32 scalar: random seed (same seed => same output)
STARTS = "starts"  # int32 scalar: random restarts of the latent search
STEPS = "steps"  # int32 scalar: Adam steps on the latent code
ETA = "eta"  # float32 scalar: weight of the discriminator (realism) term

# --- Output keys.
OUT_SCORE = "score"  # float32: preference theta_u . Phi(X_i)
OUT_KNOWN = "known"  # bool [B]: False where the user or item id is unknown (score is then 0)
OUT_EMBEDDING = "embedding"  # float32 [B, K]
OUT_ITEM_ID = "item_id"  # string [B, k]
OUT_IMAGE = "image"  # uint8 [n, H, W, 3]
OUT_PNG = "png_bytes"  # string [n]: PNG-encoded images (see module docstring for the name)
OUT_SCORE_BEFORE = "score_before"  # float32 [B]: preference for the unmodified image

# --- Limits the exported designer enforces (INVALID_ARGUMENT beyond them).
MAX_IMAGES = 64  # n (generate), starts (design), rows of modify: 1..MAX_IMAGES
MAX_STEPS = 500  # steps (design, modify): 0..MAX_STEPS
# --- Limit every exported image input enforces (recommender score_images / item_embedding,
# designer modify): width x height as the JPEG/PNG header claims it, checked before the
# image is decoded, so a few hundred bytes claiming 12000 x 12000 cost nothing. 4096 x 4096
# is well above product photos (H&M's are about 1166 x 1750) and bounds one decode to
# about 270 MB (RGBA as float32 while compositing a transparent PNG).
MAX_IMAGE_PIXELS = 4096 * 4096


@dataclasses.dataclass(frozen=True)
class TensorInfo:
    """Dtype (a tf.dtypes name: string, int32, float32, uint8, bool) and shape."""

    dtype: str
    shape: tuple


@dataclasses.dataclass(frozen=True)
class SignatureSpec:
    """Inputs and outputs of one signature, keyed by tensor key."""

    inputs: dict
    outputs: dict


def _t(dtype: str, *shape) -> TensorInfo:
    return TensorInfo(dtype, tuple(shape))


_B = None  # batch dimension
_SCORE_SPEC = SignatureSpec(
    inputs={USER_ID: _t("string", _B), ITEM_ID: _t("string", _B)},
    outputs={OUT_SCORE: _t("float32", _B), OUT_KNOWN: _t("bool", _B)},
)
_DESIGN_OUTPUTS = {
    OUT_IMAGE: _t("uint8", _B, None, None, 3),
    OUT_PNG: _t("string", _B),
    OUT_SCORE: _t("float32", _B),
}

SIGNATURES: dict[str, dict[str, SignatureSpec]] = {
    RECOMMENDER: {
        SERVING_DEFAULT: _SCORE_SPEC,
        SCORE: _SCORE_SPEC,
        SCORE_IMAGES: SignatureSpec(
            inputs={USER_ID: _t("string", _B), IMAGE_BYTES: _t("string", _B)},
            outputs={OUT_SCORE: _t("float32", _B), OUT_KNOWN: _t("bool", _B)},
        ),
        ITEM_EMBEDDING: SignatureSpec(
            inputs={IMAGE_BYTES: _t("string", _B)},
            outputs={OUT_EMBEDDING: _t("float32", _B, None)},
        ),
        USER_EMBEDDING: SignatureSpec(
            inputs={USER_ID: _t("string", _B)},
            outputs={OUT_EMBEDDING: _t("float32", _B, None), OUT_KNOWN: _t("bool", _B)},
        ),
        RECOMMEND: SignatureSpec(
            inputs={USER_ID: _t("string", _B), K: _t("int32"), EXCLUDE_PURCHASED: _t("bool")},
            outputs={OUT_ITEM_ID: _t("string", _B, None), OUT_SCORE: _t("float32", _B, None),
                     OUT_KNOWN: _t("bool", _B)},
        ),
    },
    DESIGNER: {
        GENERATE: SignatureSpec(
            inputs={CATEGORY: _t("string"), N: _t("int32"), SEED: _t("int32")},
            outputs={OUT_IMAGE: _t("uint8", _B, None, None, 3), OUT_PNG: _t("string", _B)},
        ),
        # One user; returns the best `starts` designs (leading dimension = starts).
        DESIGN: SignatureSpec(
            inputs={USER_ID: _t("string"), CATEGORY: _t("string"), STARTS: _t("int32"),
                    STEPS: _t("int32"), ETA: _t("float32"), SEED: _t("int32")},
            outputs=dict(_DESIGN_OUTPUTS),
        ),
        MODIFY: SignatureSpec(
            # One modified image per (user, image, category) row.
            inputs={USER_ID: _t("string", _B), IMAGE_BYTES: _t("string", _B),
                    CATEGORY: _t("string", _B), STEPS: _t("int32"), ETA: _t("float32")},
            outputs={**_DESIGN_OUTPUTS, OUT_SCORE_BEFORE: _t("float32", _B)},
        ),
    },
    ITEM_ENCODER: {
        SERVING_DEFAULT: SignatureSpec(
            inputs={IMAGES: _t("float32", _B, None, None, 3)},
            outputs={OUT_EMBEDDING: _t("float32", _B, None)},
        ),
    },
}
