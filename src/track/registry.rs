//! Which registry slots a sweep must keep (pure; see `generations::sweep`).
//!
//! The registry is an open-addressing table with linear probing: a key is found by probing
//! from its home slot until the key or an empty slot. Freeing a slot on a kept key's probe
//! chain would end that chain early, and the next lookup of the key would claim a second
//! slot while the key's holders still use the first. So a kept key keeps its whole chain.

/// For each slot, whether a sweep keeps it: the slots of keys that must stay (`busy`) and
/// every slot between such a key's home (`home(key)`, reduced modulo the table size) and
/// its slot. `keys[i] == 0` is an empty slot.
pub(crate) fn kept(keys: &[u64], busy: &[bool], home: impl Fn(u64) -> usize) -> Vec<bool> {
    let n = keys.len();
    let mut keep = vec![false; n];
    for (slot, &key) in keys.iter().enumerate() {
        if key == 0 || !busy.get(slot).copied().unwrap_or(false) {
            continue;
        }
        let mut i = home(key) % n;
        // A chain is at most the whole table; the bound only guards against a home that
        // does not lead to the slot (which probing never produces).
        for _ in 0..n {
            keep[i] = true;
            if i == slot {
                break;
            }
            i = (i + 1) % n;
        }
    }
    keep
}

#[cfg(test)]
mod tests {
    use super::kept;

    const N: usize = 64;

    fn home(key: u64) -> usize {
        (key as usize * 7) % N
    }

    fn probe(table: &mut [u64], key: u64, create: bool) -> Option<usize> {
        for i in 0..table.len() {
            let idx = (home(key) + i) % table.len();
            if table[idx] == key {
                return Some(idx);
            }
            if table[idx] == 0 {
                if create {
                    table[idx] = key;
                    return Some(idx);
                }
                return None;
            }
        }
        None
    }

    #[test]
    fn kept_keys_are_still_found_where_they_were() {
        // Keys chosen to collide (same home every 64/gcd(7,64) = 64 apart: 1, 65, 129, ...).
        let mut table = vec![0u64; N];
        let keys: Vec<u64> = (0..40).map(|k| 1 + (k % 5) * 64 + k / 5).collect();
        let slots: Vec<usize> = keys
            .iter()
            .map(|&k| probe(&mut table, k, true).unwrap())
            .collect();
        for busy_every in [1usize, 3, 7, 40] {
            let mut t = table.clone();
            let busy: Vec<bool> = (0..N).map(|i| t[i] != 0 && i % busy_every == 0).collect();
            let keep = kept(&t, &busy, home);
            for i in 0..N {
                if !keep[i] {
                    t[i] = 0;
                }
            }
            for (k, &s) in keys.iter().zip(&slots) {
                if busy[s] {
                    assert_eq!(probe(&mut t, *k, false), Some(s), "busy key {k} lost");
                    // A claim of the same key finds it too (no second slot).
                    assert_eq!(probe(&mut t, *k, true), Some(s));
                }
            }
        }
    }

    #[test]
    fn nothing_busy_frees_everything() {
        let mut table = vec![0u64; N];
        for k in 1..50 {
            probe(&mut table, k, true);
        }
        let keep = kept(&table, &[false; N], home);
        assert!(keep.iter().all(|k| !k));
    }

    #[test]
    fn a_busy_key_at_home_keeps_only_its_slot() {
        let mut table = vec![0u64; N];
        let s = probe(&mut table, 3, true).unwrap();
        for k in 4..30 {
            probe(&mut table, k, true);
        }
        let busy: Vec<bool> = (0..N).map(|i| i == s).collect();
        let keep = kept(&table, &busy, home);
        assert_eq!(keep.iter().filter(|k| **k).count(), 1);
        assert!(keep[s]);
    }

    #[test]
    fn a_chain_wrapping_past_the_end_is_kept() {
        let mut table = vec![0u64; N];
        // home(9) = 63: the second key with that home wraps to slot 0.
        let a = probe(&mut table, 9, true).unwrap();
        let b = probe(&mut table, 9 + 64, true).unwrap();
        assert_eq!((a, b), (63, 0));
        let busy: Vec<bool> = (0..N).map(|i| i == b).collect();
        let keep = kept(&table, &busy, home);
        assert!(keep[63] && keep[0]);
        assert_eq!(keep.iter().filter(|k| **k).count(), 2);
    }
}
