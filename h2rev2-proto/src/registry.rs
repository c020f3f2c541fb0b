//! The dialer-id keyed session registry.
//!
//! A slab of sessions plus an `id -> [SessionKey]` map. A [`SessionKey`] carries the
//! slot's generation, bumped on every removal, so a stale key (held by an adapter task
//! whose session has ended) can never read or touch a newer session that reused the
//! slot: the ABA guard.

use std::collections::HashMap;

use crate::wire::DialerId;

/// A generation-checked handle to one session.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SessionKey {
    index: u32,
    generation: u32,
}

impl SessionKey {
    /// The slot index (for logs).
    pub fn index(self) -> u32 {
        self.index
    }
}

#[derive(Debug)]
struct Slot<T> {
    generation: u32,
    value: Option<(DialerId, T)>,
}

/// Sessions keyed by dialer id, several per id, in registration order.
#[derive(Debug)]
pub struct Registry<T> {
    slots: Vec<Slot<T>>,
    free: Vec<u32>,
    by_id: HashMap<DialerId, Vec<SessionKey>>,
    len: usize,
}

impl<T> Default for Registry<T> {
    fn default() -> Self {
        Registry {
            slots: Vec::new(),
            free: Vec::new(),
            by_id: HashMap::new(),
            len: 0,
        }
    }
}

impl<T> Registry<T> {
    /// An empty registry.
    pub fn new() -> Self {
        Registry::default()
    }

    /// Number of live sessions.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether there is no session.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Number of distinct ids with at least one session.
    pub fn id_count(&self) -> usize {
        self.by_id.len()
    }

    /// Adds a session for `id`, after the sessions it already has.
    pub fn insert(&mut self, id: DialerId, value: T) -> SessionKey {
        let index = match self.free.pop() {
            Some(i) => i,
            None => {
                self.slots.push(Slot {
                    generation: 0,
                    value: None,
                });
                u32::try_from(self.slots.len() - 1).expect("more than 2^32 sessions")
            }
        };
        let slot = &mut self.slots[index as usize];
        let key = SessionKey {
            index,
            generation: slot.generation,
        };
        slot.value = Some((id.clone(), value));
        self.by_id.entry(id).or_default().push(key);
        self.len += 1;
        key
    }

    /// Removes a session. A stale key returns `None` and changes nothing.
    pub fn remove(&mut self, key: SessionKey) -> Option<(DialerId, T)> {
        let slot = self.slots.get_mut(key.index as usize)?;
        if slot.generation != key.generation || slot.value.is_none() {
            return None;
        }
        let (id, value) = slot.value.take()?;
        slot.generation = slot.generation.wrapping_add(1);
        self.free.push(key.index);
        if let Some(list) = self.by_id.get_mut(&id) {
            list.retain(|k| *k != key);
            if list.is_empty() {
                self.by_id.remove(&id);
            }
        }
        self.len -= 1;
        Some((id, value))
    }

    /// The session for `key`, if it is still the one the key was made for.
    pub fn get(&self, key: SessionKey) -> Option<&T> {
        let slot = self.slots.get(key.index as usize)?;
        if slot.generation != key.generation {
            return None;
        }
        slot.value.as_ref().map(|(_, v)| v)
    }

    /// Mutable access, with the same generation check as [`Registry::get`].
    pub fn get_mut(&mut self, key: SessionKey) -> Option<&mut T> {
        let slot = self.slots.get_mut(key.index as usize)?;
        if slot.generation != key.generation {
            return None;
        }
        slot.value.as_mut().map(|(_, v)| v)
    }

    /// The id a live key belongs to.
    pub fn id_of(&self, key: SessionKey) -> Option<&DialerId> {
        let slot = self.slots.get(key.index as usize)?;
        if slot.generation != key.generation {
            return None;
        }
        slot.value.as_ref().map(|(id, _)| id)
    }

    /// The sessions holding `id`, oldest first.
    pub fn sessions(&self, id: &DialerId) -> &[SessionKey] {
        self.by_id.get(id).map(Vec::as_slice).unwrap_or(&[])
    }

    /// Every live session.
    pub fn iter(&self) -> impl Iterator<Item = (SessionKey, &DialerId, &T)> {
        self.slots.iter().enumerate().filter_map(|(i, s)| {
            s.value.as_ref().map(|(id, v)| {
                (
                    SessionKey {
                        index: i as u32,
                        generation: s.generation,
                    },
                    id,
                    v,
                )
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stale_keys_are_harmless() {
        let id = DialerId::new("a").unwrap();
        let mut r = Registry::new();
        let k1 = r.insert(id.clone(), 1);
        assert_eq!(r.remove(k1), Some((id.clone(), 1)));
        let k2 = r.insert(id.clone(), 2);
        assert_eq!(k1.index(), k2.index(), "slot reused");
        assert_eq!(r.get(k1), None);
        assert_eq!(r.remove(k1), None);
        assert_eq!(r.get(k2), Some(&2));
        assert_eq!(r.sessions(&id), &[k2]);
        assert_eq!(r.len(), 1);
    }

    #[test]
    fn several_per_id() {
        let a = DialerId::new("a").unwrap();
        let mut r = Registry::new();
        let k1 = r.insert(a.clone(), ());
        let k2 = r.insert(a.clone(), ());
        assert_eq!(r.sessions(&a), &[k1, k2]);
        r.remove(k1);
        assert_eq!(r.sessions(&a), &[k2]);
        r.remove(k2);
        assert!(r.sessions(&a).is_empty());
        assert_eq!(r.id_count(), 0);
        assert!(r.is_empty());
    }
}
