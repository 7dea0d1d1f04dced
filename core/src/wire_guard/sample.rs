//! Valid request bodies built from the wire schema: small arrays, short strings, null where
//! nullable, tagged fields now and then. The consistency tests check the table against the crate
//! with them, and `cargo xtask fuzz-frames --write-seeds` gives the fuzzer one per version.

use super::{Kind, Message, Tagged};

/// splitmix64: the body builder's only randomness, seeded by proptest.
pub struct Rng(pub u64);

impl Rng {
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }

    pub fn one_in(&mut self, n: u64) -> bool {
        self.below(n) == 0
    }
}

/// Where a non-null array count was written, so a test can inflate it.
#[derive(Clone, Copy)]
pub struct Count {
    pub at: usize,
    pub width: usize,
    pub compact: bool,
}

/// Builds a valid body from the table: small arrays, short strings, null where nullable, and in
/// flexible versions now and then a known or unknown tagged field.
struct Builder<'a> {
    rng: &'a mut Rng,
    out: Vec<u8>,
    counts: Vec<Count>,
}

fn put_uvarint(out: &mut Vec<u8>, mut value: u32) {
    while value >= 0x80 {
        out.push(value as u8 | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

/// A length or count prefix; `None` is null.
pub fn put_length(out: &mut Vec<u8>, len: Option<usize>, compact: bool, wide: bool) {
    match (compact, len) {
        (true, len) => put_uvarint(out, len.map_or(0, |n| n as u32 + 1)),
        (false, len) if wide => out.extend_from_slice(&len.map_or(-1, |n| n as i32).to_be_bytes()),
        (false, len) => out.extend_from_slice(&len.map_or(-1, |n| n as i16).to_be_bytes()),
    }
}

impl Builder<'_> {
    fn uvarint(&mut self, value: u32) {
        put_uvarint(&mut self.out, value);
    }

    fn random_bytes(&mut self, n: usize) {
        for _ in 0..n {
            let b = self.rng.next_u64() as u8;
            self.out.push(b);
        }
    }

    fn message(&mut self, message: &Message, version: i16) {
        for field in message.fields.iter().filter(|f| f.present.contains(version)) {
            self.value(&field.kind, field.compact.contains(version), field.nullable, version);
        }
        if message.flexible.contains(version) {
            self.tagged_fields(message, version);
        }
    }

    fn value(&mut self, kind: &Kind, compact: bool, nullable: bool, version: i16) {
        let null = nullable && self.rng.one_in(4);
        match kind {
            Kind::Int8 | Kind::Bool => self.random_bytes(1),
            Kind::Int16 | Kind::UInt16 => self.random_bytes(2),
            Kind::Int32 => self.random_bytes(4),
            Kind::Int64 | Kind::Float64 => self.random_bytes(8),
            Kind::Uuid => self.random_bytes(16),
            Kind::String | Kind::Bytes => {
                let len = (!null).then(|| self.rng.below(8) as usize);
                put_length(&mut self.out, len, compact, matches!(kind, Kind::Bytes));
                for _ in 0..len.unwrap_or(0) {
                    let c = b'a' + self.rng.below(26) as u8;
                    self.out.push(c);
                }
            }
            Kind::Array(element) => {
                let count = (!null).then(|| self.rng.below(3) as usize);
                let at = self.out.len();
                put_length(&mut self.out, count, compact, true);
                if count.is_some() {
                    self.counts.push(Count { at, width: self.out.len() - at, compact });
                }
                for _ in 0..count.unwrap_or(0) {
                    self.value(element, compact, false, version);
                }
            }
            Kind::Struct(message) => self.message(message, version),
        }
    }

    fn tagged_fields(&mut self, message: &Message, version: i16) {
        let known: Vec<&Tagged> =
            message.tagged.iter().filter(|t| t.field.present.contains(version) && self.rng.one_in(3)).collect();
        let unknown = self.rng.one_in(4).then_some(90 + self.rng.below(10) as u32);
        self.uvarint((known.len() + usize::from(unknown.is_some())) as u32);
        for tagged in known {
            // The payload is built in place, then moved behind its tag and size.
            let (start, first_count) = (self.out.len(), self.counts.len());
            let field = &tagged.field;
            self.value(&field.kind, field.compact.contains(version), field.nullable, version);
            let payload = self.out.split_off(start);
            self.uvarint(tagged.tag);
            self.uvarint(payload.len() as u32);
            let shift = self.out.len() - start;
            self.counts[first_count..].iter_mut().for_each(|c| c.at += shift);
            self.out.extend_from_slice(&payload);
        }
        if let Some(tag) = unknown {
            self.uvarint(tag);
            let len = self.rng.below(6) as usize;
            self.uvarint(len as u32);
            self.random_bytes(len);
        }
    }
}

pub fn build(message: &Message, version: i16, rng: &mut Rng) -> (Vec<u8>, Vec<Count>) {
    let mut builder = Builder { rng, out: Vec::new(), counts: Vec::new() };
    builder.message(message, version);
    (builder.out, builder.counts)
}
