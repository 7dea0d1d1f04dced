//! Crash recovery as a pure function: given what a partition directory holds, decide which
//! bytes are a valid log. The driver reads files (through the `read_log` callback) and applies
//! the plan (truncate, delete); nothing here touches a file.
//!
//! Rule: the recovered log is the longest prefix of whole, CRC-valid batches with increasing
//! offsets. A torn or corrupt batch ends the log there; every later segment is dropped.

use crate::batch::Batches;
use crate::index::SegmentIndex;
use crate::producer_state::ProducerStates;

/// One segment as found on disk, with its index files already decoded (None if missing/invalid).
#[derive(Clone, Debug)]
pub struct SegmentOnDisk {
    pub base_offset: i64,
    pub log_size: u64,
    pub index: Option<SegmentIndex>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecoveredSegment {
    pub base_offset: i64,
    pub size: u64,
    pub next_offset: i64,
    pub index: SegmentIndex,
}

#[derive(Debug, Default)]
pub struct PartitionRecovery {
    pub segments: Vec<RecoveredSegment>,
    /// Cut this segment's log file to this length (a torn or corrupt tail).
    pub truncate: Option<(i64, u64)>,
    /// Segments to delete entirely (after a corruption, or overlapping).
    pub delete: Vec<i64>,
    pub producers: ProducerStates,
    pub log_end_offset: i64,
    /// (leader epoch, base offset) of each batch that starts an epoch, in the segments read.
    pub epoch_starts: Vec<(i32, i64)>,
    /// What recovery found, for the log.
    pub notes: Vec<String>,
}

/// What scanning one segment's bytes found.
#[derive(Debug)]
pub struct SegmentScan {
    pub valid_len: u64,
    pub next_offset: i64,
    pub index: SegmentIndex,
    pub stop: Option<String>,
    /// (leader epoch, base offset) of each batch whose epoch differs from the batch before.
    pub epoch_starts: Vec<(i32, i64)>,
}

/// Walks a segment's batches. `check_crc` is off only after a clean shutdown. Batches at or above
/// `replay_from` update `producers`.
pub fn scan_segment(
    bytes: &[u8],
    base_offset: i64,
    check_crc: bool,
    index_interval: u64,
    replay_from: i64,
    producers: &mut ProducerStates,
) -> SegmentScan {
    let mut index = SegmentIndex::new();
    let mut next_offset = base_offset;
    let mut batches = Batches::new(bytes, check_crc);
    let mut stop = None;
    let mut valid_len = 0u64;
    let mut epoch_starts: Vec<(i32, i64)> = Vec::new();
    for (position, batch) in batches.by_ref() {
        if batch.base_offset() < next_offset || batch.last_offset() - base_offset > u32::MAX as i64 {
            stop = Some(format!(
                "batch at position {position} has offset {} where {next_offset} or more was expected",
                batch.base_offset()
            ));
            break;
        }
        index.on_append(
            base_offset,
            batch.base_offset(),
            batch.last_offset(),
            position as u64,
            batch.len() as u64,
            batch.max_timestamp(),
            index_interval,
        );
        if batch.base_offset() >= replay_from {
            producers.record(&batch);
        }
        if epoch_starts.last().is_none_or(|&(epoch, _)| epoch != batch.partition_leader_epoch()) {
            epoch_starts.push((batch.partition_leader_epoch(), batch.base_offset()));
        }
        next_offset = batch.last_offset() + 1;
        valid_len = (position + batch.len()) as u64;
    }
    if stop.is_none() {
        stop = batches.stop_reason().map(|e| e.to_string());
    }
    if stop.is_none() && (valid_len as usize) < bytes.len() {
        stop = Some(format!("partial batch in the last {} bytes", bytes.len() - valid_len as usize));
    }
    SegmentScan { valid_len, next_offset, index, stop, epoch_starts }
}

/// Recovers one partition. Sealed segments that end at or below `trusted_below` were fsynced
/// before the stop and are trusted without a read unless producer state needs replaying; the
/// rest are read and their CRCs checked. `i64::MAX` means a clean shutdown: nothing is checked
/// and the last segment is trusted too. `snapshot` is the newest producer snapshot (its offset
/// and state), if any.
pub fn recover_partition(
    mut segments: Vec<SegmentOnDisk>,
    trusted_below: i64,
    index_interval: u64,
    snapshot: Option<(i64, ProducerStates)>,
    read_log: &mut dyn FnMut(i64) -> Vec<u8>,
) -> PartitionRecovery {
    segments.sort_by_key(|s| s.base_offset);
    let mut out = PartitionRecovery::default();
    let (replay_from, producers) = match snapshot {
        Some((offset, states)) => (offset, states),
        None => (segments.first().map_or(0, |s| s.base_offset), ProducerStates::default()),
    };
    out.producers = producers;
    let count = segments.len();
    let mut expected_base = i64::MIN;
    let mut cut = false;
    for (i, seg) in segments.iter().enumerate() {
        if cut {
            out.delete.push(seg.base_offset);
            continue;
        }
        if seg.base_offset < expected_base {
            out.notes
                .push(format!("segment {} overlaps the one before it; deleting it and later ones", seg.base_offset));
            out.delete.push(seg.base_offset);
            cut = true;
            continue;
        }
        if expected_base != i64::MIN && seg.base_offset > expected_base {
            // The tail of the segment before was lost while part of this one survived (writes
            // reach the disk in any order until an fsync): what follows the hole was never
            // acknowledged, since an acknowledgement waits for the fsync of every file.
            out.notes.push(format!(
                "segment {} starts after a hole from offset {expected_base}; deleting it and later ones",
                seg.base_offset
            ));
            out.delete.push(seg.base_offset);
            cut = true;
            continue;
        }
        let is_last = i + 1 == count;
        let end_if_sealed = segments.get(i + 1).map(|n| n.base_offset);
        // A segment not known to be fsynced may have lost its tail or hold torn sectors.
        let trusted = match end_if_sealed {
            Some(end) => end <= trusted_below,
            None => trusted_below == i64::MAX,
        };
        let full_check = !trusted || seg.index.is_none();
        let needs_walk = is_last || !trusted || end_if_sealed.is_some_and(|end| end > replay_from);
        if full_check || needs_walk {
            let bytes = read_log(seg.base_offset);
            let scan =
                scan_segment(&bytes, seg.base_offset, full_check, index_interval, replay_from, &mut out.producers);
            if let Some(why) = &scan.stop {
                out.notes.push(format!("segment {}: {why}; truncating to {} bytes", seg.base_offset, scan.valid_len));
                out.truncate = Some((seg.base_offset, scan.valid_len));
                cut = true;
            }
            expected_base = scan.next_offset;
            out.epoch_starts.extend(scan.epoch_starts);
            out.segments.push(RecoveredSegment {
                base_offset: seg.base_offset,
                size: scan.valid_len,
                next_offset: scan.next_offset,
                index: scan.index,
            });
        } else {
            let mut index = seg.index.clone().expect("index present when not scanning");
            let next_offset = end_if_sealed.expect("sealed segment has a successor");
            if let Some(&(_, rel)) = index.times.last() {
                index.offset_of_max_timestamp = seg.base_offset + rel as i64;
            }
            expected_base = next_offset;
            out.segments.push(RecoveredSegment {
                base_offset: seg.base_offset,
                size: seg.log_size,
                next_offset,
                index,
            });
        }
    }
    // An empty trailing segment is harmless; a log of nothing starts at its first base.
    out.log_end_offset = out.segments.last().map_or(0, |s| s.next_offset);
    out.producers.truncate_from(out.log_end_offset);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::batch::{stamp, test_batches::batch, Batch};
    use proptest::prelude::*;

    /// A log of `sizes.len()` batches with offsets assigned as the broker would.
    fn log_of(sizes: &[usize]) -> (Vec<u8>, Vec<(usize, i64)>) {
        let mut log = Vec::new();
        let mut ends = Vec::new();
        let mut next = 0i64;
        for &n in sizes {
            let mut b = batch(n).to_vec();
            stamp(&mut b, next, 0);
            next += n as i64;
            log.extend_from_slice(&b);
            ends.push((log.len(), next));
        }
        (log, ends)
    }

    fn recover_single(log: &[u8], clean: bool) -> PartitionRecovery {
        let seg = SegmentOnDisk { base_offset: 0, log_size: log.len() as u64, index: None };
        let trusted_below = if clean { i64::MAX } else { 0 };
        recover_partition(vec![seg], trusted_below, 4096, None, &mut |_| log.to_vec())
    }

    #[test]
    fn a_torn_tail_is_cut_at_the_last_whole_batch() {
        let (log, ends) = log_of(&[3, 1, 4]);
        let torn = &log[..ends[1].0 + 10];
        let r = recover_single(torn, false);
        assert_eq!(r.truncate, Some((0, ends[1].0 as u64)));
        assert_eq!(r.log_end_offset, 4);
    }

    #[test]
    fn later_segments_go_after_a_corrupt_one() {
        let (log, ends) = log_of(&[2, 2]);
        let mut bad = log.clone();
        bad[ends[0].0 + 40] ^= 0xff;
        let second = log_of(&[1]).0;
        let segments = vec![
            SegmentOnDisk { base_offset: 0, log_size: bad.len() as u64, index: None },
            SegmentOnDisk { base_offset: 4, log_size: second.len() as u64, index: None },
        ];
        let r = recover_partition(segments, 0, 4096, None, &mut |base| {
            if base == 0 {
                bad.clone()
            } else {
                second.clone()
            }
        });
        assert_eq!(r.truncate, Some((0, ends[0].0 as u64)));
        assert_eq!(r.delete, vec![4]);
        assert_eq!(r.log_end_offset, 2);
    }

    #[test]
    fn a_sealed_segment_is_crc_checked_unless_the_recovery_point_covers_it() {
        let (log, ends) = log_of(&[2, 2]);
        let mut bad = log.clone();
        bad[ends[0].0 + 40] ^= 0xff;
        let mut second = batch(1).to_vec();
        stamp(&mut second, 4, 0);
        let mut index = SegmentIndex::new();
        index.on_append(0, 0, 3, 0, bad.len() as u64, 0, 4096);
        let segments = vec![
            SegmentOnDisk { base_offset: 0, log_size: bad.len() as u64, index: Some(index) },
            SegmentOnDisk { base_offset: 4, log_size: second.len() as u64, index: None },
        ];
        let mut read = Vec::new();
        let recover = |trusted_below: i64, read: &mut Vec<i64>| {
            recover_partition(segments.clone(), trusted_below, 4096, Some((4, ProducerStates::default())), &mut |b| {
                read.push(b);
                if b == 0 {
                    bad.clone()
                } else {
                    second.clone()
                }
            })
        };
        let crashed = recover(0, &mut read);
        assert_eq!((crashed.truncate, crashed.log_end_offset), (Some((0, ends[0].0 as u64)), 2));
        assert_eq!(read, [0]);
        read.clear();
        let covered = recover(4, &mut read);
        assert_eq!((covered.truncate, covered.log_end_offset), (None, 5), "fsynced before the crash: trusted");
        assert_eq!(read, [4], "only the segment past the recovery point is read");
    }

    proptest! {
        /// Any prefix, with any single bit flipped past it or in it: recovery keeps exactly the
        /// whole, valid batches before the damage, and never a batch that was not fully written.
        #[test]
        fn recovery_keeps_exactly_the_whole_valid_prefix(
            sizes in proptest::collection::vec(1usize..6, 1..12),
            cut_fraction in 0.0f64..=1.0,
            flip in proptest::option::of((0.0f64..1.0, 0u8..8)),
        ) {
            let (log, ends) = log_of(&sizes);
            let cut = (log.len() as f64 * cut_fraction) as usize;
            let mut damaged = log[..cut].to_vec();
            let mut flipped_at = None;
            if let Some((where_, bit)) = flip {
                if !damaged.is_empty() {
                    let at = ((damaged.len() - 1) as f64 * where_) as usize;
                    damaged[at] ^= 1 << bit;
                    flipped_at = Some(at);
                }
            }
            let r = recover_single(&damaged, false);
            let valid = r.truncate.map_or(damaged.len() as u64, |(_, len)| len) as usize;
            // Every batch kept is whole and verifies.
            let mut kept = 0;
            for (_, b) in Batches::new(&damaged[..valid], true) {
                prop_assert!(Batch::validate(b.bytes()).is_ok());
                kept += 1;
            }
            let limit = flipped_at.map_or(cut, |f| f.min(cut));
            let whole_before_cut = ends.iter().filter(|(end, _)| *end <= cut).count();
            prop_assert!(kept <= whole_before_cut);
            if flipped_at.is_none() {
                prop_assert_eq!(kept, whole_before_cut);
                let leo = ends.iter().rfind(|(end, _)| *end <= cut).map_or(0, |e| e.1);
                prop_assert_eq!(r.log_end_offset, leo);
            } else {
                let undamaged = ends.iter().filter(|(end, _)| *end <= limit).count();
                prop_assert!(kept >= undamaged, "lost an undamaged batch: kept {} of {}", kept, undamaged);
            }
        }
    }
}
