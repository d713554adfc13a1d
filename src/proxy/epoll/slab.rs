//! Generation-checked slot storage for the epoll driver's connections, and the epoll token
//! that names a slot. A slot's generation changes when it is freed, so an event (or timer)
//! that still names a freed slot is recognised and ignored even after the slot is reused.

/// What an epoll event's token refers to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Source {
    /// A listener socket (index in the worker's listener list).
    Listener(u32),
    /// A downstream connection slot.
    Down(SlotId),
    /// An upstream connection slot.
    Up(SlotId),
    /// The stop signal's eventfd.
    Wake,
}

/// A slot index plus the generation it had when the reference was taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct SlotId {
    pub index: u32,
    pub generation: u32,
}

const KIND_LISTENER: u64 = 0;
const KIND_DOWN: u64 = 1;
const KIND_UP: u64 = 2;
const KIND_WAKE: u64 = 3;

impl Source {
    /// Packs into 64 bits: generation (32) | index (30) | kind (2).
    pub fn token(self) -> u64 {
        let (kind, index, generation) = match self {
            Source::Listener(i) => (KIND_LISTENER, i, 0),
            Source::Down(id) => (KIND_DOWN, id.index, id.generation),
            Source::Up(id) => (KIND_UP, id.index, id.generation),
            Source::Wake => (KIND_WAKE, 0, 0),
        };
        (u64::from(generation) << 32) | (u64::from(index & 0x3fff_ffff) << 2) | kind
    }

    pub fn from_token(token: u64) -> Source {
        let generation = (token >> 32) as u32;
        let index = ((token >> 2) & 0x3fff_ffff) as u32;
        match token & 3 {
            KIND_LISTENER => Source::Listener(index),
            KIND_DOWN => Source::Down(SlotId { index, generation }),
            KIND_UP => Source::Up(SlotId { index, generation }),
            _ => Source::Wake,
        }
    }
}

/// Most slots a slab hands out (indices must fit the token's 30 bits).
pub(crate) const MAX_SLOTS: usize = 1 << 30;

struct Entry<T> {
    generation: u32,
    value: Option<T>,
}

/// Slots with free-list reuse and generation checks.
pub(crate) struct Slab<T> {
    entries: Vec<Entry<T>>,
    free: Vec<u32>,
    len: usize,
}

impl<T> Slab<T> {
    pub fn new() -> Self {
        Slab {
            entries: Vec::new(),
            free: Vec::new(),
            len: 0,
        }
    }

    /// Stores `value`; `None` when the slab is full.
    pub fn insert(&mut self, value: T) -> Option<SlotId> {
        let index = match self.free.pop() {
            Some(i) => i,
            None => {
                if self.entries.len() >= MAX_SLOTS {
                    return None;
                }
                self.entries.push(Entry {
                    generation: 0,
                    value: None,
                });
                u32::try_from(self.entries.len() - 1).ok()?
            }
        };
        let entry = self.entries.get_mut(index as usize)?;
        entry.value = Some(value);
        self.len += 1;
        Some(SlotId {
            index,
            generation: entry.generation,
        })
    }

    pub fn get(&self, id: SlotId) -> Option<&T> {
        self.entries
            .get(id.index as usize)
            .filter(|e| e.generation == id.generation)
            .and_then(|e| e.value.as_ref())
    }

    pub fn get_mut(&mut self, id: SlotId) -> Option<&mut T> {
        self.entries
            .get_mut(id.index as usize)
            .filter(|e| e.generation == id.generation)
            .and_then(|e| e.value.as_mut())
    }

    /// Frees the slot; later references with the old generation find nothing.
    pub fn remove(&mut self, id: SlotId) -> Option<T> {
        let entry = self
            .entries
            .get_mut(id.index as usize)
            .filter(|e| e.generation == id.generation)?;
        let value = entry.value.take()?;
        entry.generation = entry.generation.wrapping_add(1);
        self.free.push(id.index);
        self.len -= 1;
        Some(value)
    }

    /// Ids of every occupied slot.
    pub fn ids(&self) -> Vec<SlotId> {
        self.entries
            .iter()
            .enumerate()
            .filter(|(_, e)| e.value.is_some())
            .filter_map(|(i, e)| {
                Some(SlotId {
                    index: u32::try_from(i).ok()?,
                    generation: e.generation,
                })
            })
            .collect()
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip() {
        let id = SlotId {
            index: 0x3fff_fffe,
            generation: u32::MAX,
        };
        for s in [
            Source::Listener(7),
            Source::Down(id),
            Source::Up(SlotId {
                index: 0,
                generation: 3,
            }),
            Source::Wake,
        ] {
            assert_eq!(Source::from_token(s.token()), s);
        }
    }

    #[test]
    fn reused_slot_rejects_old_generation() {
        let mut slab = Slab::new();
        let a = slab.insert("a").unwrap();
        let b = slab.insert("b").unwrap();
        assert_eq!(slab.len(), 2);
        assert_eq!(slab.remove(a), Some("a"));
        assert_eq!(slab.remove(a), None, "double free");
        let c = slab.insert("c").unwrap();
        assert_eq!(c.index, a.index, "slot reused");
        assert_ne!(c.generation, a.generation);
        assert_eq!(slab.get(a), None);
        assert_eq!(slab.get(c), Some(&"c"));
        assert_eq!(slab.get(b), Some(&"b"));
        assert_eq!(slab.ids(), vec![c, b]);
        assert!(!slab.is_empty());
    }
}
