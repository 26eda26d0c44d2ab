//! The statistics file: the postmaster writes every entry and plan to
//! `pg_stat/pg_perf.stat` at a clean shutdown and reads it back (then deletes it) at
//! startup, as pg_stat_statements does with its file.
//!
//! Format (little-endian): header `MAGIC` (u32), `FORMAT_VERSION` (u64), PostgreSQL major
//! version (u32); entry count (u64), then per entry: key, counters, text length (u32), text;
//! plan count (u64), then per plan: key, analyzed (u8), exec_ms, captured_at, then the plan,
//! parameter and sample texts, each as length (u32) and bytes.
//!
//! Invariants:
//! - The file is written durably: to a temporary file, fsynced, then renamed with
//!   PostgreSQL's `durable_rename` (which fsyncs the file and its directory), so a crash
//!   leaves either the old file or the new one, never a torn one.
//! - A file with another magic number, format version or PostgreSQL major version, or a
//!   truncated one, is ignored with a LOG message (statistics start empty), never an error.

use std::io::Write;
use std::mem::size_of;
use std::ptr;

use pgrx::pg_sys;

use super::shmem::{self, CapturedPlan, Counters, ExecSample, StatKey, FORMAT_VERSION};

/// "PGPF": the first four bytes of every pg_perf statistics file.
const MAGIC: u32 = 0x5047_5046;
const DUMP_FILE: &str = "pg_stat/pg_perf.stat";
const DUMP_FILE_TMP: &str = "pg_stat/pg_perf.stat.tmp";
const DUMP_FILE_C: &std::ffi::CStr = c"pg_stat/pg_perf.stat";
const DUMP_FILE_TMP_C: &std::ffi::CStr = c"pg_stat/pg_perf.stat.tmp";

/// The header this build writes and accepts.
fn header() -> [u8; 16] {
    let mut h = [0u8; 16];
    h[0..4].copy_from_slice(&MAGIC.to_le_bytes());
    h[4..12].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
    h[12..16].copy_from_slice(&pg_sys::PG_MAJORVERSION_NUM.to_le_bytes());
    h
}

/// Why a file's header is not ours, or the position after it.
fn check_header(data: &[u8]) -> Result<usize, String> {
    let mut pos = 0;
    let magic = read_pod::<u32>(data, &mut pos);
    let format = read_pod::<u64>(data, &mut pos);
    let major = read_pod::<u32>(data, &mut pos);
    match (magic, format, major) {
        (Some(MAGIC), Some(FORMAT_VERSION), Some(pg_sys::PG_MAJORVERSION_NUM)) => Ok(pos),
        (Some(MAGIC), Some(FORMAT_VERSION), Some(m)) => Err(format!(
            "written by PostgreSQL {m}, this is {}",
            pg_sys::PG_MAJORVERSION_NUM
        )),
        (Some(MAGIC), Some(f), Some(_)) => Err(format!(
            "file format {f:#x}, this version of pg_perf reads {FORMAT_VERSION:#x}"
        )),
        (Some(MAGIC), _, _) => Err("truncated header".into()),
        // Files of pg_perf before the header began with a bare format number "PERF....".
        _ if data.get(4..8) == Some(&b"FREP"[..]) => {
            Err("written by an older pg_perf, without a header".into())
        }
        _ => Err("not a pg_perf statistics file".into()),
    }
}

fn as_bytes<T: Copy>(v: &T) -> &[u8] {
    // SAFETY: T is repr(C) plain data (no pointers); reading its bytes is fine.
    unsafe { std::slice::from_raw_parts(v as *const T as *const u8, size_of::<T>()) }
}

fn read_pod<T: Copy>(data: &[u8], pos: &mut usize) -> Option<T> {
    let end = pos.checked_add(size_of::<T>())?;
    let bytes = data.get(*pos..end)?;
    *pos = end;
    // SAFETY: T is repr(C) plain data for which every byte pattern we wrote is valid; bools
    // are only ever written as 0/1 by this module.
    Some(unsafe { ptr::read_unaligned(bytes.as_ptr() as *const T) })
}

fn read_string(data: &[u8], pos: &mut usize) -> Option<String> {
    let len = read_pod::<u32>(data, pos)? as usize;
    let end = pos.checked_add(len)?;
    let s = String::from_utf8_lossy(data.get(*pos..end)?).into_owned();
    *pos = end;
    Some(s)
}

/// The whole file's contents for the current statement table and plan pool.
fn serialize() -> Vec<u8> {
    let entries = shmem::snapshot(|_| true);
    let plans = shmem::plans(|_| true);
    let mut out = Vec::with_capacity(entries.len() * 1024 + 64);
    out.extend_from_slice(&header());
    out.extend_from_slice(&(entries.len() as u64).to_le_bytes());
    for e in &entries {
        out.extend_from_slice(as_bytes(&e.key));
        out.extend_from_slice(as_bytes(&e.counters));
        out.extend_from_slice(&(e.text.len() as u32).to_le_bytes());
        out.extend_from_slice(e.text.as_bytes());
    }
    out.extend_from_slice(&(plans.len() as u64).to_le_bytes());
    for p in &plans {
        out.extend_from_slice(as_bytes(&p.key));
        out.push(p.analyzed as u8);
        out.extend_from_slice(&p.exec_ms.to_le_bytes());
        out.extend_from_slice(&p.captured_at.to_le_bytes());
        for text in [&p.plan, &p.params, &p.sample] {
            out.extend_from_slice(&(text.len() as u32).to_le_bytes());
            out.extend_from_slice(text.as_bytes());
        }
    }
    out
}

/// Writes `data` to the temporary file and fsyncs it.
fn write_synced(data: &[u8]) -> std::io::Result<()> {
    let mut f = std::fs::File::create(DUMP_FILE_TMP)?;
    f.write_all(data)?;
    f.sync_all()
}

/// Process-exit callback of the postmaster (registered in `shmem::startup`).
#[pgrx::pg_guard]
pub(super) unsafe extern "C-unwind" fn dump_on_exit(code: i32, _arg: pg_sys::Datum) {
    // Don't dump after a crash (the data may be inconsistent), or when asked not to.
    if code != 0 || !crate::gucs::save() || !shmem::available() {
        return;
    }
    let out = serialize();
    if let Err(e) = write_synced(&out) {
        pgrx::log!("pg_perf: could not write {DUMP_FILE_TMP}: {e}");
        let _ = std::fs::remove_file(DUMP_FILE_TMP);
        return;
    }
    // SAFETY: two static NUL-terminated paths; with elevel LOG a failure is logged and
    // reported as -1, never raised.
    let renamed = unsafe {
        pg_sys::durable_rename(
            DUMP_FILE_TMP_C.as_ptr(),
            DUMP_FILE_C.as_ptr(),
            pg_sys::LOG as i32,
        )
    };
    if renamed != 0 {
        let _ = std::fs::remove_file(DUMP_FILE_TMP);
    }
}

/// Loads the file written at the last clean shutdown. Runs in the postmaster before any
/// backend exists. A missing, foreign, other-version or truncated file is ignored
/// (statistics start empty, with a LOG message), never an error.
pub(super) fn load_from_disk() {
    let Ok(data) = std::fs::read(DUMP_FILE) else {
        return;
    };
    let _ = std::fs::remove_file(DUMP_FILE);
    let mut pos = match check_header(&data) {
        Ok(pos) => pos,
        Err(why) => {
            pgrx::log!("pg_perf: ignoring {DUMP_FILE}: {why}");
            return;
        }
    };
    let Some(n) = read_pod::<u64>(&data, &mut pos) else {
        return;
    };
    let mut loaded = 0u64;
    for _ in 0..n {
        let (Some(key), Some(counters), Some(text)) = (
            read_pod::<StatKey>(&data, &mut pos),
            read_pod::<Counters>(&data, &mut pos),
            read_string(&data, &mut pos),
        ) else {
            break;
        };
        let hash = key.hash();
        let text = crate::pg::text::truncate_utf8(&text, shmem::text_cap());
        shmem::record_new(
            &key,
            hash,
            text,
            &ExecSample {
                failed: true,
                now: counters.last_seen,
                ..Default::default()
            },
            -1.0,
        );
        if shmem::restore_counters(&key, hash, &counters) {
            loaded += 1;
        }
    }
    let Some(nplans) = read_pod::<u64>(&data, &mut pos) else {
        return;
    };
    for _ in 0..nplans {
        let (Some(key), Some(analyzed), Some(exec_ms), Some(at), Some(plan), Some(params)) = (
            read_pod::<StatKey>(&data, &mut pos),
            read_pod::<u8>(&data, &mut pos),
            read_pod::<f64>(&data, &mut pos),
            read_pod::<i64>(&data, &mut pos),
            read_string(&data, &mut pos),
            read_string(&data, &mut pos),
        ) else {
            break;
        };
        let sample = read_string(&data, &mut pos).unwrap_or_default();
        shmem::store_plan(
            &key,
            key.hash(),
            &CapturedPlan {
                exec_ms,
                analyzed: analyzed != 0,
                plan: &plan,
                params: &params,
                sample: &sample,
                captured_at: at,
            },
        );
    }
    pgrx::log!("pg_perf: loaded {loaded} statement entries from {DUMP_FILE}");
}

#[cfg(test)]
mod unit_tests {
    use super::*;

    #[test]
    fn own_header_is_accepted() {
        let mut data = header().to_vec();
        data.extend_from_slice(&0u64.to_le_bytes());
        assert_eq!(check_header(&data), Ok(16));
    }

    #[test]
    fn foreign_old_and_other_major_headers_are_refused() {
        assert!(check_header(b"").is_err());
        assert!(check_header(b"garbage, not a stats file").is_err());
        // The format before the header existed: a bare FORMAT_VERSION.
        let old = 0x5045_5246_0000_0006u64.to_le_bytes();
        assert!(check_header(&old).unwrap_err().contains("older pg_perf"));
        let mut other_format = header();
        other_format[4..12].copy_from_slice(&0x5045_5246_0000_0006u64.to_le_bytes());
        assert!(check_header(&other_format)
            .unwrap_err()
            .contains("file format"));
        let mut other_major = header();
        other_major[12..16].copy_from_slice(&14u32.to_le_bytes());
        assert!(check_header(&other_major)
            .unwrap_err()
            .contains("PostgreSQL 14"));
        assert!(check_header(&header()[..10])
            .unwrap_err()
            .contains("truncated"));
    }
}
