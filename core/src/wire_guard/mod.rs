//! Walks a request body before `kafka-protocol` decodes it. The crate sizes `Vec::with_capacity`
//! from an array count read off the wire, so a 22-byte frame can ask for 150 GB and abort the
//! process. Like Kafka's Java decoders, we refuse any count or length beyond the bytes remaining.
//! The walk follows `schema.rs`, generated from the crate's own decoders, and allocates nothing.

pub mod sample;
mod schema;
#[cfg(test)]
mod tests;

use kafka_protocol::messages::ApiKey;

/// An inclusive version range; `NEVER` is empty.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Versions(pub i16, pub i16);

pub const NEVER: Versions = Versions(0, -1);

impl Versions {
    pub fn contains(self, version: i16) -> bool {
        self.0 <= version && version <= self.1
    }
}

/// How a field is laid out on the wire. String, Bytes and Array take their compact (varint
/// length) form in the field's `compact` versions; array elements follow the array's form.
#[derive(Debug)]
pub enum Kind {
    Int8,
    Int16,
    UInt16,
    Int32,
    Int64,
    Float64,
    Bool,
    Uuid,
    String,
    Bytes,
    Array(&'static Kind),
    Struct(&'static Message),
}

#[derive(Debug)]
pub struct Field {
    pub name: &'static str,
    pub kind: Kind,
    /// Versions in which the field is on the wire.
    pub present: Versions,
    pub compact: Versions,
    /// Whether null (-1, or 0 in compact form) is accepted.
    pub nullable: bool,
}

/// A known tagged field: its payload is decoded by its kind, not skipped by its size.
#[derive(Debug)]
pub struct Tagged {
    pub tag: u32,
    pub field: Field,
}

#[derive(Debug)]
pub struct Message {
    pub name: &'static str,
    /// Versions the crate decodes; it refuses the others.
    pub versions: Versions,
    /// Versions that end with a tagged-field section.
    pub flexible: Versions,
    pub fields: &'static [Field],
    pub tagged: &'static [Tagged],
}

/// The schema of a request type, if we serve it.
pub fn request_schema(api_key: ApiKey) -> Option<&'static Message> {
    schema::REQUESTS.iter().find(|(key, _)| *key == api_key).map(|(_, message)| *message)
}

/// Refuses a request body (the bytes after the header) that would make the crate's decoder
/// allocate for data the frame does not hold. Trailing bytes are not refused: the crate ignores them.
pub fn check_request_body(api_key: ApiKey, version: i16, body: &[u8]) -> Result<(), String> {
    let message = request_schema(api_key).ok_or_else(|| format!("no wire schema for {api_key:?}"))?;
    walk(message, version, body).map(|_| ())
}

/// Walks one message and returns how many bytes it took.
pub(crate) fn walk(message: &Message, version: i16, body: &[u8]) -> Result<usize, String> {
    let mut reader = Reader { rest: body, elements: 0 };
    reader.message(message, version)?;
    Ok(body.len() - reader.rest.len())
}

/// The fewest bytes a value of `kind` takes on the wire in `version`.
fn min_size(kind: &Kind, compact: bool, version: i16) -> usize {
    match kind {
        Kind::Int8 | Kind::Bool => 1,
        Kind::Int16 | Kind::UInt16 => 2,
        Kind::Int32 => 4,
        Kind::Int64 | Kind::Float64 => 8,
        Kind::Uuid => 16,
        // A length prefix (a null or empty value has nothing after it).
        Kind::String if compact => 1,
        Kind::String => 2,
        Kind::Bytes | Kind::Array(_) if compact => 1,
        Kind::Bytes | Kind::Array(_) => 4,
        Kind::Struct(message) => {
            let fields: usize = message
                .fields
                .iter()
                .filter(|f| f.present.contains(version))
                .map(|f| min_size(&f.kind, f.compact.contains(version), version))
                .sum();
            fields + usize::from(message.flexible.contains(version))
        }
    }
}

/// Array elements one request may hold in all. A decoded element takes up to tens of times its
/// wire size, so this bounds what decoding one request costs in memory (to about 100 MB rather
/// than gigabytes for a 100 MiB frame); real clients send thousands, not millions.
pub const MAX_ELEMENTS_PER_REQUEST: usize = 1_000_000;

struct Reader<'a> {
    rest: &'a [u8],
    /// Array elements declared so far.
    elements: usize,
}

impl Reader<'_> {
    fn take(&mut self, n: usize, what: &dyn Fn() -> String) -> Result<&[u8], String> {
        if n > self.rest.len() {
            return Err(format!("{}: needs {n} bytes, {} left", what(), self.rest.len()));
        }
        let (head, tail) = self.rest.split_at(n);
        self.rest = tail;
        Ok(head)
    }

    fn int16(&mut self, what: &dyn Fn() -> String) -> Result<i16, String> {
        let b = self.take(2, what)?;
        Ok(i16::from_be_bytes([b[0], b[1]]))
    }

    fn int32(&mut self, what: &dyn Fn() -> String) -> Result<i32, String> {
        let b = self.take(4, what)?;
        Ok(i32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    /// The crate reads at most 5 bytes and drops overflowing bits; Kafka refuses such varints, so do we.
    fn uvarint(&mut self, what: &dyn Fn() -> String) -> Result<u32, String> {
        let mut value = 0u32;
        for shift in [0, 7, 14, 21] {
            let b = self.take(1, what)?[0];
            value |= u32::from(b & 0x7f) << shift;
            if b < 0x80 {
                return Ok(value);
            }
        }
        let b = self.take(1, what)?[0];
        if b > 0x0f {
            return Err(format!("{}: malformed varint", what()));
        }
        Ok(value | u32::from(b) << 28)
    }

    /// Reads a length or count prefix: None for null, refused if negative or beyond the bytes left.
    fn length(
        &mut self,
        compact: bool,
        wide: bool,
        nullable: bool,
        what: &dyn Fn() -> String,
    ) -> Result<Option<usize>, String> {
        let n: i64 = if compact {
            i64::from(self.uvarint(what)?) - 1
        } else if wide {
            i64::from(self.int32(what)?)
        } else {
            i64::from(self.int16(what)?)
        };
        match n {
            -1 if nullable => Ok(None),
            -1 => Err(format!("{}: null but not nullable", what())),
            n if n < 0 => Err(format!("{}: negative length {n}", what())),
            n if n as u64 > self.rest.len() as u64 => {
                Err(format!("{}: length {n} but {} bytes left", what(), self.rest.len()))
            }
            n => Ok(Some(n as usize)),
        }
    }

    fn message(&mut self, message: &Message, version: i16) -> Result<(), String> {
        if !message.versions.contains(version) {
            return Err(format!("{} has no version {version}", message.name));
        }
        for field in message.fields {
            if field.present.contains(version) {
                self.field(message, field, version)?;
            }
        }
        if message.flexible.contains(version) {
            self.tagged_fields(message, version)?;
        }
        Ok(())
    }

    fn field(&mut self, message: &Message, field: &Field, version: i16) -> Result<(), String> {
        let what = || format!("{}.{}", message.name, field.name);
        let compact = field.compact.contains(version);
        self.value(&field.kind, compact, field.nullable, version, &what)
    }

    fn value(
        &mut self,
        kind: &Kind,
        compact: bool,
        nullable: bool,
        version: i16,
        what: &dyn Fn() -> String,
    ) -> Result<(), String> {
        let fixed = match kind {
            Kind::Int8 | Kind::Bool => 1,
            Kind::Int16 | Kind::UInt16 => 2,
            Kind::Int32 => 4,
            Kind::Int64 | Kind::Float64 => 8,
            Kind::Uuid => 16,
            Kind::String | Kind::Bytes => {
                let wide = matches!(kind, Kind::Bytes);
                self.length(compact, wide, nullable, what)?.unwrap_or(0)
            }
            Kind::Array(element) => {
                // Kafka's rule refuses a count above the bytes left; we go further and count each
                // element at its smallest encoding, so the crate never reserves for more elements
                // than the frame can hold.
                let count = self.length(compact, true, nullable, what)?.unwrap_or(0);
                self.elements += count;
                if self.elements > MAX_ELEMENTS_PER_REQUEST {
                    return Err(format!(
                        "{}: more than {MAX_ELEMENTS_PER_REQUEST} array elements in one request",
                        what()
                    ));
                }
                let smallest = min_size(element, compact, version).max(1);
                if count > self.rest.len() / smallest {
                    return Err(format!(
                        "{}: {count} elements of at least {smallest} bytes but {} bytes left",
                        what(),
                        self.rest.len()
                    ));
                }
                for _ in 0..count {
                    self.value(element, compact, false, version, what)?;
                }
                0
            }
            Kind::Struct(message) => return self.message(message, version),
        };
        self.take(fixed, what).map(|_| ())
    }

    fn tagged_fields(&mut self, message: &Message, version: i16) -> Result<(), String> {
        let what = || format!("{} tagged fields", message.name);
        let count = self.uvarint(&what)?;
        // Each tagged field takes at least two bytes (tag and size).
        if count as u64 > self.rest.len() as u64 {
            return Err(format!("{}: {count} of them but {} bytes left", what(), self.rest.len()));
        }
        for _ in 0..count {
            let tag = self.uvarint(&what)?;
            let size = self.uvarint(&what)? as usize;
            match message.tagged.iter().find(|t| t.tag == tag) {
                // As the crate does: a known tag is decoded by its kind, its size is not used.
                Some(known) if known.field.present.contains(version) => self.field(message, &known.field, version)?,
                Some(_) => return Err(format!("{}: tag {tag} is not valid in version {version}", what())),
                None => {
                    self.take(size, &|| format!("{} tag {tag}", what()))?;
                }
            }
        }
        Ok(())
    }
}
