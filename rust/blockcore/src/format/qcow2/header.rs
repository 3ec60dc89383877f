//! The qcow2 header (first cluster): fixed fields, header extensions and the backing file name.
//!
//! Field names are the qcow2 specification's (`docs/interop/qcow2.txt`). Parsing validates what
//! QEMU validates at open and fails with QEMU's words; serializing lays the cluster out in QEMU's
//! order (fields, backing format, feature table, bitmaps, unknown extensions, end marker, backing
//! file name) so that an image we rewrite looks like one QEMU rewrote.

use super::units::Geometry;
use crate::format::FormatError;

/// `QFI\xfb`.
pub const QCOW_MAGIC: u32 = 0x5146_49fb;
/// Length of the version 2 header (the fields up to `snapshots_offset`).
pub const V2_HEADER_LEN: usize = 72;
/// The version 3 header without `compression_type` (what QEMU before 5.1 wrote).
pub const V3_MIN_HEADER_LEN: usize = 104;
/// The version 3 header as QEMU writes it: 104 bytes, `compression_type`, 7 bytes of padding.
pub const V3_HEADER_LEN: usize = 112;

/// Header extension type: end of the header extension area.
pub const EXT_END: u32 = 0;
/// Header extension type: backing file format name.
pub const EXT_BACKING_FORMAT: u32 = 0xe279_2aca;
/// Header extension type: feature name table.
pub const EXT_FEATURE_TABLE: u32 = 0x6803_f857;
/// Header extension type: bitmaps extension.
pub const EXT_BITMAPS: u32 = 0x2385_2875;
/// Header extension type: full disk encryption header pointer.
pub const EXT_CRYPTO_HEADER: u32 = 0x0537_be77;
/// Header extension type: external data file name.
pub const EXT_DATA_FILE: u32 = 0x4441_5441;

/// Incompatible feature bit 0: dirty bit (refcounts may be inconsistent; lazy refcounts).
pub const INCOMPAT_DIRTY: u64 = 1 << 0;
/// Incompatible feature bit 1: corrupt bit.
pub const INCOMPAT_CORRUPT: u64 = 1 << 1;
/// Incompatible feature bit 2: external data file.
pub const INCOMPAT_DATA_FILE: u64 = 1 << 2;
/// Incompatible feature bit 3: compression type field.
pub const INCOMPAT_COMPRESSION: u64 = 1 << 3;
/// Incompatible feature bit 4: extended L2 entries.
pub const INCOMPAT_EXTL2: u64 = 1 << 4;
/// Every incompatible feature QEMU knows.
pub const INCOMPAT_KNOWN: u64 = 0x1f;
/// Autoclear feature bit 0: the bitmaps extension is consistent.
pub const AUTOCLEAR_BITMAPS: u64 = 1 << 0;
/// Autoclear feature bit 1: raw external data.
pub const AUTOCLEAR_DATA_FILE_RAW: u64 = 1 << 1;
/// Every autoclear feature QEMU knows; it clears the others when it opens an image read-write.
pub const AUTOCLEAR_KNOWN: u64 = AUTOCLEAR_BITMAPS | AUTOCLEAR_DATA_FILE_RAW;

/// Maximum backing file name length (`backing_file_size` must not exceed 1023).
pub const MAX_BACKING_FILE_NAME: usize = 1023;
/// Maximum number of bitmaps QEMU supports (`QCOW2_MAX_BITMAPS`).
pub const MAX_BITMAPS: u32 = 65535;
/// Maximum bitmap directory size QEMU supports (`QCOW2_MAX_BITMAP_DIRECTORY_SIZE`, 1024 × 65535).
pub const MAX_BITMAP_DIRECTORY_SIZE: u64 = 1024 * MAX_BITMAPS as u64;
/// Largest L1 table QEMU accepts, in bytes (`QCOW_MAX_L1_SIZE`, 32 MiB).
pub const MAX_L1_BYTES: u64 = 32 << 20;
/// Largest refcount table QEMU accepts, in bytes (`QCOW_MAX_REFTABLE_SIZE`, 8 MiB).
pub const MAX_REFTABLE_BYTES: u64 = 8 << 20;

/// One entry of the feature name table extension.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FeatureName {
    /// 0 = incompatible, 1 = compatible, 2 = autoclear.
    pub kind: u8,
    /// Bit number within the feature field.
    pub bit: u8,
    /// Feature name (at most 46 bytes, NUL padded on disk).
    pub name: String,
}

/// The feature name table QEMU writes (v3 images with clusters larger than 4 KiB).
pub fn qemu_feature_table() -> Vec<FeatureName> {
    [
        (0, 0, "dirty bit"),
        (0, 1, "corrupt bit"),
        (0, 2, "external data file"),
        (0, 3, "compression type"),
        (0, 4, "extended L2 entries"),
        (1, 0, "lazy refcounts"),
        (2, 0, "bitmaps"),
        (2, 1, "raw external data"),
    ]
    .into_iter()
    .map(|(kind, bit, name)| FeatureName {
        kind,
        bit,
        name: name.into(),
    })
    .collect()
}

/// The bitmaps extension: where the bitmap directory is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct BitmapsExt {
    /// `nb_bitmaps`: number of bitmaps in the directory (1..=65535).
    pub nb_bitmaps: u32,
    /// `bitmap_directory_size`: size of the directory in bytes.
    pub bitmap_directory_size: u64,
    /// `bitmap_directory_offset`: cluster-aligned host offset of the directory.
    pub bitmap_directory_offset: u64,
}

/// The parsed header cluster.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Header {
    /// `version`: 2 (compat 0.10) or 3 (compat 1.1).
    pub version: u32,
    /// `backing_file_offset`: where the backing file name is, 0 for none.
    pub backing_file_offset: u64,
    /// `backing_file_size`: length of the backing file name (not NUL terminated).
    pub backing_file_size: u32,
    /// `cluster_bits`: log2 of the cluster size.
    pub cluster_bits: u32,
    /// `size`: virtual disk size in bytes.
    pub size: u64,
    /// `crypt_method`: 0 none, 1 AES, 2 LUKS.
    pub crypt_method: u32,
    /// `l1_size`: number of entries in the active L1 table.
    pub l1_size: u32,
    /// `l1_table_offset`: host offset of the active L1 table.
    pub l1_table_offset: u64,
    /// `refcount_table_offset`: host offset of the refcount table.
    pub refcount_table_offset: u64,
    /// `refcount_table_clusters`: clusters occupied by the refcount table.
    pub refcount_table_clusters: u32,
    /// `nb_snapshots`: number of internal snapshots.
    pub nb_snapshots: u32,
    /// `snapshots_offset`: host offset of the snapshot table.
    pub snapshots_offset: u64,
    /// `incompatible_features` (v3; 0 for v2).
    pub incompatible_features: u64,
    /// `compatible_features` (v3; 0 for v2).
    pub compatible_features: u64,
    /// `autoclear_features` (v3; 0 for v2).
    pub autoclear_features: u64,
    /// `refcount_order`: log2 of the refcount width in bits (always 4 for v2).
    pub refcount_order: u32,
    /// `header_length` (v3; 72 for v2).
    pub header_length: u32,
    /// `compression_type`: 0 zlib, 1 zstd.
    pub compression_type: u8,
    /// Header bytes past the fields QEMU knows (kept as they are).
    pub unknown_header_fields: Vec<u8>,
    /// The backing file name, if any.
    pub backing_file: Option<String>,
    /// The backing file format (backing format extension), if any.
    pub backing_format: Option<String>,
    /// The feature name table found in the image.
    pub feature_table: Vec<FeatureName>,
    /// The bitmaps extension, when present and trusted (autoclear bit 0 set).
    pub bitmaps: Option<BitmapsExt>,
    /// A bitmaps extension was present but autoclear bit 0 was clear, so it was ignored.
    pub bitmaps_ignored: bool,
    /// The external data file name extension, if any.
    pub data_file: Option<String>,
    /// Header extensions of unknown type, in file order, kept verbatim.
    pub unknown_extensions: Vec<(u32, Vec<u8>)>,
}

fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}

fn be64(b: &[u8], at: usize) -> u64 {
    u64::from_be_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

fn corrupt(msg: impl Into<String>) -> FormatError {
    FormatError::Corrupt(msg.into())
}

impl Header {
    /// The geometry (cluster size, refcount width) of this image.
    pub fn geometry(&self) -> Geometry {
        Geometry {
            cluster_bits: self.cluster_bits,
            refcount_order: self.refcount_order,
        }
    }

    /// Bytes per cluster.
    pub fn cluster_size(&self) -> u64 {
        1 << self.cluster_bits
    }

    /// Parses the first cluster of an image; `first` must hold at least the whole header cluster
    /// when `cluster_bits` allows (callers read 2 MiB or the file, whichever is shorter).
    pub fn parse(first: &[u8]) -> Result<Self, FormatError> {
        if first.len() < V2_HEADER_LEN || be32(first, 0) != QCOW_MAGIC {
            return Err(corrupt("Image is not in qcow2 format"));
        }
        let version = be32(first, 4);
        if !(2..=3).contains(&version) {
            return Err(FormatError::Unsupported(format!(
                "Unsupported qcow2 version {version}"
            )));
        }
        let cluster_bits = be32(first, 20);
        if !(9..=21).contains(&cluster_bits) {
            return Err(corrupt(format!(
                "Unsupported cluster size: 2^{cluster_bits}"
            )));
        }
        let cluster_size = 1u64 << cluster_bits;
        let mut h = Header {
            version,
            backing_file_offset: be64(first, 8),
            backing_file_size: be32(first, 16),
            cluster_bits,
            size: be64(first, 24),
            crypt_method: be32(first, 32),
            l1_size: be32(first, 36),
            l1_table_offset: be64(first, 40),
            refcount_table_offset: be64(first, 48),
            refcount_table_clusters: be32(first, 56),
            nb_snapshots: be32(first, 60),
            snapshots_offset: be64(first, 64),
            incompatible_features: 0,
            compatible_features: 0,
            autoclear_features: 0,
            refcount_order: 4,
            header_length: V2_HEADER_LEN as u32,
            compression_type: 0,
            unknown_header_fields: Vec::new(),
            backing_file: None,
            backing_format: None,
            feature_table: Vec::new(),
            bitmaps: None,
            bitmaps_ignored: false,
            data_file: None,
            unknown_extensions: Vec::new(),
        };
        if first.len() < cluster_size as usize {
            return Err(corrupt("Image is not in qcow2 format"));
        }
        if version == 3 {
            h.incompatible_features = be64(first, 72);
            h.compatible_features = be64(first, 80);
            h.autoclear_features = be64(first, 88);
            h.refcount_order = be32(first, 96);
            h.header_length = be32(first, 100);
            if (h.header_length as usize) < V3_MIN_HEADER_LEN {
                return Err(corrupt("qcow2 header too short"));
            }
            if u64::from(h.header_length) > cluster_size {
                return Err(corrupt("qcow2 header exceeds cluster size"));
            }
            if h.header_length as usize > V3_MIN_HEADER_LEN {
                h.compression_type = first[104];
            }
            if h.header_length as usize > V3_HEADER_LEN {
                h.unknown_header_fields = first[V3_HEADER_LEN..h.header_length as usize].to_vec();
            }
        }
        if h.backing_file_offset > cluster_size {
            return Err(corrupt("Invalid backing file offset"));
        }
        let ext_end = if h.backing_file_offset != 0 {
            h.backing_file_offset
        } else {
            cluster_size
        };
        h.read_extensions(first, u64::from(h.header_length), ext_end)?;
        h.check_features()?;
        if h.refcount_order > 6 {
            return Err(corrupt(
                "Reference count entry width too large; may not exceed 64 bits",
            ));
        }
        if h.crypt_method > 2 {
            return Err(corrupt(format!(
                "Unsupported encryption method: {}",
                h.crypt_method
            )));
        }
        if h.crypt_method != 0 {
            return Err(FormatError::Unsupported(
                "encrypted qcow2 images are not supported".into(),
            ));
        }
        if h.compression_type > 1 {
            return Err(corrupt(format!(
                "qcow2: unknown compression type: {}",
                h.compression_type
            )));
        }
        if h.backing_file_offset != 0 {
            let len = h.backing_file_size as usize;
            if len > MAX_BACKING_FILE_NAME || h.backing_file_offset as usize + len > first.len() {
                return Err(corrupt("Backing file name too long"));
            }
            let start = h.backing_file_offset as usize;
            h.backing_file = Some(String::from_utf8_lossy(&first[start..start + len]).into_owned());
        }
        Ok(h)
    }

    fn read_extensions(&mut self, b: &[u8], start: u64, end: u64) -> Result<(), FormatError> {
        let mut off = start as usize;
        let end = end as usize;
        while off + 8 <= end {
            let magic = be32(b, off);
            let len = be32(b, off + 4) as usize;
            off += 8;
            if len > end - off {
                return Err(corrupt("Header extension too large"));
            }
            let data = &b[off..off + len];
            match magic {
                EXT_END => return Ok(()),
                EXT_BACKING_FORMAT => {
                    if len >= 16 {
                        return Err(corrupt(format!(
                            "ERROR: ext_backing_format: len={len} too large (>=16)"
                        )));
                    }
                    self.backing_format = Some(String::from_utf8_lossy(data).into_owned());
                }
                EXT_FEATURE_TABLE => {
                    self.feature_table = data
                        .chunks_exact(48)
                        .map(|e| FeatureName {
                            kind: e[0],
                            bit: e[1],
                            name: String::from_utf8_lossy(&e[2..])
                                .trim_end_matches('\0')
                                .to_string(),
                        })
                        .collect();
                }
                EXT_BITMAPS => self.read_bitmaps_ext(data)?,
                EXT_DATA_FILE => {
                    self.data_file = Some(String::from_utf8_lossy(data).into_owned());
                }
                _ => self.unknown_extensions.push((magic, data.to_vec())),
            }
            off += len.div_ceil(8) * 8;
        }
        Ok(())
    }

    fn read_bitmaps_ext(&mut self, data: &[u8]) -> Result<(), FormatError> {
        if data.len() != 24 {
            return Err(corrupt("bitmaps_ext: Invalid extension length"));
        }
        if self.autoclear_features & AUTOCLEAR_BITMAPS == 0 {
            // QEMU warns "a program lacking bitmap support modified this file, so all bitmaps
            // are now considered inconsistent" and ignores the extension.
            self.bitmaps_ignored = true;
            return Ok(());
        }
        let ext = BitmapsExt {
            nb_bitmaps: be32(data, 0),
            bitmap_directory_size: be64(data, 8),
            bitmap_directory_offset: be64(data, 16),
        };
        if be32(data, 4) != 0 {
            return Err(corrupt("bitmaps_ext: Reserved field is not zero"));
        }
        if ext.nb_bitmaps > MAX_BITMAPS {
            return Err(corrupt(format!(
                "bitmaps_ext: Image has {} bitmaps, exceeding the QEMU supported maximum of {MAX_BITMAPS}",
                ext.nb_bitmaps
            )));
        }
        if ext.nb_bitmaps == 0 {
            return Err(corrupt("found bitmaps extension with zero bitmaps"));
        }
        if ext.bitmap_directory_offset & (self.cluster_size() - 1) != 0 {
            return Err(corrupt("bitmaps_ext: invalid dir offset"));
        }
        if ext.bitmap_directory_size > MAX_BITMAP_DIRECTORY_SIZE {
            return Err(corrupt(format!(
                "bitmaps_ext: bitmap directory size ({}) exceeds the maximum supported size ({MAX_BITMAP_DIRECTORY_SIZE})",
                ext.bitmap_directory_size
            )));
        }
        self.bitmaps = Some(ext);
        Ok(())
    }

    /// QEMU's refusal of unknown incompatible features, then ours of known ones we lack.
    fn check_features(&self) -> Result<(), FormatError> {
        let unknown = self.incompatible_features & !INCOMPAT_KNOWN;
        if unknown != 0 {
            let mut names = Vec::new();
            let mut rest = unknown;
            for f in &self.feature_table {
                if f.kind == 0 && f.bit < 64 && rest & (1 << f.bit) != 0 {
                    names.push(f.name.clone());
                    rest &= !(1 << f.bit);
                }
            }
            if rest != 0 {
                names.push(format!("Unknown incompatible feature: {rest:x}"));
            }
            return Err(FormatError::Unsupported(format!(
                "Unsupported qcow2 feature(s): {}",
                names.join(", ")
            )));
        }
        if self.incompatible_features & INCOMPAT_EXTL2 != 0 {
            return Err(FormatError::Unsupported(
                "qcow2 images with extended L2 entries are not supported".into(),
            ));
        }
        if self.incompatible_features & INCOMPAT_DATA_FILE != 0 || self.data_file.is_some() {
            return Err(FormatError::Unsupported(
                "qcow2 images with an external data file are not supported".into(),
            ));
        }
        Ok(())
    }

    /// The header cluster as QEMU's `qcow2_update_header` lays it out.
    pub fn to_cluster(&self) -> Result<Vec<u8>, FormatError> {
        let cs = self.cluster_size() as usize;
        let mut b = vec![0u8; cs];
        let put32 =
            |b: &mut [u8], at: usize, v: u32| b[at..at + 4].copy_from_slice(&v.to_be_bytes());
        let put64 =
            |b: &mut [u8], at: usize, v: u64| b[at..at + 8].copy_from_slice(&v.to_be_bytes());
        put32(&mut b, 0, QCOW_MAGIC);
        put32(&mut b, 4, self.version);
        put32(&mut b, 20, self.cluster_bits);
        put64(&mut b, 24, self.size);
        put32(&mut b, 32, self.crypt_method);
        put32(&mut b, 36, self.l1_size);
        put64(&mut b, 40, self.l1_table_offset);
        put64(&mut b, 48, self.refcount_table_offset);
        put32(&mut b, 56, self.refcount_table_clusters);
        put32(&mut b, 60, self.nb_snapshots);
        put64(&mut b, 64, self.snapshots_offset);
        let mut off = if self.version >= 3 {
            let header_length = V3_HEADER_LEN + self.unknown_header_fields.len();
            put64(&mut b, 72, self.incompatible_features);
            put64(&mut b, 80, self.compatible_features);
            put64(&mut b, 88, self.autoclear_features);
            put32(&mut b, 96, self.refcount_order);
            put32(&mut b, 100, header_length as u32);
            b[104] = self.compression_type;
            b[V3_HEADER_LEN..header_length].copy_from_slice(&self.unknown_header_fields);
            header_length
        } else {
            V2_HEADER_LEN
        };
        let no_space = || FormatError::Corrupt("header does not fit in the first cluster".into());
        let add = |b: &mut Vec<u8>, off: &mut usize, magic: u32, data: &[u8]| {
            let padded = data.len().div_ceil(8) * 8;
            if *off + 8 + padded > cs {
                return Err(no_space());
            }
            put32(b, *off, magic);
            put32(b, *off + 4, data.len() as u32);
            b[*off + 8..*off + 8 + data.len()].copy_from_slice(data);
            *off += 8 + padded;
            Ok(())
        };
        if let Some(fmt) = &self.backing_format {
            add(&mut b, &mut off, EXT_BACKING_FORMAT, fmt.as_bytes())?;
        }
        if self.version >= 3 && cs > 4096 {
            // QEMU omits the table for clusters of 4 KiB and less (it would crowd out the
            // backing file name in 512-byte clusters).
            let mut table = Vec::new();
            for f in qemu_feature_table() {
                let mut e = [0u8; 48];
                e[0] = f.kind;
                e[1] = f.bit;
                e[2..2 + f.name.len()].copy_from_slice(f.name.as_bytes());
                table.extend_from_slice(&e);
            }
            add(&mut b, &mut off, EXT_FEATURE_TABLE, &table)?;
        }
        if let Some(ext) = self.bitmaps {
            let mut e = [0u8; 24];
            e[0..4].copy_from_slice(&ext.nb_bitmaps.to_be_bytes());
            e[8..16].copy_from_slice(&ext.bitmap_directory_size.to_be_bytes());
            e[16..24].copy_from_slice(&ext.bitmap_directory_offset.to_be_bytes());
            add(&mut b, &mut off, EXT_BITMAPS, &e)?;
        }
        for (magic, data) in &self.unknown_extensions {
            add(&mut b, &mut off, *magic, data)?;
        }
        add(&mut b, &mut off, EXT_END, &[])?;
        if let Some(name) = &self.backing_file {
            if off + name.len() > cs {
                return Err(no_space());
            }
            b[off..off + name.len()].copy_from_slice(name.as_bytes());
            put64(&mut b, 8, off as u64);
            put32(&mut b, 16, name.len() as u32);
        }
        Ok(b)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn minimal_v3(cluster_bits: u32) -> Header {
        Header {
            version: 3,
            backing_file_offset: 0,
            backing_file_size: 0,
            cluster_bits,
            size: 64 << 20,
            crypt_method: 0,
            l1_size: 1,
            l1_table_offset: 3 << cluster_bits,
            refcount_table_offset: 1 << cluster_bits,
            refcount_table_clusters: 1,
            nb_snapshots: 0,
            snapshots_offset: 0,
            incompatible_features: 0,
            compatible_features: 0,
            autoclear_features: 0,
            refcount_order: 4,
            header_length: V3_HEADER_LEN as u32,
            compression_type: 0,
            unknown_header_fields: Vec::new(),
            backing_file: None,
            backing_format: None,
            feature_table: Vec::new(),
            bitmaps: None,
            bitmaps_ignored: false,
            data_file: None,
            unknown_extensions: Vec::new(),
        }
    }

    #[test]
    fn header_roundtrip_with_backing_keeps_fields() {
        let mut h = minimal_v3(16);
        h.backing_file = Some("base.qcow2".into());
        h.backing_format = Some("qcow2".into());
        h.unknown_extensions.push((0x1234_5678, vec![1, 2, 3]));
        let bytes = h.to_cluster().unwrap();
        let back = Header::parse(&bytes).unwrap();
        assert_eq!(back.backing_file.as_deref(), Some("base.qcow2"));
        assert_eq!(back.backing_format.as_deref(), Some("qcow2"));
        assert_eq!(back.feature_table, qemu_feature_table());
        assert_eq!(back.unknown_extensions, vec![(0x1234_5678, vec![1, 2, 3])]);
        assert_eq!(back.backing_file_offset, 0x220);
    }

    #[test]
    fn header_small_clusters_have_no_feature_table() {
        let bytes = minimal_v3(12).to_cluster().unwrap();
        assert!(Header::parse(&bytes).unwrap().feature_table.is_empty());
    }

    #[test]
    fn header_unknown_incompatible_bit_is_refused_like_qemu() {
        let mut h = minimal_v3(16);
        h.incompatible_features = 1 << 40;
        let err = Header::parse(&h.to_cluster().unwrap()).unwrap_err();
        assert_eq!(
            err.to_string(),
            "Unsupported qcow2 feature(s): Unknown incompatible feature: 10000000000"
        );
    }

    #[test]
    fn header_extended_l2_is_unsupported() {
        let mut h = minimal_v3(16);
        h.incompatible_features = INCOMPAT_EXTL2;
        assert!(matches!(
            Header::parse(&h.to_cluster().unwrap()),
            Err(FormatError::Unsupported(_))
        ));
    }

    #[test]
    fn header_bitmaps_ext_without_autoclear_is_ignored() {
        let mut h = minimal_v3(16);
        h.bitmaps = Some(BitmapsExt {
            nb_bitmaps: 1,
            bitmap_directory_size: 32,
            bitmap_directory_offset: 0x50000,
        });
        let parsed = Header::parse(&h.to_cluster().unwrap()).unwrap();
        assert!(parsed.bitmaps.is_none());
        assert!(parsed.bitmaps_ignored);
    }

    #[test]
    fn header_bad_magic_is_not_qcow2() {
        let err = Header::parse(&[0u8; 4096]).unwrap_err();
        assert_eq!(err.to_string(), "Image is not in qcow2 format");
    }
}
