use super::*;

const MIB: u64 = 1 << 20;

fn g(bytes: u64) -> Granularity {
    Granularity::new(bytes).unwrap()
}

#[test]
fn sha256_empty_512b_bitmap_on_64mib_matches_qemu() {
    // SEMANTICS.md 3.5, confirmed on QEMU 7.2 and 10.0.
    let bits = Bits::new(64 * MIB, g(512));
    assert_eq!(
        bits.sha256_hex(),
        "4fe7b59af6de3b665b67788cc2f99892ab827efae3a467342b3bb4e3bc8e5bfe"
    );
}

#[test]
fn sha256_bits_0_1_1023_of_64k_bitmap_matches_qemu() {
    let mut bits = Bits::new(64 * MIB, g(65536));
    bits.set_range(ByteRange::new(0, 65536 + 1));
    bits.set_range(ByteRange::new(64 * MIB - 1, 1));
    assert_eq!(bits.count_bits(), 3);
    assert_eq!(
        bits.sha256_hex(),
        "3daccad990033e8a8ec0dab513dbdbafcfdf2d899c68734ed1b7f7f1f14aaf33"
    );
}

#[test]
fn count_is_bits_times_granularity_and_not_clamped() {
    let mut big = Bits::new(64 * MIB, g(1 << 31));
    big.set_range(ByteRange::new(0, 1));
    assert_eq!(big.count(), 1 << 31);

    let mut small = Bits::new(64 * MIB, g(512));
    small.set_range(ByteRange::new(0, 1));
    small.set_range(ByteRange::new(65536, 65536));
    small.set_range(ByteRange::new(64 * MIB - 1, 1));
    assert_eq!(small.count(), 66560);
}

#[test]
fn set_range_rounds_outward_and_clamps_at_disk_end() {
    let mut bits = Bits::new(10 * 4096 + 100, g(4096));
    bits.set_range(ByteRange::new(4095, 2));
    assert_eq!(bits.count_bits(), 2);
    bits.set_range(ByteRange::new(10 * 4096, 1 << 40));
    assert_eq!(bits.count_bits(), 3);
    bits.set_range(ByteRange::new(1 << 41, 5));
    assert_eq!(bits.count_bits(), 3);
}

#[test]
fn set_and_reset_across_many_words() {
    let mut bits = Bits::new(1 << 30, g(512));
    bits.set_range(ByteRange::new(512 * 10, 512 * 1000));
    assert_eq!(bits.count_bits(), 1000);
    bits.reset_range(ByteRange::new(512 * 20, 512 * 100));
    assert_eq!(bits.count_bits(), 900);
    assert!(bits.get(512 * 19));
    assert!(!bits.get(512 * 20));
    assert!(bits.get(512 * 120));
}

#[test]
fn reset_range_ignores_partial_chunks() {
    let mut bits = Bits::new(1 << 20, g(65536));
    bits.set_range(ByteRange::new(0, 1 << 20));
    bits.reset_range(ByteRange::new(100, 65536));
    assert_eq!(bits.count_bits(), 16);
    bits.reset_range(ByteRange::new(65536, 65536));
    assert_eq!(bits.count_bits(), 15);
}

#[test]
fn merge_different_granularity_rounds_outward_like_qemu() {
    // SEMANTICS.md 2.6: 64 KiB bits at 0, 64K, 64M-64K into a 1 MiB target -> 2 MiB,
    // and that 1 MiB bitmap into a 4 KiB target -> 2 MiB.
    let mut src = Bits::new(64 * MIB, g(65536));
    for off in [0, 65536, 64 * MIB - 65536] {
        src.set_range(ByteRange::new(off, 65536));
    }
    let mut mid = Bits::new(64 * MIB, g(MIB));
    mid.merge_from(&src).unwrap();
    assert_eq!(mid.count(), 2 * MIB);
    let mut fine = Bits::new(64 * MIB, g(4096));
    fine.merge_from(&mid).unwrap();
    assert_eq!(fine.count(), 2 * MIB);
}

#[test]
fn merge_of_different_lengths_is_refused() {
    let mut a = Bits::new(64 * MIB, g(65536));
    let b = Bits::new(32 * MIB, g(65536));
    assert_eq!(
        a.merge_from(&b),
        Err(SizeMismatch {
            dest: 64 * MIB,
            src: 32 * MIB
        })
    );
}

#[test]
fn dirty_runs_are_maximal_and_clamped() {
    let mut bits = Bits::new(1000, g(512));
    bits.set_range(ByteRange::new(600, 1));
    let runs: Vec<_> = bits.dirty_runs().collect();
    assert_eq!(runs, vec![ByteRange::new(512, 488)]);
}

#[test]
fn serialize_roundtrip_matches_word_layout() {
    let mut bits = Bits::new(64 * MIB, g(65536));
    bits.set_range(ByteRange::new(0, 65536 * 9));
    let mut out = vec![0u8; bits.serialized_len() as usize];
    bits.serialize_into(0, &mut out);
    assert_eq!(&out[..2], &[0xff, 0x01]);
    let mut back = Bits::new(64 * MIB, g(65536));
    back.deserialize_or(0, &out);
    assert_eq!(back, bits);
}

#[test]
fn disabled_bitmap_does_not_record_writes() {
    let mut bm = DirtyBitmap::new(Some("b".into()), MIB, g(65536));
    bm.state.enabled = false;
    bm.record_write(ByteRange::new(0, 1));
    assert_eq!(bm.bits.count(), 0);
    bm.state.enabled = true;
    bm.record_write(ByteRange::new(0, 1));
    assert_eq!(bm.bits.count(), 65536);
}

#[test]
fn resize_grows_with_clear_bits_and_shrink_drops_tail() {
    let mut bits = Bits::new(4096, g(512));
    bits.set_range(ByteRange::new(0, 4096));
    bits.resize(1 << 20);
    assert_eq!(bits.count_bits(), 8);
    bits.set_range(ByteRange::new(65536, 512));
    assert_eq!(bits.count_bits(), 9);
    bits.resize(1024);
    assert_eq!(bits.count_bits(), 2);
    assert_eq!(bits.len(), 1024);
}
