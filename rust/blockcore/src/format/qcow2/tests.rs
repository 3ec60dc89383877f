//! Unit tests of the assembled driver over a memory store.

use super::*;
use crate::bitmap::DirtyBitmap;
use crate::storage::MemStorage;
use crate::units::ByteRange;

const MIB: u64 = 1 << 20;

fn image(opts: CreateOptions) -> (Arc<MemStorage>, Qcow2) {
    let st = Arc::new(MemStorage::new());
    Qcow2::create(st.clone(), &opts).unwrap();
    let q = Qcow2::open(st.clone(), false).unwrap();
    (st, q)
}

fn with_cluster(size: u64, cluster_size: u64) -> CreateOptions {
    CreateOptions {
        cluster_size,
        ..CreateOptions::new(size)
    }
}

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

fn read(q: &mut Qcow2, off: u64, len: usize) -> Vec<u8> {
    let mut b = vec![0u8; len];
    q.read(off, &mut b).unwrap();
    b
}

/// Every refcount equals the number of references the metadata holds, as `qemu-img check`.
fn assert_refcounts_exact(st: &MemStorage, q: &mut Qcow2) {
    use std::collections::HashMap;
    let geo = q.geo;
    let cs = geo.cluster_size();
    let mut refs: HashMap<u64, u64> = HashMap::new();
    let mut add = |off: u64, len: u64| {
        for c in off / cs..=(off + len - 1) / cs {
            *refs.entry(c).or_default() += 1;
        }
    };
    add(0, cs);
    add(
        q.refcounts.table_offset.0,
        u64::from(q.refcounts.table_clusters()) * cs,
    );
    for &b in q.refcounts.table.iter().filter(|&&b| b != 0) {
        add(b, cs);
    }
    if !q.mapping.l1.is_empty() {
        add(q.mapping.l1_offset.0, q.mapping.l1.len() as u64 * 8);
    }
    for l1 in q.mapping.l1.clone() {
        let l2 = l1 & mapping::L1E_OFFSET_MASK;
        if l2 == 0 {
            continue;
        }
        add(l2, cs);
        for e in q.l2_table(l2).unwrap().clone() {
            if let Some((o, l)) = mapping::ClusterKind::decode(e, geo).host_extent(geo) {
                add(o, l);
            }
        }
    }
    if let Some(ext) = q.header.bitmaps {
        add(ext.bitmap_directory_offset, ext.bitmap_directory_size);
        for e in q.directory.clone() {
            if e.bitmap_table_offset == 0 {
                continue;
            }
            add(e.bitmap_table_offset, u64::from(e.bitmap_table_size) * 8);
            let mut raw = vec![0u8; e.bitmap_table_size as usize * 8];
            st.read_at(&mut raw, e.bitmap_table_offset).unwrap();
            for t in raw.chunks_exact(8) {
                let o = u64::from_be_bytes(t.try_into().unwrap())
                    & bitmaps::BME_TABLE_ENTRY_OFFSET_MASK;
                if o != 0 {
                    add(o, cs);
                }
            }
        }
    }
    let clusters = st.len().unwrap().div_ceil(cs) + 64;
    for c in 0..clusters {
        let have = q.refcounts.get(st, units::HostCluster(c)).unwrap();
        let want = refs.get(&c).copied().unwrap_or(0);
        assert_eq!(
            have, want,
            "cluster {c}: refcount {have}, references {want}"
        );
    }
}

#[test]
fn qcow2_new_image_reads_zeros() {
    let (_st, mut q) = image(CreateOptions::new(64 * MIB));
    assert_eq!(q.virtual_size(), 64 * MIB);
    assert_eq!(read(&mut q, 0, 4096), vec![0u8; 4096]);
}

#[test]
fn qcow2_unaligned_cross_cluster_write_reads_back() {
    let (st, mut q) = image(with_cluster(8 * MIB, 4096));
    let data = pattern(10_000, 7);
    q.write(3000, &data).unwrap();
    assert_eq!(read(&mut q, 3000, 10_000), data);
    assert_eq!(read(&mut q, 0, 3000), vec![0u8; 3000]);
    assert_eq!(read(&mut q, 13_000, 3000), vec![0u8; 3000]);
    assert_refcounts_exact(&st, &mut q);
}

#[test]
fn qcow2_overwrite_in_place_allocates_nothing_new() {
    let (st, mut q) = image(CreateOptions::new(8 * MIB));
    q.write(0, &pattern(65536, 1)).unwrap();
    let len = st.len().unwrap();
    q.write(100, &pattern(50, 2)).unwrap();
    assert_eq!(st.len().unwrap(), len);
    let mut want = pattern(65536, 1);
    want[100..150].copy_from_slice(&pattern(50, 2));
    assert_eq!(read(&mut q, 0, 65536), want);
}

#[test]
fn qcow2_sparse_writes_with_512b_clusters_grow_refcount_table() {
    let (st, mut q) = image(with_cluster(64 * MIB, 512));
    let before = q.refcounts.table_clusters();
    let mut off = 0;
    let mut k = 0u8;
    while off < 64 * MIB - 4096 {
        q.write(off + 17, &pattern(16_000, k)).unwrap();
        off += 97 * 1024;
        k = k.wrapping_add(1);
    }
    assert!(q.refcounts.table_clusters() > before);
    assert_refcounts_exact(&st, &mut q);
    // Reopen from the file (the cached metadata flushed first) and read everything back.
    q.flush().unwrap();
    let mut q2 = Qcow2::open(st.clone(), true).unwrap();
    let (mut off, mut k) = (0, 0u8);
    while off < 64 * MIB - 4096 {
        assert_eq!(
            read(&mut q2, off + 17, 16_000),
            pattern(16_000, k),
            "at {off}"
        );
        off += 97 * 1024;
        k = k.wrapping_add(1);
    }
}

#[test]
fn qcow2_write_zeroes_whole_cluster_frees_and_reads_zero() {
    let (st, mut q) = image(CreateOptions::new(8 * MIB));
    q.write(0, &pattern(3 * 65536, 3)).unwrap();
    q.write_zeroes(65536, 65536).unwrap();
    q.write_zeroes(140_000, 1000).unwrap();
    assert_eq!(read(&mut q, 65536, 65536), vec![0u8; 65536]);
    assert_eq!(read(&mut q, 140_000, 1000), vec![0u8; 1000]);
    assert_eq!(read(&mut q, 0, 100), pattern(100, 3));
    let e = q.lookup(units::GuestOffset(65536)).unwrap();
    assert_eq!(e, mapping::ClusterKind::ZeroPlain);
    assert_refcounts_exact(&st, &mut q);
}

#[test]
fn qcow2_discard_partial_is_ignored_whole_is_zero_flag() {
    let (st, mut q) = image(CreateOptions::new(8 * MIB));
    q.write(0, &pattern(3 * 65536, 4)).unwrap();
    q.discard(1000, 130_000).unwrap();
    assert_eq!(read(&mut q, 0, 3 * 65536), pattern(3 * 65536, 4));
    q.discard(65536, 65536).unwrap();
    assert_eq!(read(&mut q, 65536, 65536), vec![0u8; 65536]);
    let e = q.lookup(units::GuestOffset(65536)).unwrap();
    assert_eq!(e, mapping::ClusterKind::ZeroPlain);
    assert_refcounts_exact(&st, &mut q);
}

#[test]
fn qcow2_v2_discard_leaves_cluster_unallocated() {
    let (st, mut q) = image(CreateOptions {
        compat: Compat::V0_10,
        ..CreateOptions::new(8 * MIB)
    });
    q.write(0, &pattern(65536, 4)).unwrap();
    q.write_zeroes(0, 65536).unwrap();
    let e = q.lookup(units::GuestOffset(0)).unwrap();
    assert_eq!(e, mapping::ClusterKind::Unallocated);
    assert_refcounts_exact(&st, &mut q);
}

#[test]
fn qcow2_shared_cluster_is_copied_on_write() {
    // Simulate an internal snapshot's reference: raise the data cluster's and the L2 table's
    // refcounts and drop COPIED, as QEMU does when it takes a snapshot.
    let (st, mut q) = image(CreateOptions::new(8 * MIB));
    q.write(0, &pattern(65536, 5)).unwrap();
    let storage = st.clone();
    let l2 = q.mapping.l1[0] & mapping::L1E_OFFSET_MASK;
    let data = q.l2_table(l2).unwrap()[0] & mapping::L2E_OFFSET_MASK;
    q.refcounts
        .update_range(storage.as_ref(), units::HostCluster(l2 >> 16), 1, 1)
        .unwrap();
    q.refcounts
        .update_range(storage.as_ref(), units::HostCluster(data >> 16), 1, 1)
        .unwrap();
    q.mapping.set_l1(storage.as_ref(), 0, l2).unwrap();
    q.l2_table(l2).unwrap()[0] = data;
    q.refcounts.cache.l2.mark_dirty(l2);

    q.write(10, b"new").unwrap();

    let new_l2 = q.mapping.l1[0];
    assert_ne!(new_l2 & mapping::L1E_OFFSET_MASK, l2);
    assert_ne!(new_l2 & mapping::OFLAG_COPIED, 0);
    assert_eq!(
        q.refcounts
            .get(storage.as_ref(), units::HostCluster(l2 >> 16))
            .unwrap(),
        1
    );
    assert_eq!(
        q.refcounts
            .get(storage.as_ref(), units::HostCluster(data >> 16))
            .unwrap(),
        1
    );
    let mut old = vec![0u8; 16];
    st.read_at(&mut old, data).unwrap();
    assert_eq!(old, pattern(16, 5), "the snapshot's copy is untouched");
    let mut want = pattern(65536, 5);
    want[10..13].copy_from_slice(b"new");
    assert_eq!(read(&mut q, 0, 65536), want);
}

#[test]
fn qcow2_open_refuses_garbage() {
    let st = Arc::new(MemStorage::new());
    st.write_at(&[0u8; 4096], 0).unwrap();
    let err = Qcow2::open(st, true).unwrap_err();
    assert_eq!(err.to_string(), "Image is not in qcow2 format");
}

#[test]
fn qcow2_read_only_refuses_writes() {
    let st = Arc::new(MemStorage::new());
    Qcow2::create(st.clone(), &CreateOptions::new(MIB)).unwrap();
    let mut q = Qcow2::open(st, true).unwrap();
    assert!(matches!(q.write(0, b"x"), Err(FormatError::ReadOnly)));
}

fn bitmap(name: &str, size: u64, g: u64, ranges: &[(u64, u64)], enabled: bool) -> DirtyBitmap {
    let mut b = DirtyBitmap::new(Some(name.into()), size, Granularity::new(g).unwrap());
    for &(o, l) in ranges {
        b.bits.set_range(ByteRange::new(o, l));
    }
    b.state.persistent = true;
    b.state.enabled = enabled;
    b
}

#[test]
fn bitmaps_store_then_open_loads_same_bits_and_flags() {
    let (st, mut q) = image(CreateOptions::new(64 * MIB));
    let a = bitmap("a", 64 * MIB, 65536, &[(0, 1), (5 * MIB, 3 * MIB)], true);
    let b = bitmap("b", 64 * MIB, 512, &[(64 * MIB - 1, 1)], false);
    q.store_bitmaps(&[&a, &b]).unwrap();
    assert_refcounts_exact(&st, &mut q);

    let mut ro = Qcow2::open(st.clone(), true).unwrap();
    let loaded = ro.take_loaded_bitmaps();
    assert_eq!(loaded.len(), 2);
    assert_eq!(loaded[0].bitmap.name.as_deref(), Some("a"));
    assert_eq!(loaded[0].bitmap.bits, a.bits);
    assert!(loaded[0].bitmap.state.enabled && loaded[0].bitmap.state.readonly);
    assert_eq!(loaded[1].bitmap.bits, b.bits);
    assert!(!loaded[1].bitmap.state.enabled);
    assert!(ro.take_loaded_bitmaps().is_empty());
}

#[test]
fn bitmaps_rw_open_marks_in_use_and_unclosed_image_loads_inconsistent() {
    let (st, mut q) = image(CreateOptions::new(64 * MIB));
    let a = bitmap("a", 64 * MIB, 65536, &[(0, 1)], true);
    q.store_bitmaps(&[&a]).unwrap();
    let _rw = Qcow2::open(st.clone(), false).unwrap(); // never stored: like a killed QEMU
    let mut again = Qcow2::open(st.clone(), true).unwrap();
    let l = again.take_loaded_bitmaps();
    assert!(l[0].bitmap.state.inconsistent);
    assert!(!l[0].bitmap.state.enabled);
    assert_eq!(l[0].bitmap.bits.count_bits(), 0);
}

#[test]
fn bitmaps_inconsistent_entry_survives_store_of_others() {
    let (st, mut q) = image(CreateOptions::new(64 * MIB));
    q.store_bitmaps(&[&bitmap("a", 64 * MIB, 65536, &[(0, 1)], true)])
        .unwrap();
    q.close().unwrap();
    drop(Qcow2::open(st.clone(), false).unwrap());
    let mut rw = Qcow2::open(st.clone(), false).unwrap();
    let loaded = rw.take_loaded_bitmaps();
    let b = bitmap("b", 64 * MIB, 65536, &[], true);
    let refs: Vec<&DirtyBitmap> = loaded.iter().map(|l| &l.bitmap).chain([&b]).collect();
    rw.store_bitmaps(&refs).unwrap();
    let dir = rw.bitmap_directory();
    assert_eq!(dir.len(), 2);
    assert_eq!(
        dir[0].flags,
        bitmaps::BME_FLAG_IN_USE | bitmaps::BME_FLAG_AUTO
    );
    assert_eq!(dir[1].flags, bitmaps::BME_FLAG_AUTO);
    assert_refcounts_exact(&st, &mut rw);
}

#[test]
fn bitmaps_remove_last_drops_extension_and_frees_clusters() {
    let (st, mut q) = image(CreateOptions::new(64 * MIB));
    q.store_bitmaps(&[&bitmap("a", 64 * MIB, 65536, &[(0, MIB)], true)])
        .unwrap();
    q.remove_stored_bitmap("a").unwrap();
    assert!(q.header.bitmaps.is_none());
    assert_eq!(q.header.autoclear_features & header::AUTOCLEAR_BITMAPS, 0);
    assert_refcounts_exact(&st, &mut q);
    q.remove_stored_bitmap("missing").unwrap();
}

#[test]
fn can_store_bitmap_checks_in_qemu_order() {
    let (_st, q) = image(CreateOptions::new(4 << 40));
    let refused = |r: Result<(), BitmapStoreError>| match r {
        Err(BitmapStoreError::Refused(m)) => m,
        other => panic!("expected a refusal, got {other:?}"),
    };
    assert_eq!(
        refused(q.can_store_bitmap("x", Granularity::new(512).unwrap())),
        "Too much space will be occupied by the bitmap. Use larger granularity"
    );
    assert!(q
        .can_store_bitmap("x", Granularity::new(65536).unwrap())
        .is_ok());
    assert_eq!(
        refused(q.can_store_bitmap(&"n".repeat(1024), Granularity::new(65536).unwrap())),
        "Name length exceeds maximum (1023 characters)"
    );
    let (_st, v2) = image(CreateOptions {
        compat: Compat::V0_10,
        ..CreateOptions::new(MIB)
    });
    assert_eq!(
        refused(v2.can_store_bitmap("x", Granularity::new(65536).unwrap())),
        "Cannot store dirty bitmaps in qcow2 v2 files"
    );
}

#[test]
fn can_store_bitmap_1tib_at_64k_is_accepted() {
    let (_st, q) = image(CreateOptions::new(1 << 40));
    assert!(q
        .can_store_bitmap("x", Granularity::new(65536).unwrap())
        .is_ok());
}

#[test]
fn create_64m_matches_qemu_img_layout() {
    let st = Arc::new(MemStorage::new());
    Qcow2::create(st.clone(), &CreateOptions::new(64 * MIB)).unwrap();
    let b = st.contents();
    assert_eq!(b.len(), 196_616);
    assert_eq!(&b[0x10000..0x10008], &0x20000u64.to_be_bytes());
    assert_eq!(&b[0x20000..0x20008], &[0, 1, 0, 1, 0, 1, 0, 1]);
    assert_eq!(&b[0x28..0x30], &0x30000u64.to_be_bytes());
}

#[test]
fn create_rejects_bad_cluster_size() {
    let st = Arc::new(MemStorage::new());
    let err = Qcow2::create(st, &with_cluster(MIB, 1000)).unwrap_err();
    assert_eq!(
        err.to_string(),
        "Cluster size must be a power of two between 512 and 2048k"
    );
}

#[test]
fn compressed_write_refuses_clusters_with_a_host_offset_even_under_a_snapshot() {
    let (_st, mut q) = image(with_cluster(4 * MIB, 65536));
    let data = vec![0x5a; 65536];
    q.write(0, &data).unwrap();
    let snap = crate::format::SnapshotParams {
        name: b"s".to_vec(),
        ..Default::default()
    };
    q.snapshot_create(&snap).unwrap();
    // Allocated (shared with the snapshot): EIO, as QEMU; the data is untouched.
    let err = q.write_compressed(0, &vec![0x11; 65536]).unwrap_err();
    assert_eq!(err.errno(), 5);
    assert_eq!(read(&mut q, 0, 65536), data);
    // Unallocated: compressed, readable, and the snapshot's cluster stays referenced once.
    q.write_compressed(65536, &vec![0x11; 65536]).unwrap();
    assert_eq!(read(&mut q, 65536, 65536), vec![0x11; 65536]);
    assert!(q.is_allocated(65536).unwrap());
    // A second compressed write over the compressed cluster fails too.
    let err = q.write_compressed(65536, &vec![0x22; 65536]).unwrap_err();
    assert_eq!(err.errno(), 5);
}

#[test]
fn failed_delete_on_read_only_image_drops_the_snapshot_in_memory_only() {
    let (st, mut q) = image(CreateOptions::new(MIB));
    let snap = SnapshotParams {
        name: b"s1".to_vec(),
        ..SnapshotParams::default()
    };
    q.snapshot_create(&snap).unwrap();
    let before = st.contents();
    let mut ro = Qcow2::open(st.clone(), true).unwrap();
    assert!(matches!(
        ro.snapshot_delete(None, Some(b"s1")),
        Err(FormatError::ReadOnly)
    ));
    assert!(ro.snapshots().unwrap().is_empty(), "dropped from the list");
    assert!(ro.snapshot_delete(None, Some(b"s1")).unwrap().is_none());
    assert_eq!(st.contents(), before, "the file is untouched");
    let again = Qcow2::open(st.clone(), true).unwrap();
    assert_eq!(
        again.snapshots().unwrap().len(),
        1,
        "a re-open lists it again"
    );
}

#[test]
fn qcow2_pass_discard_request_decides_whether_freed_clusters_are_discarded_in_the_file() {
    for pass in [true, false] {
        let (st, mut q) = image(CreateOptions::new(8 * MIB));
        q.set_pass_discard_request(pass);
        q.write(0, &pattern(3 * 65536, 7)).unwrap();
        let host = q
            .l2_table(q.mapping.l1[0] & mapping::L1E_OFFSET_MASK)
            .unwrap()[1]
            & mapping::L2E_OFFSET_MASK;
        q.discard(65536, 65536).unwrap();
        q.write_zeroes(2 * 65536, 65536).unwrap();
        let mut left = vec![0u8; 2 * 65536];
        st.read_at(&mut left, host).unwrap();
        let zeroed = left.iter().all(|&b| b == 0);
        assert_eq!(zeroed, pass, "pass-discard-request={pass}");
        assert_eq!(read(&mut q, 65536, 2 * 65536), vec![0u8; 2 * 65536]);
        assert_refcounts_exact(&st, &mut q);
    }
}
