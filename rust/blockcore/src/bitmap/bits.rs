//! The flat bit array behind a dirty bitmap, with word-level operations.
//!
//! Bit `i` covers bytes `[i * g, (i + 1) * g)` of the node, `g` being the granularity. Bits live in
//! 64-bit words, bit `i` being bit `i % 64` of word `i / 64`: the layout of the bottom level of
//! QEMU's hierarchical bitmap, so the little-endian bytes of the words are exactly what
//! `x-debug-block-dirty-bitmap-sha256` hashes and what a qcow2 bitmap table cluster stores.

use crate::units::{ByteRange, Granularity};
use sha2::{Digest, Sha256};

/// The bits of a dirty bitmap over a disk of `len` bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Bits {
    len: u64,
    granularity: Granularity,
    nbits: u64,
    words: Vec<u64>,
}

/// Merging two bitmaps that cover disks of different lengths.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("bitmaps are of different sizes (destination size is {dest}, source size is {src})")]
pub struct SizeMismatch {
    /// Disk length covered by the destination.
    pub dest: u64,
    /// Disk length covered by the source.
    pub src: u64,
}

impl Bits {
    /// An all-clear bitmap over `len` bytes: `ceil(len / granularity)` bits.
    pub fn new(len: u64, granularity: Granularity) -> Self {
        let nbits = len.div_ceil(granularity.bytes());
        let nwords = usize::try_from(nbits.div_ceil(64)).expect("bitmap too large for memory");
        Self {
            len,
            granularity,
            nbits,
            words: vec![0; nwords],
        }
    }

    /// Grows or shrinks the bitmap to cover `len` bytes; new bits are clear, bits past the new end
    /// are dropped (QEMU truncates a node's bitmaps whenever the node's length changes).
    pub fn resize(&mut self, len: u64) {
        let nbits = len.div_ceil(self.granularity.bytes());
        let nwords = usize::try_from(nbits.div_ceil(64)).expect("bitmap too large for memory");
        self.words.resize(nwords, 0);
        self.len = len;
        self.nbits = nbits;
        self.mask_tail();
    }

    /// Disk length in bytes the bitmap covers.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// True when the bitmap covers no bytes at all (a zero-length disk).
    pub fn is_empty(&self) -> bool {
        self.nbits == 0
    }

    /// Granularity: bytes covered by one bit.
    pub fn granularity(&self) -> Granularity {
        self.granularity
    }

    /// Number of bits, `ceil(len / granularity)`.
    pub fn nbits(&self) -> u64 {
        self.nbits
    }

    /// The bit index range `[first, end)` touched by a byte range, rounded outward, clamped.
    fn bit_span(&self, range: ByteRange) -> Option<(u64, u64)> {
        if range.len == 0 || range.offset >= self.len {
            return None;
        }
        let g = self.granularity.bytes();
        let first = range.offset / g;
        let end = (range.end().min(self.len) - 1) / g + 1;
        Some((first, end.min(self.nbits)))
    }

    /// Sets every bit whose chunk overlaps `range` (the range is rounded outward to granularity).
    pub fn set_range(&mut self, range: ByteRange) {
        if let Some((first, end)) = self.bit_span(range) {
            self.fill_bits(first, end, true);
        }
    }

    /// Clears every bit whose chunk lies wholly inside `range`; the chunk holding the end of the
    /// disk counts as wholly inside when the range reaches the end. QEMU only ever resets aligned
    /// ranges, for which this equals rounding outward.
    pub fn reset_range(&mut self, range: ByteRange) {
        if range.len == 0 || range.offset >= self.len {
            return;
        }
        let g = self.granularity.bytes();
        let first = range.offset.div_ceil(g);
        let end = if range.end() >= self.len {
            self.nbits
        } else {
            range.end() / g
        };
        if first < end {
            self.fill_bits(first, end, false);
        }
    }

    fn fill_bits(&mut self, first: u64, end: u64, value: bool) {
        let (fw, lw) = ((first / 64) as usize, ((end - 1) / 64) as usize);
        let head = !0u64 << (first % 64);
        let tail = !0u64 >> (63 - (end - 1) % 64);
        let apply = |w: &mut u64, mask: u64| {
            if value {
                *w |= mask
            } else {
                *w &= !mask
            }
        };
        if fw == lw {
            apply(&mut self.words[fw], head & tail);
        } else {
            apply(&mut self.words[fw], head);
            for w in &mut self.words[fw + 1..lw] {
                *w = if value { !0 } else { 0 };
            }
            apply(&mut self.words[lw], tail);
        }
    }

    /// Whether the chunk holding byte `offset` is dirty (false past the end).
    pub fn get(&self, offset: u64) -> bool {
        if offset >= self.len {
            return false;
        }
        let bit = offset / self.granularity.bytes();
        self.words[(bit / 64) as usize] >> (bit % 64) & 1 == 1
    }

    /// Number of set bits.
    pub fn count_bits(&self) -> u64 {
        self.words.iter().map(|w| u64::from(w.count_ones())).sum()
    }

    /// QEMU's `count`: set bits times granularity, in bytes. Not clamped to the disk length.
    pub fn count(&self) -> u64 {
        self.count_bits() * self.granularity.bytes()
    }

    /// Clears every bit.
    pub fn clear(&mut self) {
        self.words.fill(0);
    }

    /// ORs `src` into `self`. With equal granularities this is a word-wise OR; otherwise every dirty
    /// run of `src` is set in `self`, rounded outward to `self`'s granularity, as QEMU does.
    pub fn merge_from(&mut self, src: &Bits) -> Result<(), SizeMismatch> {
        if self.len != src.len {
            return Err(SizeMismatch {
                dest: self.len,
                src: src.len,
            });
        }
        if self.granularity == src.granularity {
            for (d, s) in self.words.iter_mut().zip(&src.words) {
                *d |= *s;
            }
        } else {
            for run in src.dirty_runs() {
                self.set_range(run);
            }
        }
        Ok(())
    }

    /// Replaces the bits with those of `other` (same length and granularity), reusing storage:
    /// the restore half of copy-and-restore undo.
    pub fn restore_from(&mut self, other: &Bits) {
        assert_eq!(
            (self.len, self.granularity),
            (other.len, other.granularity),
            "restore_from needs a copy of the same bitmap"
        );
        self.words.copy_from_slice(&other.words);
    }

    /// The dirty areas as maximal byte ranges, in ascending order, clamped to the disk length.
    pub fn dirty_runs(&self) -> DirtyRuns<'_> {
        DirtyRuns {
            bits: self,
            next: 0,
        }
    }

    /// Index of the first set bit at or after `from`, if any. Skips clean words whole.
    pub fn next_set_bit(&self, from: u64) -> Option<u64> {
        self.next_bit(from, true)
    }

    /// Index of the first clear bit at or after `from`, if any.
    pub fn next_clear_bit(&self, from: u64) -> Option<u64> {
        self.next_bit(from, false)
    }

    /// Dirty bytes, clamped to the disk length (unlike [`Bits::count`]).
    pub fn dirty_bytes(&self) -> u64 {
        self.dirty_runs().map(|r| r.len).sum()
    }

    fn next_bit(&self, from: u64, set: bool) -> Option<u64> {
        if from >= self.nbits {
            return None;
        }
        let mut wi = (from / 64) as usize;
        let flip = if set { 0 } else { !0 };
        let mut w = (self.words[wi] ^ flip) & (!0u64 << (from % 64));
        loop {
            if w != 0 {
                let bit = wi as u64 * 64 + u64::from(w.trailing_zeros());
                return (bit < self.nbits).then_some(bit);
            }
            wi += 1;
            if wi >= self.words.len() {
                return None;
            }
            w = self.words[wi] ^ flip;
        }
    }

    /// SHA-256 of the words as little-endian bytes, unused tail bits zero: the value of QEMU's
    /// `x-debug-block-dirty-bitmap-sha256`, as a lowercase hex string.
    pub fn sha256_hex(&self) -> String {
        let mut hasher = Sha256::new();
        let mut buf = Vec::with_capacity(64 * 1024);
        for chunk in self.words.chunks(8 * 1024) {
            buf.clear();
            for w in chunk {
                buf.extend_from_slice(&w.to_le_bytes());
            }
            hasher.update(&buf);
        }
        hasher
            .finalize()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }

    /// Number of bytes of the serialized form (`ceil(nbits / 8)`), as qcow2 stores it.
    pub fn serialized_len(&self) -> u64 {
        self.nbits.div_ceil(8)
    }

    /// Writes serialized bytes `[start, start + out.len())` (bit `j` of byte `i` = bit `8i + j`)
    /// into `out`; bytes past the end of the bitmap are zero.
    pub fn serialize_into(&self, start: u64, out: &mut [u8]) {
        for (k, byte) in out.iter_mut().enumerate() {
            let i = start + k as u64;
            let word = (i / 8) as usize;
            *byte = self
                .words
                .get(word)
                .map_or(0, |w| (w >> ((i % 8) * 8)) as u8);
        }
    }

    /// ORs serialized bytes (as produced by [`Bits::serialize_into`]) at byte `start` into the bits.
    pub fn deserialize_or(&mut self, start: u64, data: &[u8]) {
        for (k, &byte) in data.iter().enumerate() {
            let i = start + k as u64;
            let word = (i / 8) as usize;
            if let Some(w) = self.words.get_mut(word) {
                *w |= u64::from(byte) << ((i % 8) * 8);
            }
        }
        self.mask_tail();
    }

    /// Sets every bit whose serialized byte lies in `[start, start + len)` (an "all ones" cluster).
    pub fn set_serialized_range(&mut self, start: u64, len: u64) {
        let first = start * 8;
        let end = (start + len).saturating_mul(8).min(self.nbits);
        if first < end {
            self.fill_bits(first, end, true);
        }
    }

    fn mask_tail(&mut self) {
        let used = self.nbits % 64;
        if used != 0 {
            if let Some(last) = self.words.last_mut() {
                *last &= !0u64 >> (64 - used);
            }
        }
    }
}

/// Iterator over the dirty byte ranges of a [`Bits`]; see [`Bits::dirty_runs`].
pub struct DirtyRuns<'a> {
    bits: &'a Bits,
    next: u64,
}

impl Iterator for DirtyRuns<'_> {
    type Item = ByteRange;

    fn next(&mut self) -> Option<ByteRange> {
        let first = self.bits.next_bit(self.next, true)?;
        let end = self.bits.next_bit(first, false).unwrap_or(self.bits.nbits);
        self.next = end;
        let g = self.bits.granularity.bytes();
        let start = first * g;
        Some(ByteRange::new(start, (end * g).min(self.bits.len) - start))
    }
}
