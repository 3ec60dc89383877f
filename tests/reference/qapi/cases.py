"""Malformed (and a few well-formed) command arguments, stated once for every endpoint.

Each case is ``(id, command, arguments)``. The differential test sends every case to real QEMU
7.2 and 10.0 and to :meth:`Schema.check_arguments`, and requires the same error class and desc
(or, when our checker accepts the arguments, that QEMU did not reject them while checking).
Nothing here says what QEMU answers: QEMU is the oracle.
"""

from __future__ import annotations

from typing import Any

Case = tuple[str, str, Any]

U32 = 2**32
I64_MAX = 2**63 - 1

BITMAP = {"node": "n0", "name": "b0"}


def _tx(*actions: Any, **extra: Any) -> dict[str, Any]:
    return {"actions": list(actions), **extra}


def _act(kind: str, data: Any) -> dict[str, Any]:
    return {"type": kind, "data": data}


CASES: list[Case] = [
    # --- SEMANTICS.md 1.1, one row each
    ("tx-no-actions", "transaction", {}),
    ("tx-actions-object", "transaction", {"actions": {"type": "abort", "data": {}}}),
    ("tx-unknown-type", "transaction", _tx(_act("foo", {}))),
    ("tx-action-no-data", "transaction", _tx({"type": "abort"})),
    ("tx-action-no-type", "transaction", _tx({"data": {}})),
    (
        "tx-extra-key-in-data",
        "transaction",
        _tx(_act("block-dirty-bitmap-clear", {**BITMAP, "x": 1})),
    ),
    ("tx-missing-member", "transaction", _tx(_act("block-dirty-bitmap-add", {"node": "n0"}))),
    ("tx-bad-completion-mode", "transaction", _tx(properties={"completion-mode": "foo"})),
    ("tx-extra-key-in-properties", "transaction", _tx(properties={"x": 1})),
    ("tx-extra-toplevel", "transaction", _tx(extra=1)),
    (
        "tx-merge-source-int",
        "transaction",
        _tx(_act("block-dirty-bitmap-merge", {"node": "n0", "target": "b0", "bitmaps": [1]})),
    ),
    (
        "tx-merge-source-dict-no-name",
        "transaction",
        _tx(
            _act(
                "block-dirty-bitmap-merge",
                {"node": "n0", "target": "b0", "bitmaps": [{"node": "n0"}]},
            )
        ),
    ),
    ("add-granularity-string", "block-dirty-bitmap-add", {**BITMAP, "granularity": "65536"}),
    ("add-granularity-2pow32", "block-dirty-bitmap-add", {**BITMAP, "granularity": U32}),
    ("add-granularity-minus1", "block-dirty-bitmap-add", {**BITMAP, "granularity": -1}),
    ("add-persistent-string", "block-dirty-bitmap-add", {**BITMAP, "persistent": "true"}),
    # --- transaction structure
    ("tx-actions-null", "transaction", {"actions": None}),
    ("tx-actions-string", "transaction", {"actions": "abort"}),
    ("tx-action-not-object", "transaction", _tx("abort")),
    ("tx-action-null", "transaction", _tx(None)),
    ("tx-second-action-not-object", "transaction", _tx(_act("abort", {}), 5)),
    ("tx-type-int", "transaction", _tx({"type": 1, "data": {}})),
    ("tx-type-null", "transaction", _tx({"type": None, "data": {}})),
    ("tx-type-unicode", "transaction", _tx(_act("bl\u00f6ck-dirty-bitmap-add", {}))),
    ("tx-type-case", "transaction", _tx(_act("Abort", {}))),
    ("tx-data-list", "transaction", _tx(_act("abort", []))),
    ("tx-data-null", "transaction", _tx(_act("abort", None))),
    ("tx-abort-member", "transaction", _tx(_act("abort", {"x": 1}))),
    ("tx-action-extra-key", "transaction", {"actions": [{"type": "abort", "data": {}, "x": 1}]}),
    ("tx-nested-beats-outer", "transaction", {"actions": [_act("abort", {"y": 1})], "extra": 1}),
    (
        "tx-later-action-invalid",
        "transaction",
        _tx(
            _act("block-dirty-bitmap-add", BITMAP), _act("block-dirty-bitmap-clear", {"node": "n0"})
        ),
    ),
    ("tx-properties-not-object", "transaction", _tx(properties=[])),
    ("tx-properties-null", "transaction", _tx(properties=None)),
    ("tx-completion-mode-int", "transaction", _tx(properties={"completion-mode": 1})),
    (
        "tx-properties-bad-before-actions",
        "transaction",
        {"properties": {"completion-mode": "x"}, "actions": [_act("foo", {})]},
    ),
    # --- bitmap action payloads
    (
        "tx-add-granularity-2pow32",
        "transaction",
        _tx(_act("block-dirty-bitmap-add", {**BITMAP, "granularity": U32})),
    ),
    (
        "tx-add-granularity-string",
        "transaction",
        _tx(_act("block-dirty-bitmap-add", {**BITMAP, "granularity": "512"})),
    ),
    (
        "tx-add-granularity-float",
        "transaction",
        _tx(_act("block-dirty-bitmap-add", {**BITMAP, "granularity": 512.0})),
    ),
    (
        "tx-add-granularity-huge",
        "transaction",
        _tx(_act("block-dirty-bitmap-add", {**BITMAP, "granularity": 2**64})),
    ),
    (
        "tx-add-granularity-bool",
        "transaction",
        _tx(_act("block-dirty-bitmap-add", {**BITMAP, "granularity": True})),
    ),
    (
        "tx-add-name-int",
        "transaction",
        _tx(_act("block-dirty-bitmap-add", {"node": "n0", "name": 7})),
    ),
    (
        "tx-add-name-null",
        "transaction",
        _tx(_act("block-dirty-bitmap-add", {"node": "n0", "name": None})),
    ),
    ("tx-add-node-missing-name-missing", "transaction", _tx(_act("block-dirty-bitmap-add", {}))),
    (
        "tx-add-disabled-string",
        "transaction",
        _tx(_act("block-dirty-bitmap-add", {**BITMAP, "disabled": "no"})),
    ),
    (
        "tx-add-persistent-null",
        "transaction",
        _tx(_act("block-dirty-bitmap-add", {**BITMAP, "persistent": None})),
    ),
    (
        "tx-remove-extra",
        "transaction",
        _tx(_act("block-dirty-bitmap-remove", {**BITMAP, "granularity": 1})),
    ),
    (
        "tx-enable-missing-node",
        "transaction",
        _tx(_act("block-dirty-bitmap-enable", {"name": "b0"})),
    ),
    ("tx-disable-data-string", "transaction", _tx(_act("block-dirty-bitmap-disable", "b0"))),
    (
        "tx-merge-bitmaps-not-list",
        "transaction",
        _tx(_act("block-dirty-bitmap-merge", {"node": "n0", "target": "b0", "bitmaps": "b1"})),
    ),
    (
        "tx-merge-source-null",
        "transaction",
        _tx(
            _act(
                "block-dirty-bitmap-merge", {"node": "n0", "target": "b0", "bitmaps": ["b1", None]}
            )
        ),
    ),
    (
        "tx-merge-source-list",
        "transaction",
        _tx(_act("block-dirty-bitmap-merge", {"node": "n0", "target": "b0", "bitmaps": [["b1"]]})),
    ),
    (
        "tx-merge-source-bool",
        "transaction",
        _tx(_act("block-dirty-bitmap-merge", {"node": "n0", "target": "b0", "bitmaps": [True]})),
    ),
    (
        "tx-merge-source-dict-extra",
        "transaction",
        _tx(
            _act(
                "block-dirty-bitmap-merge",
                {"node": "n0", "target": "b0", "bitmaps": ["b1", {**BITMAP, "x": 1}]},
            )
        ),
    ),
    (
        "tx-merge-source-dict-name-int",
        "transaction",
        _tx(
            _act(
                "block-dirty-bitmap-merge",
                {"node": "n0", "target": "b0", "bitmaps": [{"node": "n0", "name": 1}]},
            )
        ),
    ),
    (
        "tx-merge-second-action",
        "transaction",
        _tx(
            _act("abort", {}),
            _act("block-dirty-bitmap-merge", {"node": "n0", "target": "b0", "bitmaps": [{}]}),
        ),
    ),
    (
        "tx-merge-missing-target",
        "transaction",
        _tx(_act("block-dirty-bitmap-merge", {"node": "n0", "bitmaps": []})),
    ),
    # --- backup / snapshot payloads
    (
        "tx-backup-missing-sync",
        "transaction",
        _tx(_act("blockdev-backup", {"device": "n0", "target": "n1"})),
    ),
    (
        "tx-backup-bad-sync",
        "transaction",
        _tx(_act("blockdev-backup", {"device": "n0", "target": "n1", "sync": "fast"})),
    ),
    (
        "tx-backup-missing-target",
        "transaction",
        _tx(_act("blockdev-backup", {"device": "n0", "sync": "full"})),
    ),
    (
        "tx-backup-speed-string",
        "transaction",
        _tx(
            _act("blockdev-backup", {"device": "n0", "target": "n1", "sync": "full", "speed": "1"})
        ),
    ),
    (
        "tx-backup-speed-2pow63",
        "transaction",
        _tx(
            _act(
                "blockdev-backup", {"device": "n0", "target": "n1", "sync": "full", "speed": 2**63}
            )
        ),
    ),
    (
        "tx-backup-bad-on-error",
        "transaction",
        _tx(
            _act(
                "blockdev-backup",
                {"device": "n0", "target": "n1", "sync": "full", "on-source-error": "panic"},
            )
        ),
    ),
    (
        "tx-backup-perf-extra",
        "transaction",
        _tx(
            _act(
                "blockdev-backup",
                {"device": "n0", "target": "n1", "sync": "full", "x-perf": {"y": 1}},
            )
        ),
    ),
    (
        "tx-backup-perf-max-chunk-huge",
        "transaction",
        _tx(
            _act(
                "blockdev-backup",
                {"device": "n0", "target": "n1", "sync": "full", "x-perf": {"max-chunk": 2**64}},
            )
        ),
    ),
    (
        "tx-backup-perf-min-cluster-size",
        "transaction",
        _tx(
            _act(
                "blockdev-backup",
                {
                    "device": "n0",
                    "target": "n1",
                    "sync": "full",
                    "x-perf": {"min-cluster-size": "x"},
                },
            )
        ),
    ),
    (
        "tx-backup-discard-source",
        "transaction",
        _tx(
            _act(
                "blockdev-backup",
                {"device": "n0", "target": "n1", "sync": "full", "discard-source": 1},
            )
        ),
    ),
    (
        "tx-drive-backup-bad-mode",
        "transaction",
        _tx(
            _act(
                "drive-backup", {"device": "n0", "target": "/x", "sync": "full", "mode": "relative"}
            )
        ),
    ),
    (
        "tx-drive-backup-bitmap-mode",
        "transaction",
        _tx(
            _act(
                "drive-backup",
                {"device": "n0", "target": "/x", "sync": "full", "bitmap-mode": "sometimes"},
            )
        ),
    ),
    (
        "tx-snapshot-sync-no-file",
        "transaction",
        _tx(_act("blockdev-snapshot-sync", {"device": "n0"})),
    ),
    ("tx-snapshot-missing-overlay", "transaction", _tx(_act("blockdev-snapshot", {"node": "n0"}))),
    (
        "tx-internal-missing-name",
        "transaction",
        _tx(_act("blockdev-snapshot-internal-sync", {"device": "n0"})),
    ),
    (
        "tx-internal-name-list",
        "transaction",
        _tx(_act("blockdev-snapshot-internal-sync", {"device": "n0", "name": ["a"]})),
    ),
    # --- several unknown keys: QEMU's hash order decides which is named
    ("tx-two-unknown-top", "transaction", {"actions": [], "zz": 1, "aa": 2}),
    (
        "tx-three-unknown-data",
        "transaction",
        _tx(_act("block-dirty-bitmap-clear", {**BITMAP, "x": 1, "y": 2, "z": 3})),
    ),
    (
        "bitmap-unknown-many",
        "block-dirty-bitmap-add",
        {**BITMAP, "a1": 1, "b2": 2, "c3": 3, "d4": 4, "e5": 5, "f6": 6, "g7": 7, "h8": 8, "i9": 9},
    ),
    ("query-unknown-many", "query-block", {f"k{i}": i for i in range(20)}),
    # --- standalone commands
    ("add-no-args", "block-dirty-bitmap-add", {}),
    ("add-granularity-2pow64", "block-dirty-bitmap-add", {**BITMAP, "granularity": 2**64}),
    ("add-granularity-float", "block-dirty-bitmap-add", {**BITMAP, "granularity": 1.5}),
    ("add-granularity-min-int64", "block-dirty-bitmap-add", {**BITMAP, "granularity": -(2**63)}),
    (
        "add-granularity-below-int64",
        "block-dirty-bitmap-add",
        {**BITMAP, "granularity": -(2**63) - 1},
    ),
    ("add-name-unicode-extra", "block-dirty-bitmap-add", {**BITMAP, "n\u00e4me": "x"}),
    ("add-node-dict", "block-dirty-bitmap-add", {"node": {}, "name": "b0"}),
    ("merge-bitmaps-missing", "block-dirty-bitmap-merge", {"node": "n0", "target": "b0"}),
    (
        "merge-source-number",
        "block-dirty-bitmap-merge",
        {"node": "n0", "target": "b0", "bitmaps": ["a", 3.5]},
    ),
    (
        "merge-source-dict-node-int",
        "block-dirty-bitmap-merge",
        {"node": "n0", "target": "b0", "bitmaps": ["a", {"node": 1, "name": "b"}]},
    ),
    ("sha256-extra", "x-debug-block-dirty-bitmap-sha256", {**BITMAP, "x": 1}),
    ("remove-name-bool", "block-dirty-bitmap-remove", {"node": "n0", "name": False}),
    ("clear-missing-name", "block-dirty-bitmap-clear", {"node": "n0"}),
    ("hmp-missing", "human-monitor-command", {}),
    ("hmp-int", "human-monitor-command", {"command-line": 1}),
    (
        "hmp-cpu-index-string",
        "human-monitor-command",
        {"command-line": "info version", "cpu-index": "0"},
    ),
    (
        "hmp-cpu-index-float",
        "human-monitor-command",
        {"command-line": "info version", "cpu-index": 0.0},
    ),
    ("hmp-extra", "human-monitor-command", {"command-line": "info version", "x": 1}),
    ("query-block-extra", "query-block", {"x": 1}),
    ("query-version-extra", "query-version", {"x": None}),
    ("query-commands-extra", "query-commands", {"x": []}),
    ("query-qmp-schema-extra", "query-qmp-schema", {"x": 1}),
    ("query-jobs-extra", "query-jobs", {"x": 1}),
    ("query-block-jobs-extra", "query-block-jobs", {"x": 1}),
    ("quit-extra", "quit", {"x": 1}),
    ("qnbn-flat-string", "query-named-block-nodes", {"flat": "yes"}),
    ("qnbn-extra", "query-named-block-nodes", {"flat": True, "x": 1}),
    ("caps-enable-string", "qmp_capabilities", {"enable": "oob"}),
    ("caps-enable-bad-value", "qmp_capabilities", {"enable": ["oob", "foo"]}),
    ("caps-enable-int-element", "qmp_capabilities", {"enable": [1]}),
    ("caps-extra", "qmp_capabilities", {"x": 1}),
    ("blockdev-del-missing", "blockdev-del", {}),
    ("blockdev-del-int", "blockdev-del", {"node-name": 5}),
    ("job-pause-missing", "job-pause", {}),
    ("job-cancel-int", "job-cancel", {"id": 1}),
    ("job-dismiss-extra", "job-dismiss", {"id": "j", "force": True}),
    ("job-finalize-null", "job-finalize", {"id": None}),
    ("block-job-cancel-force-string", "block-job-cancel", {"device": "j", "force": "yes"}),
    ("block-job-set-speed-missing", "block-job-set-speed", {"device": "j"}),
    ("block-job-set-speed-float", "block-job-set-speed", {"device": "j", "speed": 1.0}),
    ("block-job-resume-extra", "block-job-resume", {"device": "j", "x": 1}),
    ("blockdev-backup-missing-device", "blockdev-backup", {"target": "t", "sync": "full"}),
    ("blockdev-backup-bad-sync", "blockdev-backup", {"device": "d", "target": "t", "sync": 1}),
    (
        "drive-backup-format-int",
        "drive-backup",
        {"device": "d", "target": "/t", "sync": "full", "format": 2},
    ),
    (
        "snapshot-sync-mode-bad",
        "blockdev-snapshot-sync",
        {"device": "d", "snapshot-file": "/t", "mode": "x"},
    ),
    ("snapshot-delete-id-int", "blockdev-snapshot-delete-internal-sync", {"device": "d", "id": 1}),
    ("snapshot-extra", "blockdev-snapshot", {"node": "a", "overlay": "b", "c": 1}),
    # --- blockdev-add (BlockdevOptions is the whole argument object)
    ("bda-no-driver", "blockdev-add", {"node-name": "x"}),
    ("bda-bad-driver", "blockdev-add", {"driver": "nope", "node-name": "x"}),
    ("bda-driver-int", "blockdev-add", {"driver": 3}),
    ("bda-node-name-int", "blockdev-add", {"driver": "null-co", "node-name": 3}),
    ("bda-file-no-filename", "blockdev-add", {"driver": "file", "node-name": "x"}),
    ("bda-file-extra", "blockdev-add", {"driver": "file", "filename": "/x", "bogus": 1}),
    ("bda-file-bad-aio", "blockdev-add", {"driver": "file", "filename": "/x", "aio": "posix"}),
    (
        "bda-file-locking-bool",
        "blockdev-add",
        {"driver": "file", "filename": "/x", "locking": True},
    ),
    ("bda-cache-not-object", "blockdev-add", {"driver": "null-co", "cache": True}),
    ("bda-cache-extra", "blockdev-add", {"driver": "null-co", "cache": {"writeback": True}}),
    ("bda-discard-bad", "blockdev-add", {"driver": "null-co", "discard": "on"}),
    ("bda-detect-zeroes-bad", "blockdev-add", {"driver": "null-co", "detect-zeroes": "maybe"}),
    ("bda-read-only-string", "blockdev-add", {"driver": "null-co", "read-only": "on"}),
    ("bda-null-size-string", "blockdev-add", {"driver": "null-co", "size": "1M"}),
    ("bda-null-latency-huge", "blockdev-add", {"driver": "null-co", "latency-ns": 2**64}),
    ("bda-null-extra", "blockdev-add", {"driver": "null-co", "filename": "x"}),
    ("bda-raw-no-file", "blockdev-add", {"driver": "raw", "node-name": "x"}),
    ("bda-raw-file-int", "blockdev-add", {"driver": "raw", "file": 1}),
    ("bda-raw-file-list", "blockdev-add", {"driver": "raw", "file": []}),
    ("bda-raw-file-null", "blockdev-add", {"driver": "raw", "file": None}),
    (
        "bda-raw-nested-missing-driver",
        "blockdev-add",
        {"driver": "raw", "file": {"filename": "/x"}},
    ),
    (
        "bda-raw-nested-extra",
        "blockdev-add",
        {"driver": "raw", "file": {"driver": "file", "filename": "/x", "y": 1}},
    ),
    ("bda-raw-offset-string", "blockdev-add", {"driver": "raw", "file": "f", "offset": "0"}),
    ("bda-qcow2-backing-int", "blockdev-add", {"driver": "qcow2", "file": "f", "backing": 1}),
    (
        "bda-qcow2-backing-deep",
        "blockdev-add",
        {
            "driver": "qcow2",
            "file": "f",
            "backing": {"driver": "qcow2", "file": {"driver": "file", "filename": 9}},
        },
    ),
    (
        "bda-qcow2-overlap-bad",
        "blockdev-add",
        {"driver": "qcow2", "file": "f", "overlap-check": "some"},
    ),
    ("bda-qcow2-overlap-int", "blockdev-add", {"driver": "qcow2", "file": "f", "overlap-check": 1}),
    (
        "bda-qcow2-overlap-flags-bad",
        "blockdev-add",
        {"driver": "qcow2", "file": "f", "overlap-check": {"template": "x"}},
    ),
    (
        "bda-qcow2-encrypt-no-format",
        "blockdev-add",
        {"driver": "qcow2", "file": "f", "encrypt": {"key-secret": "s"}},
    ),
    (
        "bda-qcow2-encrypt-bad-format",
        "blockdev-add",
        {"driver": "qcow2", "file": "f", "encrypt": {"format": "rot13"}},
    ),
    (
        "bda-qcow2-cache-size-float",
        "blockdev-add",
        {"driver": "qcow2", "file": "f", "cache-size": 1.5},
    ),
    (
        "bda-qcow2-data-file-bool",
        "blockdev-add",
        {"driver": "qcow2", "file": "f", "data-file": False},
    ),
    (
        "bda-qcow2-discard-no-unref",
        "blockdev-add",
        {"driver": "qcow2", "file": "f", "discard-no-unref": "x"},
    ),
    ("bda-active-string", "blockdev-add", {"driver": "null-co", "active": "x"}),
    ("bda-blkdebug-no-image", "blockdev-add", {"driver": "blkdebug"}),
    (
        "bda-blkdebug-max-transfer",
        "blockdev-add",
        {"driver": "blkdebug", "image": "i", "max-transfer": 2**31},
    ),
    (
        "bda-blkdebug-max-discard-neg",
        "blockdev-add",
        {"driver": "blkdebug", "image": "i", "max-discard": -(2**31) - 1},
    ),
    (
        "bda-blkdebug-inject-bad-event",
        "blockdev-add",
        {"driver": "blkdebug", "image": "i", "inject-error": [{"event": "boom"}]},
    ),
    (
        "bda-blkdebug-inject-missing-event",
        "blockdev-add",
        {"driver": "blkdebug", "image": "i", "inject-error": [{"event": "none"}, {"errno": 5}]},
    ),
    (
        "bda-blkdebug-set-state-missing",
        "blockdev-add",
        {"driver": "blkdebug", "image": "i", "set-state": [{"event": "none"}]},
    ),
    (
        "bda-blkdebug-perm-bad",
        "blockdev-add",
        {"driver": "blkdebug", "image": "i", "take-child-perms": ["write", "fly"]},
    ),
    (
        "bda-blkdebug-perm-int",
        "blockdev-add",
        {"driver": "blkdebug", "image": "i", "unshare-child-perms": [1]},
    ),
    (
        "bda-many-unknown",
        "blockdev-add",
        {"driver": "null-co", "node-name": "x", "p": 1, "q": 2, "r": 3, "s": 4, "t": 5, "u": 6},
    ),
    # --- well-formed arguments: no checking error expected anywhere
    ("ok-tx-empty", "transaction", _tx()),
    ("ok-tx-grouped-empty", "transaction", _tx(properties={"completion-mode": "grouped"})),
    ("ok-add-neg-granularity-u64", "block-dirty-bitmap-add", BITMAP),
    ("ok-query-block", "query-block", {}),
    ("ok-query-version", "query-version", None),
    ("ok-bda-null", "blockdev-add", {"driver": "null-co", "node-name": "ok0", "size": I64_MAX}),
    (
        "ok-bda-null-latency-neg",
        "blockdev-add",
        {"driver": "null-co", "node-name": "ok1", "latency-ns": -1},
    ),
]
