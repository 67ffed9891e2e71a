//! Backend tags. A judged session never shows the backend a client's tag: each command
//! sent gets a tag of imapgate's (`g1`, `g2`, ...), mapped back in the answer. So two
//! client commands with one tag cannot be confused, an answer can only match the command
//! it belongs to, and imapgate's own commands can never collide with a client's.

use std::collections::VecDeque;

/// Commands sent to the backend and not yet answered, oldest first.
#[derive(Debug, Default)]
pub(super) struct Tags {
    in_flight: VecDeque<(String, String)>,
    next: u64,
}

impl Tags {
    /// A new backend tag for a command the client tagged `client_tag`.
    pub(super) fn open(&mut self, client_tag: &str) -> String {
        self.next += 1;
        let tag = format!("g{}", self.next);
        self.in_flight.push_back((tag.clone(), client_tag.to_string()));
        tag
    }

    /// A new backend tag for one of imapgate's own commands (no client tag maps to it).
    pub(super) fn fresh(&mut self) -> String {
        self.next += 1;
        format!("g{}", self.next)
    }

    /// The client's tag for a backend tag still in flight.
    pub(super) fn client_tag(&self, backend_tag: &[u8]) -> Option<&str> {
        self.in_flight.iter().find(|(b, _)| b.as_bytes() == backend_tag).map(|(_, c)| c.as_str())
    }

    /// The backend answered `backend_tag`: returns the client's tag.
    pub(super) fn close(&mut self, backend_tag: &[u8]) -> Option<(String, String)> {
        let at = self.in_flight.iter().position(|(b, _)| b.as_bytes() == backend_tag)?;
        self.in_flight.remove(at)
    }

    /// Commands in flight.
    pub(super) fn len(&self) -> usize {
        self.in_flight.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn duplicate_client_tags_get_distinct_backend_tags() {
        let mut tags = Tags::default();
        let first = tags.open("a");
        let second = tags.open("a");
        assert_ne!(first, second);
        assert_eq!(tags.client_tag(second.as_bytes()), Some("a"));
        assert_eq!(tags.close(first.as_bytes()), Some((first.clone(), "a".to_string())));
        assert_eq!(tags.close(first.as_bytes()), None, "an answer closes one command only");
        assert_eq!(tags.len(), 1);
    }
}
