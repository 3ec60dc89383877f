"""The block layer as QMP sees it: node naming and ownership, QEMU's lookups and their messages,
opening nodes from ``BlockdevOptions``, and the query output (``BlockDeviceInfo``, ``BlockInfo``).

The graph itself (nodes, children, bitmaps, I/O) lives in the core (``_core.Graph``); this module
adds what QEMU's ``block.c``/``blockdev.c`` decide above it: which names are valid, which node a
name means, who owns a node, and how each is reported.
"""

from __future__ import annotations

import json
import os
import random
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from reference import _core
from reference.compat import VersionProfile
from reference.errors import QMPError

#: QEMU's block layer counts lengths in sectors of this many bytes.
SECTOR_SIZE = 512
#: ``null-co``'s default size (1 GiB), as QEMU's null driver.
NULL_CO_DEFAULT_SIZE = 1 << 30
#: ``null-co`` options that make QEMU spell the node's file name as ``json:{...}``.
NULL_CO_STRONG_OPTIONS = ("size", "read-zeroes")
#: QEMU's id_wellformed(): a letter, then letters, digits, '-', '.', '_'.
_WELLFORMED_ID = re.compile(r"[A-Za-z][A-Za-z0-9_.\-]*")
_QCOW2_MAGIC = b"QFI\xfb"
#: Where every graph change drains all (profile ``graph_change_drains``): the drained sections
#: the job layer's graph changes cause, measured on 10.0 through another running job's
#: pause/resume pairs: creating a backup job (before ``created``, after it), a finished job's
#: clean (before its COMPLETED/CANCELLED) and freeing it (after ``null``); and that draining
#: everything passes through parent nodes (the order several jobs pause and resume in).
GRAPH_CHANGE_DRAINS = (4, 1, 3, 1, True)
#: blkdebug's options that change what the node is (QEMU's strong runtime options): with any of
#: them its file name is a ``json:{...}`` of all its options, else ``blkdebug::<image file>``.
BLKDEBUG_STRONG_OPTIONS = frozenset(
    (
        "config",
        "inject-error",
        "set-state",
        "align",
        "max-transfer",
        "opt-write-zero",
        "max-write-zero",
        "opt-discard",
        "max-discard",
    )
)
#: Filter drivers and the role of the child they filter.
FILTER_DRIVERS = {"copy-before-write": "file", "blkdebug": "image", "copy-on-read": "file"}


#: qcow2's size options (bytes). QEMU parses a node's options in its QDict's order, so of
#: several negative values the first by :func:`qdict_bucket` is reported (measured:
#: ``refcount-cache-size``, ``cache-size``, ``l2-cache-entry-size``, ``l2-cache-size``).
QCOW2_SIZE_OPTIONS = ("cache-size", "l2-cache-size", "l2-cache-entry-size", "refcount-cache-size")

#: qcow2 options whose non-default values the reference does not model: refused (with the
#: value QEMU uses when the option is absent).
QCOW2_UNMODELLED_OPTIONS = {"pass-discard-other": False}


def qcow2_runtime_options(options: dict[str, Any], profile: VersionProfile) -> dict[str, Any]:
    """The keyword arguments of ``Graph.add_format`` for a qcow2 node's runtime options, as
    blockdev-add types them (sizes and ``cache-clean-interval`` as ints, flags as bools). A
    negative size becomes the version's parse error, which the core reports right after the
    header, as QEMU does; a negative ``cache-clean-interval`` is taken as QEMU takes it, as an
    unsigned 64-bit number (``Cache clean interval too big``)."""
    for name, default in QCOW2_UNMODELLED_OPTIONS.items():
        value = options.get(name)
        if value is not None and bool(value) != default:
            raise QMPError(f"{name}={'on' if value else 'off'} is not modelled by this reference")
    kwargs: dict[str, Any] = {}
    for name in sorted(QCOW2_SIZE_OPTIONS, key=qdict_bucket):
        value = options.get(name)
        if value is None:
            continue
        value = int(value)
        if value < 0 and "option_error" not in kwargs:
            kwargs["option_error"] = profile.negative_size_message.format(value=value, name=name)
        kwargs[name.replace("-", "_")] = max(value, 0)
    interval = options.get("cache-clean-interval")
    if interval is not None:
        kwargs["cache_clean_interval"] = int(interval) % (1 << 64)
    for name in ("lazy-refcounts", "discard-no-unref", "pass-discard-snapshot"):
        if options.get(name) is not None:
            kwargs[name.replace("-", "_")] = bool(options[name])
    return kwargs


#: qcow2's ``overlap-check`` templates and the flags ``overlap-check.FLAG`` may set.
QCOW2_OVERLAP_TEMPLATES = ("none", "constant", "cached", "all")
QCOW2_OVERLAP_FLAGS = (
    "main-header",
    "active-l1",
    "active-l2",
    "refcount-table",
    "refcount-block",
    "snapshot-table",
    "inactive-l1",
    "inactive-l2",
    "bitmap-directory",
)
#: qcow2 runtime options ``-drive`` passes on as flags (``on``/``off``).
QCOW2_DRIVE_FLAGS = (
    "lazy-refcounts",
    "pass-discard-request",
    "pass-discard-snapshot",
    "pass-discard-other",
    "discard-no-unref",
)
_SIZE = re.compile(r"(-?[0-9]+(?:\.[0-9]+)?)([kKmMgGtTpPeE]?)[bB]?")


def drive_qcow2_options(opts: dict[str, Any]) -> dict[str, Any]:
    """Takes the qcow2 runtime options out of a ``-drive``'s ``opts`` (strings, as QEMU's
    option parser has them) and returns them typed as blockdev-add has them. Values that do not
    parse fail with QEMU's messages, the same on 7.2 and 10.0 (the first line; QEMU prints the
    suffix hint after it); a negative size is left to :func:`qcow2_runtime_options`."""
    typed: dict[str, Any] = {}
    for name in QCOW2_SIZE_OPTIONS:
        if name in opts:
            text = str(opts.pop(name))
            match = _SIZE.fullmatch(text)
            if match is None:
                raise QMPError(f"Parameter '{name}' expects a non-negative number below 2^64")
            scale = 1 << (10 * " KMGTPE".index(match.group(2).upper() or " "))
            typed[name] = int(float(match.group(1)) * scale)
    if "cache-clean-interval" in opts:
        text = str(opts.pop("cache-clean-interval"))
        if re.fullmatch(r"-?[0-9]+", text) is None:
            raise QMPError("Parameter 'cache-clean-interval' expects a number")
        typed["cache-clean-interval"] = int(text)
    for name in QCOW2_DRIVE_FLAGS:
        if name in opts:
            text = str(opts.pop(name))
            if text not in ("on", "off"):
                raise QMPError(f"Parameter '{name}' expects 'on' or 'off'")
            typed[name] = text == "on"
    template = opts.pop("overlap-check", None)
    nested = opts.pop("overlap-check.template", None)
    if template is not None and nested is not None and template != nested:
        raise QMPError(
            "Conflicting values for qcow2 options 'overlap-check' "
            f"('{template}') and 'overlap-check.template' ('{nested}')"
        )
    template = template if template is not None else nested
    if template is not None and template not in QCOW2_OVERLAP_TEMPLATES:
        raise QMPError(
            f"Unsupported value '{template}' for qcow2 option 'overlap-check'. "
            f"Allowed are any of the following: {', '.join(QCOW2_OVERLAP_TEMPLATES)}"
        )
    for key in [k for k in opts if k.startswith("overlap-check.")]:
        if key.removeprefix("overlap-check.") not in QCOW2_OVERLAP_FLAGS:
            raise QMPError(f"Block format 'qcow2' does not support the option '{key}'")
        opts.pop(key)
    return typed


def is_wellformed_id(name: str) -> bool:
    """Whether ``name`` is a valid QEMU id (node-name, job id)."""
    return _WELLFORMED_ID.fullmatch(name) is not None


#: Buckets of QEMU's QDict hash table: its iteration (and so JSON) order is by bucket.
QDICT_BUCKETS = 512


def qdict_bucket(key: str) -> int:
    """The QDict bucket of ``key`` (the TDB string hash QEMU's QDict uses, modulo 512)."""
    data = key.encode()
    value = (0x238F13AF * len(data)) & 0xFFFFFFFF
    for i, byte in enumerate(data):
        value = (value + (byte << (i * 5 % 24))) & 0xFFFFFFFF
    return ((1103515243 * value + 12345) & 0xFFFFFFFF) % QDICT_BUCKETS


def flatten_lists(options: dict[str, Any]) -> dict[str, Any]:
    """A node's own options as QEMU keeps them: list members flattened (``inject-error.0.once``),
    child option dicts kept nested, insertion order preserved."""
    out: dict[str, Any] = {}
    for key, value in options.items():
        if isinstance(value, list):
            for i, item in enumerate(value):
                if isinstance(item, dict):
                    for sub, leaf in item.items():
                        out[f"{key}.{i}.{sub}"] = leaf
                else:
                    out[f"{key}.{i}"] = item
        elif isinstance(value, dict):
            out[key] = flatten_lists(value)
        else:
            out[key] = value
    return out


def qdict_json(options: dict[str, Any]) -> str:
    """JSON text of a QDict as QEMU prints it: keys by hash bucket, within a bucket the most
    recently inserted first; ``", "`` and ``": "`` separators."""
    order = {key: i for i, key in enumerate(options)}
    keys = sorted(options, key=lambda k: (qdict_bucket(k), -order[k]))
    parts = []
    for key in keys:
        value = options[key]
        text = qdict_json(value) if isinstance(value, dict) else json.dumps(value)
        parts.append(f"{json.dumps(key)}: {text}")
    return "{" + ", ".join(parts) + "}"


def has_protocol(filename: str) -> bool:
    """QEMU's path_has_protocol(): a ``:`` before any ``/`` (``json:{...}``, ``null-co://``);
    such names are never taken relative to an image's directory."""
    head = re.split(r"[:/]", filename, maxsplit=1)
    return len(head) == 2 and filename[len(head[0])] == ":"


def strerror(errno: int) -> str:
    """The C library's message for ``errno`` (what QEMU prints after ``: ``)."""
    return os.strerror(errno)


@dataclass
class BlockLayer:
    """Nodes, backends and the facts QEMU keeps beside the graph."""

    profile: VersionProfile
    graph: _core.Graph = field(default_factory=_core.Graph)
    #: Nodes created by blockdev-add (the monitor holds a reference to them).
    monitor_owned: set[str] = field(default_factory=set)
    #: Children opened implicitly for a parent (inline ``file: {...}``, ``-drive``): closed with it.
    implicit: set[str] = field(default_factory=set)
    #: Nodes opened with ``discard: unmap``; on the others a discard request does nothing at all
    #: (QEMU returns before the request is even tracked, so no bitmap is dirtied either).
    unmap: set[str] = field(default_factory=set)
    #: ``json:{...}`` pseudo file names of nodes whose options QEMU cannot express as a plain name.
    json_filenames: dict[str, str] = field(default_factory=dict)
    #: Target nodes a job owns (drive-backup): closed when the job is gone.
    job_targets: dict[str, str] = field(default_factory=dict)
    #: Options of nodes QEMU names by ``json:{...}`` (blkdebug), as QEMU keeps them.
    json_options: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: qcow2 nodes opened with ``backing: null``: if the header names a backing file, QEMU
    #: spells their file name as ``json:{"backing": null, ...}`` while nothing is attached.
    no_backing: set[str] = field(default_factory=set)
    #: copy-on-read filters whose ``bottom`` is their own file child: in QEMU a read through
    #: one that no layer below holds dereferences past the chain's end (SIGSEGV); the
    #: reference refuses every read through them.
    crashing_reads: set[str] = field(default_factory=set)
    #: The host clock when the machine started: the emulated VM clock counts from here
    #: (``vm-clock-*`` of internal snapshots).
    started_ns: int = field(default_factory=time.monotonic_ns)
    _counter: int = 0
    _rand: random.Random = field(default_factory=lambda: random.Random(0))

    def __post_init__(self) -> None:
        if self.profile.graph_change_drains:
            self.graph.set_graph_drains(*GRAPH_CHANGE_DRAINS)

    # ---- names ----------------------------------------------------------------------------

    def auto_node_name(self) -> str:
        """QEMU's generated node name: ``#block``, a global counter, two random digits."""
        name = f"#block{self._counter}{self._rand.randrange(100):02d}"
        self._counter += 1
        return name

    def name_in_use(self, name: str) -> bool:
        """Whether ``name`` is taken by a node or a device."""
        return (
            self.graph.node(name) is not None
            or self.graph.is_reserved(name)
            or any(b == name for b, _ in self.graph.backends())
        )

    def check_new_node_name(self, name: str) -> None:
        """Refuses ``name`` for a new node as ``bdrv_open`` does (syntax, devices, nodes)."""
        if not is_wellformed_id(name):
            raise QMPError(f"Invalid node-name: '{name}'")
        if any(b == name for b, _ in self.graph.backends()):
            raise QMPError(f"node-name={name} is conflicting with a device id")
        if self.graph.node(name) is not None or self.graph.is_reserved(name):
            raise QMPError(f"Duplicate nodes with node-name='{name}'")

    # ---- lookups (QEMU's messages) -----------------------------------------------------------

    def backend_root(self, device: str) -> str | None:
        """Root node of device ``device``; QMPError if it has no medium; None if no such device."""
        for name, root in self.graph.backends():
            if name == device:
                if root is None:
                    raise QMPError(f"Device '{device}' has no medium")
                return root
        return None

    def device_or_node(self, device: str | None, node: str | None = None) -> str:
        """``bdrv_lookup_bs``: a device named ``device`` first, then a node named ``node``."""
        if device is not None:
            root = self.backend_root(device)
            if root is not None:
                return root
        if node is not None and self.graph.node(node) is not None:
            return node
        raise QMPError(f"Cannot find device='{device or ''}' nor node-name='{node or ''}'")

    def lookup(self, name: str) -> str:
        """A device-or-node name as the backup, snapshot and bitmap-add commands resolve it."""
        return self.device_or_node(name, name)

    def bitmap_node(self, name: str) -> str:
        """The node of a bitmap command other than add: devices too, but ``Node 'X' not found``."""
        try:
            return self.lookup(name)
        except QMPError:
            raise QMPError(f"Node '{name}' not found") from None

    # ---- graph facts QEMU checks -------------------------------------------------------------

    def is_root(self, node: str) -> bool:
        """``bdrv_is_root_node``: no parent is a node (devices may use it)."""
        return all(role == "root" for _, role in self.graph.parents(node))

    def backing_parent(self, node: str) -> str | None:
        """The node that has ``node`` as its backing child, if any."""
        for parent, role in self.graph.parents(node):
            if role == "backing":
                return parent
        return None

    def check_not_backing(self, node: str) -> None:
        """The op blocker a backing child carries (blockdev-del, external snapshot, ...)."""
        parent = self.backing_parent(node)
        if parent is not None:
            raise QMPError(f"Node '{node}' is busy: node is used as backing hd of '{parent}'")

    def backing_child(self, node: str) -> str | None:
        """The ``backing`` child of ``node``, if attached."""
        info = self.graph.node(node)
        if info is None:
            return None
        return next((child for role, child in info.children if role == "backing"), None)

    def vm_clock_ns(self) -> int:
        """The emulated VM clock: nanoseconds since the machine started (it runs, as ``-M none``
        without ``-S`` does)."""
        return time.monotonic_ns() - self.started_ns

    # ---- opening nodes -------------------------------------------------------------------------

    def open_blockdev(self, options: dict[str, Any], *, root: bool) -> str:
        """Opens the node tree described by ``BlockdevOptions``; returns the top node's name.

        A root node (``blockdev-add``) has a ``read-only`` option of its own (QEMU's default
        ``off`` is set in its options), so reopening a parent that takes it by reference as
        its ``file`` leaves it as it is (``keep_own_read_only``)."""
        name = self._open_node(options, root=root)
        if root:
            self.graph.keep_own_read_only(name)
        return name

    def _open_node(self, options: dict[str, Any], *, root: bool) -> str:
        """:meth:`open_blockdev` without the root's own ``read-only``.

        A node takes its place in ``query-named-block-nodes`` (and its ``#blockNNN`` number)
        when QEMU assigns its name: after the ``file`` child the generic open layer opens first
        (format drivers, filters), before the children a protocol driver opens itself
        (blkdebug's ``image``), before a qcow2 node's backing chain."""
        driver = options["driver"]
        name = options.get("node-name")
        read_only = bool(options.get("read-only", False))
        if name is None and root:
            raise QMPError("'node-name' must be specified for the root node")
        if driver in ("raw", "qcow2"):
            return self._open_format_tree(options, name, driver, read_only)
        if driver == "blkdebug":
            return self._open_blkdebug(options, name, read_only, root=root)
        if driver == "copy-on-read":
            return self._open_copy_on_read(options, name, read_only)
        if driver not in ("file", "null-co"):
            raise QMPError(f"Driver '{driver}' is not supported by this reference implementation")
        name = self._claim_name(name)
        try:
            if driver == "file":
                filename = options["filename"]
                try:
                    # QEMU's ``locking`` (on, off, auto = on for local files on Linux).
                    locking = options.get("locking", "auto") != "off"
                    self.graph.add_file(name, filename, read_only, locking)
                except _core.ImageError as e:
                    _, errno = e.args
                    raise QMPError(f"Could not open '{filename}': {strerror(errno)}") from None
            else:
                self.graph.add_null(
                    name,
                    int(options.get("size", NULL_CO_DEFAULT_SIZE)),
                    read_only,
                    read_zeroes=bool(options.get("read-zeroes", False)),
                )
                # ``size`` and ``read-zeroes`` are the null driver's strong options: given, QEMU
                # names the node (and a format node over it) by its ``json:`` options.
                strong = {k: v for k, v in options.items() if k in NULL_CO_STRONG_OPTIONS}
                if strong:
                    self.json_options[name] = {"driver": "null-co", **strong}
        finally:
            self.graph.release_name(name)
        self._set_discard(name, options, root=root)
        return name

    def _set_discard(self, name: str, options: dict[str, Any], *, root: bool) -> None:
        """A protocol node's ``discard`` option. Opened on its own (``blockdev-add``), it passes
        discard requests only with ``discard: unmap``, also those of a format parent (qcow2's
        clusters freed by snapshot operations); opened as another node's child it always
        passes its parent's, as QEMU enables unmap on lower layers."""
        unmap = options.get("discard") in ("unmap", "on")
        if unmap:
            self.unmap.add(name)
        if root:
            self.graph.set_discard_unmap(name, unmap)

    def _open_child(self, ref: str | dict[str, Any], read_only: bool) -> tuple[str, bool]:
        """A child given by reference (an existing node) or inline (opened now, implicit,
        inheriting ``read-only`` unless it sets its own); returns its name and whether it was
        opened here."""
        if isinstance(ref, str):
            return self.lookup(ref), False
        child_opts = dict(ref)
        child_opts.setdefault("read-only", read_only)
        child = self.open_blockdev(child_opts, root=False)
        if "read-only" in ref:  # spelled out: the parent's reopen does not reach it
            self.graph.keep_own_read_only(child)
        return child, True

    def _open_over_file(
        self,
        options: dict[str, Any],
        name: str | None,
        read_only: bool,
        create: Callable[[str, str], None],
        before_naming: Callable[[str], None] | None = None,
    ) -> tuple[str, str]:
        """A node over its ``file`` child, as QEMU's generic layer opens format drivers and
        filters: the child first (inline ones become implicit), then the node is named and
        created (``create(name, file_node)``); a failure closes an inline child again.
        Returns ``(name, file node)``."""
        file_node, created_child = self._open_child(options["file"], read_only)
        try:
            if before_naming is not None:
                before_naming(file_node)
            node = self._claim_name(name)
            try:
                create(node, file_node)
            finally:
                self.graph.release_name(node)
        except BaseException:
            if created_child:
                self.close_implicit(file_node)
            raise
        if created_child:
            self.implicit.add(file_node)
        return node, file_node

    def _open_format_tree(
        self, options: dict[str, Any], name: str | None, driver: str, read_only: bool
    ) -> str:
        """A raw or qcow2 node over its ``file`` child (opened inline or referenced), then a
        qcow2 node's backing chain."""
        name, _ = self._open_over_file(
            options,
            name,
            read_only,
            lambda node, file_node: self._open_format(
                node,
                driver,
                file_node,
                read_only,
                qcow2_runtime_options(options, self.profile) if driver == "qcow2" else {},
            ),
        )
        if options.get("discard") in ("unmap", "on"):
            self.unmap.add(name)
        if driver == "qcow2":
            # pass-discard-request defaults to the node's own discard=unmap.
            passes = options.get("pass-discard-request", name in self.unmap)
            self.graph.set_pass_discard_request(name, bool(passes))
            try:
                self._open_backing(name, options)
            except BaseException:
                self.close_implicit(name)
                raise
        return name

    def _open_copy_on_read(self, options: dict[str, Any], name: str | None, read_only: bool) -> str:
        """A copy-on-read filter: its ``file`` child is opened first (by the generic layer, as
        for a format driver), then the filter is named; ``bottom`` must be found by name."""
        bottom = options.get("bottom")

        def check_bottom(file_node: str) -> None:
            if bottom is not None and self.graph.node(bottom) is None:
                raise QMPError(f"Bottom node '{bottom}' not found")
            if bottom is not None and bottom not in self.backing_chain(file_node):
                # QEMU never answers this blockdev-add (scenario copy_on_read_bottom_outside_
                # chain_hangs): the reference refuses it.
                raise QMPError(
                    f"Bottom node '{bottom}' is not in the backing chain of '{file_node}'"
                )

        name, file_node = self._open_over_file(
            options,
            name,
            read_only,
            lambda node, file_node: self.graph.add_copy_on_read(node, file_node, read_only, bottom),
            before_naming=check_bottom,
        )
        if bottom == file_node:
            self.crashing_reads.add(name)
        return name

    def backing_chain(self, node: str) -> list[str]:
        """``node`` and the nodes down its backing chain, top first."""
        chain = [node]
        while (below := self.backing_child(chain[-1])) is not None:
            chain.append(below)
        return chain

    def _open_blkdebug(
        self, options: dict[str, Any], name: str | None, read_only: bool, *, root: bool
    ) -> str:
        """A blkdebug node: a protocol driver, named before it opens its ``image`` child."""
        name = self._claim_name(name)
        image = None
        try:
            image, created_child = self._open_child(options["image"], read_only)
            if created_child:
                self.implicit.add(image)
            self.graph.add_blkdebug(
                name,
                image,
                read_only,
                inject_error=list(options.get("inject-error", [])),
                set_state=list(options.get("set-state", [])),
            )
        except (_core.CoreError, ValueError) as e:
            if image in self.implicit:
                self.close_implicit(image)
            raise QMPError(str(e)) from None
        except BaseException:
            if image in self.implicit:
                self.close_implicit(image)
            raise
        finally:
            self.graph.release_name(name)
        own = {k: v for k, v in options.items() if k not in ("node-name", "read-only")}
        own = {k: _without_node_names(v) if isinstance(v, dict) else v for k, v in own.items()}
        image_info = self.graph.node(image)
        if image_info is not None:
            # QEMU spells the child by its strong options only (a file: its name), whether it
            # was given inline or by reference.
            inline = own.get("image")
            own["image"] = self.json_options.get(
                image, inline if isinstance(inline, dict) else self.full_options(image_info)
            )
            if image_info.driver == "file":
                own["image"] = {"driver": "file", "filename": image_info.filename}
        image_name = "" if image_info is None else self.filename(image_info)
        if any(k in BLKDEBUG_STRONG_OPTIONS for k in own) or image_name.startswith("json:"):
            self.json_options[name] = flatten_lists(own)
        else:
            self.json_filenames[name] = f"blkdebug::{image_name}"
        self._set_discard(name, options, root=root)
        return name

    def _open_backing(self, name: str, options: dict[str, Any]) -> None:
        """The ``backing`` option of a qcow2 node: absent opens the image's own backing file
        (read-only, automatic node names), ``null`` opens none, a string attaches an existing
        node, a mapping opens that tree."""
        if "backing" not in options:
            info = self.graph.node(name)
            assert info is not None
            if info.backing_file is None:
                return
            backing = self._open_header_backing(info)
        elif options["backing"] is None:
            self.no_backing.add(name)
            return
        elif isinstance(options["backing"], str):
            backing = self.lookup(options["backing"])
        else:
            child_opts = dict(options["backing"])
            child_opts.setdefault("read-only", True)
            backing = self.open_blockdev(child_opts, root=False)
            self.implicit.add(backing)
        self.attach_backing(name, backing)

    def attach_backing(self, node: str, backing: str) -> None:
        """QEMU's ``bdrv_set_backing_hd``: ``backing`` becomes ``node``'s backing child."""
        try:
            self.graph.set_backing(node, backing)
        except _core.CycleError as e:
            child, parent = e.args
            raise QMPError(
                f"Making '{child}' a backing child of '{parent}' would create a cycle"
            ) from None
        except _core.ImageError as e:
            raise QMPError(str(e.args[0])) from None
        self.no_backing.discard(node)

    def _open_header_backing(self, info: _core.NodeInfo) -> str:
        """Opens the backing file named in ``info``'s image header, as QEMU does at open."""
        assert info.backing_file is not None
        path = self._full_backing_filename(info)
        fmt = info.backing_format or self.probe_format(path)
        opts: dict[str, Any] = {
            "driver": fmt,
            "read-only": True,
            "file": {"driver": "file", "filename": path},
        }
        try:
            backing = self.open_blockdev(opts, root=False)
        except QMPError as e:
            raise QMPError(f"Could not open backing file: {e.desc}") from None
        self.implicit.add(backing)
        return backing

    def _claim_name(self, name: str | None) -> str:
        """Assigns the new node's name (given, or the next ``#blockNNN``) and reserves its
        place in the graph; the caller releases the reservation if the node is not added."""
        if name is None:
            name = self.auto_node_name()
        else:
            self.check_new_node_name(name)
        self.graph.reserve_name(name)
        return name

    def _open_format(
        self,
        name: str,
        driver: str,
        file_node: str,
        read_only: bool,
        qcow2_options: dict[str, Any],
    ) -> None:
        try:
            self.graph.add_format(name, driver, file_node, read_only, **qcow2_options)
        except _core.NoMedium:
            # QEMU takes any node as a format's file; the reference's qcow2 needs a store (a
            # protocol node, null-co, or blkdebug over one of them); raw passes requests on.
            raise QMPError(
                f"A {driver} node over node '{file_node}' (a format node or filter, or blkdebug "
                "over one) is not supported by this reference implementation"
            ) from None
        except _core.ImageError as e:
            message, errno = e.args
            raise QMPError(str(message) if errno != 2 else strerror(errno)) from None

    def close_orphans(self) -> None:
        """Closes the implicit nodes nothing uses any more (QEMU frees a node with its last
        reference), e.g. an overlay whose only parent was a job's filter that went away."""
        for name in sorted(self.implicit):
            if name in self.implicit and not self.graph.parents(name):
                self.close_implicit(name)

    def close_implicit(self, name: str) -> None:
        """Closes ``name`` and, recursively, the implicit children nobody else uses."""
        info = self.graph.node(name)
        if info is None:
            return
        self.graph.remove_node(name)
        self.implicit.discard(name)
        self.unmap.discard(name)
        self.no_backing.discard(name)
        self.json_filenames.pop(name, None)
        self.json_options.pop(name, None)
        self.crashing_reads.discard(name)
        for _, child in info.children:
            if child in self.implicit and not self.graph.parents(child):
                self.close_implicit(child)

    def probe_format(self, filename: str) -> str:
        """Format probing of ``-drive`` without ``format=``: qcow2 by magic, else raw."""
        try:
            with open(filename, "rb") as f:
                return "qcow2" if f.read(4) == _QCOW2_MAGIC else "raw"
        except OSError:
            return "raw"

    # ---- query output ------------------------------------------------------------------------

    def json_of(self, info: _core.NodeInfo) -> dict[str, Any] | None:
        """The options QEMU prints as a ``json:`` file name for ``info``, if it needs one: a node
        whose own options cannot be a plain name (blkdebug), or a format node above one."""
        if info.name in self.json_options:
            return self.json_options[info.name]
        for role, child in info.children:
            child_info = self.graph.node(child)
            if role == "file" and child_info is not None:
                below = self.json_of(child_info)
                if below is not None:
                    return {"driver": info.driver, "file": below}
        return None

    def filename(self, info: _core.NodeInfo) -> str:
        """The node's file name: its own, its ``file`` child's, ``null-co://``, or a ``json:``
        pseudo name when a backing child other than the header's is attached."""
        if info.name in self.json_filenames:
            return self.json_filenames[info.name]
        if info.driver == "copy-on-read":
            return "json:" + qdict_json(self.copy_on_read_options(info))
        filters = info.driver in FILTER_DRIVERS and info.name not in self.json_options
        options = None if filters else self.json_of(info)
        if options is not None:
            return "json:" + qdict_json(options)
        if info.driver == "null-co":
            return "null-co://"
        if info.filename is not None:
            return info.filename
        if self._backing_overridden(info):
            return "json:" + json.dumps(self.full_options(info), sort_keys=True)
        return self._file_child_filename(info)

    def copy_on_read_options(self, info: _core.NodeInfo) -> dict[str, Any]:
        """A copy-on-read filter's options as its ``json:`` file name spells them: QEMU has no
        plain name for it, whatever its child."""
        options: dict[str, Any] = {"driver": info.driver}
        child = self.filtered_child(info)
        if child is not None:
            options["file"] = self.full_options(child)
        return options

    def _file(self, info: _core.NodeInfo) -> _core.NodeInfo | None:
        """The ``file`` child of ``info``, if any."""
        for role, child in info.children:
            if role == "file":
                return self.graph.node(child)
        return None

    def _file_child_filename(self, info: _core.NodeInfo) -> str:
        for role, child in info.children:
            child_info = self.graph.node(child)
            if role == "file" and child_info is not None:
                return self.filename(child_info)
        return ""

    def _backing_overridden(self, info: _core.NodeInfo) -> bool:
        """Whether the runtime backing differs from what the header names (QEMU then cannot
        describe the node by its file name alone)."""
        backing = self.backing_child(info.name)
        if backing is None:
            return info.name in self.no_backing and info.backing_file is not None
        backing_info = self.graph.node(backing)
        assert backing_info is not None
        if info.backing_file is None:
            return True
        header = self._full_backing_filename(info)
        return self.filename(backing_info) != header or (
            info.backing_format is not None and info.backing_format != backing_info.driver
        )

    def full_options(self, info: _core.NodeInfo) -> dict[str, Any]:
        """The node's options as QEMU's ``json:`` file names spell them (keys sorted)."""
        if info.filename is not None:
            return {"driver": info.driver, "filename": info.filename}
        options: dict[str, Any] = {}
        backing = self.backing_child(info.name)
        if self._backing_overridden(info):
            backing_info = None if backing is None else self.graph.node(backing)
            options["backing"] = None if backing_info is None else self.full_options(backing_info)
        options["driver"] = info.driver
        for role, child in info.children:
            child_info = self.graph.node(child)
            if role == "file" and child_info is not None:
                options["file"] = self.full_options(child_info)
        return options

    def filtered_child(self, info: _core.NodeInfo) -> _core.NodeInfo | None:
        """QEMU's ``bdrv_filter_or_cow_child``: the child a filter driver passes I/O to, or a
        format node's backing child (query output reports either as the backing image)."""
        role = FILTER_DRIVERS.get(info.driver, "backing")
        for child_role, child in info.children:
            if child_role == role:
                return self.graph.node(child)
        return None

    def backing_depth(self, info: _core.NodeInfo) -> int:
        """``backing_file_depth``: backing and filtered children count alike."""
        child = self.filtered_child(info)
        return 0 if child is None else 1 + self.backing_depth(child)

    def allocated_size(self, info: _core.NodeInfo) -> int | None:
        """``actual-size``: host bytes a protocol node allocates, a filter's filtered child's,
        a format node's ``file`` child's; None (omitted) where QEMU cannot tell (blkdebug, a
        protocol driver without the callback, and every node above it)."""
        if info.driver == "null-co":
            return 0
        if info.driver == "file":
            return _actual_size(info.filename)
        if info.driver == "blkdebug":
            return None
        total = 0
        for role, child in info.children:
            child_info = self.graph.node(child)
            if role == "file" and child_info is not None:
                size = self.allocated_size(child_info)
                if size is None:
                    return None
                total += size
        return total

    def image_info(self, info: _core.NodeInfo, *, flat: bool = True) -> dict[str, Any]:
        """``ImageInfo`` of a node; unless ``flat``, with the ``backing-image`` chain.

        A filter node (copy-before-write, blkdebug) shows its filtered child as
        ``backing-image`` and forwards the cluster size of the first non-filter below it (two
        backups of one source chain their filters); a format node its backing child.
        """
        filename = self.filename(info)
        image: dict[str, Any] = {}
        child = self.filtered_child(info)
        cluster_size = info.cluster_size
        below = info
        while below.driver in FILTER_DRIVERS or below.driver == "raw":
            # raw's image info is its file child's (none from a protocol node).
            filtered = self.filtered_child(below) if below.driver != "raw" else self._file(below)
            if filtered is None:
                break
            below = filtered
            cluster_size = below.cluster_size
        # bdrv_getlength() counts whole 512-byte sectors: a 196616-byte file reports 197120.
        length = -(-info.length // SECTOR_SIZE) * SECTOR_SIZE
        image.update({"virtual-size": length, "filename": filename})
        if cluster_size is not None:
            image["cluster-size"] = cluster_size
        image["format"] = info.driver
        allocated = self.allocated_size(info)
        if allocated is not None:
            image["actual-size"] = allocated
        if info.backing_file is not None:
            image["backing-filename"] = info.backing_file
            image["full-backing-filename"] = self._full_backing_filename(info)
            if info.backing_format is not None:
                image["backing-filename-format"] = info.backing_format
        if info.driver == "qcow2":
            snapshots = [snapshot_info(sn) for sn in self.graph.snapshots(info.name)]
            if snapshots:
                image["snapshots"] = snapshots
        specific = self._format_specific(info)
        if specific is not None:
            image["format-specific"] = specific
        if self._reports_info(info):
            image["dirty-flag"] = info.dirty
        if not flat and child is not None:
            image["backing-image"] = self.image_info(child, flat=False)
        return image

    def _reports_info(self, info: _core.NodeInfo) -> bool:
        """Whether QEMU's ``bdrv_get_info`` answers for the node (``dirty-flag`` is shown only
        then): null-co has no such callback, and raw asks its ``file`` child."""
        if info.driver == "null-co":
            return False
        if info.driver == "raw":
            for role, child in info.children:
                child_info = self.graph.node(child)
                if role == "file" and child_info is not None:
                    return self._reports_info(child_info)
        if info.driver == "blkdebug":
            # A filter without the callback asks the node it filters.
            filtered = self.filtered_child(info)
            return filtered is None or self._reports_info(filtered)
        return True

    def _full_backing_filename(self, info: _core.NodeInfo) -> str:
        """The header's backing file name, relative ones taken from the image's directory."""
        assert info.backing_file is not None
        if os.path.isabs(info.backing_file) or has_protocol(info.backing_file):
            return info.backing_file
        return os.path.join(os.path.dirname(self._file_child_filename(info)), info.backing_file)

    def _format_specific(self, info: _core.NodeInfo) -> dict[str, Any] | None:
        if info.qcow2 is not None:
            q = info.qcow2
            data: dict[str, Any] = {"compat": q.compat, "compression-type": q.compression_type}
            if q.compat != "0.10":
                data["lazy-refcounts"] = q.lazy_refcounts
                if q.bitmaps:
                    data["bitmaps"] = [
                        {"flags": flags, "name": name, "granularity": gran}
                        for name, gran, flags in q.bitmaps
                    ]
                data["refcount-bits"] = q.refcount_bits
                data["corrupt"] = q.corrupt
                data["extended-l2"] = q.extended_l2
            else:
                data["refcount-bits"] = q.refcount_bits
            return {"type": "qcow2", "data": data}
        if info.driver == "file" and self.profile.file_format_specific:
            return {"type": "file", "data": {}}
        return None

    def dirty_bitmaps(self, node: str) -> list[dict[str, Any]]:
        """``BlockDirtyInfo`` list of a node, newest first."""
        out = []
        for bm in self.graph.bitmaps(node):
            entry: dict[str, Any] = {}
            if bm.name is not None:
                entry["name"] = bm.name
            entry.update(
                recording=bm.enabled,
                persistent=bm.persistent,
                busy=bm.busy,
                granularity=bm.granularity,
                count=bm.count,
            )
            if bm.inconsistent:
                entry["inconsistent"] = True
            out.append(entry)
        return out

    def device_info(self, info: _core.NodeInfo, *, flat: bool = False) -> dict[str, Any]:
        """``BlockDeviceInfo`` of a node; unless ``flat``, with the backing chain."""
        top_file = self.filename(info)
        d: dict[str, Any] = {"iops_rd": 0, "detect_zeroes": "off"}
        if self.profile.reports_active:
            d["active"] = True
        d.update(
            {
                "image": self.image_info(info, flat=flat),
                "iops_wr": 0,
                "ro": info.read_only,
                "node-name": info.name,
                "backing_file_depth": 0 if flat else self.backing_depth(info),
                "drv": info.driver,
                "iops": 0,
                "bps_wr": 0,
                "write_threshold": 0,
            }
        )
        backing = self.backing_child(info.name)
        if backing is not None:
            backing_info = self.graph.node(backing)
            assert backing_info is not None
            d["backing_file"] = self.filename(backing_info)
        bitmaps = self.dirty_bitmaps(info.name)
        if bitmaps:
            d["dirty-bitmaps"] = bitmaps
        d.update(
            {
                "encrypted": False,
                "bps": 0,
                "bps_rd": 0,
                "cache": {"no-flush": False, "direct": False, "writeback": True},
                "file": top_file,
            }
        )
        return d

    def named_nodes(self, *, flat: bool = False) -> list[dict[str, Any]]:
        """``query-named-block-nodes``: every node, newest first."""
        return [self.device_info(n, flat=flat) for n in self.graph.nodes()]

    def block_info(self) -> list[dict[str, Any]]:
        """``query-block``: every device in creation order."""
        out = []
        for device, root in self.graph.backends():
            entry: dict[str, Any] = {"device": device, "locked": False, "removable": True}
            if root is not None:
                node = self.graph.node(root)
                assert node is not None, "a backend's root node always exists"
                entry["inserted"] = self.device_info(node)
            entry["type"] = "unknown"
            out.append(entry)
        return out


def snapshot_info(sn: _core.SnapshotInfo) -> dict[str, Any]:
    """QEMU's ``SnapshotInfo`` of one internal snapshot (``icount`` only when recorded)."""
    info: dict[str, Any] = {
        "id": sn.id,
        "name": sn.name,
        "vm-state-size": sn.vm_state_size,
        "date-sec": sn.date_sec,
        "date-nsec": sn.date_nsec,
        "vm-clock-sec": sn.vm_clock_sec,
        "vm-clock-nsec": sn.vm_clock_nsec,
    }
    if sn.icount is not None:
        info["icount"] = sn.icount
    return info


def _without_node_names(options: dict[str, Any]) -> dict[str, Any]:
    """Inline child options as QEMU's ``json:`` names spell them: without ``node-name``."""
    return {
        k: _without_node_names(v) if isinstance(v, dict) else v
        for k, v in options.items()
        if k != "node-name"
    }


def _actual_size(filename: str | None) -> int:
    """Bytes allocated on the host (``st_blocks * 512``), as ``actual-size``."""
    if filename is None:
        return 0
    try:
        return os.stat(filename).st_blocks * 512
    except OSError:
        return 0
