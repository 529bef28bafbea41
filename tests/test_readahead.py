"""Whole-file gzip reads (`regcore.readahead`) and the NIfTI reader fed with bytes read ahead.

* ``gunzip`` equals ``gzip.decompress`` on one and several members and refuses, with its own error kind,
  data that is not gzip, corrupt (CRC), truncated, or longer than the limit (``cut`` keeps the start).
* ``ReadAhead`` hands each ``.nii.gz`` over once, skips what it cannot read, and never hands over a file
  changed after it was read.
* ``load_image(path, contents=...)`` gives the same Image as reading the file (NIfTI-1 and NIfTI-2,
  gzipped or not), and short contents are refused with the file's name.
"""

from __future__ import annotations

import gzip
import os
import zlib

import nibabel as nib
import numpy as np
import pytest
import torch

from regcore.io import ImageIOError, load_image
from regcore.readahead import GunzipError, InflatedTooLarge, ReadAhead, gunzip


def members(*chunks: bytes) -> bytes:
    return b"".join(gzip.compress(c, compresslevel=1) for c in chunks)


def test_gunzip_equals_gzip_on_one_and_several_members():
    rng = np.random.default_rng(0)
    parts = [rng.bytes(5000), b"\0" * 70000, b"", rng.bytes(3)]
    one, many = members(parts[0]), members(*parts)
    assert gunzip(one, 10**6) == gzip.decompress(one) == parts[0]
    assert gunzip(many, 10**6) == gzip.decompress(many) == b"".join(parts)
    assert gunzip(many + b"\0" * 16, 10**6) == b"".join(parts)  # zero padding after the last member


def test_gunzip_limit_cut_and_bad_data():
    raw = members(b"a" * 1000, b"b" * 1000)
    assert gunzip(raw, 2000) == b"a" * 1000 + b"b" * 1000  # exactly the limit is fine
    with pytest.raises(InflatedTooLarge):
        gunzip(raw, 1999)
    assert gunzip(raw, 1500, cut=True) == b"a" * 1000 + b"b" * 500
    with pytest.raises(GunzipError, match="not gzip"):
        gunzip(b"plain bytes", 100)
    with pytest.raises(GunzipError, match="after the last gzip member"):
        gunzip(raw + b"junk", 10**4)
    noisy = members(np.random.default_rng(2).bytes(1000), np.random.default_rng(3).bytes(1000))
    for cut_at in (len(noisy) - 500, len(noisy) - 1):  # inside the second member, inside its trailer
        with pytest.raises(GunzipError) as err:
            gunzip(noisy[:cut_at], 10**4)
        assert err.value.truncated and 1000 <= err.value.inflated <= 2000
    first = members(b"a" * 1000)
    with pytest.raises(GunzipError) as err:  # the next member's header cut after one byte
        gunzip(first + b"\x1f", 10**4)
    assert err.value.truncated and err.value.inflated == 1000
    corrupt = bytearray(members(b"c" * 1000))
    corrupt[-8] ^= 0xFF  # the CRC32 in the trailer
    with pytest.raises(GunzipError, match="corrupt"):
        gunzip(bytes(corrupt), 10**4)
    with pytest.raises(ValueError, match="limit"):
        gunzip(raw, -1)


def test_read_ahead_hands_each_file_over_once_and_skips_what_it_cannot_use(tmp_path):
    good = tmp_path / "a.nii.gz"
    good.write_bytes(members(b"x" * 100))
    plain = tmp_path / "b.nii"
    plain.write_bytes(b"y" * 100)
    broken = tmp_path / "c.nii.gz"
    broken.write_bytes(b"not gzip")
    big = tmp_path / "d.nii.gz"
    big.write_bytes(members(b"z" * 5000))
    changed = tmp_path / "e.nii.gz"
    changed.write_bytes(members(b"w" * 100))
    ahead = ReadAhead(
        [good, plain, broken, big, changed, tmp_path / "missing.nii.gz", None, good], limit=1000
    )
    assert ahead.take(good) == b"x" * 100
    assert ahead.take(good) is None  # once
    assert ahead.take(plain) is None  # uncompressed files are read (memory-mapped) by the reader
    assert ahead.take(broken) is None and ahead.take(big) is None
    assert ahead.take(tmp_path / "missing.nii.gz") is None
    changed.write_bytes(members(b"v" * 120))
    os.utime(changed, ns=(1, 1))
    assert ahead.take(changed) is None  # changed on disk after it was read


@pytest.mark.parametrize("nifti2", [False, True])
@pytest.mark.parametrize("suffix", [".nii.gz", ".nii"])
def test_load_image_with_contents_equals_reading_the_file(tmp_path, nifti2, suffix):
    rng = np.random.default_rng(1)
    data = rng.normal(size=(7, 9, 5)).astype(np.float32)
    affine = np.diag([-0.9, 1.1, 2.0, 1.0])
    affine[:3, 3] = (4.0, -2.0, 7.5)
    klass = nib.Nifti2Image if nifti2 else nib.Nifti1Image
    path = tmp_path / f"img{suffix}"
    nib.save(klass(data, affine), str(path))
    raw = path.read_bytes()
    contents = zlib.decompress(raw, 31) if suffix == ".nii.gz" else raw
    read = load_image(path)
    given = load_image(path, contents=contents)
    assert torch.equal(read.data, given.data) and read.geometry == given.geometry
    assert read.meta["path"] == given.meta["path"] == str(path)
    with pytest.raises(ImageIOError, match=r"img\.nii(\.gz)?: header declares .* only"):
        load_image(path, contents=contents[: len(contents) - 40])
    other = tmp_path / "img.mha"
    other.write_bytes(b"x")
    with pytest.raises(ValueError, match="NIfTI files only"):
        load_image(other, contents=contents)
