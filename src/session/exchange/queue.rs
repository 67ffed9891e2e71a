//! What goes out toward one peer, in order: bytes of the other peer's input forwarded in
//! place (`Input`: the pump writes them from its own buffer, no copy), input bytes that
//! are dropped there (`Skip`), bytes imapgate wrote itself (`Bytes`), and, toward a
//! backend, points where nothing more may go out until the backend says so (`Await`).
//!
//! `Input` and `Skip` count bytes from the front of the pump's buffer of the other peer,
//! in order. A drop while nothing of that input waits in the queue is not queued at all:
//! the pump frees those bytes at once (`take_dropped`), so input a judged session copied
//! for itself never waits behind a gate.

use std::collections::VecDeque;

/// What to write next (see the module documentation).
#[derive(Debug, PartialEq, Eq)]
pub enum Out<'a> {
    /// The next `n` bytes of the other peer's input, from the pump's buffer.
    Input(usize),
    /// The next `n` bytes of the other peer's input are not written: skip them.
    Skip(usize),
    /// These bytes.
    Bytes(&'a [u8]),
    /// Everything after this point is deflated (COMPRESS): switch the transport, then
    /// call `wrote(0)`.
    StartDeflate,
    /// Nothing now.
    Nothing,
}

#[derive(Debug, PartialEq, Eq)]
pub(super) enum Item {
    Input(usize),
    Skip(usize),
    Bytes(Vec<u8>),
    /// Nothing more goes out until the backend sends a continuation request for the
    /// command with this (backend) tag, or answers it.
    Await(Await),
    /// The command with this backend tag ends here.
    EndOfCommand(String),
    /// Deflate from here on (toward the client, after imapgate's COMPRESS answer).
    StartDeflate,
}

#[derive(Debug, PartialEq, Eq)]
pub(super) struct Await {
    pub(super) tag: String,
    pub(super) kind: AwaitKind,
}

/// What a continuation request from the backend means.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum AwaitKind {
    /// A literal imapgate holds: its bytes follow; the `+` is imapgate's business.
    Literal,
    /// A literal that streams from the client: the client is released (and shown `+`
    /// when it waits for one).
    Streamed,
    /// IDLE: the client is shown the `+` and may send DONE.
    Idle,
}

/// One direction's output. See the module documentation.
#[derive(Debug, Default)]
pub(super) struct Queue {
    items: VecDeque<Item>,
    /// Input bytes dropped with no input item pending: free at once.
    dropped: usize,
    /// Bytes of `Bytes` items, for backpressure.
    own: usize,
    /// `Input` and `Skip` items queued.
    input_items: usize,
}

impl Queue {
    /// The next `n` input bytes go out as they are.
    pub(super) fn forward(&mut self, n: usize) {
        if n == 0 {
            return;
        }
        if let Some(Item::Input(last)) = self.items.back_mut() {
            *last += n;
        } else {
            self.items.push_back(Item::Input(n));
            self.input_items += 1;
        }
    }

    /// The next `n` input bytes are not written.
    pub(super) fn drop_input(&mut self, n: usize) {
        if n == 0 {
            return;
        }
        if self.input_items == 0 {
            self.dropped += n;
        } else if let Some(Item::Skip(last)) = self.items.back_mut() {
            *last += n;
        } else {
            self.items.push_back(Item::Skip(n));
            self.input_items += 1;
        }
    }

    /// imapgate's own bytes go out here.
    pub(super) fn push(&mut self, bytes: &[u8]) {
        if bytes.is_empty() {
            return;
        }
        self.own += bytes.len();
        if let Some(Item::Bytes(last)) = self.items.back_mut() {
            last.extend_from_slice(bytes);
        } else {
            self.items.push_back(Item::Bytes(bytes.to_vec()));
        }
    }

    pub(super) fn push_item(&mut self, item: Item) {
        self.items.push_back(item);
    }

    /// Input bytes the pump may free from the front of its buffer now.
    pub(super) fn take_dropped(&mut self) -> usize {
        std::mem::take(&mut self.dropped)
    }

    /// What to write next; `Nothing` when the queue is empty or waits for the backend.
    pub(super) fn front(&mut self) -> Out<'_> {
        while matches!(self.items.front(), Some(Item::EndOfCommand(_))) {
            self.items.pop_front();
        }
        match self.items.front() {
            Some(Item::Input(n)) => Out::Input(*n),
            Some(Item::Skip(n)) => Out::Skip(*n),
            Some(Item::Bytes(b)) => Out::Bytes(b),
            Some(Item::StartDeflate) => Out::StartDeflate,
            Some(Item::Await(_)) | Some(Item::EndOfCommand(_)) | None => Out::Nothing,
        }
    }

    /// `n` bytes (or skipped bytes) of the front item are done.
    pub(super) fn wrote(&mut self, n: usize) {
        let done = match self.items.front_mut() {
            Some(Item::Input(left) | Item::Skip(left)) => {
                *left -= n.min(*left);
                *left == 0
            }
            Some(Item::Bytes(b)) => {
                let n = n.min(b.len());
                self.own -= n;
                b.drain(..n);
                b.is_empty()
            }
            Some(Item::StartDeflate) => true,
            _ => false,
        };
        if done {
            if matches!(self.items.front(), Some(Item::Input(_) | Item::Skip(_))) {
                self.input_items -= 1;
            }
            self.items.pop_front();
        }
    }

    /// The await at the front, if the queue waits on one.
    pub(super) fn awaited(&self) -> Option<&Await> {
        match self.items.front() {
            Some(Item::Await(a)) => Some(a),
            _ => None,
        }
    }

    /// The backend's `+` came: the queue goes on.
    pub(super) fn release(&mut self) {
        if matches!(self.items.front(), Some(Item::Await(_))) {
            self.items.pop_front();
        }
    }

    /// The backend answered the command `tag` while its rest waited for a `+`: none of
    /// the rest goes out.
    pub(super) fn drop_rest_of(&mut self, tag: &str) {
        let Some(at) = self.items.iter().position(|o| matches!(o, Item::Await(a) if a.tag == tag))
        else {
            return;
        };
        let end = self
            .items
            .iter()
            .skip(at)
            .position(|o| matches!(o, Item::EndOfCommand(t) if t == tag))
            .map_or(self.items.len(), |i| at + i + 1);
        for item in self.items.drain(at..end) {
            if let Item::Bytes(b) = item {
                self.own -= b.len();
            }
        }
    }

    /// Removes every await and end mark of the command `tag` (it is being aborted).
    pub(super) fn forget(&mut self, tag: &str) {
        self.items.retain(|o| match o {
            Item::Await(a) => a.tag != tag,
            Item::EndOfCommand(t) => t != tag,
            _ => true,
        });
    }

    /// imapgate's own bytes waiting, for backpressure.
    pub(super) fn own_bytes(&self) -> usize {
        self.own
    }

    /// True when nothing waits to go out.
    pub(super) fn is_empty(&self) -> bool {
        self.items.iter().all(|i| matches!(i, Item::EndOfCommand(_)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forwards_merge_and_drops_free_at_once_when_nothing_waits() {
        let mut q = Queue::default();
        q.drop_input(5);
        assert_eq!(q.take_dropped(), 5);
        q.forward(3);
        q.forward(4);
        q.drop_input(2);
        q.push(b"ab");
        q.forward(1);
        assert_eq!(q.take_dropped(), 0, "a drop behind pending input is queued");
        assert_eq!(q.front(), Out::Input(7));
        q.wrote(7);
        assert_eq!(q.front(), Out::Skip(2));
        q.wrote(2);
        assert_eq!(q.front(), Out::Bytes(b"ab"));
        q.wrote(1);
        assert_eq!(q.front(), Out::Bytes(b"b"));
        q.wrote(1);
        assert_eq!(q.front(), Out::Input(1));
        q.wrote(1);
        assert!(q.is_empty());
        q.drop_input(9);
        assert_eq!(q.take_dropped(), 9);
    }

    #[test]
    fn an_answer_drops_what_waited_for_a_continuation() {
        let mut q = Queue::default();
        q.push(b"g1 X {3}\r\n");
        q.push_item(Item::Await(Await { tag: "g1".into(), kind: AwaitKind::Literal }));
        q.push(b"abc\r\n");
        q.push_item(Item::EndOfCommand("g1".into()));
        q.push(b"g2 NOOP\r\n");
        assert_eq!(q.front(), Out::Bytes(b"g1 X {3}\r\n"));
        q.wrote(10);
        assert_eq!(q.front(), Out::Nothing);
        q.drop_rest_of("g1");
        assert_eq!(q.front(), Out::Bytes(b"g2 NOOP\r\n"));
        assert_eq!(q.own_bytes(), 9);
    }
}
