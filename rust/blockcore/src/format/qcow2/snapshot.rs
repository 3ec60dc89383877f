//! Internal snapshots: the snapshot table, creation (L1 copy plus one more reference to every
//! cluster the active L1 reaches) and deletion (references released, COPIED flags recomputed).
//!
//! On-disk table entry (qcow2 spec, "Snapshot table"), each entry 8-byte aligned:
//! `l1_table_offset` u64, `l1_size` u32, `id_str_size` u16, `name_size` u16, `date_sec` u32,
//! `date_nsec` u32, `vm_clock_nsec` u64, `vm_state_size` u32, `extra_data_size` u32, extra data
//! (`vm_state_size_large` u64, `disk_size` u64, `icount` i64, then anything unknown, kept), the id
//! string and the name, neither NUL terminated. QEMU writes 24 bytes of extra data, rewrites the
//! whole table into fresh clusters on every change, then points the header at it
//! (`nb_snapshots` and `snapshots_offset` together) and frees the old table; with no snapshots
//! left `snapshots_offset` is 0.

use super::mapping::{check_entry, ClusterKind, L1E_OFFSET_MASK, OFLAG_COPIED};
use super::units::HostCluster;
use super::Qcow2;
use crate::format::{FormatError, SnapshotEntry, SnapshotParams};

/// Most snapshots an image may have (`QCOW_MAX_SNAPSHOTS`).
pub const MAX_SNAPSHOTS: usize = 65536;
/// Largest snapshot table in bytes (`QCOW_MAX_SNAPSHOTS_SIZE`, 64 MiB).
pub const MAX_SNAPSHOTS_SIZE: u64 = 64 << 20;
/// Most extra data per entry (`QCOW_MAX_SNAPSHOT_EXTRA_DATA`).
pub const MAX_EXTRA_DATA: u32 = 1024;
/// Longest stored name: QEMU copies names into a 256-byte C string.
pub const MAX_NAME_BYTES: usize = 255;
/// Extra data QEMU writes: `vm_state_size_large`, `disk_size`, `icount`.
const EXTRA_LEN: usize = 24;
/// Fixed part of an entry.
const ENTRY_HEAD: usize = 40;

/// One snapshot as it is in the table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    /// What callers see.
    pub entry: SnapshotEntry,
    /// `l1_table_offset`.
    pub l1_offset: u64,
    /// `l1_size`.
    pub l1_size: u32,
    /// `disk_size` from the extra data (virtual size at creation).
    pub disk_size: u64,
    /// Extra data past the fields QEMU knows, kept as read.
    pub unknown_extra: Vec<u8>,
}

fn be16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes(b[at..at + 2].try_into().expect("2 bytes"))
}
fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}
fn be64(b: &[u8], at: usize) -> u64 {
    u64::from_be_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

/// Parses `n` entries from `raw` (the table read from `snapshots_offset`); `disk_size` is the
/// default for entries without that extra field.
pub fn parse_table(raw: &[u8], n: u32, disk_size: u64) -> Result<Vec<Snapshot>, FormatError> {
    let bad = |m: String| FormatError::Corrupt(m);
    let mut out = Vec::with_capacity(n as usize);
    let mut off = 0usize;
    for i in 0..n as usize {
        off = off.next_multiple_of(8);
        let need = |end: usize| {
            if end > raw.len() {
                Err(bad("Snapshot table exceeds the maximum size".into()))
            } else {
                Ok(())
            }
        };
        need(off + ENTRY_HEAD)?;
        let h = &raw[off..off + ENTRY_HEAD];
        let l1_offset = be64(h, 0);
        let l1_size = be32(h, 8);
        let id_len = be16(h, 12) as usize;
        let name_len = be16(h, 14) as usize;
        let date_sec = be32(h, 16);
        let date_nsec = be32(h, 20);
        let vm_clock_nsec = be64(h, 24);
        let vm_state_small = be32(h, 32);
        let extra_len = be32(h, 36);
        if extra_len > MAX_EXTRA_DATA {
            return Err(bad(format!(
                "Too much extra metadata in snapshot table entry {i}"
            )));
        }
        off += ENTRY_HEAD;
        let extra_len = extra_len as usize;
        need(off + extra_len)?;
        let extra = &raw[off..off + extra_len];
        let vm_state_size = if extra_len >= 8 {
            be64(extra, 0)
        } else {
            u64::from(vm_state_small)
        };
        let disk = if extra_len >= 16 {
            be64(extra, 8)
        } else {
            disk_size
        };
        let icount = if extra_len >= 24 {
            Some(be64(extra, 16)).filter(|&v| v != u64::MAX)
        } else {
            None
        };
        let unknown_extra = extra.get(EXTRA_LEN..).unwrap_or_default().to_vec();
        off += extra_len;
        need(off + id_len + name_len)?;
        let id = String::from_utf8_lossy(&raw[off..off + id_len]).into_owned();
        off += id_len;
        let name = raw[off..off + name_len].to_vec();
        off += name_len;
        out.push(Snapshot {
            entry: SnapshotEntry {
                id,
                name,
                vm_state_size,
                date_sec,
                date_nsec,
                vm_clock_nsec,
                icount,
            },
            l1_offset,
            l1_size,
            disk_size: disk,
            unknown_extra,
        });
    }
    Ok(out)
}

/// Serializes the table as QEMU writes it (padding between entries zeroed).
pub fn serialize_table(snaps: &[Snapshot]) -> Vec<u8> {
    let mut b = Vec::new();
    for s in snaps {
        b.resize(b.len().next_multiple_of(8), 0);
        let e = &s.entry;
        b.extend_from_slice(&s.l1_offset.to_be_bytes());
        b.extend_from_slice(&s.l1_size.to_be_bytes());
        b.extend_from_slice(&(e.id.len() as u16).to_be_bytes());
        b.extend_from_slice(&(e.name.len() as u16).to_be_bytes());
        b.extend_from_slice(&e.date_sec.to_be_bytes());
        b.extend_from_slice(&e.date_nsec.to_be_bytes());
        b.extend_from_slice(&e.vm_clock_nsec.to_be_bytes());
        b.extend_from_slice(&(e.vm_state_size as u32).to_be_bytes());
        let extra_len = (EXTRA_LEN + s.unknown_extra.len()) as u32;
        b.extend_from_slice(&extra_len.to_be_bytes());
        b.extend_from_slice(&e.vm_state_size.to_be_bytes());
        b.extend_from_slice(&s.disk_size.to_be_bytes());
        b.extend_from_slice(&e.icount.unwrap_or(u64::MAX).to_be_bytes());
        b.extend_from_slice(&s.unknown_extra);
        b.extend_from_slice(e.id.as_bytes());
        b.extend_from_slice(&e.name);
    }
    b
}

impl Qcow2 {
    /// Reads the snapshot table named by the header.
    pub(super) fn load_snapshots(&mut self) -> Result<(), FormatError> {
        let n = self.header.nb_snapshots;
        if n == 0 {
            self.snapshots = Vec::new();
            self.snapshots_size = 0;
            return Ok(());
        }
        if n as usize > MAX_SNAPSHOTS {
            return Err(FormatError::Corrupt("Too many snapshots".into()));
        }
        let off = self.header.snapshots_offset;
        if !self.geo.is_aligned(off) || off == 0 {
            return Err(FormatError::Corrupt("Invalid snapshot table offset".into()));
        }
        // Read in growing steps: the table's length is only known by parsing it.
        let file_len = self.storage.len()?;
        let avail = file_len.saturating_sub(off).min(MAX_SNAPSHOTS_SIZE);
        let mut raw = vec![0u8; avail as usize];
        self.storage.read_at(&mut raw, off)?;
        let snaps = parse_table(&raw, n, self.header.size)?;
        self.snapshots_size = serialized_len(&raw, &snaps);
        self.snapshots = snaps;
        Ok(())
    }

    /// Runs `f` with freed clusters recorded, then discards in the file those still free, as
    /// QEMU does for clusters freed by snapshot operations (`pass-discard-snapshot`, on by
    /// default) and by guest discards and unmapping write-zeroes (`pass-discard-request`, on
    /// for a node opened with `discard=unmap`, the only nodes such requests reach): a hole is
    /// punched, the file keeps its length, and a failed discard is ignored. A file node that
    /// ignores discards drops them (see `ObservedStorage`).
    pub(super) fn discarding_freed<T>(
        &mut self,
        f: impl FnOnce(&mut Self) -> Result<T, FormatError>,
    ) -> Result<T, FormatError> {
        self.refcounts.discard_log = Some(Vec::new());
        let r = f(self);
        let freed = self.refcounts.discard_log.take().unwrap_or_default();
        let storage = self.storage.clone();
        let cs = self.geo.cluster_size();
        for c in freed {
            if self.refcounts.get(storage.as_ref(), HostCluster(c))? == 0 {
                let _ = storage.discard(c * cs, cs);
            }
        }
        r
    }

    /// Writes the table into fresh clusters, points the header at it, frees the old one.
    fn write_snapshots(&mut self) -> Result<(), FormatError> {
        let storage = self.storage.clone();
        let raw = serialize_table(&self.snapshots);
        if raw.len() as u64 > MAX_SNAPSHOTS_SIZE {
            return Err(FormatError::Corrupt(
                "Snapshot table exceeds the maximum size".into(),
            ));
        }
        let new_off = if raw.is_empty() {
            0
        } else {
            let off = self
                .refcounts
                .alloc_bytes(storage.as_ref(), raw.len() as u64)?;
            storage.flush()?;
            storage.write_at(&raw, off.0)?;
            storage.flush()?;
            off.0
        };
        let old = (self.header.snapshots_offset, self.snapshots_size);
        self.header.nb_snapshots = self.snapshots.len() as u32;
        self.header.snapshots_offset = new_off;
        let mut fields = Vec::with_capacity(12);
        fields.extend_from_slice(&self.header.nb_snapshots.to_be_bytes());
        fields.extend_from_slice(&new_off.to_be_bytes());
        storage.write_at(&fields, 60)?;
        storage.flush()?;
        self.snapshots_size = raw.len() as u64;
        if old.0 != 0 && old.1 != 0 {
            self.discarding_snapshot_freed(|s| {
                s.refcounts.free_bytes(storage.as_ref(), old.0, old.1)
            })?;
        }
        Ok(())
    }

    /// QEMU's `qcow2_update_snapshot_refcount`: adds `delta` (+1, -1 or 0) to every cluster the
    /// L1 table `l1` reaches and recomputes the COPIED flags of the entries on the way (written
    /// through where they change). Returns the L1 table with its new flags.
    fn update_snapshot_refcount(
        &mut self,
        mut l1: Vec<u64>,
        delta: i64,
    ) -> Result<Vec<u64>, FormatError> {
        let geo = self.geo;
        let storage = self.storage.clone();
        let st = storage.as_ref();
        for l1e in l1.iter_mut() {
            let l2 = *l1e & L1E_OFFSET_MASK;
            if l2 == 0 {
                continue;
            }
            // Slice by slice (the whole table unless the cache holds slices), each marked
            // dirty only where its entries change.
            let se = self.refcounts.cache.l2_slice_entries();
            for start in (0..geo.l2_entries() as usize).step_by(se) {
                let table = self.l2_entries_at(l2, start, se)?.clone();
                let mut new_table = table.clone();
                for (i, &e) in table.iter().enumerate().skip(start).take(se) {
                    let kind = check_entry(e, geo, l2, i)?;
                    match kind {
                        ClusterKind::Compressed { .. } => {
                            if delta != 0 {
                                let (off, len) = kind.host_extent(geo).expect("compressed extent");
                                let first = off >> geo.cluster_bits;
                                let last = (off + len - 1) >> geo.cluster_bits;
                                self.refcounts.update_range(
                                    st,
                                    HostCluster(first),
                                    last - first + 1,
                                    delta,
                                )?;
                            }
                        }
                        ClusterKind::Normal { host, .. } | ClusterKind::ZeroAlloc { host, .. } => {
                            let c = geo.host_cluster(host);
                            if delta != 0 {
                                self.refcounts.update_range(st, c, 1, delta)?;
                            }
                            let rc = self.refcounts.get(st, c)?;
                            new_table[i] = if rc == 1 {
                                e | OFLAG_COPIED
                            } else {
                                e & !OFLAG_COPIED
                            };
                        }
                        ClusterKind::ZeroPlain | ClusterKind::Unallocated => {}
                    }
                }
                if new_table != table {
                    *self.l2_entries_at(l2, start, se)? = new_table;
                    self.refcounts.cache.l2.mark_dirty(l2);
                }
            }
            let c = geo.host_cluster(super::units::HostOffset(l2));
            if delta != 0 {
                self.refcounts.update_range(st, c, 1, delta)?;
            }
            let rc = self.refcounts.get(st, c)?;
            *l1e = if rc == 1 {
                *l1e | OFLAG_COPIED
            } else {
                *l1e & !OFLAG_COPIED
            };
        }
        Ok(l1)
    }

    /// Applies new flags to the active L1 table, writing changed entries through.
    fn set_active_l1(&mut self, l1: Vec<u64>) -> Result<(), FormatError> {
        let storage = self.storage.clone();
        for (i, e) in l1.into_iter().enumerate() {
            if self.mapping.l1[i] != e {
                self.mapping.set_l1(storage.as_ref(), i as u64, e)?;
            }
        }
        Ok(())
    }

    /// Creates a snapshot (QEMU's `qcow2_snapshot_create` with a generated id).
    pub(super) fn create_snapshot(
        &mut self,
        params: &SnapshotParams,
    ) -> Result<SnapshotEntry, FormatError> {
        if self.read_only {
            return Err(FormatError::ReadOnly);
        }
        if self.snapshots.len() >= MAX_SNAPSHOTS {
            return Err(FormatError::Io(std::io::Error::from_raw_os_error(27))); // EFBIG
        }
        let storage = self.storage.clone();
        let id = self
            .snapshots
            .iter()
            .filter_map(|s| s.entry.id.parse::<u64>().ok())
            .max()
            .unwrap_or(0)
            + 1;
        let mut name = params.name.clone();
        name.truncate(MAX_NAME_BYTES);
        let entry = SnapshotEntry {
            id: id.to_string(),
            name,
            vm_state_size: 0,
            date_sec: params.date_sec,
            date_nsec: params.date_nsec,
            vm_clock_nsec: params.vm_clock_nsec,
            icount: params.icount,
        };
        let l1 = self.mapping.l1.clone();
        let l1_bytes = l1.len() as u64 * 8;
        let l1_offset = if l1.is_empty() {
            0
        } else {
            let off = self.refcounts.alloc_bytes(storage.as_ref(), l1_bytes)?;
            let raw: Vec<u8> = l1.iter().flat_map(|e| e.to_be_bytes()).collect();
            storage.write_at(&raw, off.0)?;
            off.0
        };
        let flagged = self.update_snapshot_refcount(l1.clone(), 1)?;
        self.set_active_l1(flagged)?;
        // The new references and COPIED flags reach the file before the snapshot is listed
        // (refcount blocks too while lazy refcounts left the image dirty: measured).
        self.write_caches_even_if_dirty()?;
        storage.flush()?;
        self.snapshots.push(Snapshot {
            entry: entry.clone(),
            l1_offset,
            l1_size: l1.len() as u32,
            disk_size: self.header.size,
            unknown_extra: Vec::new(),
        });
        if let Err(e) = self.write_snapshots() {
            self.snapshots.pop();
            return Err(e);
        }
        Ok(entry)
    }

    /// Deletes the first snapshot matching `id` and/or `name` (QEMU's `qcow2_snapshot_delete`).
    pub(super) fn delete_snapshot(
        &mut self,
        id: Option<&str>,
        name: Option<&[u8]>,
    ) -> Result<Option<SnapshotEntry>, FormatError> {
        if id.is_none() && name.is_none() {
            return Ok(None);
        }
        let Some(pos) = self.snapshots.iter().position(|s| {
            id.is_none_or(|i| s.entry.id == i) && name.is_none_or(|n| s.entry.name == n)
        }) else {
            return Ok(None);
        };
        let storage = self.storage.clone();
        // QEMU takes the entry out of its in-memory list before writing the table, and does not
        // put it back when that write fails (EPERM on a read-only image): the snapshot is no
        // longer listed until the image is opened again, while the file still has it.
        let sn = self.snapshots.remove(pos);
        if self.read_only {
            return Err(FormatError::ReadOnly);
        }
        self.write_snapshots()?;
        let mut raw = vec![0u8; sn.l1_size as usize * 8];
        storage.read_at(&mut raw, sn.l1_offset)?;
        let l1: Vec<u64> = raw
            .chunks_exact(8)
            .map(|e| u64::from_be_bytes(e.try_into().expect("8 bytes")))
            .collect();
        self.discarding_snapshot_freed(|s| s.update_snapshot_refcount(l1, -1))?;
        if sn.l1_size > 0 {
            self.discarding_snapshot_freed(|s| {
                s.refcounts
                    .free_bytes(storage.as_ref(), sn.l1_offset, u64::from(sn.l1_size) * 8)
            })?;
        }
        let active = self.mapping.l1.clone();
        let flagged = self.update_snapshot_refcount(active, 0)?;
        self.set_active_l1(flagged)?;
        self.write_caches()?;
        storage.flush()?;
        Ok(Some(sn.entry))
    }
}

/// The table's length in bytes as stored (up to the end of the last entry).
fn serialized_len(raw: &[u8], snaps: &[Snapshot]) -> u64 {
    let mut off = 0usize;
    let mut cursor = 0usize;
    for _ in snaps {
        cursor = cursor.next_multiple_of(8);
        if cursor + ENTRY_HEAD > raw.len() {
            break;
        }
        let h = &raw[cursor..cursor + ENTRY_HEAD];
        let len = ENTRY_HEAD + be32(h, 36) as usize + be16(h, 12) as usize + be16(h, 14) as usize;
        cursor += len;
        off = cursor;
    }
    off as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(id: &str, name: &[u8], unknown: Vec<u8>) -> Snapshot {
        Snapshot {
            entry: SnapshotEntry {
                id: id.into(),
                name: name.to_vec(),
                vm_state_size: 0,
                date_sec: 1_700_000_000,
                date_nsec: 5,
                vm_clock_nsec: 1_234_567_890,
                icount: None,
            },
            l1_offset: 0x50000,
            l1_size: 1,
            disk_size: 1 << 20,
            unknown_extra: unknown,
        }
    }

    #[test]
    fn table_roundtrips_with_padding_and_unknown_extra() {
        let snaps = vec![
            sample("1", b"a", vec![]),
            sample("2", b"longer", vec![9; 8]),
        ];
        let raw = serialize_table(&snaps);
        // First entry: 40 + 24 + 1 + 1 = 66, padded to 72 before the second.
        assert_eq!(raw.len(), 72 + 40 + 32 + 1 + 6);
        assert_eq!(parse_table(&raw, 2, 0).unwrap(), snaps);
        assert_eq!(serialized_len(&raw, &snaps), raw.len() as u64);
    }

    #[test]
    fn icount_minus_one_means_absent() {
        let mut s = sample("1", b"x", vec![]);
        s.entry.icount = Some(7);
        let raw = serialize_table(std::slice::from_ref(&s));
        assert_eq!(parse_table(&raw, 1, 0).unwrap()[0].entry.icount, Some(7));
        s.entry.icount = None;
        let raw = serialize_table(std::slice::from_ref(&s));
        assert_eq!(be64(&raw, 40 + 16), u64::MAX);
    }

    #[test]
    fn too_much_extra_data_is_refused() {
        let mut raw = serialize_table(&[sample("1", b"x", vec![])]);
        raw[36..40].copy_from_slice(&2000u32.to_be_bytes());
        let err = parse_table(&raw, 1, 0).unwrap_err();
        assert!(err.to_string().contains("Too much extra metadata"), "{err}");
    }
}
