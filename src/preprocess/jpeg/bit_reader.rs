//! Bit reader over entropy-coded data: byte unstuffing, markers, padding
//! past the end, Huffman symbols and restart markers.

use super::huffman::{Huffman, LOOKAHEAD};

pub(super) struct BitReader<'a> {
    data: &'a [u8],
    pos: usize,
    /// Valid bits are the top `nbits` of `buf`.
    buf: u64,
    nbits: u32,
    /// How many of the lowest valid bits are zero padding (past a marker).
    pad: u32,
    /// A marker (or the end of the data) stopped the reader.
    at_marker: bool,
    /// Padding bits have been consumed: libjpeg's `insufficient_data`.
    pub(super) starved: bool,
}

impl<'a> BitReader<'a> {
    pub(super) fn new(data: &'a [u8], pos: usize) -> Self {
        BitReader {
            data,
            pos,
            buf: 0,
            nbits: 0,
            pad: 0,
            at_marker: false,
            starved: false,
        }
    }

    /// The next data byte, undoing FF00 stuffing; `None` at a marker.
    fn next_byte(&mut self) -> Option<u8> {
        if self.at_marker {
            return None;
        }
        let Some(&b) = self.data.get(self.pos) else {
            self.at_marker = true;
            return None;
        };
        if b != 0xFF {
            self.pos += 1;
            return Some(b);
        }
        // FF: skip fill bytes; FF 00 is a data byte, anything else a marker.
        let mut p = self.pos + 1;
        while self.data.get(p) == Some(&0xFF) {
            p += 1;
        }
        if self.data.get(p) == Some(&0) {
            self.pos = p + 1;
            return Some(0xFF);
        }
        self.pos = p - 1;
        self.at_marker = true;
        None
    }

    #[inline]
    fn refill(&mut self) {
        while self.nbits <= 56 {
            let byte = match self.next_byte() {
                Some(b) => b,
                None => {
                    self.pad += 8;
                    0
                }
            };
            self.buf |= u64::from(byte) << (56 - self.nbits);
            self.nbits += 8;
        }
    }

    #[inline]
    fn consume(&mut self, n: u32) {
        self.buf <<= n;
        self.nbits -= n;
        if self.nbits < self.pad {
            self.starved = true;
            self.pad = self.nbits;
        }
    }

    /// `n` (0..=16) bits as an unsigned number.
    #[inline]
    pub(super) fn bits(&mut self, n: u32) -> u32 {
        if n == 0 {
            return 0;
        }
        if self.nbits < n {
            self.refill();
        }
        let v = (self.buf >> (64 - n)) as u32;
        self.consume(n);
        v
    }

    /// `HUFF_EXTEND`: an `s`-bit magnitude category value as a signed number.
    #[inline]
    pub(super) fn receive_extend(&mut self, s: u32) -> i32 {
        if s == 0 {
            return 0;
        }
        let v = self.bits(s) as i32;
        if v < (1 << (s - 1)) {
            v + (-1i32 << s) + 1
        } else {
            v
        }
    }

    #[inline]
    pub(super) fn decode(&mut self, t: &Huffman) -> u8 {
        if self.nbits < 16 {
            self.refill();
        }
        let peek = (self.buf >> (64 - LOOKAHEAD)) as usize;
        let e = t.lookup[peek];
        if e != 0 {
            self.consume(u32::from(e >> 8));
            return e as u8;
        }
        let code16 = (self.buf >> 48) as i32;
        for len in LOOKAHEAD + 1..=16 {
            let code = code16 >> (16 - len);
            if code <= t.maxcode[len as usize] {
                self.consume(len);
                let idx = code + t.valoffset[len as usize];
                return usize::try_from(idx)
                    .ok()
                    .and_then(|i| t.values.get(i).copied())
                    .unwrap_or(0);
            }
        }
        // Not a valid code: libjpeg warns and fakes a zero.
        self.consume(16);
        0
    }

    /// Restart marker handling (`process_restart`): drop the buffered bits,
    /// then consume the next marker if it is an RSTn.
    pub(super) fn restart(&mut self) {
        self.buf = 0;
        self.nbits = 0;
        self.pad = 0;
        // Find the next marker, skipping any leftover data.
        let mut p = self.pos;
        while p + 1 < self.data.len() {
            if self.data[p] == 0xFF && self.data[p + 1] != 0 && self.data[p + 1] != 0xFF {
                break;
            }
            p += 1;
        }
        match self.data.get(p + 1) {
            Some(0xD0..=0xD7) => {
                self.pos = p + 2;
                self.at_marker = false;
                self.starved = false;
            }
            _ => {
                self.pos = p;
                self.at_marker = true;
            }
        }
    }

    /// Position of the marker that ends the scan (after any RSTn).
    pub(super) fn end_of_scan(&self) -> usize {
        let mut p = self.pos;
        while p + 1 < self.data.len() {
            let m = self.data[p + 1];
            if self.data[p] == 0xFF && m != 0 && m != 0xFF && !(0xD0..=0xD7).contains(&m) {
                return p;
            }
            p += 1;
        }
        self.data.len()
    }
}
