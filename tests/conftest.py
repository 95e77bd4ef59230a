"""Test-session setup: a private image cache, so tests never read or fill ~/.cache."""

import os
import tempfile

import tfmodels  # noqa: F401  (sets TF_USE_LEGACY_KERAS before any test imports TensorFlow)

if "TFMODELS_TEST_KEEP_CACHE" not in os.environ:
    os.environ["TFMODELS_CACHE"] = tempfile.mkdtemp(prefix="tfmodels-test-cache-")
