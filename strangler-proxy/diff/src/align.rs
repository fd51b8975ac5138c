//! Aligning two arrays that have no comparison rule: a longest-common-subsequence diff
//! (Myers, from `similar`) over a hash of each element, so one inserted element is one
//! difference, not a change at every index after it.
//!
//! An element's hash follows what the comparison counts: numbers by value (unless the rules
//! ask for exact representation), object keys in any order, and parts under an `ignore`
//! pattern left out, so elements that differ only where nothing counts still line up. A
//! tolerance is not hashed: numbers that differ within it do not line elements up, though
//! elements paired by position still compare equal. Equal hashes stand for equal elements
//! (a 64-bit SipHash keyed at random per process); the patch writer checks before relying
//! on it.

use std::collections::HashMap;
use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hash, Hasher};
use std::time::{Duration, Instant};

use serde_json::{Number, Value};

use crate::Numbers;
use crate::path::Token;

/// Longest the alignment of one comparison may take; past it `similar` settles for a
/// coarser (still correct) alignment.
const ALIGN_TIME: Duration = Duration::from_secs(1);

/// How one element of either array came out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Step {
    /// Left element `i` stands where right element `j` does (the same, or changed in place).
    Pair { i: usize, j: usize, same: bool },
    /// Left element `i` is not in the right array.
    Missing(usize),
    /// Right element `j` is not in the left array.
    Extra(usize),
}

/// Element hashes of one comparison, kept per array so that nested arrays are hashed once
/// however deep the walk goes.
pub(crate) struct Hashes {
    state: RandomState,
    /// Element hashes by the address and length of the elements hashed, per side (0: left).
    arrays: [HashMap<(usize, usize), Vec<u64>>; 2],
    deadline: Option<Instant>,
    /// Whether equal ends and in-place changes are found by plain equality before any
    /// hashing. Off for deeply nested documents, where comparing a subtree at every level
    /// would cost depth × size: memoized hashes compare each node once.
    shortcuts: bool,
}

/// What leaves parts out of a hash: the ignore patterns, seen from the path of the node.
pub(crate) trait Ignore {
    fn ignored(&self, tokens: &[Token<'_>]) -> bool;
}

impl Hashes {
    pub(crate) fn new(shortcuts: bool) -> Self {
        Self {
            state: RandomState::new(),
            arrays: [HashMap::new(), HashMap::new()],
            deadline: None,
            shortcuts,
        }
    }

    /// The element hashes of `items` (of side `side`), the elements from index `offset` of
    /// the array at `tokens`.
    pub(crate) fn elements<'a>(
        &mut self,
        side: usize,
        items: &'a [Value],
        offset: usize,
        tokens: &mut Vec<Token<'a>>,
        numbers: Numbers,
        ignore: &dyn Ignore,
    ) -> Vec<u64> {
        let key = (items.as_ptr() as usize, items.len());
        if let Some(known) = self.arrays[side].get(&key) {
            return known.clone();
        }
        let mut hashes = Vec::with_capacity(items.len());
        for (i, item) in items.iter().enumerate() {
            tokens.push(Token::Index(offset + i));
            // An ignored element keeps its place; what it holds does not count.
            hashes.push(if ignore.ignored(tokens) {
                0
            } else {
                self.value(side, item, tokens, numbers, ignore)
            });
            tokens.pop();
        }
        self.arrays[side].insert(key, hashes.clone());
        hashes
    }

    fn value<'a>(
        &mut self,
        side: usize,
        value: &'a Value,
        tokens: &mut Vec<Token<'a>>,
        numbers: Numbers,
        ignore: &dyn Ignore,
    ) -> u64 {
        let mut h = self.state.build_hasher();
        match value {
            Value::Null => 0u8.hash(&mut h),
            Value::Bool(b) => (1u8, b).hash(&mut h),
            Value::Number(n) => {
                2u8.hash(&mut h);
                hash_number(n, numbers, &mut h);
            }
            Value::String(s) => (3u8, s).hash(&mut h),
            Value::Array(items) => {
                4u8.hash(&mut h);
                for e in self.elements(side, items, 0, tokens, numbers, ignore) {
                    e.hash(&mut h);
                }
            }
            Value::Object(map) => {
                5u8.hash(&mut h);
                // A sum, so key order (if a map keeps insertion order) does not matter.
                let mut sum = 0u64;
                for (k, v) in map {
                    tokens.push(Token::Key(k));
                    if !ignore.ignored(tokens) {
                        let entry = (k, self.value(side, v, tokens, numbers, ignore));
                        sum = sum.wrapping_add(self.state.hash_one(entry));
                    }
                    tokens.pop();
                }
                sum.hash(&mut h);
            }
        }
        h.finish()
    }

    /// Aligns `x` (left) with `y` (right), both at `tokens`: every element of either is in
    /// exactly one step, in order. A pair is `same` only when its elements are equal.
    ///
    /// Cheap first: equal ends are trimmed by plain equality (no hashing); a middle of equal
    /// lengths whose elements mostly match where they stand is paired by position (a few
    /// elements changed in place, the common case); anything else is aligned by a Myers diff
    /// of element hashes.
    pub(crate) fn align<'a>(
        &mut self,
        x: &'a [Value],
        y: &'a [Value],
        tokens: &mut Vec<Token<'a>>,
        numbers: Numbers,
        ignore: &dyn Ignore,
    ) -> Vec<Step> {
        // One element each (a nested single-element array, say): nothing to align.
        if x.len() == 1 && y.len() == 1 {
            return vec![Step::Pair {
                i: 0,
                j: 0,
                same: false,
            }];
        }
        if !self.shortcuts {
            let hx = self.elements(0, x, 0, tokens, numbers, ignore);
            let hy = self.elements(1, y, 0, tokens, numbers, ignore);
            return steps(&hx, &hy, self.deadline());
        }
        let prefix = x.iter().zip(y).take_while(|(a, b)| a == b).count();
        let suffix = x[prefix..]
            .iter()
            .rev()
            .zip(y[prefix..].iter().rev())
            .take_while(|(a, b)| a == b)
            .count();
        let (mx, my) = (&x[prefix..x.len() - suffix], &y[prefix..y.len() - suffix]);
        let mut out: Vec<Step> = (0..prefix)
            .map(|i| Step::Pair {
                i,
                j: i,
                same: true,
            })
            .collect();
        let in_place = mx.len() == my.len()
            && (mx.len() <= 1 || 2 * mx.iter().zip(my).filter(|(a, b)| a == b).count() >= mx.len());
        if in_place {
            out.extend(mx.iter().zip(my).enumerate().map(|(k, (a, b))| Step::Pair {
                i: prefix + k,
                j: prefix + k,
                same: a == b,
            }));
        } else {
            let hx = self.elements(0, mx, prefix, tokens, numbers, ignore);
            let hy = self.elements(1, my, prefix, tokens, numbers, ignore);
            let deadline = self.deadline();
            out.extend(
                steps(&hx, &hy, deadline)
                    .into_iter()
                    .map(|step| match step {
                        // Equal hashes are checked: only truly equal elements are `same`.
                        Step::Pair { i, j, same } => Step::Pair {
                            i: prefix + i,
                            j: prefix + j,
                            same: same && mx[i] == my[j],
                        },
                        Step::Missing(i) => Step::Missing(prefix + i),
                        Step::Extra(j) => Step::Extra(prefix + j),
                    }),
            );
        }
        out.extend((0..suffix).map(|k| Step::Pair {
            i: x.len() - suffix + k,
            j: y.len() - suffix + k,
            same: true,
        }));
        out
    }

    fn deadline(&mut self) -> Instant {
        *self
            .deadline
            .get_or_insert_with(|| Instant::now() + ALIGN_TIME)
    }
}

/// The steps of a Myers diff of two hash sequences; replaced runs pair up by position.
pub(crate) fn steps(hx: &[u64], hy: &[u64], deadline: Instant) -> Vec<Step> {
    let mut out = Vec::new();
    for op in
        similar::capture_diff_slices_deadline(similar::Algorithm::Myers, hx, hy, Some(deadline))
    {
        let (old, new) = (op.old_range(), op.new_range());
        match op.tag() {
            similar::DiffTag::Equal => {
                out.extend(old.zip(new).map(|(i, j)| Step::Pair { i, j, same: true }))
            }
            similar::DiffTag::Delete => out.extend(old.map(Step::Missing)),
            similar::DiffTag::Insert => out.extend(new.map(Step::Extra)),
            similar::DiffTag::Replace => {
                let paired = old.len().min(new.len());
                out.extend(old.clone().zip(new.clone()).map(|(i, j)| Step::Pair {
                    i,
                    j,
                    same: false,
                }));
                out.extend(old.skip(paired).map(Step::Missing));
                out.extend(new.skip(paired).map(Step::Extra));
            }
        }
    }
    out
}

/// A number's hash: by value (`1` and `1.0` alike) or, for [`Numbers::Exact`], integers
/// and floats apart.
fn hash_number(n: &Number, numbers: Numbers, h: &mut impl Hasher) {
    match (integer(n), numbers) {
        (Some(i), _) => (0u8, i).hash(h),
        (None, numbers) => {
            let f = n.as_f64().unwrap_or(0.0);
            match integral(f) {
                Some(i) if numbers == Numbers::Value => (0u8, i).hash(h),
                _ => (1u8, f.to_bits()).hash(h),
            }
        }
    }
}

/// The value of an integer number.
pub(crate) fn integer(n: &Number) -> Option<i128> {
    n.as_i64()
        .map(i128::from)
        .or_else(|| n.as_u64().map(i128::from))
}

/// The integer a float is, when it is one within the range JSON integers are read into.
pub(crate) fn integral(f: f64) -> Option<i128> {
    // 2^64: beyond, no integer `serde_json` reads (i64 or u64) can equal it.
    const LIMIT: f64 = 18_446_744_073_709_551_616.0;
    (f.fract() == 0.0 && f.abs() < LIMIT).then_some(f as i128)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hashes(values: &[i64]) -> Vec<u64> {
        values.iter().map(|v| *v as u64).collect()
    }

    #[test]
    fn one_inserted_element_is_one_step_and_changed_runs_pair_up() {
        let far = Instant::now() + ALIGN_TIME;
        let got = steps(&hashes(&[1, 2, 3]), &hashes(&[1, 9, 2, 3]), far);
        assert_eq!(
            got.iter()
                .filter(|s| !matches!(s, Step::Pair { same: true, .. }))
                .collect::<Vec<_>>(),
            [&Step::Extra(1)]
        );
        let got = steps(&hashes(&[1, 2, 3]), &hashes(&[1, 5, 3]), far);
        assert!(got.contains(&Step::Pair {
            i: 1,
            j: 1,
            same: false
        }));
        let got = steps(&hashes(&[1, 2]), &hashes(&[]), far);
        assert_eq!(got, [Step::Missing(0), Step::Missing(1)]);
    }

    #[test]
    fn numbers_hash_by_value_unless_exact() {
        struct Nothing;
        impl Ignore for Nothing {
            fn ignored(&self, _: &[Token<'_>]) -> bool {
                false
            }
        }
        let mut h = Hashes::new(true);
        let one: Value = serde_json::from_str("[1, 1.0, 1.5]").unwrap();
        let Value::Array(items) = &one else {
            unreachable!()
        };
        let by_value = h.elements(0, items, 0, &mut Vec::new(), Numbers::Value, &Nothing);
        assert_eq!(by_value[0], by_value[1]);
        assert_ne!(by_value[0], by_value[2]);
        let exact =
            Hashes::new(true).elements(0, items, 0, &mut Vec::new(), Numbers::Exact, &Nothing);
        assert_ne!(exact[0], exact[1]);
    }
}
