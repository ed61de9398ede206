//! Frame and decoder state: the marker walk (tables, frame header, scan
//! headers) and the assembly of the decoded planes into RGB.

use super::bit_reader::BitReader;
use super::color::{convert_row, Color, ColorTables};
use super::huffman::{std_tables, Huffman};
use super::idct::idct_islow;
use super::scan::{decode_scan, Scan, ScanKind};
use super::upsample::Plane;
use super::{DecodedJpeg, JpegError, Result, NATURAL};

pub(super) struct Component {
    pub(super) id: u8,
    pub(super) h: usize,
    pub(super) v: usize,
    pub(super) tq: usize,
    /// Quantisation table in natural order, latched by the first scan that
    /// contains the component (as libjpeg does).
    pub(super) quant: Option<[u16; 64]>,
    /// Allocated blocks (whole MCUs).
    pub(super) bw: usize,
    pub(super) bh: usize,
    /// Blocks that hold image data (`width_in_blocks`, `height_in_blocks`).
    pub(super) wib: usize,
    pub(super) hib: usize,
    /// `downsampled_width` / `downsampled_height`.
    pub(super) dsw: usize,
    pub(super) dsh: usize,
    pub(super) coefs: Vec<i16>,
    pub(super) dc_pred: i32,
}

pub(super) struct Frame {
    pub(super) progressive: bool,
    pub(super) width: usize,
    pub(super) height: usize,
    pub(super) comps: Vec<Component>,
    pub(super) hmax: usize,
    pub(super) vmax: usize,
    pub(super) mcux: usize,
    pub(super) mcuy: usize,
}

pub(super) struct Decoder<'a> {
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
    pub(super) fn new(data: &'a [u8], max_side: u32, max_alloc: u64) -> Self {
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
    pub(super) fn run(&mut self) -> Result<()> {
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

    pub(super) fn output(self) -> Result<DecodedJpeg> {
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
