//! JPEG decoding that reproduces Pillow's pixels bit for bit.
//!
//! Pillow 13 decodes JPEG with libjpeg-turbo (3.x) at its default settings:
//! the accurate integer IDCT (`JDCT_ISLOW`, `jidctint.c`), "fancy"
//! (triangle-filter) chroma upsampling (`jdsample.c`; the merged upsampler
//! is only used when fancy upsampling is off) and the integer YCbCr -> RGB
//! tables of `jdcolor.c`. This module implements the same arithmetic in
//! plain Rust (no `unsafe`, no threads, builds for wasm32), for:
//! * baseline and extended sequential Huffman JPEG (SOF0 / SOF1), single-
//!   or multi-scan, and progressive Huffman JPEG (SOF2, spectral selection
//!   and successive approximation), with restart intervals;
//! * 8-bit samples, 1 component (greyscale), 3 components (YCbCr, or RGB
//!   when an Adobe marker / component ids say so, as libjpeg decides) and
//!   4 components (CMYK / YCCK, which Pillow reads as inverted "CMYK;I" and
//!   then converts to RGB with its own integer formula);
//! * any sampling factors libjpeg-turbo accepts: 1:1, h2v1 / h1v2 / h2v2
//!   fancy upsampling, other integer ratios by replication.
//!
//! Not implemented (the caller falls back to another decoder): arithmetic
//! coding, lossless and hierarchical JPEG, 12/16-bit samples, component
//! counts other than 1, 3 and 4, DNL markers, and libjpeg's block smoothing
//! (only used for progressive files whose scans never complete the first AC
//! coefficients; such files are decoded without it and may differ).
//!
//! Behaviour on corrupt entropy-coded data follows libjpeg in spirit (missing
//! bits read as zeros, the rest of the segment is skipped) but is not
//! guaranteed to be identical. Nothing here panics on any input: every read
//! is bounds-checked and the arithmetic wraps instead of overflowing.

/// Why the decoder gave up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum JpegError {
    /// A valid JPEG feature this decoder does not implement.
    Unsupported(&'static str),
    /// Malformed data.
    Invalid(&'static str),
    /// The image exceeds the caller's limits.
    TooLarge { width: u32, height: u32 },
}

/// A decoded image as Pillow's `convert("RGB")` would return it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct DecodedJpeg {
    pub width: u32,
    pub height: u32,
    /// Row-major RGB, 3 bytes per pixel.
    pub rgb: Vec<u8>,
}

/// `jpeg_natural_order` plus 16 guard entries (libjpeg maps overshooting
/// coefficient indices of corrupt data to position 63).
const NATURAL: [usize; 80] = [
    0, 1, 8, 16, 9, 2, 3, 10, 17, 24, 32, 25, 18, 11, 4, 5, 12, 19, 26, 33, 40, 48, 41, 34, 27, 20,
    13, 6, 7, 14, 21, 28, 35, 42, 49, 56, 57, 50, 43, 36, 29, 22, 15, 23, 30, 37, 44, 51, 58, 59,
    52, 45, 38, 31, 39, 46, 53, 60, 61, 54, 47, 55, 62, 63, 63, 63, 63, 63, 63, 63, 63, 63, 63, 63,
    63, 63, 63, 63, 63, 63,
];

type Result<T> = std::result::Result<T, JpegError>;

/// Decodes `bytes` into RGB, refusing images with a side over `max_side`
/// or whose buffers would exceed `max_alloc` bytes.
pub(crate) fn decode(bytes: &[u8], max_side: u32, max_alloc: u64) -> Result<DecodedJpeg> {
    let mut d = Decoder::new(bytes, max_side, max_alloc);
    d.run()?;
    d.output()
}

// ---------------------------------------------------------------------------
// Huffman tables

#[derive(Clone)]
struct Huffman {
    /// 9-bit lookahead: `(length << 8) | symbol`, 0 when the code is longer.
    lookup: Vec<u16>,
    /// Largest code of each length (index 1..=16), -1 when none.
    maxcode: [i32; 18],
    /// Symbol index minus code, per length.
    valoffset: [i32; 18],
    values: [u8; 256],
    /// The largest symbol (DC tables must not exceed 15).
    max_symbol: u8,
}

const LOOKAHEAD: u32 = 9;

impl Huffman {
    /// `jpeg_make_d_derived_tbl`: canonical codes from the counts per length.
    fn new(bits: &[u8; 16], vals: &[u8]) -> Result<Self> {
        let total: usize = bits.iter().map(|&b| usize::from(b)).sum();
        if total > 256 || total > vals.len() {
            return Err(JpegError::Invalid("bad Huffman table"));
        }
        let mut values = [0u8; 256];
        values[..total].copy_from_slice(&vals[..total]);
        let mut maxcode = [-1i32; 18];
        let mut valoffset = [0i32; 18];
        let mut lookup = vec![0u16; 1 << LOOKAHEAD];
        let mut code: u32 = 0;
        let mut p: usize = 0;
        for len in 1..=16u32 {
            let count = usize::from(bits[len as usize - 1]);
            if count > 0 {
                valoffset[len as usize] = p as i32 - code as i32;
                for _ in 0..count {
                    if len <= LOOKAHEAD {
                        let shift = LOOKAHEAD - len;
                        let first = (code << shift) as usize;
                        let entry = ((len as u16) << 8) | u16::from(values[p]);
                        for slot in lookup.iter_mut().skip(first).take(1 << shift) {
                            *slot = entry;
                        }
                    }
                    code += 1;
                    p += 1;
                }
                maxcode[len as usize] = code as i32 - 1;
            }
            // Codes of this length must fit in `len` bits.
            if code > (1u32 << len) {
                return Err(JpegError::Invalid("bad Huffman table"));
            }
            code <<= 1;
        }
        maxcode[17] = i32::MAX;
        let max_symbol = values[..total].iter().copied().max().unwrap_or(0);
        Ok(Huffman {
            lookup,
            maxcode,
            valoffset,
            values,
            max_symbol,
        })
    }
}

// ---------------------------------------------------------------------------
// Bit reader over entropy-coded data

struct BitReader<'a> {
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
    starved: bool,
}

impl<'a> BitReader<'a> {
    fn new(data: &'a [u8], pos: usize) -> Self {
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
    fn bits(&mut self, n: u32) -> u32 {
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
    fn receive_extend(&mut self, s: u32) -> i32 {
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
    fn decode(&mut self, t: &Huffman) -> u8 {
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
    fn restart(&mut self) {
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
    fn end_of_scan(&self) -> usize {
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

// ---------------------------------------------------------------------------
// Frame and decoder state

struct Component {
    id: u8,
    h: usize,
    v: usize,
    tq: usize,
    /// Quantisation table in natural order, latched by the first scan that
    /// contains the component (as libjpeg does).
    quant: Option<[u16; 64]>,
    /// Allocated blocks (whole MCUs).
    bw: usize,
    bh: usize,
    /// Blocks that hold image data (`width_in_blocks`, `height_in_blocks`).
    wib: usize,
    hib: usize,
    /// `downsampled_width` / `downsampled_height`.
    dsw: usize,
    dsh: usize,
    coefs: Vec<i16>,
    dc_pred: i32,
}

struct Frame {
    progressive: bool,
    width: usize,
    height: usize,
    comps: Vec<Component>,
    hmax: usize,
    vmax: usize,
    mcux: usize,
    mcuy: usize,
}

struct Decoder<'a> {
    data: &'a [u8],
    max_side: u32,
    max_alloc: u64,
    qt: [Option<[u16; 64]>; 4],
    dc: [Option<Huffman>; 4],
    ac: [Option<Huffman>; 4],
    restart_interval: usize,
    jfif: bool,
    adobe: Option<u8>,
    frame: Option<Frame>,
    scans: usize,
    eoi: bool,
}

fn be16(b: &[u8], at: usize) -> Result<usize> {
    match b.get(at..at + 2) {
        Some(s) => Ok(usize::from(u16::from_be_bytes([s[0], s[1]]))),
        None => Err(JpegError::Invalid("truncated marker segment")),
    }
}

impl<'a> Decoder<'a> {
    fn new(data: &'a [u8], max_side: u32, max_alloc: u64) -> Self {
        Decoder {
            data,
            max_side,
            max_alloc,
            qt: [None; 4],
            dc: [None, None, None, None],
            ac: [None, None, None, None],
            restart_interval: 0,
            jfif: false,
            adobe: None,
            frame: None,
            scans: 0,
            eoi: false,
        }
    }

    /// Walks the markers, decoding every scan, up to EOI.
    fn run(&mut self) -> Result<()> {
        let d = self.data;
        if d.get(..2) != Some(&[0xFF, 0xD8]) {
            return Err(JpegError::Invalid("not a JPEG file"));
        }
        let mut pos = 2;
        loop {
            // next_marker: skip garbage, then fill bytes.
            while pos < d.len() && d[pos] != 0xFF {
                pos += 1;
            }
            while pos + 1 < d.len() && d[pos + 1] == 0xFF {
                pos += 1;
            }
            if pos + 1 >= d.len() {
                break; // no EOI; the caller screens truncated files
            }
            let marker = d[pos + 1];
            pos += 2;
            match marker {
                0xD8 => return Err(JpegError::Invalid("second SOI marker")),
                0xD9 => {
                    self.eoi = true;
                    break;
                }
                0x00 | 0x01 | 0xD0..=0xD7 => continue,
                _ => {}
            }
            let len = be16(d, pos)?;
            if len < 2 {
                return Err(JpegError::Invalid("bad marker length"));
            }
            let seg = d
                .get(pos + 2..pos + len)
                .ok_or(JpegError::Invalid("truncated marker segment"))?;
            match marker {
                0xC0 | 0xC1 => self.read_sof(seg, false)?,
                0xC2 => self.read_sof(seg, true)?,
                0xC3 => return Err(JpegError::Unsupported("lossless JPEG")),
                0xC5..=0xC7 => return Err(JpegError::Unsupported("hierarchical JPEG")),
                0xC9..=0xCB | 0xCD..=0xCF => {
                    return Err(JpegError::Unsupported("arithmetic-coded JPEG"))
                }
                0xC4 => self.read_dht(seg)?,
                0xCC => return Err(JpegError::Unsupported("arithmetic-coded JPEG")),
                0xDB => self.read_dqt(seg)?,
                0xDD => {
                    self.restart_interval = be16(seg, 0)?;
                }
                0xDC => return Err(JpegError::Unsupported("DNL marker")),
                0xE0 if seg.len() >= 14 && seg.starts_with(b"JFIF\0") => self.jfif = true,
                0xEE if seg.len() >= 12 && seg.starts_with(b"Adobe") => {
                    self.adobe = Some(seg[11]);
                }
                0xDA => {
                    pos = self.read_scan(seg, pos + len)?;
                    continue;
                }
                _ => {}
            }
            pos += len;
        }
        if self.scans == 0 {
            return Err(JpegError::Invalid("no image data"));
        }
        Ok(())
    }

    fn read_dqt(&mut self, mut seg: &[u8]) -> Result<()> {
        while let Some((&pq_tq, rest)) = seg.split_first() {
            let (pq, tq) = (pq_tq >> 4, usize::from(pq_tq & 15));
            if tq >= 4 || pq > 1 {
                return Err(JpegError::Invalid("bad quantisation table"));
            }
            let n = if pq == 0 { 64 } else { 128 };
            let vals = rest
                .get(..n)
                .ok_or(JpegError::Invalid("bad quantisation table"))?;
            let mut table = [0u16; 64];
            for k in 0..64 {
                table[NATURAL[k]] = if pq == 0 {
                    u16::from(vals[k])
                } else {
                    u16::from_be_bytes([vals[2 * k], vals[2 * k + 1]])
                };
            }
            self.qt[tq] = Some(table);
            seg = &rest[n..];
        }
        Ok(())
    }

    fn read_dht(&mut self, mut seg: &[u8]) -> Result<()> {
        while let Some((&tc_th, rest)) = seg.split_first() {
            let (tc, th) = (tc_th >> 4, usize::from(tc_th & 15));
            if tc > 1 || th >= 4 {
                return Err(JpegError::Invalid("bad Huffman table"));
            }
            let counts: [u8; 16] = rest
                .get(..16)
                .and_then(|c| c.try_into().ok())
                .ok_or(JpegError::Invalid("bad Huffman table"))?;
            let total: usize = counts.iter().map(|&c| usize::from(c)).sum();
            let vals = rest
                .get(16..16 + total)
                .ok_or(JpegError::Invalid("bad Huffman table"))?;
            let table = Huffman::new(&counts, vals)?;
            if tc == 0 {
                self.dc[th] = Some(table);
            } else {
                self.ac[th] = Some(table);
            }
            seg = &rest[16 + total..];
        }
        Ok(())
    }

    fn read_sof(&mut self, seg: &[u8], progressive: bool) -> Result<()> {
        if self.frame.is_some() {
            return Err(JpegError::Invalid("more than one frame"));
        }
        if seg.len() < 6 {
            return Err(JpegError::Invalid("bad SOF marker"));
        }
        if seg[0] != 8 {
            return Err(JpegError::Unsupported("sample precision other than 8 bits"));
        }
        let height = be16(seg, 1)?;
        let width = be16(seg, 3)?;
        let n = usize::from(seg[5]);
        if height == 0 {
            return Err(JpegError::Unsupported("DNL marker (height 0)"));
        }
        if width == 0 {
            return Err(JpegError::Invalid("image width 0"));
        }
        if !matches!(n, 1 | 3 | 4) {
            return Err(JpegError::Unsupported(
                "component count other than 1, 3 or 4",
            ));
        }
        let too_large = JpegError::TooLarge {
            width: width as u32,
            height: height as u32,
        };
        if width as u64 > u64::from(self.max_side) || height as u64 > u64::from(self.max_side) {
            return Err(too_large);
        }
        let spec = seg
            .get(6..6 + 3 * n)
            .ok_or(JpegError::Invalid("bad SOF marker"))?;
        let mut comps = Vec::with_capacity(n);
        for c in spec.chunks_exact(3) {
            let (h, v) = (usize::from(c[1] >> 4), usize::from(c[1] & 15));
            if !(1..=4).contains(&h) || !(1..=4).contains(&v) || c[2] > 3 {
                return Err(JpegError::Invalid("bad component in SOF marker"));
            }
            comps.push(Component {
                id: c[0],
                h,
                v,
                tq: usize::from(c[2]),
                quant: None,
                bw: 0,
                bh: 0,
                wib: 0,
                hib: 0,
                dsw: 0,
                dsh: 0,
                coefs: Vec::new(),
                dc_pred: 0,
            });
        }
        let hmax = comps.iter().map(|c| c.h).max().unwrap_or(1);
        let vmax = comps.iter().map(|c| c.v).max().unwrap_or(1);
        let mcux = width.div_ceil(8 * hmax);
        let mcuy = height.div_ceil(8 * vmax);
        let mut coef_bytes: u64 = 0;
        for c in &mut comps {
            if hmax % c.h != 0 || vmax % c.v != 0 {
                // libjpeg: JERR_FRACT_SAMPLE_NOTIMPL.
                return Err(JpegError::Invalid("fractional sampling ratio"));
            }
            c.bw = mcux * c.h;
            c.bh = mcuy * c.v;
            c.dsw = (width * c.h).div_ceil(hmax);
            c.dsh = (height * c.v).div_ceil(vmax);
            c.wib = c.dsw.div_ceil(8);
            c.hib = c.dsh.div_ceil(8);
            coef_bytes += (c.bw * c.bh) as u64 * 128;
        }
        let rgb_bytes = (width * height * 3) as u64;
        if coef_bytes > self.max_alloc || rgb_bytes > self.max_alloc {
            return Err(too_large);
        }
        for c in &mut comps {
            c.coefs = vec![0; c.bw * c.bh * 64];
        }
        self.frame = Some(Frame {
            progressive,
            width,
            height,
            comps,
            hmax,
            vmax,
            mcux,
            mcuy,
        });
        Ok(())
    }

    /// Reads an SOS header and decodes its entropy-coded data, which starts
    /// at `start`; returns the position of the marker after the scan.
    fn read_scan(&mut self, seg: &[u8], start: usize) -> Result<usize> {
        let first_scan = self.scans == 0;
        let Some(frame) = self.frame.as_mut() else {
            return Err(JpegError::Invalid("scan before frame header"));
        };
        let ns = usize::from(*seg.first().ok_or(JpegError::Invalid("bad SOS marker"))?);
        if !(1..=4).contains(&ns) || seg.len() < 1 + 2 * ns + 3 {
            return Err(JpegError::Invalid("bad SOS marker"));
        }
        let mut members: Vec<(usize, usize, usize)> = Vec::with_capacity(ns);
        for i in 0..ns {
            let (id, tables) = (seg[1 + 2 * i], seg[2 + 2 * i]);
            let ci = frame
                .comps
                .iter()
                .position(|c| c.id == id)
                .ok_or(JpegError::Invalid("scan component not in frame"))?;
            if members.iter().any(|m| m.0 == ci) {
                return Err(JpegError::Invalid("duplicate scan component"));
            }
            members.push((ci, usize::from(tables >> 4), usize::from(tables & 15)));
        }
        let p = 1 + 2 * ns;
        let (ss, se, ah, al) = (
            usize::from(seg[p]),
            usize::from(seg[p + 1]),
            u32::from(seg[p + 2] >> 4),
            u32::from(seg[p + 2] & 15),
        );
        if ns > 1 {
            let blocks: usize = members
                .iter()
                .map(|m| frame.comps[m.0].h * frame.comps[m.0].v)
                .sum();
            if blocks > 10 {
                return Err(JpegError::Invalid("too many blocks in MCU"));
            }
        }
        // Latch quantisation tables.
        for &(ci, _, _) in &members {
            let c = &mut frame.comps[ci];
            if c.quant.is_none() {
                c.quant =
                    Some(self.qt[c.tq].ok_or(JpegError::Invalid("missing quantisation table"))?);
            }
        }
        let kind = if frame.progressive {
            let dc_band = ss == 0;
            let bad = if dc_band {
                se != 0
            } else {
                ss > se || se > 63 || ns != 1
            } || (ah != 0 && al + 1 != ah)
                || al > 13;
            if bad {
                return Err(JpegError::Invalid("bad progressive scan parameters"));
            }
            match (dc_band, ah != 0) {
                (true, false) => ScanKind::DcFirst,
                (true, true) => ScanKind::DcRefine,
                (false, false) => ScanKind::AcFirst,
                (false, true) => ScanKind::AcRefine,
            }
        } else {
            if first_scan {
                // jinit_huff_decoder: Motion-JPEG style files may omit the
                // standard tables.
                std_tables(&mut self.dc, &mut self.ac)?;
            }
            ScanKind::Sequential
        };
        // Resolve the Huffman tables the scan needs.
        let mut dc_tabs: Vec<Option<&Huffman>> = Vec::with_capacity(ns);
        let mut ac_tabs: Vec<Option<&Huffman>> = Vec::with_capacity(ns);
        for &(_, td, ta) in &members {
            let need_dc = matches!(kind, ScanKind::Sequential | ScanKind::DcFirst);
            let need_ac = matches!(
                kind,
                ScanKind::Sequential | ScanKind::AcFirst | ScanKind::AcRefine
            );
            let dct = if need_dc {
                let t = self
                    .dc
                    .get(td)
                    .and_then(Option::as_ref)
                    .ok_or(JpegError::Invalid("missing Huffman table"))?;
                if t.max_symbol > 15 {
                    return Err(JpegError::Invalid("bad DC Huffman table"));
                }
                Some(t)
            } else {
                None
            };
            let act = if need_ac {
                Some(
                    self.ac
                        .get(ta)
                        .and_then(Option::as_ref)
                        .ok_or(JpegError::Invalid("missing Huffman table"))?,
                )
            } else {
                None
            };
            dc_tabs.push(dct);
            ac_tabs.push(act);
        }
        let scan = Scan {
            kind,
            members: members.iter().map(|m| m.0).collect(),
            dc: dc_tabs,
            ac: ac_tabs,
            ss,
            se,
            al,
        };
        let mut reader = BitReader::new(self.data, start);
        decode_scan(frame, &scan, &mut reader, self.restart_interval);
        self.scans += 1;
        Ok(reader.end_of_scan())
    }

    fn output(self) -> Result<DecodedJpeg> {
        let jfif = self.jfif;
        let adobe = self.adobe;
        let frame = self.frame.ok_or(JpegError::Invalid("no frame header"))?;
        let (w, h) = (frame.width, frame.height);
        // Sample planes (IDCT output), one per component.
        let mut planes = Vec::with_capacity(frame.comps.len());
        for c in frame.comps.iter() {
            let quant = c.quant.unwrap_or([0; 64]);
            let stride = c.wib * 8;
            let mut plane = vec![0u8; stride * c.hib * 8];
            for by in 0..c.hib {
                for bx in 0..c.wib {
                    let i = (by * c.bw + bx) * 64;
                    let block: &[i16; 64] = c.coefs[i..i + 64]
                        .try_into()
                        .map_err(|_| JpegError::Invalid("internal block size"))?;
                    idct_islow(
                        block,
                        &quant,
                        &mut plane[by * 8 * stride + bx * 8..],
                        stride,
                    );
                }
            }
            planes.push(Plane {
                data: plane,
                stride,
                dsw: c.dsw,
                dsh: c.dsh,
                hr: frame.hmax / c.h,
                vr: frame.vmax / c.v,
            });
        }
        let ids: Vec<u8> = frame.comps.iter().map(|c| c.id).collect();
        drop(frame.comps);
        // default_decompress_parms (jdapimin.c) picks the colour space.
        let color = match (ids.as_slice(), adobe) {
            ([_], _) => Color::Gray,
            ([_, _, _], _) if jfif => Color::YCbCr,
            ([_, _, _], Some(0)) => Color::Rgb,
            ([_, _, _], Some(_)) => Color::YCbCr,
            ([82, 71, 66], None) => Color::Rgb,
            ([_, _, _], None) => Color::YCbCr,
            (_, Some(0) | None) => Color::Cmyk,
            (_, Some(_)) => Color::Ycck,
        };
        let mut out = vec![0u8; w * h * 3];
        let tables = ColorTables::new();
        let mut rows: Vec<Vec<u8>> = planes.iter().map(|_| vec![0u8; w + 16]).collect();
        for y in 0..h {
            for (p, row) in planes.iter().zip(rows.iter_mut()) {
                p.upsample_row(y, w, row);
            }
            let dst = &mut out[y * w * 3..(y + 1) * w * 3];
            convert_row(color, &tables, &rows, dst);
        }
        Ok(DecodedJpeg {
            width: w as u32,
            height: h as u32,
            rgb: out,
        })
    }
}

fn std_tables(dc: &mut [Option<Huffman>; 4], ac: &mut [Option<Huffman>; 4]) -> Result<()> {
    if dc[0].is_none() {
        dc[0] = Some(Huffman::new(&STD_DC_LUMA_BITS, &STD_DC_LUMA_VALS)?);
    }
    if dc[1].is_none() {
        dc[1] = Some(Huffman::new(&STD_DC_CHROMA_BITS, &STD_DC_CHROMA_VALS)?);
    }
    if ac[0].is_none() {
        ac[0] = Some(Huffman::new(&STD_AC_LUMA_BITS, &STD_AC_LUMA_VALS)?);
    }
    if ac[1].is_none() {
        ac[1] = Some(Huffman::new(&STD_AC_CHROMA_BITS, &STD_AC_CHROMA_VALS)?);
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// Entropy decoding

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ScanKind {
    Sequential,
    DcFirst,
    DcRefine,
    AcFirst,
    AcRefine,
}

struct Scan<'t> {
    kind: ScanKind,
    members: Vec<usize>,
    dc: Vec<Option<&'t Huffman>>,
    ac: Vec<Option<&'t Huffman>>,
    ss: usize,
    se: usize,
    al: u32,
}

fn decode_scan(frame: &mut Frame, scan: &Scan<'_>, r: &mut BitReader<'_>, restart: usize) {
    for &ci in &scan.members {
        frame.comps[ci].dc_pred = 0;
    }
    let mut eobrun: u32 = 0;
    let mut to_go = restart;
    // (component slot in the scan, block x, block y) for every block of
    // every MCU, in order.
    let single = scan.members.len() == 1;
    let (units_x, units_y) = if single {
        let c = &frame.comps[scan.members[0]];
        (c.wib, c.hib)
    } else {
        (frame.mcux, frame.mcuy)
    };
    for uy in 0..units_y {
        for ux in 0..units_x {
            if restart > 0 {
                if to_go == 0 {
                    r.restart();
                    for &ci in &scan.members {
                        frame.comps[ci].dc_pred = 0;
                    }
                    eobrun = 0;
                    to_go = restart;
                }
                to_go -= 1;
            }
            if r.starved {
                continue;
            }
            for (slot, &ci) in scan.members.iter().enumerate() {
                let c = &mut frame.comps[ci];
                let (bxs, bys, nh, nv) = if single {
                    (ux, uy, 1, 1)
                } else {
                    (ux * c.h, uy * c.v, c.h, c.v)
                };
                for by in bys..bys + nv {
                    for bx in bxs..bxs + nh {
                        let i = (by * c.bw + bx) * 64;
                        let Some(block) = c.coefs.get_mut(i..i + 64) else {
                            continue;
                        };
                        match scan.kind {
                            ScanKind::Sequential => {
                                if let (Some(dc), Some(ac)) = (scan.dc[slot], scan.ac[slot]) {
                                    decode_sequential(r, dc, ac, &mut c.dc_pred, block);
                                }
                            }
                            ScanKind::DcFirst => {
                                if let Some(dc) = scan.dc[slot] {
                                    let s = u32::from(r.decode(dc));
                                    let diff = r.receive_extend(s);
                                    c.dc_pred = c.dc_pred.wrapping_add(diff);
                                    block[0] = c.dc_pred.wrapping_shl(scan.al) as i16;
                                }
                            }
                            ScanKind::DcRefine => {
                                if r.bits(1) != 0 {
                                    block[0] |= (1i32 << scan.al) as i16;
                                }
                            }
                            ScanKind::AcFirst => {
                                if let Some(ac) = scan.ac[slot] {
                                    decode_ac_first(r, ac, scan, &mut eobrun, block);
                                }
                            }
                            ScanKind::AcRefine => {
                                if let Some(ac) = scan.ac[slot] {
                                    decode_ac_refine(r, ac, scan, &mut eobrun, block);
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

fn decode_sequential(
    r: &mut BitReader<'_>,
    dc: &Huffman,
    ac: &Huffman,
    pred: &mut i32,
    block: &mut [i16],
) {
    let s = u32::from(r.decode(dc));
    let diff = r.receive_extend(s);
    *pred = pred.wrapping_add(diff);
    block[0] = *pred as i16;
    let mut k = 1;
    while k < 64 {
        let rs = r.decode(ac);
        let (run, size) = (usize::from(rs >> 4), u32::from(rs & 15));
        if size != 0 {
            k += run;
            let v = r.receive_extend(size);
            block[NATURAL[k]] = v as i16;
        } else if run == 15 {
            k += 15;
        } else {
            break;
        }
        k += 1;
    }
}

fn decode_ac_first(
    r: &mut BitReader<'_>,
    ac: &Huffman,
    scan: &Scan<'_>,
    eobrun: &mut u32,
    block: &mut [i16],
) {
    if *eobrun > 0 {
        *eobrun -= 1;
        return;
    }
    let mut k = scan.ss;
    while k <= scan.se {
        let rs = r.decode(ac);
        let (run, size) = (u32::from(rs >> 4), u32::from(rs & 15));
        if size != 0 {
            k += run as usize;
            let v = r.receive_extend(size);
            block[NATURAL[k.min(79)]] = v.wrapping_shl(scan.al) as i16;
        } else if run == 15 {
            k += 15;
        } else {
            *eobrun = (1u32 << run) + r.bits(run) - 1;
            break;
        }
        k += 1;
    }
}

fn decode_ac_refine(
    r: &mut BitReader<'_>,
    ac: &Huffman,
    scan: &Scan<'_>,
    eobrun: &mut u32,
    block: &mut [i16],
) {
    let p1 = (1i32 << scan.al) as i16;
    let m1 = (-1i32 << scan.al) as i16;
    let refine = |r: &mut BitReader<'_>, coef: &mut i16| {
        if r.bits(1) != 0 && (*coef & p1) == 0 {
            *coef = coef.wrapping_add(if *coef >= 0 { p1 } else { m1 });
        }
    };
    let mut k = scan.ss;
    if *eobrun == 0 {
        while k <= scan.se {
            let rs = r.decode(ac);
            let mut run = i32::from(rs >> 4);
            let size = rs & 15;
            let mut s: i16 = 0;
            if size != 0 {
                // The size of a newly non-zero coefficient is always 1.
                s = if r.bits(1) != 0 { p1 } else { m1 };
            } else if run != 15 {
                *eobrun = 1u32 << run;
                if run != 0 {
                    *eobrun += r.bits(run as u32);
                }
                break;
            }
            while k <= scan.se {
                let coef = &mut block[NATURAL[k]];
                if *coef != 0 {
                    refine(r, coef);
                } else {
                    run -= 1;
                    if run < 0 {
                        break;
                    }
                }
                k += 1;
            }
            if s != 0 {
                block[NATURAL[k.min(79)]] = s;
            }
            k += 1;
        }
    }
    if *eobrun > 0 {
        while k <= scan.se {
            let coef = &mut block[NATURAL[k]];
            if *coef != 0 {
                refine(r, coef);
            }
            k += 1;
        }
        *eobrun -= 1;
    }
}

// ---------------------------------------------------------------------------
// IDCT (jidctint.c, "slow but accurate" integer)

const CONST_BITS: u32 = 13;
const PASS1_BITS: u32 = 2;
const FIX_0_298631336: i32 = 2446;
const FIX_0_390180644: i32 = 3196;
const FIX_0_541196100: i32 = 4433;
const FIX_0_765366865: i32 = 6270;
const FIX_0_899976223: i32 = 7373;
const FIX_1_175875602: i32 = 9633;
const FIX_1_501321110: i32 = 12299;
const FIX_1_847759065: i32 = 15137;
const FIX_1_961570560: i32 = 16069;
const FIX_2_053119869: i32 = 16819;
const FIX_2_562915447: i32 = 20995;
const FIX_3_072711026: i32 = 25172;

#[inline]
fn descale(x: i32, n: u32) -> i32 {
    x.wrapping_add(1 << (n - 1)) >> n
}

/// The 8 outputs of one 1-D pass, before descaling: inputs in natural
/// order `[x0..x7]`, outputs `[o0..o7]` as sums to descale.
#[inline]
fn idct_1d(x: [i32; 8]) -> [i32; 8] {
    // Even part.
    let (z2, z3) = (x[2], x[6]);
    let z1 = z2.wrapping_add(z3).wrapping_mul(FIX_0_541196100);
    let tmp2 = z1.wrapping_add(z3.wrapping_mul(-FIX_1_847759065));
    let tmp3 = z1.wrapping_add(z2.wrapping_mul(FIX_0_765366865));
    let tmp0 = x[0].wrapping_add(x[4]).wrapping_shl(CONST_BITS);
    let tmp1 = x[0].wrapping_sub(x[4]).wrapping_shl(CONST_BITS);
    let tmp10 = tmp0.wrapping_add(tmp3);
    let tmp13 = tmp0.wrapping_sub(tmp3);
    let tmp11 = tmp1.wrapping_add(tmp2);
    let tmp12 = tmp1.wrapping_sub(tmp2);
    // Odd part.
    let (mut t0, mut t1, mut t2, mut t3) = (x[7], x[5], x[3], x[1]);
    let z1 = t0.wrapping_add(t3);
    let z2 = t1.wrapping_add(t2);
    let z3 = t0.wrapping_add(t2);
    let z4 = t1.wrapping_add(t3);
    let z5 = z3.wrapping_add(z4).wrapping_mul(FIX_1_175875602);
    t0 = t0.wrapping_mul(FIX_0_298631336);
    t1 = t1.wrapping_mul(FIX_2_053119869);
    t2 = t2.wrapping_mul(FIX_3_072711026);
    t3 = t3.wrapping_mul(FIX_1_501321110);
    let z1 = z1.wrapping_mul(-FIX_0_899976223);
    let z2 = z2.wrapping_mul(-FIX_2_562915447);
    let z3 = z3.wrapping_mul(-FIX_1_961570560).wrapping_add(z5);
    let z4 = z4.wrapping_mul(-FIX_0_390180644).wrapping_add(z5);
    t0 = t0.wrapping_add(z1).wrapping_add(z3);
    t1 = t1.wrapping_add(z2).wrapping_add(z4);
    t2 = t2.wrapping_add(z2).wrapping_add(z3);
    t3 = t3.wrapping_add(z1).wrapping_add(z4);
    [
        tmp10.wrapping_add(t3),
        tmp11.wrapping_add(t2),
        tmp12.wrapping_add(t1),
        tmp13.wrapping_add(t0),
        tmp13.wrapping_sub(t0),
        tmp12.wrapping_sub(t1),
        tmp11.wrapping_sub(t2),
        tmp10.wrapping_sub(t3),
    ]
}

/// Post-IDCT range limit: value + 128 clamped to 0..=255 (libjpeg-turbo's
/// SIMD IDCT saturates; its C table agrees for every value a valid stream
/// can produce).
#[inline]
fn range_limit(x: i32) -> u8 {
    x.wrapping_add(128).clamp(0, 255) as u8
}

/// `jpeg_idct_islow`: dequantises `coef` (natural order) with `quant` and
/// writes the 8x8 samples to `out` (row stride `stride`).
fn idct_islow(coef: &[i16; 64], quant: &[u16; 64], out: &mut [u8], stride: usize) {
    let mut ws = [0i32; 64];
    // Pass 1: columns.
    for col in 0..8 {
        let deq = |row: usize| {
            i32::from(coef[row * 8 + col]).wrapping_mul(i32::from(quant[row * 8 + col]))
        };
        if (1..8).all(|row| coef[row * 8 + col] == 0) {
            let dc = deq(0).wrapping_shl(PASS1_BITS);
            for row in 0..8 {
                ws[row * 8 + col] = dc;
            }
            continue;
        }
        let o = idct_1d([
            deq(0),
            deq(1),
            deq(2),
            deq(3),
            deq(4),
            deq(5),
            deq(6),
            deq(7),
        ]);
        for row in 0..8 {
            ws[row * 8 + col] = descale(o[row], CONST_BITS - PASS1_BITS);
        }
    }
    // Pass 2: rows.
    for row in 0..8 {
        let w: [i32; 8] = ws[row * 8..row * 8 + 8].try_into().unwrap_or([0; 8]);
        let Some(dst) = out.get_mut(row * stride..row * stride + 8) else {
            return;
        };
        if w[1..].iter().all(|&v| v == 0) {
            let v = range_limit(descale(w[0], PASS1_BITS + 3));
            dst.fill(v);
            continue;
        }
        let o = idct_1d(w);
        for (d, v) in dst.iter_mut().zip(o) {
            *d = range_limit(descale(v, CONST_BITS + PASS1_BITS + 3));
        }
    }
}

// ---------------------------------------------------------------------------
// Upsampling (jdsample.c) and colour conversion (jdcolor.c)

struct Plane {
    data: Vec<u8>,
    stride: usize,
    dsw: usize,
    dsh: usize,
    /// Upsampling ratios `max_h / h`, `max_v / v`.
    hr: usize,
    vr: usize,
}

impl Plane {
    #[inline]
    fn row(&self, y: usize) -> &[u8] {
        let y = y.min(self.dsh.saturating_sub(1));
        &self.data[y * self.stride..y * self.stride + self.dsw]
    }

    /// Output row `y` of this component at full resolution (`w` samples;
    /// `out` must hold at least `w + 16`).
    fn upsample_row(&self, y: usize, w: usize, out: &mut [u8]) {
        match (self.hr, self.vr) {
            (1, 1) => out[..w].copy_from_slice(&self.row(y)[..w]),
            (2, 1) if self.dsw > 2 => h2v1_fancy(self.row(y), out),
            (1, 2) => {
                // h1v2 fancy: rows above get bias 1, rows below bias 2.
                let (near, far, bias) = self.vertical_pair(y);
                for ((o, &n), &f) in out.iter_mut().zip(near).zip(far) {
                    *o = ((u16::from(n) * 3 + u16::from(f) + bias) >> 2) as u8;
                }
            }
            (2, 2) if self.dsw > 2 => {
                let (near, far, _) = self.vertical_pair(y);
                h2v2_fancy(near, far, out);
            }
            (hr, vr) => {
                // Plain replication (int_upsample, and h2v1 / h2v2 for
                // components at most 2 samples wide).
                let src = self.row(y / vr);
                for (o, &s) in out[..self.dsw * hr].chunks_exact_mut(hr).zip(src) {
                    o.fill(s);
                }
            }
        }
    }

    /// For vertical fancy upsampling: the nearest input row, the next
    /// nearest (above for even output rows, below for odd ones; image edges
    /// replicate) and the rounding bias libjpeg uses for h1v2.
    fn vertical_pair(&self, y: usize) -> (&[u8], &[u8], u16) {
        let inrow = y / 2;
        if y % 2 == 0 {
            (self.row(inrow), self.row(inrow.saturating_sub(1)), 1)
        } else {
            (self.row(inrow), self.row(inrow + 1), 2)
        }
    }
}

/// `h2v1_fancy_upsample` (needs `src.len() > 2`).
fn h2v1_fancy(src: &[u8], out: &mut [u8]) {
    let n = src.len();
    let v = |i: usize| u16::from(src[i]);
    out[0] = src[0];
    out[1] = ((v(0) * 3 + v(1) + 2) >> 2) as u8;
    for i in 1..n - 1 {
        let c = v(i) * 3;
        out[2 * i] = ((c + v(i - 1) + 1) >> 2) as u8;
        out[2 * i + 1] = ((c + v(i + 1) + 2) >> 2) as u8;
    }
    out[2 * n - 2] = ((v(n - 1) * 3 + v(n - 2) + 1) >> 2) as u8;
    out[2 * n - 1] = src[n - 1];
}

/// `h2v2_fancy_upsample` for one output row (needs `near.len() > 2`).
fn h2v2_fancy(near: &[u8], far: &[u8], out: &mut [u8]) {
    let n = near.len();
    let col = |i: usize| u32::from(near[i]) * 3 + u32::from(far[i]);
    let mut this = col(0);
    let mut next = col(1);
    out[0] = ((this * 4 + 8) >> 4) as u8;
    out[1] = ((this * 3 + next + 7) >> 4) as u8;
    for i in 1..n - 1 {
        let last = this;
        this = next;
        next = col(i + 1);
        out[2 * i] = ((this * 3 + last + 8) >> 4) as u8;
        out[2 * i + 1] = ((this * 3 + next + 7) >> 4) as u8;
    }
    let last = this;
    this = next;
    out[2 * n - 2] = ((this * 3 + last + 8) >> 4) as u8;
    out[2 * n - 1] = ((this * 4 + 7) >> 4) as u8;
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Color {
    Gray,
    YCbCr,
    Rgb,
    Cmyk,
    Ycck,
}

/// `build_ycc_rgb_table` (SCALEBITS = 16).
struct ColorTables {
    cr_r: [i32; 256],
    cb_b: [i32; 256],
    cr_g: [i32; 256],
    cb_g: [i32; 256],
}

impl ColorTables {
    fn new() -> Self {
        const ONE_HALF: i32 = 1 << 15;
        let fix = |x: f64| (x * 65536.0 + 0.5) as i32;
        let mut t = ColorTables {
            cr_r: [0; 256],
            cb_b: [0; 256],
            cr_g: [0; 256],
            cb_g: [0; 256],
        };
        for i in 0..256 {
            let x = i as i32 - 128;
            t.cr_r[i] = (fix(1.40200) * x + ONE_HALF) >> 16;
            t.cb_b[i] = (fix(1.77200) * x + ONE_HALF) >> 16;
            t.cr_g[i] = -fix(0.71414) * x;
            t.cb_g[i] = -fix(0.34414) * x + ONE_HALF;
        }
        t
    }

    /// `ycc_rgb_convert` for one pixel.
    #[inline]
    fn rgb(&self, y: u8, cb: u8, cr: u8) -> [u8; 3] {
        let (y, cb, cr) = (i32::from(y), usize::from(cb), usize::from(cr));
        let clamp = |v: i32| v.clamp(0, 255) as u8;
        [
            clamp(y + self.cr_r[cr]),
            clamp(y + ((self.cb_g[cb] + self.cr_g[cr]) >> 16)),
            clamp(y + self.cb_b[cb]),
        ]
    }
}

/// Pillow's `cmyk2rgb` applied to libjpeg's CMYK output read as "CMYK;I"
/// (every band inverted): `nk - nk * c' / 255` with `c' = 255 - c` and
/// `nk = 255 - k' = k`, using Pillow's rounding `MULDIV255`.
#[inline]
fn pil_cmyk_inverted(c: u8, k: u8) -> u8 {
    let nk = i32::from(k);
    let t = i32::from(255 - c) * nk + 128;
    (nk - (((t >> 8) + t) >> 8)).clamp(0, 255) as u8
}

fn convert_row(color: Color, t: &ColorTables, rows: &[Vec<u8>], dst: &mut [u8]) {
    let w = dst.len() / 3;
    match color {
        Color::Gray => {
            for (d, &g) in dst.chunks_exact_mut(3).zip(&rows[0][..w]) {
                d.fill(g);
            }
        }
        Color::Rgb => {
            for (x, d) in dst.chunks_exact_mut(3).enumerate() {
                d.copy_from_slice(&[rows[0][x], rows[1][x], rows[2][x]]);
            }
        }
        Color::YCbCr => {
            for (x, d) in dst.chunks_exact_mut(3).enumerate() {
                d.copy_from_slice(&t.rgb(rows[0][x], rows[1][x], rows[2][x]));
            }
        }
        Color::Cmyk | Color::Ycck => {
            for (x, d) in dst.chunks_exact_mut(3).enumerate() {
                let cmy = if color == Color::Ycck {
                    // ycck_cmyk_convert: MAXJSAMPLE - (YCbCr -> RGB).
                    t.rgb(rows[0][x], rows[1][x], rows[2][x]).map(|v| 255 - v)
                } else {
                    [rows[0][x], rows[1][x], rows[2][x]]
                };
                let k = rows[3][x];
                d.copy_from_slice(&cmy.map(|c| pil_cmyk_inverted(c, k)));
            }
        }
    }
}

/// The standard tables of JPEG Annex K.3 (`jstdhuff.c`): counts per code
/// length 1..=16, then the symbols.
const STD_DC_LUMA_BITS: [u8; 16] = [
    0x00, 0x01, 0x05, 0x01, 0x01, 0x01, 0x01, 0x01, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
];
const STD_DC_LUMA_VALS: [u8; 12] = [
    0x00, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08, 0x09, 0x0a, 0x0b,
];
const STD_DC_CHROMA_BITS: [u8; 16] = [
    0x00, 0x03, 0x01, 0x01, 0x01, 0x01, 0x01, 0x01, 0x01, 0x01, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00,
];
const STD_DC_CHROMA_VALS: [u8; 12] = [
    0x00, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08, 0x09, 0x0a, 0x0b,
];
const STD_AC_LUMA_BITS: [u8; 16] = [
    0x00, 0x02, 0x01, 0x03, 0x03, 0x02, 0x04, 0x03, 0x05, 0x05, 0x04, 0x04, 0x00, 0x00, 0x01, 0x7d,
];
const STD_AC_LUMA_VALS: [u8; 162] = [
    0x01, 0x02, 0x03, 0x00, 0x04, 0x11, 0x05, 0x12, 0x21, 0x31, 0x41, 0x06, 0x13, 0x51, 0x61, 0x07,
    0x22, 0x71, 0x14, 0x32, 0x81, 0x91, 0xa1, 0x08, 0x23, 0x42, 0xb1, 0xc1, 0x15, 0x52, 0xd1, 0xf0,
    0x24, 0x33, 0x62, 0x72, 0x82, 0x09, 0x0a, 0x16, 0x17, 0x18, 0x19, 0x1a, 0x25, 0x26, 0x27, 0x28,
    0x29, 0x2a, 0x34, 0x35, 0x36, 0x37, 0x38, 0x39, 0x3a, 0x43, 0x44, 0x45, 0x46, 0x47, 0x48, 0x49,
    0x4a, 0x53, 0x54, 0x55, 0x56, 0x57, 0x58, 0x59, 0x5a, 0x63, 0x64, 0x65, 0x66, 0x67, 0x68, 0x69,
    0x6a, 0x73, 0x74, 0x75, 0x76, 0x77, 0x78, 0x79, 0x7a, 0x83, 0x84, 0x85, 0x86, 0x87, 0x88, 0x89,
    0x8a, 0x92, 0x93, 0x94, 0x95, 0x96, 0x97, 0x98, 0x99, 0x9a, 0xa2, 0xa3, 0xa4, 0xa5, 0xa6, 0xa7,
    0xa8, 0xa9, 0xaa, 0xb2, 0xb3, 0xb4, 0xb5, 0xb6, 0xb7, 0xb8, 0xb9, 0xba, 0xc2, 0xc3, 0xc4, 0xc5,
    0xc6, 0xc7, 0xc8, 0xc9, 0xca, 0xd2, 0xd3, 0xd4, 0xd5, 0xd6, 0xd7, 0xd8, 0xd9, 0xda, 0xe1, 0xe2,
    0xe3, 0xe4, 0xe5, 0xe6, 0xe7, 0xe8, 0xe9, 0xea, 0xf1, 0xf2, 0xf3, 0xf4, 0xf5, 0xf6, 0xf7, 0xf8,
    0xf9, 0xfa,
];
const STD_AC_CHROMA_BITS: [u8; 16] = [
    0x00, 0x02, 0x01, 0x02, 0x04, 0x04, 0x03, 0x04, 0x07, 0x05, 0x04, 0x04, 0x00, 0x01, 0x02, 0x77,
];
const STD_AC_CHROMA_VALS: [u8; 162] = [
    0x00, 0x01, 0x02, 0x03, 0x11, 0x04, 0x05, 0x21, 0x31, 0x06, 0x12, 0x41, 0x51, 0x07, 0x61, 0x71,
    0x13, 0x22, 0x32, 0x81, 0x08, 0x14, 0x42, 0x91, 0xa1, 0xb1, 0xc1, 0x09, 0x23, 0x33, 0x52, 0xf0,
    0x15, 0x62, 0x72, 0xd1, 0x0a, 0x16, 0x24, 0x34, 0xe1, 0x25, 0xf1, 0x17, 0x18, 0x19, 0x1a, 0x26,
    0x27, 0x28, 0x29, 0x2a, 0x35, 0x36, 0x37, 0x38, 0x39, 0x3a, 0x43, 0x44, 0x45, 0x46, 0x47, 0x48,
    0x49, 0x4a, 0x53, 0x54, 0x55, 0x56, 0x57, 0x58, 0x59, 0x5a, 0x63, 0x64, 0x65, 0x66, 0x67, 0x68,
    0x69, 0x6a, 0x73, 0x74, 0x75, 0x76, 0x77, 0x78, 0x79, 0x7a, 0x82, 0x83, 0x84, 0x85, 0x86, 0x87,
    0x88, 0x89, 0x8a, 0x92, 0x93, 0x94, 0x95, 0x96, 0x97, 0x98, 0x99, 0x9a, 0xa2, 0xa3, 0xa4, 0xa5,
    0xa6, 0xa7, 0xa8, 0xa9, 0xaa, 0xb2, 0xb3, 0xb4, 0xb5, 0xb6, 0xb7, 0xb8, 0xb9, 0xba, 0xc2, 0xc3,
    0xc4, 0xc5, 0xc6, 0xc7, 0xc8, 0xc9, 0xca, 0xd2, 0xd3, 0xd4, 0xd5, 0xd6, 0xd7, 0xd8, 0xd9, 0xda,
    0xe2, 0xe3, 0xe4, 0xe5, 0xe6, 0xe7, 0xe8, 0xe9, 0xea, 0xf2, 0xf3, 0xf4, 0xf5, 0xf6, 0xf7, 0xf8,
    0xf9, 0xfa,
];

#[cfg(test)]
mod tests {
    use super::*;

    /// FNV-1a (64-bit) of a byte string: the goldens below are this hash of
    /// `numpy.asarray(Image.open(path).convert("RGB")).tobytes()` under
    /// Pillow 13.0.0 (libjpeg-turbo 3.2.0).
    fn fnv1a(bytes: &[u8]) -> u64 {
        bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
            (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
        })
    }

    const PROG_420_RST: &[u8] =
        include_bytes!("../../tests/fixtures/images/jpeg_prog_420_rst_61x37.jpg");
    const CMYK: &[u8] = include_bytes!("../../tests/fixtures/images/jpeg_cmyk_23x9.jpg");
    const H1V2: &[u8] = include_bytes!("../../tests/fixtures/images/jpeg_h1v2_45x29.jpg");
    const PHOTO_640: &[u8] = include_bytes!("../../tests/fixtures/images/photo_640x480.jpg");
    const PHOTO_300: &[u8] = include_bytes!("../../tests/fixtures/images/photo_300x500.jpg");
    const EXIF_ROT: &[u8] = include_bytes!("../../tests/fixtures/images/exif_rot_200x120.jpg");

    fn dec(bytes: &[u8]) -> Result<DecodedJpeg> {
        decode(bytes, 16384, 1 << 30)
    }

    #[test]
    fn matches_pillow_pixels() {
        type Case = (&'static str, &'static [u8], (u32, u32), u64);
        let cases: [Case; 6] = [
            // progressive, 4:2:0 (h2v2 fancy), restart every 2 MCUs
            (
                "prog_420_rst",
                PROG_420_RST,
                (61, 37),
                0x6537_8084_e5df_4b7f,
            ),
            // Adobe CMYK, read by Pillow as inverted "CMYK;I"
            ("cmyk", CMYK, (23, 9), 0xd746_e5cc_a294_e13f),
            // baseline, luma sampled 1x2 (h1v2 fancy)
            ("h1v2", H1V2, (45, 29), 0xacc1_f00e_833b_847c),
            // baseline 4:2:0 photos
            ("photo_640", PHOTO_640, (640, 480), 0x7255_fe9a_9b79_03c3),
            ("photo_300", PHOTO_300, (300, 500), 0x6c29_15f5_1955_cf09),
            ("exif_rot", EXIF_ROT, (200, 120), 0x75ec_4ed0_c6b3_cabe),
        ];
        for (name, bytes, size, golden) in cases {
            let d = dec(bytes).unwrap_or_else(|e| panic!("{name}: {e:?}"));
            assert_eq!((d.width, d.height), size, "{name}");
            assert_eq!(d.rgb.len(), size.0 as usize * size.1 as usize * 3, "{name}");
            assert_eq!(fnv1a(&d.rgb), golden, "{name}: pixels differ from Pillow");
        }
    }

    #[test]
    fn decode_image_uses_this_decoder() {
        // EXIF orientation 6 is applied after decoding: Pillow's
        // exif_transpose(...).convert("RGB") hashes to this.
        let img = crate::preprocess::decode_image(EXIF_ROT).expect("decode");
        assert_eq!(img.dimensions(), (120, 200));
        assert_eq!(fnv1a(img.as_raw()), 0xe012_2c7a_6d56_6faa);
        let img = crate::preprocess::decode_image(PROG_420_RST).expect("decode");
        assert_eq!(fnv1a(img.as_raw()), 0x6537_8084_e5df_4b7f);
    }

    #[test]
    fn limits_are_enforced() {
        assert!(matches!(
            decode(PROG_420_RST, 60, 1 << 30),
            Err(JpegError::TooLarge {
                width: 61,
                height: 37
            })
        ));
        assert!(matches!(
            decode(PROG_420_RST, 16384, 1000),
            Err(JpegError::TooLarge { .. })
        ));
    }

    #[test]
    fn unsupported_and_invalid_inputs_are_errors() {
        assert!(matches!(dec(b""), Err(JpegError::Invalid(_))));
        assert!(matches!(
            dec(b"\xff\xd8\xff\xd9"),
            Err(JpegError::Invalid(_))
        ));
        // SOF9 (arithmetic coding).
        let mut arith = PHOTO_300.to_vec();
        let sof = arith
            .windows(2)
            .position(|w| w == [0xFF, 0xC0])
            .expect("SOF0");
        arith[sof + 1] = 0xC9;
        assert!(matches!(dec(&arith), Err(JpegError::Unsupported(_))));
        // 12-bit precision.
        let mut p12 = PHOTO_300.to_vec();
        p12[sof + 4] = 12;
        assert!(matches!(dec(&p12), Err(JpegError::Unsupported(_))));
    }

    /// Every truncation and a few thousand byte corruptions decode or fail
    /// without panicking (overflow checks are on in test builds).
    #[test]
    fn hostile_input_never_panics() {
        for src in [PROG_420_RST, CMYK, H1V2] {
            for cut in 0..src.len() {
                let mut b = src[..cut].to_vec();
                b.extend_from_slice(&[0xFF, 0xD9]);
                let _ = dec(&b);
            }
            let mut seed = 0x2545_f491_4f6c_dd1du64;
            let mut next = || {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                seed
            };
            for _ in 0..1500 {
                let mut b = src.to_vec();
                for _ in 0..1 + next() % 4 {
                    let i = (next() % b.len() as u64) as usize;
                    b[i] = match next() % 4 {
                        0 => 0xFF,
                        1 => 0,
                        _ => next() as u8,
                    };
                }
                if let Ok(d) = dec(&b) {
                    assert_eq!(d.rgb.len(), d.width as usize * d.height as usize * 3);
                }
            }
        }
    }

    #[test]
    fn huffman_tables_are_validated() {
        // Three codes of length 1 cannot exist.
        let mut bits = [0u8; 16];
        bits[0] = 3;
        assert!(Huffman::new(&bits, &[1, 2, 3]).is_err());
        // More symbols than given.
        bits[0] = 2;
        assert!(Huffman::new(&bits, &[1]).is_err());
        let t = Huffman::new(&STD_AC_LUMA_BITS, &STD_AC_LUMA_VALS).expect("std table");
        // 1010 is the AC luminance end-of-block code.
        let data = [0b1010_0000, 0];
        let mut r = BitReader::new(&data, 0);
        assert_eq!(r.decode(&t), 0x00);
        assert!(!r.starved);
    }

    #[test]
    fn idct_and_color_basics() {
        let quant = [1u16; 64];
        let mut coef = [0i16; 64];
        coef[0] = 80; // DC 80 * 1 -> +10 on every sample
        let mut out = [0u8; 64];
        idct_islow(&coef, &quant, &mut out, 8);
        assert!(out.iter().all(|&v| v == 138));
        let t = ColorTables::new();
        assert_eq!(t.rgb(128, 128, 128), [128, 128, 128]);
        assert_eq!(t.rgb(255, 0, 255), [255, 208, 28]);
        assert_eq!(pil_cmyk_inverted(255, 255), 255);
    }
}
