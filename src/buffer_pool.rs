//! Buffers shared by the connections of a worker thread. A request borrows one and gives it
//! back, so a busy server allocates none per request and an idle connection holds none.
//! Two sizes: request-head reads and proxied response relays.

use std::cell::RefCell;

use bytes::BytesMut;

/// What a buffer is for, which fixes its size and how many spares a thread keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Request heads (and the start of a body): 8 KiB, 64 spares (512 KiB) per thread.
    Read,
    /// Proxied response bodies: 64 KiB, 32 spares (2 MiB) per thread.
    Relay,
}

impl Kind {
    pub const fn bytes(self) -> usize {
        match self {
            Kind::Read => 8 * 1024,
            Kind::Relay => 64 * 1024,
        }
    }

    const fn keep(self) -> usize {
        match self {
            Kind::Read => 64,
            Kind::Relay => 32,
        }
    }

    const fn index(self) -> usize {
        match self {
            Kind::Read => 0,
            Kind::Relay => 1,
        }
    }
}

thread_local! {
    static SPARE: RefCell<[Vec<BytesMut>; 2]> = const { RefCell::new([Vec::new(), Vec::new()]) };
}

/// An empty buffer with room for `kind.bytes()`.
pub fn take(kind: Kind) -> BytesMut {
    SPARE
        .with(|spare| spare.borrow_mut()[kind.index()].pop())
        .unwrap_or_else(|| BytesMut::with_capacity(kind.bytes()))
}

/// Keep `buf` for another request, unless it was never taken (no capacity: a caller that
/// takes lazily may end up not needing one), something grew it well past its size (a huge
/// head, a tunnel), or the thread has enough spares.
pub fn give_back(kind: Kind, mut buf: BytesMut) {
    if buf.capacity() == 0 {
        return;
    }
    buf.clear();
    // Use advances the buffer's start, which `capacity()` no longer counts: take the space
    // back (no allocation when, as usual, nothing else shares the memory).
    buf.reserve(kind.bytes());
    if buf.capacity() > 2 * kind.bytes() {
        return;
    }
    SPARE.with(|spare| {
        let mut spare = spare.borrow_mut();
        let list = &mut spare[kind.index()];
        if list.len() < kind.keep() {
            list.push(buf);
        }
    });
}

#[cfg(test)]
mod tests {
    use bytes::Buf;

    use super::*;

    fn spares(kind: Kind) -> usize {
        SPARE.with(|spare| spare.borrow()[kind.index()].len())
    }

    #[test]
    fn a_buffer_whose_start_advanced_is_kept_with_its_whole_capacity() {
        for kind in [Kind::Read, Kind::Relay] {
            let mut buf = take(kind);
            buf.extend_from_slice(&[7u8; 300]);
            buf.advance(200); // as a parsed head or a relayed response head is skipped
            let before = spares(kind);
            give_back(kind, buf);
            assert_eq!(spares(kind), before + 1, "{kind:?}: the buffer was dropped");
            let again = take(kind);
            assert!(again.capacity() >= kind.bytes());
            assert!(again.is_empty());
        }
    }

    #[test]
    fn a_buffer_still_shared_comes_back_as_a_fresh_one() {
        let mut buf = take(Kind::Read);
        buf.extend_from_slice(b"GET / HTTP/1.1\r\n\r\n");
        let head = buf.split_to(18).freeze(); // a request head still in use
        give_back(Kind::Read, buf);
        let again = take(Kind::Read);
        assert!(again.capacity() >= Kind::Read.bytes());
        assert_eq!(
            &head[..],
            b"GET / HTTP/1.1\r\n\r\n",
            "the head was overwritten"
        );
    }

    #[test]
    fn a_buffer_never_taken_is_not_kept() {
        let before = spares(Kind::Relay);
        give_back(Kind::Relay, BytesMut::new());
        assert_eq!(spares(Kind::Relay), before);
    }

    #[test]
    fn a_grown_buffer_is_dropped() {
        let mut buf = take(Kind::Relay);
        buf.reserve(4 * Kind::Relay.bytes());
        let before = spares(Kind::Relay);
        give_back(Kind::Relay, buf);
        assert_eq!(spares(Kind::Relay), before);
    }

    #[test]
    fn a_thread_keeps_a_bounded_number_of_spares() {
        let bufs: Vec<_> = (0..Kind::Read.keep() + 10)
            .map(|_| BytesMut::with_capacity(Kind::Read.bytes()))
            .collect();
        for buf in bufs {
            give_back(Kind::Read, buf);
        }
        assert_eq!(spares(Kind::Read), Kind::Read.keep());
    }
}
