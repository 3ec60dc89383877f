//! Block status through the graph: QEMU's `bdrv_block_status_above` with `want_zero`, the
//! question "what is at this offset, and for how long" that block jobs size their requests by.
//!
//! One node answers as QEMU's generic layer around its driver does (`bdrv_co_block_status`):
//! a format node asks its driver ([`crate::format::FormatDriver::block_status`]) and calls a
//! run its top layer does not hold zero when there is no backing node or the backing node ends
//! before it; a protocol node reports its holes (`SEEK_DATA`/`SEEK_HOLE`); a filter passes to
//! its `file` child; `null-co` reports neither data nor zeros. Without `want_zero` (allocation
//! questions) a protocol node does not look for holes. A run its top node does not hold
//! continues down the backing chain, each layer asked only about what the one above left
//! open, so the answer's length is the shortest of the layers' runs.
//!
//! A data run a driver marks `BDRV_BLOCK_RECURSE` (qcow2 in a metadata-preallocated image) is
//! refined, with `want_zero` only, by the block status of its host range in the node's `file`
//! child ([`refine_by_file`]): a hole there reads as zeros and the run ends where the file's
//! run does; a host range at or past the file's end reads as zeros, and so does one whose
//! hole reaches that end, for the whole run.
//!
//! Only answers: nothing here reads guest data or changes the graph.

use super::{DataPath, Graph, GraphError};
use crate::format::RunKind;
use crate::storage::Storage;
use crate::units::SECTOR;

/// The block status of the start of a range: the flags of its first run and the run's length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlockStatus {
    /// `BDRV_BLOCK_DATA`: the run holds data.
    pub data: bool,
    /// `BDRV_BLOCK_ZERO`: the run reads as zeros.
    pub zero: bool,
    /// `BDRV_BLOCK_ALLOCATED`: a layer above the base holds the run (data or zeros).
    pub allocated: bool,
    /// The run's length in bytes; 0 only at or past the end of the node.
    pub len: u64,
}

impl BlockStatus {
    fn of(kind: RunKind, len: u64) -> Self {
        Self {
            data: kind == RunKind::Data,
            zero: kind == RunKind::Zero,
            allocated: kind != RunKind::Unallocated,
            len,
        }
    }
}

/// What a `file` node says about a host range, for [`refine_by_file`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct FileRun {
    /// The file's run there; `len` 0 at or past the file's end.
    pub status: BlockStatus,
    /// `BDRV_BLOCK_EOF`: the run reaches the file's end.
    pub eof: bool,
}

/// A protocol store's block status at `offset` for at most `len` bytes, with the file's length
/// in whole sectors as QEMU's block layer sees it.
pub(crate) fn store_run(store: &dyn Storage, offset: u64, len: u64) -> std::io::Result<FileRun> {
    let total = store.len()?.next_multiple_of(SECTOR);
    let len = len.min(total.saturating_sub(offset));
    if len == 0 {
        return Ok(FileRun {
            status: BlockStatus::of(RunKind::Unallocated, 0),
            eof: true,
        });
    }
    let e = store.extent(offset, len)?;
    let kind = if e.hole { RunKind::Zero } else { RunKind::Data };
    let n = e.len.clamp(1, len);
    Ok(FileRun {
        status: BlockStatus::of(kind, n),
        eof: offset + n == total,
    })
}

/// QEMU's generic block status after a driver answered `BDRV_BLOCK_RECURSE` for the data run
/// `status` (`want_zero` only): the `file` child's run at the host offset, when it could be
/// asked (errors are ignored), refines it. At or past the file's end, or in a hole reaching
/// it, the run reads as zeros at its own length; otherwise it ends where the file's run ends
/// and reads as zeros where that is a hole.
pub(crate) fn refine_by_file(mut status: BlockStatus, file: Option<FileRun>) -> BlockStatus {
    let Some(f) = file else {
        return status;
    };
    if f.eof && (f.status.len == 0 || f.status.zero) {
        status.zero = true;
    } else {
        status.len = f.status.len;
        status.zero |= f.status.zero;
    }
    status
}

impl Graph {
    /// QEMU's `bdrv_block_status_above(node, base)` with `want_zero`: the status of
    /// `[offset, offset + len)` of `node` down its chain of backing nodes and filtered children,
    /// stopping above `base` (`None`: down to the bottom). A run no layer above `base` holds
    /// has the status of the last layer asked (zero when that one has no backing node).
    pub fn block_status_above(
        &mut self,
        node: &str,
        base: Option<&str>,
        offset: u64,
        len: u64,
    ) -> Result<BlockStatus, GraphError> {
        self.status_above(node, base, true, offset, len)
    }

    /// [`Graph::block_status_above`] with QEMU's `want_zero` as a parameter: without it a
    /// protocol node does not look for holes (all data), as when QEMU asks only about
    /// allocation or its copy-on-write zero detection asks the backing chain.
    pub(crate) fn status_above(
        &mut self,
        node: &str,
        base: Option<&str>,
        want_zero: bool,
        offset: u64,
        len: u64,
    ) -> Result<BlockStatus, GraphError> {
        let mut status = self.node_block_status(node, want_zero, offset, len)?;
        if status.len == 0 || status.allocated || base == Some(node) {
            return Ok(status);
        }
        let mut bytes = status.len;
        let mut below = self.filtered_or_backing(node);
        while let Some(layer) = below {
            if base == Some(layer.as_str()) {
                break;
            }
            let s = self.node_block_status(&layer, want_zero, offset, bytes)?;
            if s.len == 0 {
                // A short layer: what the layers above read past its end is zeros, as if this
                // layer held them.
                status = BlockStatus {
                    data: false,
                    zero: true,
                    allocated: true,
                    len: bytes,
                };
                break;
            }
            status = s;
            if s.allocated {
                break;
            }
            bytes = s.len;
            below = self.filtered_or_backing(&layer);
        }
        Ok(status)
    }

    /// The node one layer down for block status: a filter's child, a format node's
    /// `backing` child (QEMU's `bdrv_filter_or_cow_bs`).
    fn filtered_or_backing(&self, node: &str) -> Option<String> {
        let n = self.node(node)?;
        match n.data {
            DataPath::Filter { .. } => n.filtered_child().map(str::to_string),
            DataPath::Format(_) => self.backing_of(node),
            DataPath::Protocol(_) | DataPath::Null(_) => None,
        }
    }

    /// The run of `node`'s `file` child at `host` (at most `len` bytes), as a recursing
    /// driver's generic layer asks it; `None` when it cannot be asked (no protocol child, or
    /// the query failed: QEMU ignores such errors).
    fn file_run(&self, node: &str, host: u64, len: u64) -> Option<FileRun> {
        let file = self.node(node)?.child("file")?;
        match &self.node(file)?.data {
            DataPath::Protocol(store) => store_run(store.as_ref(), host, len).ok(),
            _ => None,
        }
    }

    /// One node's block status (QEMU's `bdrv_co_block_status`: the generic layer around the
    /// driver). At or past the node's end the run is empty.
    fn node_block_status(
        &mut self,
        node: &str,
        want_zero: bool,
        offset: u64,
        len: u64,
    ) -> Result<BlockStatus, GraphError> {
        let total = self.get(node)?.length()?;
        let len = len.min(total.saturating_sub(offset));
        if len == 0 {
            return Ok(BlockStatus::of(RunKind::Unallocated, 0));
        }
        let backing = self.backing_of(node);
        let n = self.get_mut(node)?;
        match &mut n.data {
            DataPath::Protocol(_) if !want_zero => Ok(BlockStatus::of(RunKind::Data, len)),
            DataPath::Protocol(store) => {
                let e = store
                    .extent(offset, len)
                    .map_err(crate::format::FormatError::from)?;
                let kind = if e.hole { RunKind::Zero } else { RunKind::Data };
                Ok(BlockStatus::of(kind, e.len.max(1)))
            }
            // null-co: zeros (so allocated, as every zero status) with `read-zeroes`, else
            // neither data nor zeros; nothing below either way.
            DataPath::Null(store) => {
                let zero = store
                    .extent(offset, len)
                    .map_err(crate::format::FormatError::from)?
                    .hole;
                Ok(BlockStatus {
                    data: false,
                    zero,
                    allocated: zero,
                    len,
                })
            }
            DataPath::Filter { .. } => {
                let child = n.filtered_child().map(str::to_string);
                let child = child.ok_or_else(|| GraphError::NoMedium(node.into()))?;
                self.node_block_status(&child, want_zero, offset, len)
            }
            DataPath::Format(f) => {
                let run = f.block_status(want_zero, offset, len)?;
                let mut status = BlockStatus::of(run.kind, run.len.clamp(1, len));
                // A format that can have a backing node reads what it does not hold from there.
                if run.kind == RunKind::Unallocated && f.supports_backing() {
                    status.zero = match backing {
                        None => true,
                        Some(b) => want_zero && offset >= self.get(&b)?.length()?,
                    };
                }
                match run.recurse {
                    Some(host) if want_zero && run.kind == RunKind::Data => {
                        let file = self.file_run(node, host, status.len);
                        Ok(refine_by_file(status, file))
                    }
                    _ => Ok(status),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format;
    use crate::graph::WriteKind;
    use tempfile::TempDir;

    const K64: u64 = 65536;

    fn qcow2(g: &mut Graph, dir: &TempDir, name: &str, size: u64, backing: Option<&str>) {
        let path = dir.path().join(format!("{name}.qcow2"));
        let path = path.to_str().unwrap();
        let backing_file = backing.map(|b| dir.path().join(format!("{b}.qcow2")));
        let backing_file = backing_file.as_ref().map(|p| p.to_str().unwrap());
        let backing_format = backing.map(|_| "qcow2");
        format::create_image("qcow2", path, size, backing_file, backing_format).unwrap();
        g.add_file(&format!("{name}-file"), path, false).unwrap();
        g.add_format(name, "qcow2", &format!("{name}-file"), false)
            .unwrap();
        if let Some(b) = backing {
            g.set_backing(name, Some(b)).unwrap();
        }
    }

    fn data(g: &mut Graph, node: &str, offset: u64, len: u64) {
        let buf = vec![0x5a; len as usize];
        g.write(node, offset, WriteKind::Data, &buf, len).unwrap();
    }

    fn status(data: bool, zero: bool, allocated: bool, len: u64) -> BlockStatus {
        BlockStatus {
            data,
            zero,
            allocated,
            len,
        }
    }

    #[test]
    fn block_status_unallocated_without_backing_reads_zero() {
        let dir = TempDir::new().unwrap();
        let mut g = Graph::new();
        qcow2(&mut g, &dir, "top", 4 << 20, None);
        data(&mut g, "top", 2 * K64, K64);
        let s = g.block_status_above("top", None, 0, 1 << 20).unwrap();
        assert_eq!(s, status(false, true, false, 2 * K64));
        let s = g.block_status_above("top", None, 2 * K64, 1 << 20).unwrap();
        assert_eq!(s, status(true, false, true, K64));
        let s = g.block_status_above("top", None, 4 << 20, 1 << 20).unwrap();
        assert_eq!(s.len, 0);
    }

    #[test]
    fn block_status_down_the_chain_is_the_shortest_run() {
        let dir = TempDir::new().unwrap();
        let mut g = Graph::new();
        qcow2(&mut g, &dir, "base", 4 << 20, None);
        data(&mut g, "base", 0, 3 * K64);
        qcow2(&mut g, &dir, "top", 4 << 20, Some("base"));
        data(&mut g, "top", K64, K64);
        // The top leaves 0..64k open; the base holds 0..192k: a run of 64k, data.
        let s = g.block_status_above("top", None, 0, 1 << 20).unwrap();
        assert_eq!(s, status(true, false, true, K64));
        // Down to the base only (excluded): the top's own status, neither data nor zero.
        let s = g
            .block_status_above("top", Some("base"), 0, 1 << 20)
            .unwrap();
        assert_eq!(s, status(false, false, false, K64));
        // Past the base's data no layer holds it: zero, as long as asked.
        let s = g.block_status_above("top", None, 3 * K64, 1 << 20).unwrap();
        assert_eq!(s, status(false, true, false, 1 << 20));
    }

    #[test]
    fn block_status_past_a_short_backing_is_zero() {
        let dir = TempDir::new().unwrap();
        let mut g = Graph::new();
        qcow2(&mut g, &dir, "base", 1 << 20, None);
        qcow2(&mut g, &dir, "top", 4 << 20, Some("base"));
        let s = g.block_status_above("top", None, 2 << 20, 1 << 20).unwrap();
        assert!(s.zero && s.len == 1 << 20, "{s:?}");
    }

    fn file(data: bool, zero: bool, len: u64, eof: bool) -> Option<FileRun> {
        Some(FileRun {
            status: status(data, zero, true, len),
            eof,
        })
    }

    #[test]
    fn refine_by_file_cuts_the_run_to_the_files_and_adds_its_holes() {
        let run = status(true, false, true, 4 * K64);
        assert_eq!(
            refine_by_file(run, file(false, true, K64, false)),
            status(true, true, true, K64)
        );
        assert_eq!(
            refine_by_file(run, file(true, false, 2 * K64, false)),
            status(true, false, true, 2 * K64)
        );
        // Data up to the file's end: cut there, still data.
        assert_eq!(
            refine_by_file(run, file(true, false, K64, true)),
            status(true, false, true, K64)
        );
        // No answer from the file: the driver's run stands.
        assert_eq!(refine_by_file(run, None), run);
    }

    #[test]
    fn refine_by_file_at_the_files_end_reads_zero_for_the_whole_run() {
        let run = status(true, false, true, 4 * K64);
        // Past the end: no run at all.
        assert_eq!(
            refine_by_file(run, file(false, false, 0, true)),
            status(true, true, true, 4 * K64)
        );
        // A hole reaching the end: zero, and not cut to the hole.
        assert_eq!(
            refine_by_file(run, file(false, true, K64, true)),
            status(true, true, true, 4 * K64)
        );
    }

    /// A 4M qcow2 image written whole, then every data cluster but the one at guest `keep`
    /// punched out of the file: 69 refcounted clusters over about 6 occupied, as a
    /// metadata-preallocated image with one cluster written.
    fn preallocated(g: &mut Graph, dir: &TempDir, keep: u64) {
        qcow2(g, dir, "disk0", 4 << 20, None);
        data(g, "disk0", 0, 4 << 20);
        let path = dir.path().join("disk0.qcow2");
        let store = crate::storage::FileStorage::open(&path, false).unwrap();
        // Host layout: header, refcount table and block, L1, L2, then guest clusters in order.
        for c in (0..64).filter(|&c| c != keep / K64) {
            store.discard((5 + c) * K64, K64).unwrap();
        }
    }

    #[test]
    fn block_status_of_a_preallocated_qcow2_reads_file_holes_as_zero() {
        let dir = TempDir::new().unwrap();
        let mut g = Graph::new();
        preallocated(&mut g, &dir, 2 * K64);
        // One qcow2 data run (contiguous host clusters), cut by the file: hole, data, hole.
        let s = g.block_status_above("disk0", None, 0, 4 << 20).unwrap();
        assert_eq!(s, status(true, true, true, 2 * K64));
        let s = g
            .block_status_above("disk0", None, 2 * K64, 4 << 20)
            .unwrap();
        assert_eq!(s, status(true, false, true, K64));
        let s = g
            .block_status_above("disk0", None, 3 * K64, 4 << 20)
            .unwrap();
        assert_eq!(s, status(true, true, true, (4 << 20) - 3 * K64));
        // Without want_zero the file is not asked.
        let s = g.status_above("disk0", None, false, 0, 4 << 20).unwrap();
        assert_eq!(s, status(true, false, true, 4 << 20));
    }

    #[test]
    fn block_status_of_a_written_qcow2_does_not_look_at_the_file() {
        let dir = TempDir::new().unwrap();
        let mut g = Graph::new();
        qcow2(&mut g, &dir, "disk0", 4 << 20, None);
        // A partial write: the rest of the cluster is a hole in the file (ZERO_RANGE), which
        // counts as occupied, so the image is not preallocated.
        data(&mut g, "disk0", 0, 4096);
        let s = g.block_status_above("disk0", None, 0, 4 << 20).unwrap();
        assert_eq!(s, status(true, false, true, K64));
    }

    #[test]
    fn block_status_of_a_raw_file_follows_its_holes() {
        let dir = TempDir::new().unwrap();
        let path = dir.path().join("r.raw");
        std::fs::File::create(&path)
            .unwrap()
            .set_len(4 << 20)
            .unwrap();
        let mut g = Graph::new();
        g.add_file("f0", path.to_str().unwrap(), false).unwrap();
        g.add_format("disk0", "raw", "f0", false).unwrap();
        data(&mut g, "disk0", 2 * K64, K64);
        let s = g.block_status_above("disk0", None, 0, 1 << 20).unwrap();
        assert_eq!(s, status(false, true, true, 2 * K64));
        let s = g
            .block_status_above("disk0", None, 2 * K64, 1 << 20)
            .unwrap();
        assert_eq!(s, status(true, false, true, K64));
        // The file node answers the same.
        let s = g.block_status_above("f0", None, 2 * K64, 1 << 20).unwrap();
        assert_eq!(s, status(true, false, true, K64));
    }
}
