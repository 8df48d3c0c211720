"""The on-disk cache of decoded image folders (`data.load_folder`): one `.npz` per key.

The key is made of the files' paths, sizes and modification times and the
preprocessing settings. Written and read as every cache file is
(`fastgan_jax.cachefile`): atomically; one that cannot be written is a
warning, one that cannot be read back (truncated, CRC or shape mismatch) a
warning, and it is deleted and rebuilt.
"""

import hashlib
import json
import os
import pathlib

import numpy as np

from fastgan_jax import cachefile

VERSION = 3  # 2: .npz with the decode failures; symbolic links followed; 3: colour-key transparency


def reason(e: BaseException, path) -> str:
    """Why `path` failed, in one short line without the path itself."""
    if isinstance(e, OSError) and e.strerror:
        msg = e.strerror
    else:
        msg = str(e).replace(f" {os.fspath(path)!r}", "") or type(e).__name__
    msg = " ".join(msg.split())
    return msg if len(msg) <= 100 else msg[:97] + "..."


def key(files, im_size, aspect, background) -> str:
    h = hashlib.sha256()
    h.update(json.dumps([im_size, aspect, list(background), VERSION]).encode())
    for f in files:
        try:
            st = f.stat()
            h.update(os.fsencode(f.resolve()) + f"\0{st.st_size}\0{st.st_mtime_ns}\n".encode())  # not always UTF-8
        except OSError:  # gone since the search: it fails to decode, and the next run gets another key
            h.update(os.fsencode(f) + b"\0missing\n")
    return h.hexdigest()[:24]


def read(cache: pathlib.Path, im_size: int):
    """(images, decode failures, number upscaled) from `cache`; None when absent or damaged (then deleted)."""

    def load(f):  # the zip's CRC-32 covers every byte of the images; truncation loses the central directory
        z = np.load(f)
        if not isinstance(z, np.lib.npyio.NpzFile):
            raise ValueError("not an .npz file")
        meta = json.loads(str(z["meta"]))
        images = z["images"]
        expected = (meta["n"], im_size, im_size, 3)
        if images.dtype != np.uint8 or images.shape != expected:
            raise ValueError(f"holds {images.dtype} {images.shape}, expected uint8 {expected}")
        failed = [(pathlib.Path(p), str(why)) for p, why in meta["failed"]]
        return images, failed, int(meta["upscaled"])

    return cachefile.read(cache, load, "decode cache", redo="decoding again")


def write(cache: pathlib.Path, images, failed, upscaled: int):
    """Writes `cache` atomically (`cachefile.write`); a failure is a warning."""
    meta = {"n": len(images), "failed": [[str(p), why] for p, why in failed], "upscaled": upscaled}
    cachefile.write(cache, lambda f: np.savez(f, images=images, meta=np.array(json.dumps(meta))), "decode cache")
