//! The guest I/O paths: read, write (allocating and copying on write), write-zeroes and discard.
//!
//! Requests are cut at L2 table boundaries (or slice boundaries when the metadata cache holds
//! slices); within one table, runs of clusters of the same
//! treatment are handled with one host I/O each, so sequential I/O costs one data write plus a
//! few bytes of refcount and L2 entries per run, not per cluster.

use super::mapping::{check_entry, ClusterKind, L1E_OFFSET_MASK, OFLAG_COPIED, OFLAG_ZERO};
use super::units::GuestOffset;
use super::Qcow2;
use crate::format::{Backing, FormatError};

/// How a write treats one cluster.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Treatment {
    /// Write in place at this host cluster (COPIED data cluster).
    InPlace(u64),
    /// Write into this preallocated zero cluster (COPIED), which keeps its host offset and
    /// loses the zero flag; the rest of the cluster is made zero as for a new one.
    InPlaceZero(u64),
    /// Allocate a new cluster; the old entry's references are dropped afterwards.
    Allocate,
}

impl Qcow2 {
    /// The L2 table at `l2` from the metadata cache, having looked up the slices holding
    /// entries `[first, first + count)` (the whole table unless the cache holds slices).
    pub(super) fn l2_entries_at(
        &mut self,
        l2: u64,
        first: usize,
        count: usize,
    ) -> Result<&mut Vec<u64>, FormatError> {
        let storage = self.storage.clone();
        self.refcounts
            .cache
            .l2_range(storage.as_ref(), l2, first, count)
    }

    /// Guest bytes one L2 cache entry maps (a table's, or a slice's): requests are cut there,
    /// as QEMU handles them one cache entry at a time.
    fn l2_entry_span(&self) -> u64 {
        self.refcounts.cache.l2_slice_entries() as u64 * self.geo.cluster_size()
    }

    /// Reads guest bytes; the range is checked by the caller.
    pub(super) fn read_guest(
        &mut self,
        offset: u64,
        buf: &mut [u8],
        bk: &mut dyn Backing,
    ) -> Result<(), FormatError> {
        let span = self.l2_entry_span();
        let mut done = 0usize;
        while done < buf.len() {
            let pos = offset + done as u64;
            let l1i = self.geo.l1_index(GuestOffset(pos));
            let table_end = (pos / span + 1) * span;
            let want = ((buf.len() - done) as u64).min(table_end - pos) as usize;
            let chunk = &mut buf[done..done + want];
            match self.mapping.l2_offset(l1i)? {
                None => bk.read(pos, chunk)?,
                Some((l2, _)) => self.read_in_table(l2, pos, chunk, bk)?,
            }
            done += want;
        }
        Ok(())
    }

    /// Reads a range inside one L2 table, one host read per contiguous run.
    fn read_in_table(
        &mut self,
        l2: u64,
        offset: u64,
        buf: &mut [u8],
        bk: &mut dyn Backing,
    ) -> Result<(), FormatError> {
        let geo = self.geo;
        let cs = geo.cluster_size();
        let storage = self.storage.clone();
        let mut done = 0usize;
        while done < buf.len() {
            let pos = offset + done as u64;
            let first = geo.l2_index(GuestOffset(pos));
            let wanted = (buf.len() - done) as u64 + geo.in_cluster(GuestOffset(pos));
            let count = wanted.div_ceil(cs) as usize;
            let table = self.l2_entries_at(l2, first, count)?;
            let kind = check_entry(table[first], geo, l2, first)?;
            // Extend the run while the next cluster is read the same way (and, for data,
            // contiguously on the host).
            let mut n = 1usize;
            let in_first = cs - geo.in_cluster(GuestOffset(pos));
            let mut run_bytes = in_first;
            while (run_bytes as usize) < buf.len() - done && first + n < table.len() {
                let next = ClusterKind::decode(table[first + n], geo);
                let same = match (kind, next) {
                    (ClusterKind::Normal { host: a, .. }, ClusterKind::Normal { host: b, .. }) => {
                        b.0 == a.0 + n as u64 * cs && geo.is_aligned(b.0)
                    }
                    (ClusterKind::Unallocated, ClusterKind::Unallocated) => true,
                    (
                        ClusterKind::ZeroPlain | ClusterKind::ZeroAlloc { .. },
                        ClusterKind::ZeroPlain | ClusterKind::ZeroAlloc { .. },
                    ) => true,
                    _ => false,
                };
                if !same {
                    break;
                }
                n += 1;
                run_bytes += cs;
            }
            let len = (run_bytes as usize).min(buf.len() - done);
            let chunk = &mut buf[done..done + len];
            match kind {
                ClusterKind::Normal { host, .. } => {
                    storage.debug_event("read_aio");
                    storage.read_at(chunk, host.0 + geo.in_cluster(GuestOffset(pos)))?
                }
                ClusterKind::ZeroPlain | ClusterKind::ZeroAlloc { .. } => chunk.fill(0),
                ClusterKind::Unallocated => bk.read(pos, chunk)?,
                ClusterKind::Compressed { host, size } => {
                    self.read_compressed(host, size, geo.in_cluster(GuestOffset(pos)), chunk)?
                }
            }
            done += len;
        }
        Ok(())
    }

    /// The L2 table for L1 entry `l1i`, ready to be changed: allocated if missing, copied if
    /// shared (no COPIED flag, e.g. with an internal snapshot). Returns its host offset.
    pub(super) fn l2_for_write(&mut self, l1i: u64) -> Result<u64, FormatError> {
        let storage = self.storage.clone();
        let old = self.mapping.l2_offset(l1i)?;
        if let Some((off, true)) = old {
            return Ok(off);
        }
        let new = self.refcounts.alloc(storage.as_ref(), 1)?;
        let new_off = self.geo.host_offset(new).0;
        let table = match old {
            Some((off, _)) => self.refcounts.cache.l2_entries(storage.as_ref(), off)?,
            None => vec![0u64; self.geo.l2_entries() as usize],
        };
        // QEMU's l2_allocate: the refcount of the new table reaches the file first, then the
        // table itself (the whole L2 cache is flushed), then the L1 entry.
        self.refcounts.cache.flush_refblocks(storage.as_ref())?;
        self.refcounts
            .cache
            .new_l2(storage.as_ref(), new_off, table, old.map(|(off, _)| off))?;
        self.refcounts.cache.flush_l2(storage.as_ref())?;
        self.mapping
            .set_l1(storage.as_ref(), l1i, new_off | OFLAG_COPIED)?;
        if let Some((off, _)) = old {
            self.refcounts.free_bytes(
                storage.as_ref(),
                off & L1E_OFFSET_MASK,
                self.geo.cluster_size(),
            )?;
        }
        Ok(new_off)
    }

    /// Drops the references an old L2 entry held.
    pub(super) fn release(&mut self, kind: ClusterKind) -> Result<(), FormatError> {
        if let Some((off, len)) = kind.host_extent(self.geo) {
            self.refcounts.free_bytes(self.storage.as_ref(), off, len)?;
        }
        Ok(())
    }

    /// Writes guest bytes; the range is checked by the caller.
    pub(super) fn write_guest(
        &mut self,
        offset: u64,
        data: &[u8],
        bk: &mut dyn Backing,
    ) -> Result<(), FormatError> {
        let span = self.l2_entry_span();
        let mut done = 0usize;
        while done < data.len() {
            let pos = offset + done as u64;
            let table_end = (pos / span + 1) * span;
            let n = ((data.len() - done) as u64).min(table_end - pos) as usize;
            self.write_in_table(pos, &data[done..done + n], bk)?;
            done += n;
        }
        Ok(())
    }

    fn write_in_table(
        &mut self,
        offset: u64,
        data: &[u8],
        bk: &mut dyn Backing,
    ) -> Result<(), FormatError> {
        let geo = self.geo;
        let cs = geo.cluster_size();
        let storage = self.storage.clone();
        let l2 = self.l2_for_write(geo.l1_index(GuestOffset(offset)))?;
        let end = offset + data.len() as u64;
        let mut pos = offset;
        while pos < end {
            let idx = geo.l2_index(GuestOffset(pos));
            let wanted = end - pos + geo.in_cluster(GuestOffset(pos));
            let table = self.l2_entries_at(l2, idx, wanted.div_ceil(cs) as usize)?;
            let treat = |e: u64, i: usize| -> Result<Treatment, FormatError> {
                Ok(match check_entry(e, geo, l2, i)? {
                    ClusterKind::Normal { host, copied: true } => Treatment::InPlace(host.0),
                    ClusterKind::ZeroAlloc { host, copied: true } => Treatment::InPlaceZero(host.0),
                    _ => Treatment::Allocate,
                })
            };
            let first = treat(table[idx], idx)?;
            let mut n = 1usize;
            let run_start = pos - geo.in_cluster(GuestOffset(pos));
            while run_start + n as u64 * cs < end {
                let t = treat(table[idx + n], idx + n)?;
                let contiguous = match (first, t) {
                    (Treatment::InPlace(a), Treatment::InPlace(b))
                    | (Treatment::InPlaceZero(a), Treatment::InPlaceZero(b)) => {
                        b == a + n as u64 * cs
                    }
                    (Treatment::Allocate, Treatment::Allocate) => true,
                    _ => false,
                };
                if !contiguous {
                    break;
                }
                n += 1;
            }
            let run_end = (run_start + n as u64 * cs).min(end);
            let chunk = &data[(pos - offset) as usize..(run_end - offset) as usize];
            match first {
                Treatment::InPlace(host) => {
                    storage.debug_event("write_aio");
                    storage.write_at(chunk, host + geo.in_cluster(GuestOffset(pos)))?;
                }
                Treatment::InPlaceZero(host) => {
                    self.write_allocating(l2, idx, n, pos, chunk, bk, Some(host))?
                }
                Treatment::Allocate => self.write_allocating(l2, idx, n, pos, chunk, bk, None)?,
            }
            pos = run_end;
        }
        Ok(())
    }

    /// Writes `chunk` at guest `pos` into `n` new clusters for L2 entries `[idx, idx + n)`,
    /// filling the rest of the first and last cluster from their old contents. With `keep`,
    /// the clusters are the entries' own preallocated zero clusters starting at that host
    /// offset (QEMU's `keep_old_clusters`): nothing is allocated or released.
    #[allow(clippy::too_many_arguments)] // one request's geometry; a struct would only rename it
    fn write_allocating(
        &mut self,
        l2: u64,
        idx: usize,
        n: usize,
        pos: u64,
        chunk: &[u8],
        bk: &mut dyn Backing,
        keep: Option<u64>,
    ) -> Result<(), FormatError> {
        let geo = self.geo;
        let cs = geo.cluster_size();
        let storage = self.storage.clone();
        let old: Vec<u64> = self.l2_entries_at(l2, idx, n)?[idx..idx + n].to_vec();
        let head = geo.in_cluster(GuestOffset(pos));
        let total = n as u64 * cs;
        let tail = total - head - chunk.len() as u64;
        let host = match keep {
            Some(host) => host,
            None => {
                let new = self.refcounts.alloc(storage.as_ref(), n as u64)?;
                geo.host_offset(new).0
            }
        };
        if head == 0 && tail == 0 {
            storage.debug_event("write_aio");
            storage.write_at(chunk, host)?;
        } else if self.cow_is_zero(pos - head, n, head, tail, bk)? {
            // QEMU's handle_alloc_space: copy-on-write regions that read as zeros by block
            // status are not written; the new clusters are zeroed in the file at once (no data
            // there for SEEK_DATA) and only the guest bytes are written.
            storage.debug_event("cluster_alloc_space");
            storage.zero_range(host, total)?;
            storage.debug_event("write_aio");
            storage.write_at(chunk, host + head)?;
        } else {
            let mut buf = vec![0u8; total as usize];
            let cluster_start = pos - head;
            if head > 0 {
                self.cow_fill_at(old[0], cluster_start, &mut buf[..head as usize], bk)?;
            }
            if tail > 0 {
                let at = (total - tail) as usize;
                let last = old[n - 1];
                let src = cluster_start + total - tail;
                self.cow_fill_at(last, src, &mut buf[at..], bk)?;
            }
            buf[head as usize..head as usize + chunk.len()].copy_from_slice(chunk);
            storage.debug_event("write_aio");
            storage.write_at(&buf, host)?;
        }
        // QEMU's qcow2_alloc_cluster_link_l2: the table comes to wait for the refcounts of the
        // new clusters before it changes; dropping the old references then flushes those
        // refcounts at once.
        self.before_link_l2()?;
        {
            let table = self.l2_entries_at(l2, idx, n)?;
            for k in 0..n {
                table[idx + k] = (host + k as u64 * cs) | OFLAG_COPIED;
            }
        }
        self.refcounts.cache.l2.mark_dirty(l2);
        if keep.is_some() {
            return Ok(());
        }
        for e in old {
            self.release(ClusterKind::decode(e, geo))?;
        }
        Ok(())
    }

    /// Whether both copy-on-write regions of an allocating write (`head` bytes before the data
    /// in the first cluster, `tail` after it in the last; `start`: guest offset of the first
    /// cluster, `n` clusters) are zero for block status without probing (QEMU's `is_zero_cow`):
    /// zero clusters, or unallocated with a backing chain that is zero there too.
    fn cow_is_zero(
        &mut self,
        start: u64,
        n: usize,
        head: u64,
        tail: u64,
        bk: &mut dyn Backing,
    ) -> Result<bool, FormatError> {
        let total = n as u64 * self.geo.cluster_size();
        Ok((head == 0 || self.range_is_zero(start, head, bk)?)
            && (tail == 0 || self.range_is_zero(start + total - tail, tail, bk)?))
    }

    /// Fills `buf` with what guest offset `at` (inside the cluster of entry `e`) reads as.
    fn cow_fill_at(
        &mut self,
        e: u64,
        at: u64,
        buf: &mut [u8],
        bk: &mut dyn Backing,
    ) -> Result<(), FormatError> {
        let within = self.geo.in_cluster(GuestOffset(at));
        match ClusterKind::decode(e, self.geo) {
            ClusterKind::Normal { host, .. } => {
                self.storage.debug_event("cow_read");
                self.storage.read_at(buf, host.0 + within)?
            }
            ClusterKind::ZeroPlain | ClusterKind::ZeroAlloc { .. } => buf.fill(0),
            ClusterKind::Unallocated => bk.read(at, buf)?,
            ClusterKind::Compressed { host, size } => {
                self.read_compressed(host, size, within, buf)?
            }
        }
        Ok(())
    }

    /// Reads `buf` from offset `within` of a compressed cluster stored in `size` bytes at
    /// `host` (decompressed by [`compress`](super::compress), the one zlib implementation).
    fn read_compressed(
        &mut self,
        host: u64,
        size: u64,
        within: u64,
        buf: &mut [u8],
    ) -> Result<(), FormatError> {
        let cluster = self.read_compressed_cluster(host, size)?;
        let w = within as usize;
        buf.copy_from_slice(&cluster[w..w + buf.len()]);
        Ok(())
    }

    /// Whole clusters `[first, first + n)` as guest cluster indexes, handled one L2 cache entry
    /// (table or slice) at a time by `f(self, l2 offset, first L2 index, count)`.
    pub(super) fn for_each_table(
        &mut self,
        first: u64,
        n: u64,
        mut f: impl FnMut(&mut Self, u64, usize, usize) -> Result<(), FormatError>,
    ) -> Result<(), FormatError> {
        let per = self.geo.l2_entries();
        let mut c = first;
        while c < first + n {
            let l1i = c / per;
            let idx = (c % per) as usize;
            let slice = self.refcounts.cache.l2_slice_entries() as u64;
            let count = (slice - idx as u64 % slice).min(first + n - c);
            let l2 = self.l2_for_write(l1i)?;
            f(self, l2, idx, count as usize)?;
            c += count;
        }
        Ok(())
    }

    /// Rewrites L2 entries `[idx, idx + count)` with `new(old kind, old entry)` (None = keep),
    /// writes the changed span through, then drops the references of replaced entries.
    pub(super) fn rewrite_entries(
        &mut self,
        l2: u64,
        idx: usize,
        count: usize,
        new: impl Fn(ClusterKind, u64) -> Option<u64>,
    ) -> Result<(), FormatError> {
        let geo = self.geo;
        let mut released = Vec::new();
        let (mut lo, mut hi) = (usize::MAX, 0);
        {
            let table = self.l2_entries_at(l2, idx, count)?;
            for (i, slot) in table.iter_mut().enumerate().skip(idx).take(count) {
                let old = *slot;
                let kind = check_entry(old, geo, l2, i)?;
                if let Some(e) = new(kind, old) {
                    if e != old {
                        *slot = e;
                        lo = lo.min(i);
                        hi = hi.max(i + 1);
                        if e & !OFLAG_ZERO == 0 {
                            released.push(kind);
                        }
                    }
                }
            }
        }
        if lo < hi {
            self.refcounts.cache.l2.mark_dirty(l2);
        }
        for kind in released {
            self.release(kind)?;
        }
        Ok(())
    }

    /// Makes whole guest clusters read as zeros (QEMU's `zero_in_l2_slice`): with `unmap`
    /// (`BDRV_REQ_MAY_UNMAP`) their host clusters are freed, without it allocated clusters keep
    /// their offset under the zero flag; compressed clusters are always freed.
    fn zeroize_clusters(
        &mut self,
        first: u64,
        n: u64,
        bk: &mut dyn Backing,
        unmap: bool,
    ) -> Result<(), FormatError> {
        let v3 = self.header.version >= 3;
        if !v3 {
            if bk.present() {
                // v2 has no zero flag: with a backing file only explicit zeros will do.
                let cs = self.geo.cluster_size();
                let end = ((first + n) * cs).min(self.header.size);
                return self.write_zero_bytes(first * cs, end - first * cs, bk);
            }
            return self.discard_clusters(first, n, bk.present());
        }
        self.for_each_table(first, n, |s, l2, idx, count| {
            s.rewrite_entries(l2, idx, count, |kind, old| {
                Some(match kind {
                    ClusterKind::Normal { .. } | ClusterKind::ZeroAlloc { .. } if !unmap => {
                        old | OFLAG_ZERO
                    }
                    _ => OFLAG_ZERO,
                })
            })
        })
    }

    /// Discards whole guest clusters (QEMU's `qcow2_cluster_discard`, not a full discard).
    fn discard_clusters(&mut self, first: u64, n: u64, backing: bool) -> Result<(), FormatError> {
        let v3 = self.header.version >= 3;
        self.for_each_table(first, n, |s, l2, idx, count| {
            s.rewrite_entries(l2, idx, count, |kind, _| {
                (backing || kind.is_allocated()).then_some(if v3 { OFLAG_ZERO } else { 0 })
            })
        })
    }

    fn write_zero_bytes(
        &mut self,
        offset: u64,
        len: u64,
        bk: &mut dyn Backing,
    ) -> Result<(), FormatError> {
        const CHUNK: u64 = 1 << 20;
        let zeros = vec![0u8; CHUNK.min(len) as usize];
        let mut done = 0;
        while done < len {
            let n = CHUNK.min(len - done);
            self.write_guest(offset + done, &zeros[..n as usize], bk)?;
            done += n;
        }
        Ok(())
    }

    /// Splits `[offset, offset + len)` into whole clusters (the image's last, partial cluster
    /// counting as whole when the range reaches the end) and partial pieces.
    fn split_clusters(&self, offset: u64, len: u64) -> Vec<(u64, u64, bool)> {
        let cs = self.geo.cluster_size();
        let size = self.header.size;
        let end = offset + len;
        let mut out = Vec::new();
        let mut pos = offset;
        while pos < end {
            let cstart = pos - pos % cs;
            let cend = cstart + cs;
            let piece_end = end.min(cend);
            let whole = pos == cstart && (piece_end == cend || piece_end == size);
            if whole {
                // Coalesce the run of whole clusters.
                let body_end = if end == size { end } else { end - end % cs };
                let body_end = body_end.max(piece_end);
                out.push((pos, body_end - pos, true));
                pos = body_end;
            } else {
                out.push((pos, piece_end - pos, false));
                pos = piece_end;
            }
        }
        out
    }

    /// Write-zeroes: zero flags for whole clusters (freeing them), explicit zeros for partial
    /// clusters unless the rest of the cluster already reads as zeros (then the whole cluster
    /// gets the zero flag), as QEMU's `qcow2_co_pwrite_zeroes` does.
    pub(super) fn zero_guest(
        &mut self,
        offset: u64,
        len: u64,
        bk: &mut dyn Backing,
        unmap: bool,
    ) -> Result<(), FormatError> {
        if unmap && self.pass_discard_request {
            return self.discarding_freed(|s| s.zero_clusters_and_bytes(offset, len, bk, true));
        }
        self.zero_clusters_and_bytes(offset, len, bk, unmap)
    }

    fn zero_clusters_and_bytes(
        &mut self,
        offset: u64,
        len: u64,
        bk: &mut dyn Backing,
        unmap: bool,
    ) -> Result<(), FormatError> {
        let cs = self.geo.cluster_size();
        for (pos, n, whole) in self.split_clusters(offset, len) {
            let first = pos / cs;
            if whole {
                self.zeroize_clusters(first, n.div_ceil(cs), bk, unmap)?;
                continue;
            }
            let (cstart, cend) = (first * cs, (first * cs + cs).min(self.header.size));
            if pos > cstart || pos + n < cend {
                // QEMU asks the block status of the rest of the cluster (`is_zero`), which
                // makes the image's first query guess its preallocation.
                self.metadata_preallocated();
            }
            let kind = self.lookup(GuestOffset(pos))?;
            let rest_is_zero = match kind {
                ClusterKind::ZeroPlain | ClusterKind::ZeroAlloc { .. } => true,
                // What the rest of the cluster is, is up to the backing chain's block status.
                ClusterKind::Unallocated => {
                    bk.is_zero(cstart, pos - cstart)? && bk.is_zero(pos + n, cend - (pos + n))?
                }
                _ => false,
            };
            if rest_is_zero {
                self.zeroize_clusters(first, 1, bk, unmap)?;
            } else {
                self.write_zero_bytes(pos, n, bk)?;
            }
        }
        Ok(())
    }

    /// QEMU's `is_zero` over this image: every cluster of the range (clamped to the image) is
    /// a zero cluster, or unallocated where the backing chain's status without probing the
    /// protocol layer is zero (block status with `want_zero = false`).
    pub(super) fn range_is_zero(
        &mut self,
        offset: u64,
        len: u64,
        bk: &mut dyn Backing,
    ) -> Result<bool, FormatError> {
        let cs = self.geo.cluster_size();
        let end = (offset + len).min(self.header.size);
        if offset < end {
            // A block-status query of this image: the first one guesses its preallocation.
            self.metadata_preallocated();
        }
        let mut pos = offset;
        while pos < end {
            let piece = (pos - pos % cs + cs).min(end) - pos;
            let kind = self.lookup(GuestOffset(pos))?;
            let zero = match kind {
                ClusterKind::ZeroPlain | ClusterKind::ZeroAlloc { .. } => true,
                ClusterKind::Unallocated => bk.is_zero_unprobed(pos, piece)?,
                ClusterKind::Normal { .. } | ClusterKind::Compressed { .. } => false,
            };
            if !zero {
                return Ok(false);
            }
            pos += piece;
        }
        Ok(true)
    }

    /// Discard: whole clusters only; partial clusters are left as they are (QEMU ignores them).
    pub(super) fn discard_guest(
        &mut self,
        offset: u64,
        len: u64,
        backing: bool,
    ) -> Result<(), FormatError> {
        if self.header.version < 3 && backing {
            // v2 has no zero flag, and dropping the cluster would show the backing: QEMU
            // refuses (ENOTSUP), which makes the guest's discard a no-op.
            return Ok(());
        }
        let cs = self.geo.cluster_size();
        if !self.pass_discard_request {
            for (pos, n, whole) in self.split_clusters(offset, len) {
                if whole {
                    self.discard_clusters(pos / cs, n.div_ceil(cs), backing)?;
                }
            }
            return Ok(());
        }
        self.discarding_freed(|s| {
            for (pos, n, whole) in s.split_clusters(offset, len) {
                if whole {
                    s.discard_clusters(pos / cs, n.div_ceil(cs), backing)?;
                }
            }
            Ok(())
        })
    }
}
