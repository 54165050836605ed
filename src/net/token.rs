//! Connection identities: a slab index plus a generation, packed into a mio `Token`, so
//! that an event or timer for a connection that has since closed (and whose slot was
//! reused) is recognised as stale and ignored.

use mio::Token;

/// Reserved token for the worker's waker.
pub const WAKER: Token = Token(usize::MAX);

/// How many listener tokens are reserved below [`WAKER`] (far more than any
/// `server.listen` list; connection tokens stay below 2^63, see [`Slab::insert_with`]).
const LISTENERS: usize = 1 << 16;

/// The token of a worker's `i`-th listening socket.
pub fn listener(i: usize) -> Token {
    Token(usize::MAX - 1 - (i % LISTENERS))
}

/// The listener index a token names, if it is a listener's.
pub fn listener_index(t: Token) -> Option<usize> {
    let i = (usize::MAX - 1).checked_sub(t.0)?;
    (i < LISTENERS && t != WAKER).then_some(i)
}

/// A connection slot and the generation it was allocated in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ConnId {
    /// Slot in the worker's slab.
    pub index: u32,
    /// Bumped every time the slot is reused.
    pub generation: u32,
}

impl ConnId {
    /// The mio token for this connection.
    pub fn token(self) -> Token {
        Token(((self.generation as usize) << 32) | self.index as usize)
    }

    /// The connection a mio token names (the caller checks the generation).
    pub fn from_token(t: Token) -> ConnId {
        ConnId {
            index: (t.0 & 0xffff_ffff) as u32,
            generation: ((t.0 >> 32) & 0x7fff_ffff) as u32,
        }
    }
}

/// A slab of connections addressed by [`ConnId`].
pub struct Slab<T> {
    slots: Vec<Slot<T>>,
    free: Vec<u32>,
    len: usize,
}

struct Slot<T> {
    generation: u32,
    value: Option<T>,
}

impl<T> Default for Slab<T> {
    fn default() -> Self {
        Slab {
            slots: Vec::new(),
            free: Vec::new(),
            len: 0,
        }
    }
}

impl<T> Slab<T> {
    /// Stores `value`, returning its id.
    pub fn insert_with(&mut self, make: impl FnOnce(ConnId) -> T) -> ConnId {
        let index = match self.free.pop() {
            Some(i) => i,
            None => {
                self.slots.push(Slot {
                    generation: 0,
                    value: None,
                });
                (self.slots.len() - 1) as u32
            }
        };
        let slot = &mut self.slots[index as usize];
        // Generations stay within 31 bits so the packed token never equals WAKER.
        slot.generation = (slot.generation + 1) & 0x7fff_ffff;
        let id = ConnId {
            index,
            generation: slot.generation,
        };
        slot.value = Some(make(id));
        self.len += 1;
        id
    }

    /// The live value for `id`, if its generation still matches.
    pub fn get_mut(&mut self, id: ConnId) -> Option<&mut T> {
        let slot = self.slots.get_mut(id.index as usize)?;
        if slot.generation != id.generation {
            return None;
        }
        slot.value.as_mut()
    }

    /// Removes and returns the value for `id`.
    pub fn remove(&mut self, id: ConnId) -> Option<T> {
        let slot = self.slots.get_mut(id.index as usize)?;
        if slot.generation != id.generation {
            return None;
        }
        let v = slot.value.take()?;
        self.free.push(id.index);
        self.len -= 1;
        Some(v)
    }

    /// Number of live values.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Ids of all live values (used at shutdown only, never on a timer path).
    pub fn ids(&self) -> Vec<ConnId> {
        self.slots
            .iter()
            .enumerate()
            .filter(|(_, s)| s.value.is_some())
            .map(|(i, s)| ConnId {
                index: i as u32,
                generation: s.generation,
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stale_ids_do_not_resolve() {
        let mut s = Slab::default();
        let a = s.insert_with(|_| "a");
        assert_eq!(s.remove(a), Some("a"));
        let b = s.insert_with(|_| "b");
        assert_eq!(a.index, b.index);
        assert!(s.get_mut(a).is_none());
        assert_eq!(s.get_mut(b).copied(), Some("b"));
        assert_eq!(ConnId::from_token(b.token()), b);
        assert_ne!(b.token(), WAKER);
        assert_eq!(listener_index(b.token()), None);
    }

    #[test]
    fn listener_tokens_are_neither_the_waker_nor_a_connection() {
        assert_eq!(listener_index(WAKER), None);
        for i in [0, 1, 7] {
            assert_eq!(listener_index(listener(i)), Some(i));
            assert_ne!(listener(i), WAKER);
        }
        // The largest connection token (generation 2^31 - 1, index 2^32 - 1).
        let top = ConnId {
            index: u32::MAX,
            generation: 0x7fff_ffff,
        };
        assert_eq!(listener_index(top.token()), None);
    }
}
