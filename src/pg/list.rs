//! Walking PostgreSQL `List`s (the array-based lists of PostgreSQL 13+), so that no
//! capability indexes `elements` by hand.
//!
//! Each function reads the list's length once and yields its cells in order; a null list
//! is the empty list, as in PostgreSQL (`NIL`).

use pgrx::pg_sys;

/// Number of cells in `list` (0 for `NIL`).
///
/// # Safety
/// `list` is null or points to a valid `List`.
#[inline]
pub unsafe fn len(list: *const pg_sys::List) -> usize {
    if list.is_null() {
        0
    } else {
        // SAFETY: non-null valid List, per the contract.
        unsafe { (*list).length.max(0) as usize }
    }
}

/// The cell at `i`, which must be `< len(list)`.
///
/// # Safety
/// `list` points to a valid `List` with more than `i` cells.
#[inline]
unsafe fn cell(list: *const pg_sys::List, i: usize) -> pg_sys::ListCell {
    // SAFETY: `elements` has `length` initialized cells and i < length, per the contract.
    unsafe { *(*list).elements.add(i) }
}

/// The pointer cells of `list` (a `List` of nodes or other pointers), cast to `*mut T`.
///
/// # Safety
/// `list` is null or a valid pointer `List` that outlives the iterator and is not modified
/// while it runs.
pub unsafe fn ptrs<T>(list: *const pg_sys::List) -> impl Iterator<Item = *mut T> {
    // SAFETY: per the contract.
    let n = unsafe { len(list) };
    // SAFETY: i < n = the list's length; per the contract the list is still alive.
    (0..n).map(move |i| unsafe { cell(list, i).ptr_value as *mut T })
}

/// The OID cells of `list` (an `OidList`).
///
/// # Safety
/// As for [`ptrs`], with an OID list.
pub unsafe fn oids(list: *const pg_sys::List) -> impl Iterator<Item = pg_sys::Oid> {
    // SAFETY: per the contract.
    let n = unsafe { len(list) };
    // SAFETY: i < n = the list's length; per the contract the list is still alive.
    (0..n).map(move |i| unsafe { cell(list, i).oid_value })
}

/// The first pointer cell of `list`, if any (`linitial`).
///
/// # Safety
/// As for [`ptrs`].
#[inline]
pub unsafe fn first<T>(list: *const pg_sys::List) -> Option<*mut T> {
    // SAFETY: per the contract.
    unsafe { ptrs(list).next() }
}
