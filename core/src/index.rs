//! Sparse offset and time indexes of one segment, kept in memory and written as Kafka's
//! 8-byte (relative offset, position) and 12-byte (timestamp, relative offset) entries. Indexes
//! are caches: a missing or invalid one is rebuilt from the log.

/// One segment's indexes and the summary facts recovery and retention need.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SegmentIndex {
    /// (offset - base, position where the append holding that offset starts), offsets increasing.
    pub offsets: Vec<(u32, u32)>,
    /// For each entry, offset - base of the first offset its append holds; `UNKNOWN` for entries
    /// loaded from an index file, which keeps only the last. In memory only.
    pub append_firsts: Vec<u32>,
    /// (max timestamp so far, offset - base), both increasing.
    pub times: Vec<(i64, u32)>,
    pub bytes_since_entry: u64,
    /// Largest timestamp in the segment and the last offset of the batch that carried it.
    pub max_timestamp: i64,
    pub offset_of_max_timestamp: i64,
}

/// An `append_firsts` value for an entry whose append's first offset is not known.
pub const UNKNOWN: u32 = u32::MAX;

impl SegmentIndex {
    pub fn new() -> Self {
        SegmentIndex { max_timestamp: -1, offset_of_max_timestamp: -1, ..Default::default() }
    }

    /// Accounts for one append (Kafka's LogSegment.append rule): an entry maps the append's largest
    /// offset to the position where the append starts, once more than `interval` bytes passed.
    #[allow(clippy::too_many_arguments)]
    pub fn on_append(
        &mut self,
        base_offset: i64,
        first_offset: i64,
        last_offset: i64,
        position: u64,
        len: u64,
        max_ts: i64,
        interval: u64,
    ) {
        assert!(
            last_offset >= first_offset && first_offset >= base_offset,
            "appended offsets {first_offset}..={last_offset} outside the segment from {base_offset}"
        );
        if max_ts > self.max_timestamp {
            self.max_timestamp = max_ts;
            self.offset_of_max_timestamp = last_offset;
        }
        if self.bytes_since_entry > interval || self.offsets.is_empty() {
            let rel = (last_offset - base_offset) as u32;
            self.offsets.push((rel, position as u32));
            self.append_firsts.push((first_offset - base_offset) as u32);
            if self.max_timestamp >= 0 && self.times.last().is_none_or(|&(ts, _)| self.max_timestamp > ts) {
                self.times.push((self.max_timestamp, (self.offset_of_max_timestamp - base_offset) as u32));
            }
            self.bytes_since_entry = 0;
        }
        self.bytes_since_entry += len;
    }

    /// Forgets every append from `offset` on (the log was cut there, at byte `position`). The
    /// largest timestamp falls back to what the time index still holds; a cut segment may so
    /// look younger than it is until it rolls, never older.
    pub fn truncate_to(&mut self, base_offset: i64, offset: i64, position: u64) {
        let keep = self.offsets.iter().take_while(|&&(_, pos)| (pos as u64) < position).count();
        self.offsets.truncate(keep);
        self.append_firsts.truncate(keep);
        let below = |rel: u32| base_offset + (rel as i64) < offset;
        self.times.retain(|&(_, rel)| below(rel));
        (self.max_timestamp, self.offset_of_max_timestamp) =
            self.times.last().map_or((-1, -1), |&(ts, rel)| (ts, base_offset + rel as i64));
        self.bytes_since_entry = self.offsets.last().map_or(position, |&(_, pos)| position - pos as u64);
    }

    /// Start position to scan from for `offset`, and a position by which the batch holding
    /// `offset` has started (the next entry's position), when known.
    pub fn lookup(&self, base_offset: i64, offset: i64) -> (u64, Option<u64>) {
        let rel = offset.saturating_sub(base_offset).clamp(0, u32::MAX as i64) as u32;
        let after = self.offsets.partition_point(|&(o, _)| o <= rel);
        let start = if after == 0 { 0 } else { self.offsets[after - 1].1 as u64 };
        let next = self.offsets.get(after).map(|&(_, p)| p as u64);
        (start, next)
    }

    /// Where a read for `offset` starts, the next entry's position, and whether the append that
    /// starts there is known to hold `offset`. It then ends by the next entry's position, so a
    /// read needs nothing past that beyond its byte limit; otherwise the bytes up to the next
    /// entry may all be skipped before the append holding `offset` begins.
    pub fn lookup_read(&self, base_offset: i64, offset: i64) -> (u64, Option<u64>, bool) {
        assert_eq!(self.append_firsts.len(), self.offsets.len(), "one first offset per entry");
        let rel = offset.saturating_sub(base_offset).clamp(0, UNKNOWN as i64 - 1) as u32;
        let after = self.offsets.partition_point(|&(o, _)| o <= rel);
        let position = |i: usize| self.offsets.get(i).map(|&(_, p)| p as u64);
        if after > 0 && self.offsets[after - 1].0 == rel {
            // That entry's append ends with `offset`.
            return (self.offsets[after - 1].1 as u64, position(after), true);
        }
        if self.append_firsts.get(after).is_some_and(|&first| first != UNKNOWN && first <= rel) {
            // The next entry's append starts at or below `offset` (and ends above it).
            return (self.offsets[after].1 as u64, position(after + 1), true);
        }
        let (start, next) = self.lookup(base_offset, offset);
        (start, next, false)
    }

    /// Offset to start a timestamp search from: that of the last entry whose time is below `ts`.
    pub fn lookup_time(&self, base_offset: i64, ts: i64) -> i64 {
        let after = self.times.partition_point(|&(t, _)| t < ts);
        if after == 0 {
            base_offset
        } else {
            base_offset + self.times[after - 1].1 as i64
        }
    }

    pub fn encode_offsets(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.offsets.len() * 8);
        for (rel, pos) in &self.offsets {
            out.extend_from_slice(&rel.to_be_bytes());
            out.extend_from_slice(&pos.to_be_bytes());
        }
        out
    }

    pub fn encode_times(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.times.len() * 12);
        for (ts, rel) in &self.times {
            out.extend_from_slice(&ts.to_be_bytes());
            out.extend_from_slice(&rel.to_be_bytes());
        }
        out
    }

    /// Loads index files written at roll or shutdown; None if they do not fit the log (torn,
    /// stale or corrupt), in which case the segment is rescanned.
    pub fn decode(offsets: &[u8], times: &[u8], log_size: u64) -> Option<SegmentIndex> {
        if !offsets.len().is_multiple_of(8) || !times.len().is_multiple_of(12) || (offsets.is_empty() && log_size > 0) {
            return None;
        }
        let mut index = SegmentIndex::new();
        for chunk in offsets.chunks_exact(8) {
            let rel = u32::from_be_bytes(chunk[0..4].try_into().ok()?);
            let pos = u32::from_be_bytes(chunk[4..8].try_into().ok()?);
            if let Some(&(prev_rel, prev_pos)) = index.offsets.last() {
                if rel <= prev_rel || pos <= prev_pos {
                    return None;
                }
            }
            if pos as u64 >= log_size {
                return None;
            }
            index.offsets.push((rel, pos));
            index.append_firsts.push(UNKNOWN);
        }
        for chunk in times.chunks_exact(12) {
            let ts = i64::from_be_bytes(chunk[0..8].try_into().ok()?);
            let rel = u32::from_be_bytes(chunk[8..12].try_into().ok()?);
            if index.times.last().is_some_and(|&(prev, _)| ts <= prev) {
                return None;
            }
            index.times.push((ts, rel));
        }
        if let Some(&(ts, _)) = index.times.last() {
            index.max_timestamp = ts;
        }
        Some(index)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lookups_find_the_entry_at_or_below_and_the_next_position() {
        let mut index = SegmentIndex::new();
        // Ten appends of 100 bytes, 3 offsets each, entry every >250 bytes.
        for i in 0..10u64 {
            index.on_append(100, 100 + 3 * i as i64, 100 + 3 * i as i64 + 2, i * 100, 100, 1000 + i as i64, 250);
        }
        assert_eq!(index.offsets, vec![(2, 0), (11, 300), (20, 600), (29, 900)]);
        assert_eq!(index.lookup(100, 100), (0, Some(0)));
        assert_eq!(index.lookup(100, 112), (300, Some(600)));
        assert_eq!(index.lookup(100, 200), (900, None));
        assert_eq!(index.lookup_time(100, 1004), 100 + 11);
        // Appends at 0, 300, 600, 900 have entries; those at 100, 200, ... do not.
        assert_eq!(index.append_firsts, vec![0, 9, 18, 27]);
        assert_eq!(index.lookup_read(100, 100), (0, Some(300), true), "the first append holds it");
        assert_eq!(index.lookup_read(100, 102), (0, Some(300), true), "it ends that append");
        assert_eq!(index.lookup_read(100, 103), (0, Some(300), false), "an append without an entry holds it");
        assert_eq!(index.lookup_read(100, 109), (300, Some(600), true), "the next entry's append starts with it");
        assert_eq!(index.lookup_read(100, 128), (900, None, true));
        let decoded = SegmentIndex::decode(&index.encode_offsets(), &index.encode_times(), 1000).unwrap();
        assert_eq!(decoded.offsets, index.offsets);
        assert_eq!(decoded.lookup_read(100, 111), (300, Some(600), true), "it ends an append with an entry");
        assert_eq!(decoded.lookup_read(100, 109), (0, Some(300), false), "first offsets are not in index files");
        assert_eq!(decoded.times, index.times);
        assert!(SegmentIndex::decode(&index.encode_offsets(), &index.encode_times(), 800).is_none());
        assert!(SegmentIndex::decode(&index.encode_offsets()[..7], &[], 1000).is_none());
    }
}
