//! The last few config loads, each with its time, result, trigger and a line on what it
//! changed or why it was refused: what the dashboard lists under "recent reloads". The
//! counters on `/metrics` count every reload; this keeps only the newest
//! [`RECENT_RELOADS_KEPT`], which is all a person reads.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::SystemTime;

use crate::limits::{RECENT_RELOADS_KEPT, RECENT_RELOAD_DETAIL_BYTES};

/// How one config load ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReloadResult {
    /// The config the process started with.
    Loaded,
    Applied,
    /// Invalid, or a step failed: the running config stayed.
    Rejected,
}

impl ReloadResult {
    pub fn as_str(self) -> &'static str {
        match self {
            ReloadResult::Loaded => "loaded",
            ReloadResult::Applied => "applied",
            ReloadResult::Rejected => "rejected",
        }
    }
}

/// One remembered config load.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReloadEvent {
    pub at: SystemTime,
    pub result: ReloadResult,
    /// What started it: `startup`, `file`, `SIGHUP`, ...
    pub trigger: &'static str,
    /// What changed, or why it was refused; at most [`RECENT_RELOAD_DETAIL_BYTES`].
    pub detail: String,
}

/// The newest config loads, oldest first. Reloads are rare: a plain lock.
#[derive(Debug, Default)]
pub struct RecentReloads {
    events: Mutex<VecDeque<ReloadEvent>>,
}

impl RecentReloads {
    pub fn remember(&self, mut event: ReloadEvent) {
        truncate_at_char(&mut event.detail, RECENT_RELOAD_DETAIL_BYTES);
        let mut events = self.events.lock().unwrap_or_else(|p| p.into_inner());
        while events.len() >= RECENT_RELOADS_KEPT {
            events.pop_front();
        }
        events.push_back(event);
    }

    /// Oldest first.
    pub fn list(&self) -> Vec<ReloadEvent> {
        let events = self.events.lock().unwrap_or_else(|p| p.into_inner());
        events.iter().cloned().collect()
    }
}

/// Cut `text` to at most `max` bytes at a character boundary, marking the cut with `…`.
fn truncate_at_char(text: &mut String, max: usize) {
    if text.len() <= max {
        return;
    }
    let mut end = max.saturating_sub('…'.len_utf8());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text.truncate(end);
    text.push('…');
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn event(n: u64, detail: &str) -> ReloadEvent {
        ReloadEvent {
            at: SystemTime::UNIX_EPOCH + Duration::from_secs(n),
            result: ReloadResult::Applied,
            trigger: "file",
            detail: detail.to_string(),
        }
    }

    #[test]
    fn keeps_only_the_newest() {
        let recent = RecentReloads::default();
        for n in 0..(RECENT_RELOADS_KEPT as u64 + 5) {
            recent.remember(event(n, ""));
        }
        let list = recent.list();
        assert_eq!(list.len(), RECENT_RELOADS_KEPT);
        assert_eq!(list[0].at, SystemTime::UNIX_EPOCH + Duration::from_secs(5));
        assert_eq!(
            list.last().unwrap().at,
            SystemTime::UNIX_EPOCH + Duration::from_secs(RECENT_RELOADS_KEPT as u64 + 4)
        );
    }

    #[test]
    fn long_details_are_cut_at_a_character() {
        let recent = RecentReloads::default();
        recent.remember(event(1, &"é".repeat(RECENT_RELOAD_DETAIL_BYTES)));
        let detail = &recent.list()[0].detail;
        assert!(
            detail.len() <= RECENT_RELOAD_DETAIL_BYTES,
            "{}",
            detail.len()
        );
        assert!(detail.ends_with('…'));
    }
}
