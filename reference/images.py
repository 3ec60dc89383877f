"""Creating image files as QEMU's ``bdrv_img_create`` does for ``drive-backup`` (SEMANTICS.md
§2.8): raw (a sparse file of the given size) and qcow2 with QEMU's default creation options
(version 3, 64 KiB clusters, 16-bit refcounts, zlib, no lazy refcounts), laid out as
``qemu-img create`` lays it out: header and feature-name table in cluster 0, refcount table in
cluster 1, one refcount block in cluster 2, the L1 table from cluster 3.
"""

from __future__ import annotations

import os
import struct

from reference.errors import QMPError

CLUSTER_BITS = 16
CLUSTER_SIZE = 1 << CLUSTER_BITS
QCOW2_MAGIC = 0x514649FB
#: Header length of a version 3 image with the compression-type field (and its padding).
HEADER_LENGTH = 112
REFCOUNT_ORDER = 4
FEATURE_NAME_TABLE = 0x6803F857
#: (type, bit, name): incompatible 0, compatible 1, autoclear 2 — the table QEMU writes.
FEATURE_NAMES = (
    (0, 0, "dirty bit"),
    (0, 1, "corrupt bit"),
    (0, 2, "external data file"),
    (0, 3, "compression type"),
    (0, 4, "extended L2 entries"),
    (1, 0, "lazy refcounts"),
    (2, 0, "bitmaps"),
    (2, 1, "raw external data"),
)
FORMATS = ("raw", "qcow2")
#: Largest image whose metadata fits the fixed layout (one refcount block, one L1 cluster).
MAX_QCOW2_SIZE = (CLUSTER_SIZE // 8) * (CLUSTER_SIZE * CLUSTER_SIZE // 8)


def _qcow2_bytes(size: int) -> bytes:
    l2_covers = CLUSTER_SIZE * (CLUSTER_SIZE // 8)
    l1_size = -(-size // l2_covers)
    header = struct.pack(
        ">IIQIIQIIQQIIQQQQI",
        QCOW2_MAGIC,
        3,
        0,  # backing file offset
        0,  # backing file name length
        CLUSTER_BITS,
        size,
        0,  # no encryption
        l1_size,
        3 * CLUSTER_SIZE,  # L1 table
        CLUSTER_SIZE,  # refcount table
        1,  # refcount table clusters
        0,  # snapshots
        0,  # snapshot table
        0,  # incompatible features
        0,  # compatible features
        0,  # autoclear features
        REFCOUNT_ORDER,
    )
    header += struct.pack(">I", HEADER_LENGTH) + bytes(HEADER_LENGTH - len(header) - 4)
    table = b"".join(
        struct.pack(">BB46s", kind, bit, name.encode()) for kind, bit, name in FEATURE_NAMES
    )
    header += struct.pack(">II", FEATURE_NAME_TABLE, len(table)) + table + bytes(8)
    image = bytearray(3 * CLUSTER_SIZE + 8 * l1_size)
    image[: len(header)] = header
    image[CLUSTER_SIZE : CLUSTER_SIZE + 8] = struct.pack(">Q", 2 * CLUSTER_SIZE)
    refcounts = struct.pack(">4H", 1, 1, 1, 1)  # header, refcount table, block, L1
    image[2 * CLUSTER_SIZE : 2 * CLUSTER_SIZE + len(refcounts)] = refcounts
    return bytes(image)


def create(filename: str, fmt: str, size: int) -> None:
    """Creates (or overwrites) ``filename`` as an empty image of ``fmt`` and ``size`` bytes."""
    if fmt not in FORMATS:
        raise QMPError(f"Unknown file format '{fmt}'")
    if fmt == "qcow2" and size > MAX_QCOW2_SIZE:
        raise QMPError(
            f"qcow2 images above {MAX_QCOW2_SIZE} bytes are not created by this reference"
        )
    try:
        with open(filename, "wb") as f:
            if fmt == "qcow2":
                f.write(_qcow2_bytes(size))
            else:
                f.truncate(size)
    except OSError as e:
        raise QMPError(f"Could not create '{filename}': {os.strerror(e.errno or 0)}") from None
