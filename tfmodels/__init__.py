"""Visually-aware fashion recommendation (DVBPR) and personalised design in TensorFlow.

The package uses tf-keras (the Keras 2 API) process-wide: tensorflow-recommenders
requires it, and Keras-3 models do not load in the session-based SavedModel
loader that TensorFlow Serving uses. ``TF_USE_LEGACY_KERAS`` is read once, when
TensorFlow is first imported, so it is set here before anything imports TensorFlow.
"""

import os
import sys

__version__ = "0.1.0"

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

if "tensorflow" in sys.modules and os.environ.get("TF_USE_LEGACY_KERAS") not in ("1", "true", "True"):
    raise ImportError(
        "tfmodels needs tf-keras (Keras 2), but TensorFlow was already imported with "
        "Keras 3 active. Import tfmodels before tensorflow, or set the environment "
        "variable TF_USE_LEGACY_KERAS=1 before starting Python."
    )
os.environ["TF_USE_LEGACY_KERAS"] = "1"
