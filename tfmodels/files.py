"""Atomic file writes: a temporary file beside the target, then ``os.replace``.

The temporary name is unique per process and thread, so two processes writing
the same file (the workers of a multi-worker run share a work directory) never
rename each other's half-written file; a reader sees the old or the new file,
never a torn one.
"""

from __future__ import annotations

import contextlib
import json
import os
import threading


@contextlib.contextmanager
def replacing(path: str, suffix: str = ""):
    """Yields a temporary path beside ``path``; on success renames it onto ``path``, else removes it.

    ``suffix`` ends the temporary name (e.g. ".png" for writers that infer the format from it).
    """
    folder, name = os.path.split(os.path.abspath(path))
    tmp = os.path.join(folder, f".tmp-{os.getpid()}-{threading.get_ident()}-{name}{suffix}")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def write_text(path: str, text: str) -> str:
    """Writes ``text`` (UTF-8) to ``path`` atomically; returns ``path``."""
    with replacing(path) as tmp:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
    return path


def write_json(path: str, data, default=str) -> str:
    """Writes ``data`` as indented, key-sorted JSON atomically; ``default`` converts other types."""
    return write_text(path, json.dumps(data, indent=2, sort_keys=True, default=default) + "\n")
