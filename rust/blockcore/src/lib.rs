//! An emulated QEMU block layer.
//!
//! The pieces, bottom up: [`units`] (typed offsets and granularities), [`storage`] (byte stores:
//! host files, memory), [`format`](mod@format) (image formats over a store: `raw`, `qcow2`), [`bitmap`] (dirty
//! bitmaps), and [`graph`] (named nodes with children, block backends, guest-like I/O that marks
//! bitmaps dirty). Nothing here knows QMP or JSON: the reference engine in Python turns these
//! facts into QEMU's replies.

pub mod bitmap;
pub mod format;
pub mod graph;
pub mod job;
pub mod storage;
pub mod units;
