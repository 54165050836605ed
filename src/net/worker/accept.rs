//! The worker's own listening sockets (`SO_REUSEPORT`, see `net::listener`): accepted
//! connections are taken on here, on the thread that serves them.

use std::time::Instant;

use super::Worker;
use crate::clock;
use crate::net::listener::Accepted;

impl Worker {
    /// Takes on what listener `i` has pending, up to its batch for this turn.
    pub(super) fn accept(&mut self, i: usize) {
        if let Some(again) = self.accept.again.get_mut(i) {
            *again = None;
        }
        loop {
            match self.accept.next(i, &self.env.shared) {
                Accepted::Conn(socket, peer) => self.add(socket, peer),
                Accepted::Drained | Accepted::Later => return,
            }
        }
    }

    /// When the poll must return for a listener to be accepted from again (a used-up
    /// batch: at once; a failed accept: after `ACCEPT_RETRY`).
    pub(super) fn accept_deadline(&self) -> Option<Instant> {
        self.accept.again.iter().flatten().min().copied()
    }

    /// Called once per loop turn after the events: starts the next turn's batches, and
    /// comes back to the listeners whose batch ran out or whose retry is due (no edge
    /// will report them: their backlog was not drained).
    pub(super) fn accept_again(&mut self) {
        self.accept.new_turn();
        let now = clock::now();
        for i in 0..self.accept.again.len() {
            if self.accept.again[i].is_some_and(|t| t <= now) {
                self.accept(i);
            }
        }
    }
}
