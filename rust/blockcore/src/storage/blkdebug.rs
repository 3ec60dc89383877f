//! QEMU's `blkdebug` as a store wrapper: rules that, once armed by a debug event signalled by the
//! format driver above, make the next matching request fail with a chosen errno.
//!
//! The model (QEMU's documented blkdebug behaviour): the state starts at 1. When an event is
//! signalled, every rule of that event whose `state` matches the current state (or has none)
//! fires: `set-state` rules compute the next state (all from the state before the event), and the
//! matching `inject-error` rules replace the set of active rules. A request (read, write,
//! write-zeroes, discard, flush; block-status only for rules naming it) that matches an active rule's `iotype` and `sector` fails with that rule's
//! errno; a `once` rule is then removed for good.

use super::Storage;
use std::io;
use std::sync::{Arc, Mutex};

/// The kind of a request, for an inject rule's `iotype` filter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IoType {
    /// Reads.
    Read,
    /// Writes with data.
    Write,
    /// Write-zeroes requests.
    WriteZeroes,
    /// Discards.
    Discard,
    /// Flushes.
    Flush,
    /// Block-status queries (allocation and zero detection); only rules naming this iotype
    /// match them.
    BlockStatus,
}

impl IoType {
    /// Parses QEMU's `BlkdebugIOType` name.
    pub fn parse(name: &str) -> Option<Self> {
        Some(match name {
            "read" => IoType::Read,
            "write" => IoType::Write,
            "write-zeroes" => IoType::WriteZeroes,
            "discard" => IoType::Discard,
            "flush" => IoType::Flush,
            "block-status" => IoType::BlockStatus,
            _ => return None,
        })
    }
}

/// An `inject-error` rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InjectRule {
    /// The event that arms it.
    pub event: String,
    /// The state it requires when the event fires (None: any).
    pub state: Option<u64>,
    /// Which requests it fails (None: every kind handled here).
    pub iotype: Option<IoType>,
    /// The errno of the failure.
    pub errno: i32,
    /// The 512-byte sector a failing request must cover (None: any).
    pub sector: Option<u64>,
    /// Remove the rule after it fired once.
    pub once: bool,
    /// Fail synchronously (no visible difference in this model).
    pub immediately: bool,
}

/// A `set-state` rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateRule {
    /// The event that fires it.
    pub event: String,
    /// The state it requires (None: any).
    pub state: Option<u64>,
    /// The state it moves to.
    pub new_state: u64,
}

#[derive(Debug)]
struct Rules {
    state: u64,
    inject: Vec<(u64, InjectRule)>,
    set_state: Vec<StateRule>,
    /// Ids of the armed inject rules, in arming order.
    active: Vec<u64>,
}

/// A store that injects errors into the requests of the store it wraps.
#[derive(Debug)]
pub struct BlkdebugStorage {
    inner: Arc<dyn Storage>,
    rules: BlkdebugRules,
}

impl BlkdebugStorage {
    /// Wraps `inner` with the given rules; the state starts at 1.
    pub fn new(
        inner: Arc<dyn Storage>,
        inject: Vec<InjectRule>,
        set_state: Vec<StateRule>,
    ) -> Self {
        Self {
            inner,
            rules: BlkdebugRules::new(inject, set_state),
        }
    }

    /// The current state.
    pub fn state(&self) -> u64 {
        self.rules.state()
    }

    fn check(&self, kind: IoType, offset: u64, len: u64) -> io::Result<()> {
        self.rules.check(kind, offset, len)
    }
}

/// blkdebug's rules and state, for a blkdebug node whose requests the graph passes on (over
/// a format node) as much as for one wrapping a store.
#[derive(Debug)]
pub struct BlkdebugRules {
    rules: Mutex<Rules>,
}

impl BlkdebugRules {
    /// The given rules; the state starts at 1.
    pub fn new(inject: Vec<InjectRule>, set_state: Vec<StateRule>) -> Self {
        Self {
            rules: Mutex::new(Rules {
                state: 1,
                inject: inject
                    .into_iter()
                    .enumerate()
                    .map(|(i, r)| (i as u64, r))
                    .collect(),
                set_state,
                active: Vec::new(),
            }),
        }
    }

    /// The current state.
    pub fn state(&self) -> u64 {
        self.lock().state
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Rules> {
        self.rules.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Fails the request if an active rule matches it (a `once` rule is then removed).
    pub fn check(&self, kind: IoType, offset: u64, len: u64) -> io::Result<()> {
        let mut r = self.lock();
        let hit = r.active.iter().copied().find(|id| {
            r.inject.iter().any(|(rid, rule)| {
                *rid == *id
                    && match rule.iotype {
                        Some(t) => t == kind,
                        // QEMU's default mask: every request type but block-status.
                        None => kind != IoType::BlockStatus,
                    }
                    && rule.sector.is_none_or(|s| {
                        // A request covers the sector if it has bytes and spans its offset (a
                        // flush has none, so a sector rule never fails a flush).
                        let at = s.saturating_mul(512);
                        len > 0 && at >= offset && at < offset.saturating_add(len)
                    })
            })
        });
        let Some(id) = hit else { return Ok(()) };
        let rule = r
            .inject
            .iter()
            .find(|(rid, _)| *rid == id)
            .map(|(_, rule)| rule.clone());
        let Some(rule) = rule else { return Ok(()) };
        if rule.once {
            r.active.retain(|a| *a != id);
            r.inject.retain(|(rid, _)| *rid != id);
        }
        Err(io::Error::from_raw_os_error(rule.errno))
    }
}

impl Storage for BlkdebugStorage {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        self.check(IoType::Read, offset, buf.len() as u64)?;
        self.inner.read_at(buf, offset)
    }
    fn write_at(&self, data: &[u8], offset: u64) -> io::Result<()> {
        self.check(IoType::Write, offset, data.len() as u64)?;
        self.inner.write_at(data, offset)
    }
    fn len(&self) -> io::Result<u64> {
        self.inner.len()
    }
    fn set_len(&self, len: u64) -> io::Result<()> {
        self.inner.set_len(len)
    }
    fn flush(&self) -> io::Result<()> {
        self.inner.flush()
    }
    fn flush_request(&self) -> io::Result<()> {
        self.check(IoType::Flush, 0, 0)?;
        self.inner.flush_request()
    }
    fn write_zeroes(&self, offset: u64, len: u64) -> io::Result<()> {
        self.check(IoType::WriteZeroes, offset, len)?;
        self.inner.write_zeroes(offset, len)
    }
    fn discard(&self, offset: u64, len: u64) -> io::Result<()> {
        self.check(IoType::Discard, offset, len)?;
        self.inner.discard(offset, len)
    }
    fn zero_range(&self, offset: u64, len: u64) -> io::Result<()> {
        self.check(IoType::WriteZeroes, offset, len)?;
        self.inner.zero_range(offset, len)
    }
    fn filename(&self) -> Option<&str> {
        self.inner.filename()
    }
    fn is_hole(&self, offset: u64, len: u64) -> io::Result<bool> {
        // A failed block-status query makes QEMU's is-zero checks assume data.
        if self.check(IoType::BlockStatus, offset, len).is_err() {
            return Ok(false);
        }
        self.inner.is_hole(offset, len)
    }
    fn extent(&self, offset: u64, len: u64) -> io::Result<super::Extent> {
        // A failed block-status query: no information, so data.
        if self.check(IoType::BlockStatus, offset, len).is_err() {
            return Ok(super::Extent { hole: false, len });
        }
        self.inner.extent(offset, len)
    }
    /// blkdebug is a filter: the size is its image's.
    fn allocated_size(&self) -> io::Result<Option<u64>> {
        self.inner.allocated_size()
    }
    fn debug_event(&self, event: &str) {
        self.rules.event(event);
        self.inner.debug_event(event);
    }
}

impl BlkdebugRules {
    /// Signals a debug event: set-state rules move the state, matching inject rules arm.
    pub fn event(&self, event: &str) {
        let mut r = self.lock();
        let state = r.state;
        let mut new_state = state;
        for rule in &r.set_state {
            if rule.event == event && rule.state.is_none_or(|s| s == state) {
                new_state = rule.new_state;
            }
        }
        let armed: Vec<u64> = r
            .inject
            .iter()
            .filter(|(_, rule)| rule.event == event && rule.state.is_none_or(|s| s == state))
            .map(|(id, _)| *id)
            .collect();
        if !armed.is_empty() {
            // The newest armed rule is checked first, as QEMU inserts at the head.
            r.active = armed.into_iter().rev().collect();
        }
        r.state = new_state;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::MemStorage;

    fn store(inject: Vec<InjectRule>, set_state: Vec<StateRule>) -> BlkdebugStorage {
        let mem = Arc::new(MemStorage::new());
        mem.set_len(1 << 20).unwrap();
        BlkdebugStorage::new(mem, inject, set_state)
    }

    fn rule(event: &str, state: Option<u64>, once: bool, sector: Option<u64>) -> InjectRule {
        InjectRule {
            event: event.into(),
            state,
            iotype: None,
            errno: 5,
            sector,
            once,
            immediately: false,
        }
    }

    #[test]
    fn rules_fire_only_after_their_event_in_their_state() {
        let s = store(
            vec![rule("read_aio", Some(2), true, None)],
            vec![StateRule {
                event: "flush_to_disk".into(),
                state: Some(1),
                new_state: 2,
            }],
        );
        let mut buf = [0u8; 512];
        s.debug_event("read_aio");
        s.read_at(&mut buf, 0).unwrap();
        assert_eq!(s.state(), 1);
        s.debug_event("flush_to_disk");
        assert_eq!(s.state(), 2);
        s.read_at(&mut buf, 0).unwrap();
        s.debug_event("read_aio");
        let e = s.read_at(&mut buf, 0).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(5));
        // once: gone for good.
        s.debug_event("read_aio");
        s.read_at(&mut buf, 0).unwrap();
    }

    #[test]
    fn sector_and_iotype_filter_requests() {
        let mut r = rule("write_aio", None, false, Some(8));
        r.iotype = Some(IoType::Write);
        r.errno = 28;
        let s = store(vec![r], vec![]);
        s.debug_event("write_aio");
        s.write_at(&[1; 512], 0).unwrap();
        let mut buf = [0u8; 512];
        s.read_at(&mut buf, 4096).unwrap();
        let e = s.write_at(&[1; 512], 4096).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(28));
        // Not once: still active.
        assert!(s.write_at(&[1; 1024], 3584).is_err());
    }

    #[test]
    fn discard_rule_fails_discards_only() {
        let mut r = rule("write_aio", None, true, None);
        r.iotype = Some(IoType::Discard);
        let s = store(vec![r], Vec::new());
        s.debug_event("write_aio");

        s.write_zeroes(0, 512).unwrap();
        assert_eq!(s.discard(0, 512).unwrap_err().raw_os_error(), Some(5));
        s.discard(0, 512).unwrap();
    }

    #[test]
    fn block_status_matches_only_rules_naming_it() {
        let s = store(vec![rule("read_aio", None, true, None)], Vec::new());
        s.debug_event("read_aio");
        assert!(s.is_hole(0, 512).is_ok());
        assert!(s.read_at(&mut [0; 512], 0).is_err());

        let mut r = rule("read_aio", None, true, None);
        r.iotype = IoType::parse("block-status");
        let s = store(vec![r], Vec::new());
        s.debug_event("read_aio");
        // A failed query answers "data" (not a hole) and uses the rule up.
        assert!(!s.is_hole(0, 512).unwrap());
        s.read_at(&mut [0; 512], 0).unwrap();
    }
}
