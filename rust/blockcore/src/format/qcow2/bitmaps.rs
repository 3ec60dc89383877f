//! Persistent dirty bitmaps: the bitmaps extension, the bitmap directory and bitmap tables.
//!
//! At open every directory entry becomes a [`LoadedBitmap`] (in directory order; QEMU pushes
//! each on the front of the node's list, so the graph should do the same to list them as QEMU
//! does, newest first). An entry with `in_use` set is inconsistent: loaded empty and disabled.
//! A read-write open sets `in_use` on the others in place at once (autoclear bit cleared, the
//! directory rewritten, the bit set again), as QEMU does.
//!
//! Storing follows QEMU's `qcow2_store_persistent_dirty_bitmaps`: the directory in the file is
//! the starting point; bitmaps given that are persistent, consistent, writable and not
//! `skip_store` get fresh data clusters and tables and replace their entry (or are appended);
//! every other entry stays as it is (an inconsistent bitmap keeps its `in_use` entry, as real
//! QEMU leaves it after a clean quit). Then a new directory is written, the header points at
//! it, and the old directory and replaced tables are freed.

use super::header::{BitmapsExt, AUTOCLEAR_BITMAPS, MAX_BITMAPS, MAX_BITMAP_DIRECTORY_SIZE};
use super::units::HostCluster;
use super::Qcow2;
use crate::bitmap::{BitmapState, Bits, DirtyBitmap};
use crate::format::{BitmapStoreError, FormatError, LoadedBitmap};
use crate::units::Granularity;

/// Directory entry flag bit 0: the bitmap is in use (being changed) and may be inconsistent.
pub const BME_FLAG_IN_USE: u32 = 1 << 0;
/// Directory entry flag bit 1: the bitmap tracks writes (enabled).
pub const BME_FLAG_AUTO: u32 = 1 << 1;
/// Directory entry flag bit 2: extra data may be ignored by readers that do not know it.
pub const BME_FLAG_EXTRA_DATA_COMPATIBLE: u32 = 1 << 2;
/// `type` of a dirty tracking bitmap, the only type defined.
pub const BT_DIRTY_TRACKING_BITMAP: u8 = 1;
/// Longest bitmap name (`BME_MAX_NAME_SIZE`).
pub const BME_MAX_NAME_SIZE: usize = 1023;
/// Largest bitmap table in entries (`BME_MAX_TABLE_SIZE`, 2^27).
pub const BME_MAX_TABLE_SIZE: u64 = 0x800_0000;
/// Largest bitmap data in bytes (`BME_MAX_PHYS_SIZE`, 512 MiB).
pub const BME_MAX_PHYS_SIZE: u64 = 0x2000_0000;
/// Bitmap table entry bits that must be zero (1..=8 and 56..=63).
pub const BME_TABLE_ENTRY_RESERVED_MASK: u64 = 0xff00_0000_0000_01fe;
/// Bitmap table entry bits 9..=55: host offset of a data cluster.
pub const BME_TABLE_ENTRY_OFFSET_MASK: u64 = 0x00ff_ffff_ffff_fe00;
/// Bitmap table entry bit 0 with offset 0: the cluster's bits are all ones.
pub const BME_TABLE_ENTRY_FLAG_ALL_ONES: u64 = 1;

/// One entry of the bitmap directory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DirEntry {
    /// `bitmap_table_offset`.
    pub bitmap_table_offset: u64,
    /// `bitmap_table_size` in entries.
    pub bitmap_table_size: u32,
    /// `flags`: `in_use`, `auto`, `extra_data_compatible`.
    pub flags: u32,
    /// `type` (1 = dirty tracking).
    pub kind: u8,
    /// `granularity_bits`.
    pub granularity_bits: u8,
    /// The name (`name_size` bytes, not NUL terminated).
    pub name: String,
    /// `extra_data` (must be empty: QEMU refuses extra data).
    pub extra_data: Vec<u8>,
}

/// Size of a directory entry with a name of `name_len` bytes (QEMU's `calc_dir_entry_size`).
pub fn dir_entry_size(name_len: usize, extra: usize) -> u64 {
    (24 + name_len + extra).div_ceil(8) as u64 * 8
}

/// Parses `nb` directory entries.
pub fn parse_directory(raw: &[u8], nb: u32) -> Result<Vec<DirEntry>, FormatError> {
    let broken = || FormatError::Corrupt("Broken bitmap directory".into());
    let mut out = Vec::with_capacity(nb as usize);
    let mut off = 0usize;
    for _ in 0..nb {
        if off + 24 > raw.len() {
            return Err(broken());
        }
        let e = &raw[off..];
        let name_size = u16::from_be_bytes([e[18], e[19]]) as usize;
        let extra = u32::from_be_bytes(e[20..24].try_into().expect("4 bytes")) as usize;
        let size = dir_entry_size(name_size, extra) as usize;
        if off + size > raw.len() {
            return Err(broken());
        }
        if extra != 0 {
            return Err(FormatError::Unsupported(
                "Bitmap extra data is not supported".into(),
            ));
        }
        out.push(DirEntry {
            bitmap_table_offset: u64::from_be_bytes(e[0..8].try_into().expect("8 bytes")),
            bitmap_table_size: u32::from_be_bytes(e[8..12].try_into().expect("4 bytes")),
            flags: u32::from_be_bytes(e[12..16].try_into().expect("4 bytes")),
            kind: e[16],
            granularity_bits: e[17],
            name: String::from_utf8_lossy(&e[24..24 + name_size]).into_owned(),
            extra_data: Vec::new(),
        });
        off += size;
    }
    Ok(out)
}

/// Serializes directory entries.
pub fn serialize_directory(entries: &[DirEntry]) -> Vec<u8> {
    let mut out = Vec::new();
    for e in entries {
        let start = out.len();
        out.extend_from_slice(&e.bitmap_table_offset.to_be_bytes());
        out.extend_from_slice(&e.bitmap_table_size.to_be_bytes());
        out.extend_from_slice(&e.flags.to_be_bytes());
        out.push(e.kind);
        out.push(e.granularity_bits);
        out.extend_from_slice(&(e.name.len() as u16).to_be_bytes());
        out.extend_from_slice(&(e.extra_data.len() as u32).to_be_bytes());
        out.extend_from_slice(&e.extra_data);
        out.extend_from_slice(e.name.as_bytes());
        out.resize(
            start + dir_entry_size(e.name.len(), e.extra_data.len()) as usize,
            0,
        );
    }
    out
}

impl Qcow2 {
    /// Serialized bitmap bytes for a disk of the image's size at `granularity`.
    fn bitmap_bytes(&self, granularity: u64) -> u64 {
        self.header.size.div_ceil(granularity).div_ceil(8)
    }

    /// QEMU's `check_constraints_on_bitmap`.
    fn check_constraints(&self, name: &str, granularity: Granularity) -> Result<(), String> {
        if granularity.bits() > 31 {
            return Err("Granularity exceeds maximum (2147483648 bytes)".into());
        }
        if granularity.bits() < 9 {
            return Err("Granularity is under minimum (512 bytes)".into());
        }
        let bytes = self.bitmap_bytes(granularity.bytes());
        if bytes > BME_MAX_PHYS_SIZE || bytes > BME_MAX_TABLE_SIZE * self.geo.cluster_size() {
            return Err(
                "Too much space will be occupied by the bitmap. Use larger granularity".into(),
            );
        }
        if name.len() > BME_MAX_NAME_SIZE {
            return Err(format!(
                "Name length exceeds maximum ({BME_MAX_NAME_SIZE} characters)"
            ));
        }
        Ok(())
    }

    /// QEMU's `qcow2_co_can_store_new_dirty_bitmap`, its checks in its order.
    pub(super) fn check_can_store(
        &self,
        name: &str,
        granularity: Granularity,
    ) -> Result<(), BitmapStoreError> {
        if self.header.version < 3 {
            return Err(BitmapStoreError::Refused(
                "Cannot store dirty bitmaps in qcow2 v2 files".into(),
            ));
        }
        self.check_constraints(name, granularity)
            .map_err(BitmapStoreError::Refused)?;
        let Some(ext) = self.header.bitmaps else {
            return Ok(());
        };
        if ext.nb_bitmaps >= MAX_BITMAPS {
            return Err(BitmapStoreError::Refused(
                "Maximum number of persistent bitmaps is already reached".into(),
            ));
        }
        if ext.bitmap_directory_size + dir_entry_size(name.len(), 0) > MAX_BITMAP_DIRECTORY_SIZE {
            return Err(BitmapStoreError::Refused(
                "Not enough space in the bitmap directory".into(),
            ));
        }
        Ok(())
    }

    /// Reads the directory and every bitmap; marks them `in_use` when opened read-write.
    pub(super) fn load_bitmaps(&mut self) -> Result<(), FormatError> {
        let Some(ext) = self.header.bitmaps else {
            return Ok(());
        };
        let mut raw = vec![0u8; ext.bitmap_directory_size as usize];
        self.storage
            .read_at(&mut raw, ext.bitmap_directory_offset)?;
        let mut dir = parse_directory(&raw, ext.nb_bitmaps)?;
        let mut needs_update = false;
        for e in &mut dir {
            let bitmap = self.load_one(e)?;
            if e.flags & BME_FLAG_IN_USE == 0 {
                e.flags |= BME_FLAG_IN_USE;
                needs_update = true;
            }
            self.loaded.push(LoadedBitmap { bitmap });
        }
        if needs_update && !self.read_only {
            self.header.autoclear_features &= !AUTOCLEAR_BITMAPS;
            self.write_header()?;
            self.storage.flush()?;
            let raw = serialize_directory(&dir);
            self.storage.write_at(&raw, ext.bitmap_directory_offset)?;
            self.storage.flush()?;
            self.header.autoclear_features |= AUTOCLEAR_BITMAPS;
            self.write_header()?;
            self.storage.flush()?;
        }
        if self.read_only {
            // The file is unchanged; remember it as it is.
            for (e, l) in dir.iter_mut().zip(&self.loaded) {
                if !l.bitmap.state.inconsistent {
                    e.flags &= !BME_FLAG_IN_USE;
                }
            }
        }
        self.directory = dir;
        Ok(())
    }

    fn load_one(&mut self, e: &DirEntry) -> Result<DirtyBitmap, FormatError> {
        let bad = |why: &str| {
            FormatError::Corrupt(format!(
                "Bitmap '{}' doesn't satisfy the constraints: {why}",
                e.name
            ))
        };
        if e.kind != BT_DIRTY_TRACKING_BITMAP {
            return Err(bad("unknown type"));
        }
        let granularity = Granularity::from_bits(u32::from(e.granularity_bits))
            .ok_or_else(|| bad("granularity out of range"))?;
        if e.name.is_empty() || e.name.len() > BME_MAX_NAME_SIZE {
            return Err(bad("bad name length"));
        }
        if e.flags & !(BME_FLAG_IN_USE | BME_FLAG_AUTO | BME_FLAG_EXTRA_DATA_COMPATIBLE) != 0 {
            return Err(bad("reserved flags set"));
        }
        let in_use = e.flags & BME_FLAG_IN_USE != 0;
        let mut bits = Bits::new(self.header.size, granularity);
        if !in_use {
            self.read_bitmap_data(e, &mut bits)?;
        }
        Ok(DirtyBitmap {
            name: Some(e.name.clone()),
            bits,
            state: BitmapState {
                enabled: e.flags & BME_FLAG_AUTO != 0 && !in_use,
                busy: false,
                readonly: self.read_only,
                inconsistent: in_use,
                persistent: true,
                skip_store: false,
                frozen: false,
            },
            owner: None,
        })
    }

    fn read_table(&self, offset: u64, size: u32) -> Result<Vec<u64>, FormatError> {
        let mut raw = vec![0u8; size as usize * 8];
        self.storage.read_at(&mut raw, offset)?;
        Ok(raw
            .chunks_exact(8)
            .map(|b| u64::from_be_bytes(b.try_into().expect("8 bytes")))
            .collect())
    }

    fn read_bitmap_data(&mut self, e: &DirEntry, bits: &mut Bits) -> Result<(), FormatError> {
        let cs = self.geo.cluster_size();
        let total = bits.serialized_len();
        let needed = total.div_ceil(cs);
        if e.bitmap_table_offset == 0
            || !self.geo.is_aligned(e.bitmap_table_offset)
            || u64::from(e.bitmap_table_size) < needed
            || u64::from(e.bitmap_table_size) > BME_MAX_TABLE_SIZE
        {
            return Err(FormatError::Corrupt(format!(
                "Bitmap '{}' doesn't satisfy the constraints",
                e.name
            )));
        }
        let table = self.read_table(e.bitmap_table_offset, e.bitmap_table_size)?;
        let mut buf = vec![0u8; cs as usize];
        for (i, &t) in table.iter().enumerate().take(needed as usize) {
            let start = i as u64 * cs;
            let len = cs.min(total - start);
            let off = t & BME_TABLE_ENTRY_OFFSET_MASK;
            if t & BME_TABLE_ENTRY_RESERVED_MASK != 0
                || (off != 0
                    && (t & BME_TABLE_ENTRY_FLAG_ALL_ONES != 0 || !self.geo.is_aligned(off)))
            {
                return Err(FormatError::Corrupt(format!(
                    "Bitmap '{}': invalid bitmap table entry {t:#x}",
                    e.name
                )));
            }
            if off == 0 {
                if t & BME_TABLE_ENTRY_FLAG_ALL_ONES != 0 {
                    bits.set_serialized_range(start, len);
                }
                continue;
            }
            self.storage.read_at(&mut buf[..len as usize], off)?;
            bits.deserialize_or(start, &buf[..len as usize]);
        }
        Ok(())
    }

    /// Frees a bitmap's data clusters and table.
    fn free_bitmap_clusters(
        &mut self,
        table_offset: u64,
        table_size: u32,
    ) -> Result<(), FormatError> {
        if table_offset == 0 || table_size == 0 {
            return Ok(());
        }
        let table = self.read_table(table_offset, table_size)?;
        let cs = self.geo.cluster_size();
        for t in table {
            let off = t & BME_TABLE_ENTRY_OFFSET_MASK;
            if off != 0 {
                self.refcounts.free_bytes(self.storage.as_ref(), off, cs)?;
            }
        }
        self.refcounts.free_bytes(
            self.storage.as_ref(),
            table_offset,
            u64::from(table_size) * 8,
        )
    }

    /// Writes a bitmap's data clusters (all-zero clusters stay unallocated) and table; returns
    /// the table's offset and size.
    fn write_bitmap(&mut self, bits: &Bits) -> Result<(u64, u32), FormatError> {
        let cs = self.geo.cluster_size();
        let total = bits.serialized_len();
        let entries = total.div_ceil(cs);
        let storage = self.storage.clone();
        let mut table = Vec::with_capacity(entries as usize);
        let mut buf = vec![0u8; cs as usize];
        for i in 0..entries {
            let start = i * cs;
            buf.fill(0);
            let len = cs.min(total - start) as usize;
            bits.serialize_into(start, &mut buf[..len]);
            if buf.iter().all(|&b| b == 0) {
                table.push(0u64);
                continue;
            }
            let c: HostCluster = self.refcounts.alloc(storage.as_ref(), 1)?;
            let off = self.geo.host_offset(c).0;
            storage.write_at(&buf, off)?;
            table.push(off);
        }
        let raw: Vec<u8> = table.iter().flat_map(|e| e.to_be_bytes()).collect();
        let table_offset = self
            .refcounts
            .alloc_bytes(storage.as_ref(), raw.len() as u64)?
            .0;
        storage.write_at(&raw, table_offset)?;
        Ok((table_offset, entries as u32))
    }

    /// Writes `dir` as the new directory, points the header at it and frees the old one.
    fn replace_directory(&mut self, dir: Vec<DirEntry>) -> Result<(), FormatError> {
        let storage = self.storage.clone();
        let old = self.header.bitmaps;
        if dir.is_empty() {
            self.header.bitmaps = None;
            self.header.autoclear_features &= !AUTOCLEAR_BITMAPS;
        } else {
            let raw = serialize_directory(&dir);
            let off = self
                .refcounts
                .alloc_bytes(storage.as_ref(), raw.len() as u64)?
                .0;
            // As measured on QEMU: the refcount blocks reach the file before the new
            // directory does (the clusters freed afterwards stay dirty in the cache).
            self.refcounts.cache.flush_refblocks(storage.as_ref())?;
            storage.write_at(&raw, off)?;
            self.header.bitmaps = Some(BitmapsExt {
                nb_bitmaps: dir.len() as u32,
                bitmap_directory_size: raw.len() as u64,
                bitmap_directory_offset: off,
            });
            self.header.autoclear_features |= AUTOCLEAR_BITMAPS;
        }
        storage.flush()?;
        self.write_header()?;
        storage.flush()?;
        if let Some(old) = old {
            self.refcounts.free_bytes(
                storage.as_ref(),
                old.bitmap_directory_offset,
                old.bitmap_directory_size,
            )?;
        }
        self.directory = dir;
        Ok(())
    }

    /// `store_bitmaps`: see the module documentation.
    pub(super) fn store(&mut self, bitmaps: &[&DirtyBitmap]) -> Result<(), FormatError> {
        let to_write: Vec<&DirtyBitmap> = bitmaps
            .iter()
            .copied()
            .filter(|b| {
                b.name.is_some()
                    && b.state.persistent
                    && !b.state.skip_store
                    && !b.state.inconsistent
                    && !b.state.readonly
            })
            .collect();
        if to_write.is_empty() {
            return Ok(());
        }
        if self.read_only {
            return Err(FormatError::ReadOnly);
        }
        if self.header.version < 3 {
            return Err(FormatError::Unsupported(
                "Cannot store dirty bitmaps in qcow2 v2 files".into(),
            ));
        }
        let mut dir = self.directory.clone();
        let mut dir_size: u64 = serialize_directory(&dir).len() as u64;
        let mut dropped = Vec::new();
        for b in &to_write {
            let name = b.name.as_deref().expect("filtered");
            let g = b.bits.granularity();
            self.check_constraints(name, g).map_err(|why| {
                FormatError::Unsupported(format!(
                    "Bitmap '{name}' doesn't satisfy the constraints: {why}"
                ))
            })?;
            let pos = match dir.iter().position(|e| e.name == name) {
                Some(p) => {
                    dropped.push((dir[p].bitmap_table_offset, dir[p].bitmap_table_size));
                    p
                }
                None => {
                    if dir.len() as u32 >= MAX_BITMAPS {
                        return Err(FormatError::Unsupported(
                            "Too many persistent bitmaps".into(),
                        ));
                    }
                    dir_size += dir_entry_size(name.len(), 0);
                    if dir_size > MAX_BITMAP_DIRECTORY_SIZE {
                        return Err(FormatError::Unsupported(
                            "Bitmap directory is too large".into(),
                        ));
                    }
                    dir.push(DirEntry {
                        bitmap_table_offset: 0,
                        bitmap_table_size: 0,
                        flags: 0,
                        kind: BT_DIRTY_TRACKING_BITMAP,
                        granularity_bits: 0,
                        name: name.to_string(),
                        extra_data: Vec::new(),
                    });
                    dir.len() - 1
                }
            };
            let (table_offset, table_size) = self.write_bitmap(&b.bits)?;
            let e = &mut dir[pos];
            e.bitmap_table_offset = table_offset;
            e.bitmap_table_size = table_size;
            e.flags = if b.state.enabled { BME_FLAG_AUTO } else { 0 };
            e.granularity_bits = g.bits() as u8;
            e.kind = BT_DIRTY_TRACKING_BITMAP;
        }
        self.replace_directory(dir)?;
        for (off, size) in dropped {
            self.free_bitmap_clusters(off, size)?;
        }
        Ok(())
    }

    /// `remove_stored_bitmap`: rewrites the directory without `name`, then frees its clusters.
    pub(super) fn remove_bitmap(&mut self, name: &str) -> Result<(), FormatError> {
        let Some(pos) = self.directory.iter().position(|e| e.name == name) else {
            return Ok(());
        };
        if self.read_only {
            return Err(FormatError::ReadOnly);
        }
        let mut dir = self.directory.clone();
        let gone = dir.remove(pos);
        self.replace_directory(dir)?;
        self.free_bitmap_clusters(gone.bitmap_table_offset, gone.bitmap_table_size)
    }

    /// The bitmap directory as it is in the file.
    pub fn bitmap_directory(&self) -> &[DirEntry] {
        &self.directory
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn directory_roundtrip_pads_entries_to_8() {
        let dir = vec![
            DirEntry {
                bitmap_table_offset: 0xc0000,
                bitmap_table_size: 1,
                flags: BME_FLAG_AUTO,
                kind: 1,
                granularity_bits: 16,
                name: "b1".into(),
                extra_data: Vec::new(),
            },
            DirEntry {
                bitmap_table_offset: 0xd0000,
                bitmap_table_size: 1,
                flags: 0,
                kind: 1,
                granularity_bits: 9,
                name: "b2".into(),
                extra_data: Vec::new(),
            },
        ];
        let raw = serialize_directory(&dir);
        assert_eq!(raw.len(), 64);
        assert_eq!(
            &raw[..16],
            &[0, 0, 0, 0, 0, 0x0c, 0, 0, 0, 0, 0, 1, 0, 0, 0, 2]
        );
        assert_eq!(&raw[16..26], &[1, 0x10, 0, 2, 0, 0, 0, 0, b'b', b'1']);
        assert_eq!(parse_directory(&raw, 2).unwrap(), dir);
    }

    #[test]
    fn dir_entry_size_rounds_up() {
        assert_eq!(dir_entry_size(2, 0), 32);
        assert_eq!(dir_entry_size(8, 0), 32);
        assert_eq!(dir_entry_size(9, 0), 40);
    }
}
