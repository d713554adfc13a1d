//! Generational slot storage and the `user_data` encoding of ring operations.
//!
//! Every operation the driver submits carries a 64-bit `user_data` naming the slot it belongs
//! to, that slot's generation and the operation kind, so a completion that arrives after its
//! slot was freed and reused is recognised by its stale generation and ignored.

#![forbid(unsafe_code)]

/// Index + generation of an entry in a [`Slab`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct Id {
    pub idx: u32,
    pub generation: u32,
}

struct Slot<T> {
    generation: u32,
    val: Option<T>,
}

/// A vector of reusable slots; freeing a slot bumps its generation.
pub(crate) struct Slab<T> {
    slots: Vec<Slot<T>>,
    free: Vec<u32>,
    len: usize,
}

impl<T> Slab<T> {
    pub fn new() -> Self {
        Slab {
            slots: Vec::new(),
            free: Vec::new(),
            len: 0,
        }
    }

    pub fn insert(&mut self, val: T) -> Id {
        self.len += 1;
        if let Some(idx) = self.free.pop()
            && let Some(slot) = self.slots.get_mut(idx as usize)
        {
            slot.val = Some(val);
            return Id {
                idx,
                generation: slot.generation,
            };
        }
        let idx = self.slots.len() as u32;
        self.slots.push(Slot {
            generation: 0,
            val: Some(val),
        });
        Id { idx, generation: 0 }
    }

    pub fn get(&self, id: Id) -> Option<&T> {
        self.slots
            .get(id.idx as usize)
            .filter(|s| s.generation == id.generation)
            .and_then(|s| s.val.as_ref())
    }

    pub fn get_mut(&mut self, id: Id) -> Option<&mut T> {
        self.slots
            .get_mut(id.idx as usize)
            .filter(|s| s.generation == id.generation)
            .and_then(|s| s.val.as_mut())
    }

    /// Finds the live entry of slot `idx` whose generation's low 16 bits are `gen16` (the part
    /// carried in `user_data`).
    pub fn find16(&self, idx: u32, gen16: u16) -> Option<Id> {
        let slot = self.slots.get(idx as usize)?;
        (slot.val.is_some() && slot.generation as u16 == gen16).then_some(Id {
            idx,
            generation: slot.generation,
        })
    }

    pub fn remove(&mut self, id: Id) -> Option<T> {
        let slot = self.slots.get_mut(id.idx as usize)?;
        if slot.generation != id.generation {
            return None;
        }
        let val = slot.val.take()?;
        slot.generation = slot.generation.wrapping_add(1);
        self.free.push(id.idx);
        self.len -= 1;
        Some(val)
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Ids of all live entries (for shutdown sweeps).
    pub fn ids(&self) -> Vec<Id> {
        self.slots
            .iter()
            .enumerate()
            .filter(|(_, s)| s.val.is_some())
            .map(|(i, s)| Id {
                idx: i as u32,
                generation: s.generation,
            })
            .collect()
    }
}

/// The kind of a submitted operation, the low byte of its `user_data`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub(crate) enum Op {
    /// Multishot accept; the slot is the listener index.
    Accept = 1,
    /// Poll on the stop eventfd.
    Wake = 2,
    /// Multishot recv with buffer select on an active socket.
    Recv = 3,
    Send = 4,
    Connect = 5,
    LinkTimeout = 6,
    /// `recv(MSG_PEEK)` armed on an idle pooled upstream connection (stale detection).
    IdleRecv = 7,
    /// An `ASYNC_CANCEL` request; its own completion is ignored.
    Cancel = 8,
    /// An `IORING_OP_CLOSE`; its completion is ignored.
    Close = 9,
    /// The `IORING_OP_CLOSE` of a socket's fixed file slot: the socket slot (and with it the
    /// fixed slot of the same index) is reused only after it completed.
    CloseFixed = 10,
    /// An `IORING_OP_FILES_UPDATE` putting a socket into its fixed file slot; it completes
    /// only when it failed (`CQE_SKIP_SUCCESS`).
    FilesUpdate = 11,
}

impl Op {
    fn from_u8(v: u8) -> Option<Op> {
        Some(match v {
            1 => Op::Accept,
            2 => Op::Wake,
            3 => Op::Recv,
            4 => Op::Send,
            5 => Op::Connect,
            6 => Op::LinkTimeout,
            7 => Op::IdleRecv,
            8 => Op::Cancel,
            9 => Op::Close,
            10 => Op::CloseFixed,
            11 => Op::FilesUpdate,
            _ => return None,
        })
    }
}

/// A decoded `user_data`: `slot << 32 | gen16 << 16 | aux << 8 | op`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct UserData {
    pub op: Op,
    pub slot: u32,
    pub gen16: u16,
    /// Operation-specific tag (the pool epoch of an idle recv).
    pub aux: u8,
}

impl UserData {
    pub fn new(op: Op, id: Id, aux: u8) -> Self {
        UserData {
            op,
            slot: id.idx,
            gen16: id.generation as u16,
            aux,
        }
    }

    pub fn encode(self) -> u64 {
        (u64::from(self.slot) << 32)
            | (u64::from(self.gen16) << 16)
            | (u64::from(self.aux) << 8)
            | self.op as u64
    }

    pub fn decode(v: u64) -> Option<Self> {
        Some(UserData {
            op: Op::from_u8(v as u8)?,
            aux: (v >> 8) as u8,
            gen16: (v >> 16) as u16,
            slot: (v >> 32) as u32,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_data_round_trips_and_rejects_unknown_ops() {
        let id = Id {
            idx: 0xdead_beef,
            generation: 0x1_2345,
        };
        let ud = UserData::new(Op::IdleRecv, id, 0xa5);
        let back = UserData::decode(ud.encode()).expect("valid");
        assert_eq!(back, ud);
        assert_eq!(back.gen16, 0x2345);
        assert_eq!(back.slot, 0xdead_beef);
        assert_eq!(UserData::decode(0), None);
        assert_eq!(UserData::decode(0xff), None);
    }

    #[test]
    fn freed_slots_are_reused_with_a_new_generation() {
        let mut s = Slab::new();
        let a = s.insert("a");
        let b = s.insert("b");
        assert_eq!(s.len(), 2);
        assert_eq!(s.remove(a), Some("a"));
        assert_eq!(s.remove(a), None, "double free is refused");
        let c = s.insert("c");
        assert_eq!(c.idx, a.idx, "slot reused");
        assert_ne!(c.generation, a.generation);
        assert_eq!(s.get(a), None, "stale id does not see the new entry");
        assert_eq!(s.get(c), Some(&"c"));
        assert_eq!(s.find16(c.idx, c.generation as u16), Some(c));
        assert_eq!(s.find16(a.idx, a.generation as u16), None);
        assert_eq!(s.get(b), Some(&"b"));
        assert_eq!(s.ids().len(), 2);
    }
}
