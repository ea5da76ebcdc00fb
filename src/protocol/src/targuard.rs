//! A reader that checks a tar stream's headers as they pass, before a tar parser sees
//! them: a GNU long name or link (`L`, `K`) or a PAX record set (`x`, `g`) over
//! [`MAX_SPECIAL`] bytes is refused at its header, before anything is allocated for it.
//! The `tar` crate reads those entries whole into memory, so without this a 5 MB archive
//! that declares a 1 GiB long name costs gigabytes. The cap is Go's `archive/tar`'s (which
//! dockerd uses). Shared by berthd (image layers, `docker load`, `docker cp`) and the
//! guest agent (`docker cp` into a microVM).
//!
//! The guard follows the stream's layout as the `tar` crate does (a PAX `size` record
//! overrides the next entry's header size; GNU sparse extension blocks), and stops
//! looking after the end-of-archive block. It checks no checksum: the parser does.

use std::io::{self, Read};

/// Largest GNU long name/link or PAX record set accepted, in bytes.
pub const MAX_SPECIAL: u64 = 1 << 20;

const BLOCK: usize = 512;

/// Wraps a tar stream; see the module's documentation.
pub struct TarGuard<R> {
    inner: R,
    /// The header block being read, and how much of it is in.
    hdr: [u8; BLOCK],
    filled: usize,
    /// Bytes of the current entry's data (and padding) still to pass.
    skip: u64,
    /// The data of a PAX entry being read (its `size` record applies to the next entry).
    pax: Option<Vec<u8>>,
    pax_left: u64,
    /// A `size` from the last PAX entry, for the next header.
    pax_size: Option<u64>,
    /// GNU sparse extension blocks follow, then this much data.
    sparse_then: Option<u64>,
    /// The end-of-archive block went by: the rest is not tar.
    done: bool,
}

impl<R: Read> TarGuard<R> {
    /// Guards `inner`.
    pub fn new(inner: R) -> TarGuard<R> {
        TarGuard {
            inner,
            hdr: [0; BLOCK],
            filled: 0,
            skip: 0,
            pax: None,
            pax_left: 0,
            pax_size: None,
            sparse_then: None,
            done: false,
        }
    }

    /// Checks a whole header block and sets up what follows it, following the `tar`
    /// crate's (0.4) reading of the stream exactly: it reads a GNU long name or link, or
    /// a PAX record set, whole into memory only when the header has ustar or GNU magic;
    /// such entries belong to the next member, and a PAX `size` applies to the first
    /// header after them that is not one of them; any header returned as an entry of its
    /// own ends the pending PAX records.
    fn header(&mut self) -> io::Result<()> {
        let h = &self.hdr;
        if let Some(size) = self.sparse_then {
            // A GNU sparse extension block: another follows while its flag is 1.
            if h[504] != 1 {
                self.sparse_then = None;
                self.skip = round_up(size)?;
            }
            return Ok(());
        }
        if h.iter().all(|b| *b == 0) {
            self.done = true;
            return Ok(());
        }
        let kind = h[156];
        let gnu = &h[257..263] == b"ustar " && &h[263..265] == b" \0";
        let recognized = gnu || (&h[257..263] == b"ustar\0" && &h[263..265] == b"00");
        let extension = matches!(kind, b'L' | b'K' | b'x' | b'g');
        let mut size = parse_size(&h[124..136])?;
        if extension && size > MAX_SPECIAL {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "a tar header of {size} bytes (a {} entry) is over the {} byte cap",
                    match kind {
                        b'L' => "GNU long name",
                        b'K' => "GNU long link",
                        _ => "PAX record",
                    },
                    MAX_SPECIAL
                ),
            ));
        }
        if !extension {
            if let Some(s) = self.pax_size {
                size = s;
            }
        }
        if !(recognized && matches!(kind, b'L' | b'K' | b'x')) {
            // An entry of its own: the PAX records pending were its.
            self.pax_size = None;
        }
        if recognized && kind == b'x' {
            self.pax = Some(Vec::with_capacity(size as usize));
            self.pax_left = size;
            if size == 0 {
                self.pax = None;
            }
        }
        if kind == b'S' && gnu && h[482] == 1 {
            self.sparse_then = Some(size);
            return Ok(());
        }
        self.skip = round_up(size)?;
        Ok(())
    }

    /// Data of the current entry went by.
    fn data(&mut self, bytes: &[u8]) {
        if let Some(p) = &mut self.pax {
            let k = (bytes.len() as u64).min(self.pax_left) as usize;
            p.extend_from_slice(&bytes[..k]);
            self.pax_left -= k as u64;
            if self.pax_left == 0 {
                self.pax_size = pax_size(p);
                self.pax = None;
            }
        }
    }
}

impl<R: Read> Read for TarGuard<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        let mut i = 0;
        while i < n && !self.done {
            if self.skip > 0 {
                let k = (self.skip.min((n - i) as u64)) as usize;
                self.data(&buf[i..i + k]);
                self.skip -= k as u64;
                i += k;
                continue;
            }
            let k = (BLOCK - self.filled).min(n - i);
            self.hdr[self.filled..self.filled + k].copy_from_slice(&buf[i..i + k]);
            self.filled += k;
            i += k;
            if self.filled == BLOCK {
                self.filled = 0;
                self.header()?;
            }
        }
        Ok(n)
    }
}

fn round_up(size: u64) -> io::Result<u64> {
    size.checked_add(BLOCK as u64 - 1)
        .map(|s| s & !(BLOCK as u64 - 1))
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "tar entry size overflows"))
}

/// A header's size field: octal text, or GNU's base-256 when the top bit is set.
fn parse_size(f: &[u8]) -> io::Result<u64> {
    let bad = || io::Error::new(io::ErrorKind::InvalidData, "corrupt tar header: bad size");
    if f[0] & 0x80 != 0 {
        let mut v: u64 = 0;
        for (i, b) in f.iter().enumerate() {
            let b = if i == 0 { b & 0x7f } else { *b };
            v = v.checked_mul(256).ok_or_else(bad)? | u64::from(b);
        }
        return Ok(v);
    }
    let t = std::str::from_utf8(f).map_err(|_| bad())?;
    let t = t.trim_matches(|c: char| c == '\0' || c == ' ');
    if t.is_empty() {
        return Ok(0);
    }
    u64::from_str_radix(t, 8).map_err(|_| bad())
}

/// The `size` record of a PAX record set as the `tar` crate reads it: records split at
/// newlines, each `LEN key=value` with LEN its length; the first `size` wins; a malformed
/// record before it, or a bad value, means none.
fn pax_size(data: &[u8]) -> Option<u64> {
    for line in data.split(|b| *b == b'\n') {
        if line.is_empty() {
            return None;
        }
        let sp = line.iter().position(|b| *b == b' ')?;
        let len: usize = std::str::from_utf8(&line[..sp]).ok()?.parse().ok()?;
        if line.len() + 1 != len {
            return None;
        }
        let kv = &line[sp + 1..];
        let eq = kv.iter().position(|b| *b == b'=')?;
        if &kv[..eq] == b"size" {
            return std::str::from_utf8(&kv[eq + 1..]).ok()?.parse().ok();
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(name: &str, kind: u8, size: u64) -> [u8; BLOCK] {
        let mut h = [0u8; BLOCK];
        h[..name.len()].copy_from_slice(name.as_bytes());
        h[100..107].copy_from_slice(b"0000644");
        let s = format!("{size:011o}");
        h[124..135].copy_from_slice(s.as_bytes());
        h[156] = kind;
        h
    }

    /// A ustar header (magic "ustar\0" "00").
    fn ustar(name: &str, kind: u8, size: u64) -> [u8; BLOCK] {
        let mut h = header(name, kind, size);
        h[257..263].copy_from_slice(b"ustar\0");
        h[263..265].copy_from_slice(b"00");
        h
    }

    /// A block of PAX records.
    fn records(r: &[u8]) -> Vec<u8> {
        let mut d = r.to_vec();
        d.resize(BLOCK, 0);
        d
    }

    /// The huge long name the guard must meet where `tar` meets it.
    fn huge_long_name() -> [u8; BLOCK] {
        ustar("././@LongLink", b'L', 1 << 32)
    }

    fn refused(t: &[u8]) -> bool {
        drain(t).is_err_and(|e| e.to_string().contains("GNU long name"))
    }

    fn drain(r: impl Read) -> io::Result<u64> {
        io::copy(&mut TarGuard::new(r), &mut io::sink())
    }

    #[test]
    fn a_huge_long_name_header_is_refused_before_its_data() {
        let mut t = header("././@LongLink", b'L', 1 << 30).to_vec();
        t.extend(vec![b'a'; 4096]);
        let e = drain(&t[..]).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidData);
        assert!(e.to_string().contains("GNU long name"), "{e}");
        let t = header("pax", b'x', MAX_SPECIAL + 1);
        assert!(drain(&t[..]).unwrap_err().to_string().contains("PAX"));
    }

    #[test]
    fn real_archives_pass_whole_with_long_names_pax_sizes_and_big_files() {
        let mut b = tar::Builder::new(Vec::new());
        let long = "d/".repeat(200) + "f";
        let mut h = tar::Header::new_gnu();
        h.set_size(5);
        h.set_mode(0o644);
        b.append_data(&mut h, &long, &b"hello"[..]).unwrap();
        // A data block that looks like a huge long-name header must not be taken for one.
        let mut fake = header("x", b'L', 1 << 30).to_vec();
        fake.extend([0u8; 100]);
        let mut h = tar::Header::new_ustar();
        h.set_size(fake.len() as u64);
        h.set_mode(0o644);
        b.append_data(&mut h, "fake", &fake[..]).unwrap();
        let t = b.into_inner().unwrap();
        assert_eq!(drain(&t[..]).unwrap(), t.len() as u64);
        // Read one byte at a time too.
        struct Slow<'a>(&'a [u8]);
        impl Read for Slow<'_> {
            fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
                let n = self.0.len().min(1).min(buf.len());
                buf[..n].copy_from_slice(&self.0[..n]);
                self.0 = &self.0[n..];
                Ok(n)
            }
        }
        assert_eq!(drain(Slow(&t)).unwrap(), t.len() as u64);
    }

    #[test]
    fn the_guard_meets_headers_where_tar_does_in_the_corner_cases() {
        let filler = [b'a'; BLOCK];
        // Two size records: the first wins (1024: two blocks of data).
        let mut t = ustar("pax", b'x', 25).to_vec();
        t.extend(records(b"13 size=1024\n12 size=512\n"));
        t.extend(ustar("f", b'0', 0));
        t.extend(filler);
        t.extend(filler);
        t.extend(huge_long_name());
        assert!(refused(&t));
        // A global header between the PAX records and the file takes them: the file's
        // size is its header's (0).
        let mut t = ustar("pax", b'x', 13).to_vec();
        t.extend(records(b"13 size=1024\n"));
        t.extend(ustar("g", b'g', 0));
        t.extend(ustar("f", b'0', 0));
        t.extend(huge_long_name());
        assert!(refused(&t));
        // An `x` without magic is an entry of its own, not PAX records.
        let mut t = header("pax", b'x', 13).to_vec();
        t.extend(records(b"13 size=1024\n"));
        t.extend(ustar("f", b'0', 0));
        t.extend(huge_long_name());
        assert!(refused(&t));
        // A malformed record before the size: no size at all.
        let mut t = ustar("pax", b'x', 20).to_vec();
        t.extend(records(b"99 bad\n13 size=1024\n"));
        t.extend(ustar("f", b'0', 0));
        t.extend(huge_long_name());
        assert!(refused(&t));
        // A GNU sparse header whose extension flag is not 1 has no extension blocks.
        let mut s = header("s", b'S', 0);
        s[257..263].copy_from_slice(b"ustar ");
        s[263..265].copy_from_slice(b" \0");
        s[482] = 2;
        s[483..495].copy_from_slice(b"00000000000\0");
        // (with a good checksum: the `tar` crate reads this one below)
        s[148..156].copy_from_slice(b"        ");
        let sum: u32 = s.iter().map(|b| u32::from(*b)).sum();
        s[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
        let mut t = s.to_vec();
        t.extend(huge_long_name());
        assert!(refused(&t));
        // And the `tar` crate itself, behind the guard, gets the refusal.
        let mut ar = tar::Archive::new(TarGuard::new(&t[..]));
        let e = ar.entries().unwrap().find_map(|e| e.err()).unwrap();
        assert!(e.to_string().contains("GNU long name"), "{e}");
    }

    #[test]
    fn a_pax_size_record_governs_the_next_entry() {
        // PAX says the next file has 1024 bytes although its header says 0; its data holds
        // something shaped like a huge long-name header, which is data, not a header.
        let rec = b"13 size=1024\n";
        let mut t = ustar("pax", b'x', rec.len() as u64).to_vec();
        let mut data = rec.to_vec();
        data.resize(BLOCK, 0);
        t.extend(data);
        t.extend(header("f", b'0', 0));
        t.extend(header("x", b'L', 1 << 30));
        t.extend([7u8; BLOCK]);
        t.extend([0u8; 2 * BLOCK]);
        assert_eq!(pax_size(rec), Some(1024));
        assert!(drain(&t[..]).is_ok());
    }
}
