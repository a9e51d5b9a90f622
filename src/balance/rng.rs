//! A small, fast, non-cryptographic random source for load-balancing choices (wyrand). The
//! choices need to be spread, not secret; tests seed it to be deterministic.

use std::cell::Cell;

#[derive(Debug, Clone)]
pub struct Rng {
    state: u64,
}

impl Rng {
    pub fn seeded(seed: u64) -> Rng {
        Rng { state: seed }
    }

    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0xa076_1d64_78bd_642f);
        let t = u128::from(self.state) * u128::from(self.state ^ 0xe703_7ed1_a0b4_28db);
        ((t >> 64) as u64) ^ (t as u64)
    }

    /// Uniform in `0..bound` (`bound` > 0), by Lemire's multiply-shift (bias below 2^-32 for
    /// the pool sizes we see).
    pub fn below(&mut self, bound: usize) -> usize {
        ((u128::from(self.next_u64()) * bound as u128) >> 64) as usize
    }

    /// Uniform in `[0, 1)`.
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }
}

thread_local! {
    static THREAD_RNG: Cell<u64> = Cell::new(seed_for_thread());
}

fn seed_for_thread() -> u64 {
    let time = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    let local = 0u8;
    time ^ (std::ptr::addr_of!(local) as u64).rotate_left(32)
}

/// Seed this thread's generator, so that a test's sequence of picks repeats.
#[cfg(test)]
pub fn seed_thread_rng(seed: u64) {
    THREAD_RNG.with(|cell| cell.set(seed));
}

/// Run `f` with this thread's generator.
pub fn with_thread_rng<T>(f: impl FnOnce(&mut Rng) -> T) -> T {
    THREAD_RNG.with(|cell| {
        let mut rng = Rng::seeded(cell.get());
        let value = f(&mut rng);
        cell.set(rng.state);
        value
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn below_is_in_range_and_roughly_uniform() {
        let mut rng = Rng::seeded(7);
        let mut counts = [0u32; 5];
        for _ in 0..50_000 {
            counts[rng.below(5)] += 1;
        }
        for count in counts {
            assert!((9_000..11_000).contains(&count), "{counts:?}");
        }
        let u = rng.unit();
        assert!((0.0..1.0).contains(&u));
    }
}
