//! Request IDs (`X-Request-Id`): a client's own kept when it is sane, else one made here,
//! unique per process and cheap: a random prefix per thread and a counter, no system call
//! and no shared atomic per request.

use std::cell::Cell;
use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};

use bytes::Bytes;

use crate::limits::MAX_REQUEST_ID_BYTES;

/// The header that carries the ID both ways.
pub const HEADER: &str = "X-Request-Id";

/// Hex characters of a generated ID: 16 of the thread's prefix, 16 of its counter.
pub const GENERATED_LEN: usize = 32;

/// Whether a received value may be kept: 1 to `MAX_REQUEST_ID_BYTES` bytes of visible ASCII.
/// Anything else (empty, spaces, control or non-ASCII bytes, a megabyte of text) could break
/// log lines or the headers it is copied into, so it is replaced.
pub fn is_valid(value: &[u8]) -> bool {
    (1..=MAX_REQUEST_ID_BYTES).contains(&value.len()) && value.iter().all(u8::is_ascii_graphic)
}

thread_local! {
    /// This thread's prefix, in hex once for all its IDs, and its next counter.
    static PREFIX: [u8; GENERATED_LEN / 2] = hex(thread_prefix());
    static NEXT: Cell<u64> = const { Cell::new(0) };
}

/// 64 random bits per thread: `RandomState` draws its keys from the OS once per thread and
/// varies them per instance, so two threads (or two processes) start from unrelated prefixes.
fn thread_prefix() -> u64 {
    let mut hasher = RandomState::new().build_hasher();
    hasher.write_u64(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64),
    );
    hasher.finish()
}

/// A request's ID. A made one is held inline, so most requests (clients rarely send an ID)
/// allocate nothing for it however often it is copied: into the upstream request, the
/// answer and the access log.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum RequestId {
    /// None: `logging.request_id` is off.
    #[default]
    Off,
    Made([u8; GENERATED_LEN]),
    /// A client's own, kept.
    Given(Bytes),
}

impl std::ops::Deref for RequestId {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        match self {
            RequestId::Off => &[],
            RequestId::Made(id) => id,
            RequestId::Given(id) => id,
        }
    }
}

/// A new ID: 32 lowercase hex characters, never repeated by this thread.
pub fn generate() -> RequestId {
    let counter = NEXT.with(|next| {
        let counter = next.get();
        next.set(counter.wrapping_add(1));
        counter
    });
    let mut id = [0u8; GENERATED_LEN];
    let (prefix, count) = id.split_at_mut(GENERATED_LEN / 2);
    PREFIX.with(|own| prefix.copy_from_slice(own));
    count.copy_from_slice(&hex(counter));
    RequestId::Made(id)
}

/// `word` as 16 lowercase hex characters, most significant first.
fn hex(word: u64) -> [u8; GENERATED_LEN / 2] {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut out = [0u8; GENERATED_LEN / 2];
    for (i, slot) in out.iter_mut().enumerate() {
        *slot = HEX[((word >> (60 - 4 * i)) & 0xf) as usize];
    }
    out
}

/// The ID of a request: the client's `value` when valid, else a new one. The second part
/// says whether a received value was replaced (for a debug event).
pub fn keep_or_generate(value: Option<&[u8]>) -> (RequestId, bool) {
    match value {
        Some(value) if is_valid(value) => (RequestId::Given(Bytes::copy_from_slice(value)), false),
        Some(_) => (generate(), true),
        None => (generate(), false),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validity_is_visible_ascii_of_bounded_length() {
        assert!(is_valid(b"abc-123"));
        assert!(is_valid(b"\"quoted\""));
        assert!(is_valid(&[b'a'; MAX_REQUEST_ID_BYTES]));
        assert!(!is_valid(&[b'a'; MAX_REQUEST_ID_BYTES + 1]));
        assert!(!is_valid(b""));
        assert!(!is_valid(b"has space"));
        assert!(!is_valid(b"tab\there"));
        assert!(!is_valid("caf\u{e9}".as_bytes()));
    }

    #[test]
    fn generated_ids_are_hex_unique_and_valid() {
        let a = generate();
        let b = generate();
        assert_eq!(a.len(), GENERATED_LEN);
        assert_ne!(a, b);
        assert!(is_valid(&a));
        assert!(a.iter().all(|c| c.is_ascii_hexdigit()));
        let other_thread = std::thread::spawn(generate).join().unwrap();
        assert_ne!(
            &a[..16],
            &other_thread[..16],
            "threads draw different prefixes"
        );
    }

    #[test]
    fn the_counter_is_the_low_half() {
        assert_eq!(&hex(0x0123_4567_89ab_cdef), b"0123456789abcdef");
        assert_eq!(&hex(5), b"0000000000000005");
        let std::thread::Result::Ok((first, second)) =
            std::thread::spawn(|| (generate(), generate())).join()
        else {
            panic!("the generating thread panicked");
        };
        assert_eq!(&first[..16], &second[..16], "one prefix per thread");
        assert_eq!(
            &first[16..],
            b"0000000000000000",
            "a new thread counts from zero"
        );
        assert_eq!(&second[16..], b"0000000000000001");
    }

    #[test]
    fn invalid_values_are_replaced() {
        assert_eq!(&keep_or_generate(Some(b"id-1")).0[..], b"id-1");
        let (replaced, was_replaced) = keep_or_generate(Some(b"bad id"));
        assert!(was_replaced);
        assert_eq!(replaced.len(), GENERATED_LEN);
        assert!(!keep_or_generate(None).1);
    }
}
