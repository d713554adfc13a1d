//! The hash map type used by the routing table.

use std::collections::HashMap;
use std::collections::hash_map::RandomState;

/// Hash map used for host and path keys.
pub(crate) type FastMap<K, V> = HashMap<K, V, RandomState>;
