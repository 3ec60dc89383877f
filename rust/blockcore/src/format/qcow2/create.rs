//! Creating an image: what `qemu-img create -f qcow2 [-o ...] [-b FILE -F FMT] FILE SIZE` writes.
//!
//! QEMU's recipe, followed step by step: a minimal header at cluster 0, a one-cluster refcount
//! table at cluster 1 pointing at a refcount block at cluster 2, those three clusters counted,
//! then the L1 table (exactly `l1_size` entries, the smallest that maps the virtual size)
//! allocated from the first free cluster and written as zeros, then the full header with the
//! feature table, backing format extension and backing file name.

use super::header::{Header, MAX_BACKING_FILE_NAME, V3_HEADER_LEN};
use super::mapping::Mapping;
use super::refcount::Refcounts;
use super::units::{Geometry, HostCluster};
use super::Qcow2;
use crate::format::FormatError;
use crate::storage::Storage;
use std::sync::Arc;

/// The `compat` option: qcow2 version 2 (`0.10`) or 3 (`1.1`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Compat {
    /// `compat=0.10`: version 2.
    V0_10,
    /// `compat=1.1`: version 3 (QEMU's default).
    #[default]
    V1_1,
}

/// Options of `qemu-img create -f qcow2`, with QEMU's defaults.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CreateOptions {
    /// Virtual size in bytes (a multiple of 512).
    pub size: u64,
    /// `cluster_size` (default 65536).
    pub cluster_size: u64,
    /// `compat` (default 1.1).
    pub compat: Compat,
    /// `refcount_bits` (default 16).
    pub refcount_bits: u64,
    /// `backing_file` (`-b`).
    pub backing_file: Option<String>,
    /// `backing_fmt` (`-F`).
    pub backing_format: Option<String>,
}

impl Default for CreateOptions {
    fn default() -> Self {
        Self {
            size: 0,
            cluster_size: 65536,
            compat: Compat::V1_1,
            refcount_bits: 16,
            backing_file: None,
            backing_format: None,
        }
    }
}

impl CreateOptions {
    /// Options for an image of `size` bytes, everything else default.
    pub fn new(size: u64) -> Self {
        Self {
            size,
            ..Self::default()
        }
    }

    /// QEMU's option checks, in its words (before anything is created).
    pub fn check(&self) -> Result<(), FormatError> {
        self.validate()
    }

    /// QEMU's option checks, in its words.
    fn validate(&self) -> Result<(), FormatError> {
        let bad = |m: &str| Err(FormatError::Unsupported(m.to_string()));
        if !self.size.is_multiple_of(512) {
            return bad("Image size must be a multiple of 512 bytes");
        }
        let cs = self.cluster_size;
        if !cs.is_power_of_two() || !(512..=2 << 20).contains(&cs) {
            return bad("Cluster size must be a power of two between 512 and 2048k");
        }
        if self.refcount_bits > 64 || !self.refcount_bits.is_power_of_two() {
            return bad("Refcount width must be a power of two and may not exceed 64 bits");
        }
        if self.compat == Compat::V0_10 && self.refcount_bits != 16 {
            return bad("Different refcount widths than 16 bits require compatibility level 1.1 or above (use compat=1.1 or greater)");
        }
        if self.backing_format.is_some() && self.backing_file.is_none() {
            return bad("Backing format cannot be used without backing file");
        }
        if self
            .backing_file
            .as_ref()
            .is_some_and(|b| b.len() > MAX_BACKING_FILE_NAME)
        {
            return bad("Backing file name too long");
        }
        Ok(())
    }
}

impl Qcow2 {
    /// Writes a new, empty qcow2 image to `storage` (truncating it first).
    pub fn create(storage: Arc<dyn Storage>, opts: &CreateOptions) -> Result<(), FormatError> {
        opts.validate()?;
        let geo = Geometry {
            cluster_bits: opts.cluster_size.trailing_zeros(),
            refcount_order: opts.refcount_bits.trailing_zeros(),
        };
        let cs = geo.cluster_size();
        let st = storage.as_ref();
        st.set_len(0)?;
        let mut header = Header {
            version: if opts.compat == Compat::V1_1 { 3 } else { 2 },
            backing_file_offset: 0,
            backing_file_size: 0,
            cluster_bits: geo.cluster_bits,
            size: 0,
            crypt_method: 0,
            l1_size: 0,
            l1_table_offset: 0,
            refcount_table_offset: cs,
            refcount_table_clusters: 1,
            nb_snapshots: 0,
            snapshots_offset: 0,
            incompatible_features: 0,
            compatible_features: 0,
            autoclear_features: 0,
            refcount_order: geo.refcount_order,
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
        };
        st.write_at(&header.to_cluster()?, 0)?;
        let mut table = vec![0u8; 2 * cs as usize];
        table[..8].copy_from_slice(&(2 * cs).to_be_bytes());
        st.write_at(&table, cs)?;
        let mut refcounts = Refcounts::load(st, geo, cs, 1, opts.size)?;
        let first = refcounts.alloc(st, 3)?;
        if first != HostCluster(0) {
            return Err(FormatError::Corrupt(
                "Huh, first cluster in empty image is already in use?".into(),
            ));
        }
        let l1_size = opts.size.div_ceil(geo.l2_span());
        let mut l1_offset = 0;
        if l1_size > 0 {
            l1_offset = refcounts.alloc_bytes(st, l1_size * 8)?.0;
            st.write_at(&vec![0u8; (l1_size * 8) as usize], l1_offset)?;
        }
        header.size = opts.size;
        header.l1_size = l1_size as u32;
        header.l1_table_offset = l1_offset;
        header.refcount_table_offset = refcounts.table_offset.0;
        header.refcount_table_clusters = refcounts.table_clusters();
        header.backing_file = opts.backing_file.clone();
        header.backing_format = opts.backing_format.clone();
        refcounts.cache.write_all(st)?;
        st.write_at(&header.to_cluster()?, 0)?;
        st.flush()?;
        // Make sure what we wrote opens.
        let _ = Mapping::load(st, geo, l1_offset, l1_size as u32)?;
        Ok(())
    }
}
