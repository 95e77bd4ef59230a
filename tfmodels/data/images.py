"""Image sources and the decode-once image pipeline.

Readers describe where each item's picture lives with an :class:`ImageSource`
(files on disk, JPEG bytes in memory, an in-memory array, a subset of another
source). :func:`load_images` turns a dataset's images into one uint8 array
``[num_items, R, R, 3]``:

1. decode each image once (threads; Pillow releases the GIL while decoding),
2. resize it with a Lanczos filter so its longer side is R,
3. pad it to an R x R square on its background colour (product photos are 2:3;
   each margin takes the median colour of the image side it extends when that
   side is nearly uniform, else the whole border's median, else white),
4. store the result on disk as ``<cache_dir>/<name>-<fingerprint>-<R>px.npy``
   (written to a temporary file and renamed, so a reader never sees half a
   cache) and return it as a read-only ``np.memmap``.

A second call with the same dataset fingerprint and resolution maps the cached
file and decodes nothing, so training epochs never re-decode JPEGs. That part
runs on the host (NumPy / Pillow). How the models see those pixels is
``tfmodels.data.pixels``.
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import io
import json
import os
import sys
import time

import numpy as np
from PIL import Image

from tfmodels.data.dataset import BadImageError, Dataset, ImageSource

DEFAULT_CACHE_DIR = os.environ.get("TFMODELS_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "tfmodels")
"""Where decoded image arrays are cached unless cfg.data.cache_dir says otherwise."""

# Bump when the decode/pad/resize recipe changes, so old caches are not reused.
PIPELINE_VERSION = 4
# How many offenders a BadImageError lists before "... and N more".
_SHOW_BAD = 5


# ----------------------------------------------------------------------------
# Image sources
# ----------------------------------------------------------------------------


def _to_rgb_array(img: Image.Image) -> np.ndarray:
    if img.mode != "RGB":
        if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
            # Transparent product cut-outs go on white, as in a shop.
            img = img.convert("RGBA")
            bg = Image.new("RGBA", img.size, (255, 255, 255, 255))
            img = Image.alpha_composite(bg, img)
        img = img.convert("RGB")
    return np.asarray(img, dtype=np.uint8)


def decode_image_bytes(data: bytes, what: str, draft_size: int = 0) -> np.ndarray:
    """Decodes JPEG/PNG/... bytes to uint8 [h, w, 3].

    Args:
      data: the encoded image.
      what: a description (path, item id) for the error message.
      draft_size: if > 0, let the JPEG decoder downscale by a power of two while
        keeping both sides >= this size (much faster; the Lanczos resize after it
        gives the final quality).

    Raises:
      BadImageError: naming ``what`` when the bytes are not a readable image.
    """
    try:
        img = Image.open(io.BytesIO(data))
        if draft_size and img.format == "JPEG":
            img.draft("RGB", (draft_size, draft_size))
        img.load()
        return _to_rgb_array(img)
    except Exception as e:  # Pillow raises many types for corrupt data.
        raise BadImageError(f"{what}: cannot decode image ({type(e).__name__}: {e})") from None


class FileImageSource(ImageSource):
    """Images as files on disk, one path per item."""

    def __init__(self, paths, labels=None):
        """Args: paths: str [N] file paths; labels: optional str [N] (item ids) for messages."""
        self.paths = np.asarray(paths, dtype=object)
        self.labels = None if labels is None else np.asarray(labels, dtype=object)
        self._fingerprint = None
        self.draft_size = 0

    def __len__(self):
        return len(self.paths)

    @property
    def fingerprint(self) -> str:
        # Paths plus size and modification time of every file: replacing a
        # picture invalidates the cache. One stat per file, done once.
        if self._fingerprint is None:
            h = hashlib.sha1(b"files")
            for p in self.paths:
                try:
                    st = os.stat(p)
                    h.update(f"{p}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
                except OSError:
                    h.update(f"{p}\0missing\n".encode())
            self._fingerprint = h.hexdigest()[:16]
        return self._fingerprint

    def describe(self, index):
        p = self.paths[index]
        return f"{p} (item {self.labels[index]})" if self.labels is not None else str(p)

    def missing(self) -> np.ndarray:
        """int [k]: indices whose file does not exist (a stat per file, no decoding)."""
        return np.array([i for i, p in enumerate(self.paths) if not os.path.isfile(p)], dtype=np.int64)

    def load(self, index):
        path = self.paths[index]
        try:
            with open(path, "rb") as f:
                data = f.read()
        except OSError as e:
            raise BadImageError(f"{self.describe(index)}: missing image file ({e.strerror})") from None
        return decode_image_bytes(data, self.describe(index), self.draft_size)


class BytesImageSource(ImageSource):
    """Encoded images held in memory (the paper's .npy files store raw JPEG bytes)."""

    def __init__(self, blobs, labels, fingerprint: str):
        self.blobs = blobs
        self.labels = labels
        self.fingerprint = fingerprint
        self.draft_size = 0

    def __len__(self):
        return len(self.blobs)

    def describe(self, index):
        return f"item {self.labels[index]}"

    def load(self, index):
        blob = self.blobs[index]
        if not blob:
            raise BadImageError(f"{self.describe(index)}: no image bytes")
        return decode_image_bytes(blob, self.describe(index), self.draft_size)


class ArrayImageSource(ImageSource):
    """Decoded images in memory: uint8 [N, h, w] (grayscale) or [N, h, w, 3]."""

    def __init__(self, array: np.ndarray, fingerprint: str, labels=None):
        self.array = array
        self.fingerprint = fingerprint
        self.labels = labels

    def __len__(self):
        return len(self.array)

    def describe(self, index):
        return f"item {self.labels[index]}" if self.labels is not None else f"image #{index}"

    def load(self, index):
        img = np.asarray(self.array[index], dtype=np.uint8)
        if img.ndim == 2:
            img = np.repeat(img[:, :, None], 3, axis=2)
        return img


class SubsetImageSource(ImageSource):
    """The images of ``parent`` at ``indices`` (used when bad items are dropped)."""

    def __init__(self, parent: ImageSource, indices: np.ndarray):
        self.parent = parent
        self.indices = np.asarray(indices, dtype=np.int64)
        h = hashlib.sha1(parent.fingerprint.encode())
        h.update(self.indices.tobytes())
        self.fingerprint = "sub" + h.hexdigest()[:13]

    def __len__(self):
        return len(self.indices)

    def describe(self, index):
        return self.parent.describe(int(self.indices[index]))

    def load(self, index):
        return self.parent.load(int(self.indices[index]))

    def render(self, indices, resolution):
        return self.parent.render(self.indices[np.asarray(indices)], resolution)


# ----------------------------------------------------------------------------
# Decode, pad, resize
# ----------------------------------------------------------------------------


def _uniform_colour(pixels: np.ndarray):
    """Median colour of uint8 [n, 3] pixels if they are nearly uniform (per-channel MAD <= 12 levels), else None."""
    pixels = pixels.astype(np.int16)
    med = np.median(pixels, axis=0)
    if np.all(np.median(np.abs(pixels - med), axis=0) <= 12):
        return med.astype(np.uint8)
    return None


def background_colour(img: np.ndarray) -> np.ndarray:
    """uint8 [3]: the backdrop colour of ``img`` (uint8 [h, w, 3]).

    The median of the one-pixel border when that border is nearly uniform (a
    product photo's backdrop); otherwise white, because a busy border has no
    single colour to extend.
    """
    border = np.concatenate([img[0], img[-1], img[:, 0], img[:, -1]])
    colour = _uniform_colour(border)
    return colour if colour is not None else np.array([255, 255, 255], np.uint8)


def square_resize(img: np.ndarray, resolution: int) -> np.ndarray:
    """Fits uint8 [h, w, 3] into a centred [R, R, 3] square on its backdrop colour.

    The image is resized (Lanczos) so that its longer side is R, then the
    shorter side is padded. Each margin takes the colour of the image side it
    extends (studio backdrops are often a gradient, so one colour for both sides
    leaves a visible seam); a busy side falls back to ``background_colour``.
    Resizing before padding gives the same picture as padding first, with fewer
    pixels to filter.
    """
    h, w = img.shape[:2]
    R = resolution
    if h == w:
        if h == R:
            return img
        return np.asarray(Image.fromarray(img).resize((R, R), Image.LANCZOS))
    # Resized product photos often carry a darker 1-2 px ringing line on their
    # outermost rows/columns: drop it on the sides being padded, and take each
    # margin's colour from the strip just inside it.
    trim = 2 if min(h, w) >= 64 else 0
    img = img[:, trim : w - trim] if h > w else img[trim : h - trim]
    h, w = img.shape[:2]
    strips = (img[:, :4], img[:, -4:]) if h > w else (img[:4], img[-4:])
    fallback = None
    colours = []
    for strip in strips:
        colour = _uniform_colour(strip.reshape(-1, 3))
        if colour is None:
            fallback = background_colour(img) if fallback is None else fallback
            colour = fallback
        colours.append(colour)
    if h > w:
        nh, nw = R, max(1, min(R, round(w * R / h)))
    else:
        nh, nw = max(1, min(R, round(h * R / w))), R
    small = img if (nh, nw) == (h, w) else np.asarray(Image.fromarray(img).resize((nw, nh), Image.LANCZOS))
    out = np.empty((R, R, 3), np.uint8)
    top, left = (R - nh) // 2, (R - nw) // 2
    if h > w:
        out[:, :left], out[:, left + nw:] = colours
    else:
        out[:top], out[top + nh:] = colours
    out[top : top + nh, left : left + nw] = small
    return out


def _load_one(source: ImageSource, index: int, resolution: int) -> np.ndarray:
    return square_resize(source.load(index), resolution)


class Progress:
    """A one-line progress report on stderr for work that takes more than a few seconds."""

    def __init__(self, what: str, total: int, every: float = 2.0):
        self.what, self.total, self.every = what, total, every
        self.start = self.last = time.time()
        self.shown = False

    def update(self, done: int):
        now = time.time()
        if now - self.last >= self.every and done < self.total:
            rate = done / max(now - self.start, 1e-9)
            eta = (self.total - done) / max(rate, 1e-9)
            print(f"\r{self.what}: {done}/{self.total} ({rate:.0f}/s, ETA {eta:.0f}s)   ", end="", file=sys.stderr, flush=True)
            self.last, self.shown = now, True

    def close(self):
        if self.shown:
            took = time.time() - self.start
            print(f"\r{self.what}: {self.total}/{self.total} in {took:.1f}s" + " " * 20, file=sys.stderr, flush=True)


def decode_images(source: ImageSource, resolution: int, out: np.ndarray, indices=None, workers: int = 0,
                  what: str = "decoding images") -> list[tuple[int, str]]:
    """Decodes, pads and resizes images of ``source`` into ``out`` in parallel.

    Runs on the host in a thread pool (Pillow releases the GIL in decode and
    resize). Bad images are not raised here: their rows are filled with white and
    they are returned, so that the caller can report all of them at once.

    Args:
      source: where the images come from.
      resolution: R.
      out: uint8 [len(indices), R, R, 3], written in place.
      indices: which source images (default all), in ``out``'s row order.
      workers: threads (0 = env TFMODELS_DECODE_WORKERS, else the number of CPUs).

    Returns:
      [(row, message)] for every image that is missing or cannot be decoded.
    """
    indices = np.arange(len(source)) if indices is None else np.asarray(indices)
    n = len(indices)
    bad: list[tuple[int, str]] = []
    if n == 0:
        return bad
    rendered = source.render(indices, resolution)
    if rendered is not None:
        out[:] = rendered
        return bad
    # Decode JPEGs at a reduced scale where that still leaves >= R pixels.
    if hasattr(source, "draft_size"):
        source.draft_size = resolution
    workers = workers or int(os.environ.get("TFMODELS_DECODE_WORKERS", "0") or 0) or os.cpu_count() or 1
    progress = Progress(what, n)

    def work(row):
        try:
            out[row] = _load_one(source, int(indices[row]), resolution)
            return None
        except BadImageError as e:
            out[row] = 255
            return (row, str(e))

    # Chunks keep the number of pending futures bounded for 100k-item catalogues.
    chunk = 512
    with concurrent.futures.ThreadPoolExecutor(workers) as pool:
        for start in range(0, n, chunk):
            for result in pool.map(work, range(start, min(n, start + chunk))):
                if result is not None:
                    bad.append(result)
            progress.update(min(n, start + chunk))
    progress.close()
    return bad


def bad_image_error(dataset: Dataset, bad_items: list[int], messages: list[str]) -> BadImageError:
    """A BadImageError listing the first few offenders and the count, with the way out."""
    shown = "\n  ".join(messages[:_SHOW_BAD])
    more = f"\n  ... and {len(bad_items) - _SHOW_BAD} more" if len(bad_items) > _SHOW_BAD else ""
    return BadImageError(
        f"{len(bad_items)} of {dataset.num_items} item images in dataset {dataset.name!r} are missing or "
        f"corrupt:\n  {shown}{more}\nFix or remove them, or pass --skip-bad-images "
        f"(data.skip_bad_images=true) to drop these items and their interactions."
    )


# ----------------------------------------------------------------------------
# The on-disk cache
# ----------------------------------------------------------------------------


def cache_path(dataset: Dataset, resolution: int, cache_dir: str = "") -> str:
    """Where ``load_images`` keeps ``dataset``'s images at ``resolution`` (the .npy file)."""
    cache_dir = cache_dir or os.environ.get("TFMODELS_CACHE") or DEFAULT_CACHE_DIR
    name = "".join(c if c.isalnum() or c in "-_" else "_" for c in dataset.name)
    return os.path.join(cache_dir, f"{name}-{dataset.fingerprint()}-v{PIPELINE_VERSION}-{resolution}px.npy")


def _meta_path(path: str) -> str:
    return path[: -len(".npy")] + ".json"


def _read_cache(path: str, num_items: int, resolution: int):
    """Returns (memmap, meta) or None when there is no complete cache at ``path``."""
    meta_path = _meta_path(path)
    if not (os.path.exists(path) and os.path.exists(meta_path)):
        return None
    try:
        with open(meta_path) as f:
            meta = json.load(f)
        arr = np.load(path, mmap_mode="r")
    except (OSError, ValueError):
        return None  # Damaged cache: rebuild it.
    if arr.shape != (num_items, resolution, resolution, 3) or arr.dtype != np.uint8:
        return None
    return arr, meta


def _write_cache(path: str, build, num_items: int, resolution: int, meta: dict):
    """Creates the cache atomically: ``build(out)`` fills a temporary memmap, then both files are renamed."""
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    tmp = f"{path}.tmp{os.getpid()}.npy"
    try:
        out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=(num_items, resolution, resolution, 3))
        meta.update(build(out))
        out.flush()
        del out
        meta_tmp = f"{_meta_path(path)}.tmp{os.getpid()}"
        with open(meta_tmp, "w") as f:
            json.dump(meta, f)
        # Meta first: a cache file without its meta is ignored, never the reverse.
        os.replace(meta_tmp, _meta_path(path))
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return meta


def _build_cache(dataset: Dataset, resolution: int, cache_dir: str):
    """Returns (memmap, meta) for ``dataset`` at ``resolution``, decoding only if no cache exists."""
    path = cache_path(dataset, resolution, cache_dir)
    n = dataset.num_items
    cached = _read_cache(path, n, resolution)
    if cached is not None:
        return cached
    source = dataset.images
    parent = dataset.extra.get("parent_catalogue")
    if isinstance(source, SubsetImageSource) and parent is not None and parent.images is source.parent:
        # Dropped bad items: copy rows from the parent's cache instead of decoding again.
        parent_arr, parent_meta = _build_cache(parent, resolution, cache_dir)
        parent_bad = set(parent_meta.get("bad_items", []))

        def build(out):
            for start in range(0, n, 4096):
                rows = source.indices[start : start + 4096]
                out[start : start + len(rows)] = parent_arr[rows]
            kept = set(source.indices.tolist())
            bad = [r for r, i in enumerate(source.indices.tolist()) if i in parent_bad]
            msgs = [m for i, m in zip(parent_meta.get("bad_items", []), parent_meta.get("bad_messages", []))
                    if i in kept]
            return {"bad_items": bad, "bad_messages": msgs}
    else:
        def build(out):
            bad = decode_images(source, resolution, out, what=f"decoding {dataset.name} images at {resolution}px")
            return {"bad_items": [r for r, _ in bad], "bad_messages": [m for _, m in bad]}

    meta = {"dataset": dataset.name, "fingerprint": dataset.fingerprint(), "resolution": resolution,
            "num_items": n, "pipeline_version": PIPELINE_VERSION, "created": time.strftime("%Y-%m-%dT%H:%M:%S")}
    meta = _write_cache(path, build, n, resolution, meta)
    return np.load(path, mmap_mode="r"), meta


def load_images(dataset: Dataset, resolution: int, cache_dir: str = "", skip_bad: bool = False) -> np.ndarray:
    """All item images as uint8 [num_items, R, R, 3], decoded once and cached on disk.

    The first call decodes every image (in parallel, with a progress line), pads
    it to a square on its background colour, resizes it with a Lanczos filter and
    writes ``cache_path(dataset, R, cache_dir)`` atomically; later calls with the
    same dataset fingerprint and resolution return a read-only ``np.memmap`` of
    that file without decoding anything. Sources that draw at any size
    (``ImageSource.render``) are drawn directly at R.

    Args:
      dataset: the catalogue.
      resolution: R, the square side in pixels.
      cache_dir: folder of the cache (empty = ``DEFAULT_CACHE_DIR``).
      skip_bad: if False, a missing or corrupt image raises; if True, its row is
        white and the count is printed (use :func:`drop_bad_images` to remove such
        items from the dataset instead).

    Returns:
      uint8 array [num_items, R, R, 3] (a read-only memmap).

    Raises:
      BadImageError: listing the first few offenders (path / item id) and the count.
    """
    if resolution <= 0:
        raise ValueError(f"resolution must be positive, got {resolution}")
    source = dataset.images
    if len(source) != dataset.num_items:
        raise ValueError(f"dataset {dataset.name!r}: {len(source)} images for {dataset.num_items} items")
    if not skip_bad and isinstance(source, FileImageSource):
        # Missing files are cheap to find: fail before decoding the whole catalogue.
        missing = source.missing()
        if len(missing):
            raise bad_image_error(dataset, missing.tolist(),
                                  [f"{source.describe(i)}: missing image file" for i in missing[:_SHOW_BAD]])
    arr, meta = _build_cache(dataset, resolution, cache_dir)
    bad = meta.get("bad_items", [])
    if bad:
        if not skip_bad:
            raise bad_image_error(dataset, bad, meta.get("bad_messages", []))
        print(f"{dataset.name}: {len(bad)} of {dataset.num_items} item images are missing or corrupt; "
              f"their rows are blank", file=sys.stderr)
    return arr


def find_bad_images(dataset: Dataset, resolution: int, cache_dir: str = "") -> tuple[np.ndarray, list[str]]:
    """Item indices whose image is missing or corrupt, and a message for each.

    Decoding is what finds corrupt images, so this builds (or reuses) the image
    cache at ``resolution``; the later ``load_images`` at that resolution is free.
    """
    _, meta = _build_cache(dataset, resolution, cache_dir)
    return np.asarray(meta.get("bad_items", []), np.int64), list(meta.get("bad_messages", []))


def subset_items(dataset: Dataset, keep: np.ndarray) -> Dataset:
    """A dataset with only the items where ``keep`` (bool [num_items]) is true, and their interactions.

    Item, category and user indices are renumbered; users left without any
    interaction keep their place (their ids stay valid), and a predefined split
    is filtered the same way (held-out items that were dropped become -1).
    """
    from tfmodels.data.dataset import Split

    keep = np.asarray(keep, bool)
    new_index = np.full(dataset.num_items, -1, np.int64)
    kept = np.flatnonzero(keep)
    new_index[kept] = np.arange(len(kept))
    mask = keep[dataset.inter_item]
    split = dataset.predefined_split
    if split is not None:
        tmask = keep[split.train_item]

        def remap(held):
            ok = held >= 0
            out = np.full_like(held, -1)
            out[ok] = new_index[held[ok]]
            return out.astype(np.int32)

        split = Split(split.num_users, len(kept), split.train_user[tmask],
                      new_index[split.train_item[tmask]].astype(np.int32),
                      remap(split.val_item), remap(split.test_item))
    extra = dict(dataset.extra)
    # Image indices always refer to the root catalogue, so that the image cache
    # of a subset is copied from the root's cache rather than decoded again.
    if isinstance(dataset.images, SubsetImageSource):
        source = SubsetImageSource(dataset.images.parent, dataset.images.indices[kept])
    else:
        source = SubsetImageSource(dataset.images, kept)
        extra["parent_catalogue"] = dataset
    return Dataset(
        name=dataset.name,
        item_ids=dataset.item_ids[kept],
        images=source,
        categories=dataset.categories[kept],
        category_names=dataset.category_names,
        user_ids=dataset.user_ids,
        inter_user=dataset.inter_user[mask],
        inter_item=new_index[dataset.inter_item[mask]].astype(np.int32),
        inter_time=None if dataset.inter_time is None else dataset.inter_time[mask],
        predefined_split=split,
        extra=extra,
    )


def drop_bad_images(dataset: Dataset, resolution: int, cache_dir: str = "", verbose: bool = True) -> Dataset:
    """``dataset`` without the items whose image is missing or corrupt, nor their interactions.

    Finds them by decoding (and caching) every image at ``resolution``, then
    prints how many items and interactions were dropped. Returns ``dataset``
    itself when all images are good.
    """
    bad, messages = find_bad_images(dataset, resolution, cache_dir)
    if len(bad) == 0:
        return dataset
    keep = np.ones(dataset.num_items, bool)
    keep[bad] = False
    out = subset_items(dataset, keep)
    if verbose:
        print(f"{dataset.name}: skipping {len(bad)} items with missing or corrupt images "
              f"({dataset.num_interactions - out.num_interactions} interactions dropped), e.g. "
              f"{messages[0] if messages else ''}", file=sys.stderr)
    return out
