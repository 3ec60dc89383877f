//! Compressed clusters: what QEMU writes for `compress: true` backups and `qemu-img convert -c`.
//!
//! A compressed cluster is one stream stored at any byte offset: raw deflate for the zlib
//! `compression_type` (the system's zlib with QEMU's `deflateInit2` parameters, so the
//! same bytes as QEMU), one zstd frame (default level, content
//! size recorded, no checksum: what one `ZSTD_compressStream2(ZSTD_e_end)` call writes) for
//! zstd. Its L2 entry holds that offset and the number of 512-byte sectors the stream spans
//! beyond the first, so a reader gets trailing bytes after the stream. Streams are packed one
//! after the other as QEMU packs them. A cluster that does not shrink to less than a cluster is
//! written uncompressed, as QEMU does; a compressed write over a cluster that has a host offset
//! fails with EIO, as in QEMU.

use super::mapping::{ClusterKind, OFLAG_COMPRESSED};
use super::units::{GuestOffset, HostOffset};
use super::Qcow2;
use crate::format::{Backing, FormatError};
use flate2::{Decompress, FlushDecompress};
use libz_sys as z;
use std::ffi::c_int;
use zstd::zstd_safe::{self, CCtx, DCtx, InBuffer, OutBuffer};

/// The host-offset bits of a standard L2 entry (QEMU's `L2E_OFFSET_MASK`).
const L2E_OFFSET_MASK: u64 = 0x00ff_ffff_ffff_fe00;

/// Deflate window bits QEMU uses for qcow2 clusters.
const WINDOW_BITS: u8 = 12;

/// `compression_type` 1.
const ZSTD: u8 = 1;

/// `memLevel` QEMU passes to `deflateInit2` (zlib's default is 8): it sizes the hash table,
/// so it changes the stream.
const MEM_LEVEL: c_int = 9;

/// zlib's allocator hook: zeroed memory from the C heap.
unsafe extern "C" fn zalloc(_opaque: z::voidpf, items: z::uInt, size: z::uInt) -> z::voidpf {
    // SAFETY: calloc has no preconditions; zlib checks for a null result.
    unsafe { libc::calloc(items as libc::size_t, size as libc::size_t) }
}

/// zlib's free hook, the counterpart of [`zalloc`].
unsafe extern "C" fn zfree(_opaque: z::voidpf, address: z::voidpf) {
    // SAFETY: zlib frees only what `zalloc` returned.
    unsafe { libc::free(address) }
}

/// Deflates `data` into at most `limit` bytes; None if it does not fit.
///
/// The system's zlib (the library QEMU links) with QEMU's parameters: default level, raw
/// deflate with a 4 KiB window, `memLevel` 9, default strategy, one `deflate(Z_FINISH)` call;
/// so the stream is byte for byte the one QEMU writes. flate2 cannot set `memLevel`, hence the
/// direct call.
fn deflate(data: &[u8], limit: usize) -> Option<Vec<u8>> {
    let mut out = vec![0u8; limit];
    let mut strm = z::z_stream {
        next_in: data.as_ptr().cast_mut(),
        avail_in: z::uInt::try_from(data.len()).ok()?,
        total_in: 0,
        next_out: out.as_mut_ptr(),
        avail_out: z::uInt::try_from(limit).ok()?,
        total_out: 0,
        msg: std::ptr::null_mut(),
        state: std::ptr::null_mut(),
        zalloc,
        zfree,
        opaque: std::ptr::null_mut(),
        data_type: 0,
        adler: 0,
        reserved: 0,
    };
    let stream_size = c_int::try_from(std::mem::size_of::<z::z_stream>()).ok()?;
    // SAFETY: `strm` is fully initialized with valid allocator hooks; `next_in`/`avail_in` and
    // `next_out`/`avail_out` describe live buffers that outlive the stream (zlib only reads
    // through `next_in`); `deflateEnd` releases the state before they go away.
    let status = unsafe {
        let init = z::deflateInit2_(
            &mut strm,
            z::Z_DEFAULT_COMPRESSION,
            z::Z_DEFLATED,
            -c_int::from(WINDOW_BITS),
            MEM_LEVEL,
            z::Z_DEFAULT_STRATEGY,
            z::zlibVersion(),
            stream_size,
        );
        if init != z::Z_OK {
            return None;
        }
        let status = z::deflate(&mut strm, z::Z_FINISH);
        z::deflateEnd(&mut strm);
        status
    };
    if status != z::Z_STREAM_END {
        return None;
    }
    out.truncate(limit - strm.avail_out as usize);
    Some(out)
}

/// Inflates a raw deflate stream into exactly `out.len()` bytes.
fn inflate(input: &[u8], out: &mut [u8]) -> Result<(), FormatError> {
    let mut d = Decompress::new_with_window_bits(false, WINDOW_BITS);
    match d.decompress(input, out, FlushDecompress::Finish) {
        Ok(_) if d.total_out() as usize == out.len() => Ok(()),
        Ok(_) => Err(FormatError::Corrupt(
            "compressed cluster decompresses to fewer bytes than a cluster".into(),
        )),
        Err(e) => Err(FormatError::Corrupt(format!(
            "compressed cluster is not valid deflate data: {e}"
        ))),
    }
}

/// One zstd frame of `data` in at most `limit` bytes, made by a single end-of-frame
/// compression call with default parameters, as QEMU makes it; None if it does not fit.
fn zstd_compress(data: &[u8], limit: usize) -> Result<Option<Vec<u8>>, FormatError> {
    let mut cctx = CCtx::create();
    let mut out = vec![0u8; limit];
    let mut output = OutBuffer::around(&mut out[..]);
    let mut input = InBuffer::around(data);
    match cctx.compress_stream2(
        &mut output,
        &mut input,
        zstd_safe::zstd_sys::ZSTD_EndDirective::ZSTD_e_end,
    ) {
        Ok(0) => {
            let n = output.pos();
            out.truncate(n);
            Ok(Some(out))
        }
        // Output left to flush: the frame does not fit in `limit` bytes.
        Ok(_) => Ok(None),
        Err(_) => Err(FormatError::Io(std::io::Error::from_raw_os_error(5))),
    }
}

/// Decompresses the zstd frame at the start of `input` (trailing bytes ignored) into exactly
/// `out.len()` bytes; a frame that ends short of that, runs past it or does not end inside
/// `input` is an error, as in QEMU.
fn zstd_decompress(input: &[u8], out: &mut [u8]) -> Result<(), FormatError> {
    let corrupt = |what: &str| FormatError::Corrupt(format!("compressed cluster: {what}"));
    let mut dctx = DCtx::create();
    let mut input = InBuffer::around(input);
    let mut output = OutBuffer::around(out);
    let size = output.capacity();
    let mut last = 0;
    while output.pos() < size {
        let (in_before, out_before) = (input.pos(), output.pos());
        last = dctx
            .decompress_stream(&mut output, &mut input)
            .map_err(|code| corrupt(zstd_safe::get_error_name(code)))?;
        if input.pos() <= in_before && output.pos() <= out_before {
            return Err(corrupt("zstd frame ends before a whole cluster"));
        }
    }
    if last > 0 {
        return Err(corrupt("zstd frame larger than a cluster"));
    }
    Ok(())
}

impl Qcow2 {
    /// The whole guest cluster a compressed entry holds (zlib or zstd, per the header).
    pub(super) fn read_compressed_cluster(
        &mut self,
        host: u64,
        size: u64,
    ) -> Result<Vec<u8>, FormatError> {
        // The L2 entry rounds the stream up to whole sectors, which may run past the end of
        // the file (the last stream of `qemu-img convert -c`): read only what is there.
        let avail = self.storage.len()?.saturating_sub(host).min(size);
        let mut raw = vec![0u8; avail as usize];
        self.storage.debug_event("read_compressed");
        self.storage.read_at(&mut raw, host)?;
        let mut out = vec![0u8; self.geo.cluster_size() as usize];
        if self.header.compression_type == ZSTD {
            zstd_decompress(&raw, &mut out)?;
        } else {
            inflate(&raw, &mut out)?;
        }
        Ok(out)
    }

    /// Writes whole clusters compressed; `offset` is cluster-aligned and `data` covers whole
    /// clusters (the last one may end at the end of the image and is padded with zeros).
    pub(super) fn write_compressed_guest(
        &mut self,
        offset: u64,
        data: &[u8],
        bk: &mut dyn Backing,
    ) -> Result<(), FormatError> {
        let cs = self.geo.cluster_size();
        if !self.geo.is_aligned(offset)
            || (!(data.len() as u64).is_multiple_of(cs)
                && offset + data.len() as u64 != self.header.size)
        {
            return Err(FormatError::Unsupported(
                "compressed writes must cover whole clusters".into(),
            ));
        }
        for (k, chunk) in data.chunks(cs as usize).enumerate() {
            let pos = offset + k as u64 * cs;
            let mut cluster = chunk.to_vec();
            cluster.resize(cs as usize, 0);
            let packed = if self.header.compression_type == ZSTD {
                zstd_compress(&cluster, cs as usize - 1)?
            } else {
                deflate(&cluster, cs as usize - 1)
            };
            match packed {
                Some(z) => self.write_one_compressed(pos, &z)?,
                None => self.write_guest(pos, chunk, bk)?,
            }
        }
        Ok(())
    }

    /// Host bytes for one compressed cluster, packed after the previous one as QEMU packs
    /// them: in the rest of the partly used host cluster if it fits, else spilling into a new
    /// cluster right after it, else in a new cluster. Every host cluster the bytes overlap
    /// gains one reference.
    fn alloc_compressed_bytes(&mut self, len: u64) -> Result<u64, FormatError> {
        let storage = self.storage.clone();
        let cs = self.geo.cluster_size();
        let mut offset = self.free_byte_offset;
        if offset != 0 {
            let c = self.geo.host_cluster(HostOffset(offset));
            if self.refcounts.get(storage.as_ref(), c)? >= self.geo.max_refcount() {
                offset = 0;
            }
        }
        let free_in_cluster = if offset == 0 { 0 } else { cs - offset % cs };
        if offset != 0 && free_in_cluster >= len {
            let c = self.geo.host_cluster(HostOffset(offset));
            self.refcounts.update_range(storage.as_ref(), c, 1, 1)?;
        } else {
            let new = self.refcounts.alloc(storage.as_ref(), 1)?;
            let new_off = self.geo.host_offset(new).0;
            if offset != 0 && offset.div_ceil(cs) * cs == new_off {
                // Starts in the partly used cluster and continues into the new one.
                let c = self.geo.host_cluster(HostOffset(offset));
                self.refcounts.update_range(storage.as_ref(), c, 1, 1)?;
            } else {
                offset = new_off;
            }
        }
        self.free_byte_offset = if (offset + len).is_multiple_of(cs) {
            0
        } else {
            offset + len
        };
        Ok(offset)
    }

    fn write_one_compressed(&mut self, pos: u64, z: &[u8]) -> Result<(), FormatError> {
        let geo = self.geo;
        let storage = self.storage.clone();
        let l2 = self.l2_for_write(geo.l1_index(GuestOffset(pos)))?;
        let idx = geo.l2_index(GuestOffset(pos));
        let old = self.l2_entries_at(l2, idx, 1)?[idx];
        // QEMU never lets a compressed cluster replace anything: an entry with a host offset
        // (data, preallocated zero, compressed; shared with a snapshot or not) fails with EIO,
        // after the L2 table was made writable.
        if old & L2E_OFFSET_MASK != 0 {
            return Err(FormatError::Io(std::io::Error::from_raw_os_error(5)));
        }
        let host = self.alloc_compressed_bytes(z.len() as u64)?;
        let shift = 62 - (geo.cluster_bits - 8);
        if host >= 1u64 << shift {
            return Err(FormatError::Unsupported(
                "compressed cluster offset out of range".into(),
            ));
        }
        self.storage.debug_event("write_compressed");
        storage.write_at(z, host)?;
        let extra_sectors = ((host + z.len() as u64 - 1) >> 9) - (host >> 9);
        let entry = OFLAG_COMPRESSED | (extra_sectors << shift) | host;
        self.l2_entries_at(l2, idx, 1)?[idx] = entry;
        self.refcounts.cache.l2.mark_dirty(l2);
        self.release(ClusterKind::decode(old, geo))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deflate_round_trip_and_incompressible_data() {
        let data: Vec<u8> = (0..65536u32).map(|i| (i / 100) as u8).collect();
        let z = deflate(&data, 65535).unwrap();
        assert!(z.len() < 4096);
        let mut out = vec![0u8; 65536];
        inflate(&z, &mut out).unwrap();
        assert_eq!(out, data);
        assert!(deflate(&noise(0x1234_5678), 65535).is_none());
    }

    /// One incompressible 64 KiB cluster (xorshift32 from `seed`).
    fn noise(mut x: u32) -> Vec<u8> {
        (0..65536)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                x as u8
            })
            .collect()
    }

    #[test]
    fn zstd_round_trip_ignores_trailing_bytes_and_refuses_short_frames() {
        let data: Vec<u8> = (0..65536u32).map(|i| (i / 300) as u8).collect();
        let z = zstd_compress(&data, 65535).unwrap().unwrap();
        assert_eq!(&z[..4], &[0x28, 0xb5, 0x2f, 0xfd], "a zstd frame");
        let mut padded = z.clone();
        padded.extend_from_slice(&[0xee; 300]);
        let mut out = vec![0u8; 65536];
        zstd_decompress(&padded, &mut out).unwrap();
        assert_eq!(out, data);
        // A cluster of 4 KiB is too small for this frame's content.
        let mut small = vec![0u8; 4096];
        assert!(zstd_decompress(&z, &mut small).is_err());
        // A truncated frame does not make a whole cluster.
        assert!(zstd_decompress(&z[..z.len() / 2], &mut out).is_err());
        // Garbage is refused.
        assert!(zstd_decompress(&[0x55; 64], &mut out).is_err());
    }

    #[test]
    fn zstd_incompressible_cluster_does_not_fit() {
        assert!(zstd_compress(&noise(0x9e37_79b9), 65535).unwrap().is_none());
    }
}
