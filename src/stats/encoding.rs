//! Statement texts between the database encoding and the UTF-8 kept in shared memory.
//!
//! A statement's text arrives in the database's encoding, and PostgreSQL's constant
//! locations are byte offsets into those bytes, so normalization runs on the bytes as they
//! are ([`super::normalize`]'s `*_bytes` functions). Reading them as UTF-8 first
//! (`to_string_lossy`) replaced each non-UTF-8 byte with a three-byte character and shifted
//! every later offset: constants were cut in the wrong places and could reach shared memory
//! verbatim. Only the finished, normalized text is converted, to UTF-8, the one encoding
//! shared memory holds whatever database an entry comes from; it is converted back to the
//! reading database's encoding when shown ([`ServerText`]).
//!
//! Conversions never raise an ERROR (they run in hooks): a character the target encoding
//! lacks becomes `?`, and where no conversion is possible (`SQL_ASCII`, whose bytes have no
//! known encoding, or outside a transaction, where the conversion function cannot be looked
//! up) non-UTF-8 bytes are replaced.

use std::borrow::Cow;

use pgrx::pg_sys;
use pgrx::IntoDatum;

/// `bytes` (in the database encoding) as UTF-8.
pub fn server_to_utf8(bytes: &[u8]) -> String {
    if bytes.is_ascii() {
        return String::from_utf8_lossy(bytes).into_owned();
    }
    // SAFETY: plain read of a backend global.
    let db = unsafe { pg_sys::GetDatabaseEncoding() };
    if db != pg_sys::pg_enc::PG_UTF8 as i32 {
        // SAFETY: valid slice; the conversion never raises an ERROR.
        if let Some(converted) = unsafe { convert(bytes, db, pg_sys::pg_enc::PG_UTF8 as i32) } {
            return String::from_utf8_lossy(&converted).into_owned();
        }
    }
    String::from_utf8_lossy(bytes).into_owned()
}

/// `text` (UTF-8) in the database encoding.
pub fn utf8_to_server(text: &str) -> Cow<'_, [u8]> {
    if text.is_ascii() {
        return Cow::Borrowed(text.as_bytes());
    }
    // SAFETY: plain read of a backend global.
    let db = unsafe { pg_sys::GetDatabaseEncoding() };
    if db == pg_sys::pg_enc::PG_UTF8 as i32 || db == pg_sys::pg_enc::PG_SQL_ASCII as i32 {
        return Cow::Borrowed(text.as_bytes());
    }
    // SAFETY: valid slice; the conversion never raises an ERROR.
    match unsafe { convert(text.as_bytes(), pg_sys::pg_enc::PG_UTF8 as i32, db) } {
        Some(converted) => Cow::Owned(converted),
        // Outside a transaction: keep ASCII, mark the rest.
        None => Cow::Owned(
            text.chars()
                .map(|c| if c.is_ascii() { c as u8 } else { b'?' })
                .collect(),
        ),
    }
}

/// `src` converted from encoding `from` to `to` with PostgreSQL's default conversion,
/// characters that `to` lacks (or invalid bytes) replaced by `?`. `None` when there is no
/// such conversion or it cannot be looked up now (no transaction).
///
/// # Safety
/// Runs catalog lookups: call in a backend, not while holding an LWLock.
unsafe fn convert(src: &[u8], from: i32, to: i32) -> Option<Vec<u8>> {
    // SAFETY: per the contract; the conversion functions only read `src` (the C signature
    // takes a non-const pointer) and write at most `dst.len()` bytes, NUL included.
    unsafe {
        if !pg_sys::IsTransactionState() {
            return None;
        }
        let proc_ = pg_sys::FindDefaultConversionProc(from, to);
        if proc_ == pg_sys::InvalidOid {
            return None;
        }
        // The conversion functions need room for the worst-case growth (4x).
        let room = src.len().checked_mul(4)?.checked_add(1)?;
        let room_i32 = i32::try_from(room).ok()?;
        let mut dst = vec![0u8; room];
        let mut out = Vec::with_capacity(src.len() + src.len() / 2);
        let mut pos = 0;
        while pos < src.len() {
            let rest = &src[pos..];
            let consumed = pg_sys::pg_do_encoding_conversion_buf(
                proc_,
                from,
                to,
                rest.as_ptr().cast_mut(),
                rest.len() as i32,
                dst.as_mut_ptr(),
                room_i32,
                true,
            );
            let written = dst.iter().position(|&b| b == 0).unwrap_or(0);
            out.extend_from_slice(&dst[..written]);
            let consumed = usize::try_from(consumed).unwrap_or(0).min(rest.len());
            pos += consumed;
            if consumed < rest.len() {
                // Stopped at a character `to` lacks: skip that one character.
                out.push(b'?');
                let len = pg_sys::pg_encoding_mblen(from, src[pos..].as_ptr().cast());
                pos += usize::try_from(len).unwrap_or(1).clamp(1, src.len() - pos);
            }
        }
        Some(out)
    }
}

/// A `text` result held as UTF-8 (as shared memory keeps statement texts) and handed to
/// PostgreSQL in the database encoding, so that non-ASCII text reads back as it was sent.
pub struct ServerText(pub String);

impl IntoDatum for ServerText {
    fn into_datum(self) -> Option<pg_sys::Datum> {
        let bytes = utf8_to_server(&self.0);
        let len = i32::try_from(bytes.len()).unwrap_or(i32::MAX);
        // SAFETY: copies `len` bytes of a live slice into a new text in the current memory
        // context.
        let text = unsafe { pg_sys::cstring_to_text_with_len(bytes.as_ptr().cast(), len) };
        Some(pg_sys::Datum::from(text))
    }

    fn type_oid() -> pg_sys::Oid {
        pg_sys::TEXTOID
    }
}

pgrx::impl_sql_translatable!(ServerText, "TEXT");

// SAFETY: returns the datum `into_datum` built, as pgrx does for its own text types.
unsafe impl pgrx::callconv::BoxRet for ServerText {
    unsafe fn box_into<'fcx>(
        self,
        fcinfo: &mut pgrx::callconv::FcInfo<'fcx>,
    ) -> pgrx::datum::Datum<'fcx> {
        match self.into_datum() {
            // SAFETY: a fresh text datum for this call's result.
            Some(datum) => unsafe { fcinfo.return_raw_datum(datum) },
            None => fcinfo.return_null(),
        }
    }
}
