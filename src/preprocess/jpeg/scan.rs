//! Entropy decoding of one scan: sequential, and progressive DC / AC
//! first and refinement passes, with restart intervals.

use super::bit_reader::BitReader;
use super::decoder::Frame;
use super::huffman::Huffman;
use super::NATURAL;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum ScanKind {
    Sequential,
    DcFirst,
    DcRefine,
    AcFirst,
    AcRefine,
}

pub(super) struct Scan<'t> {
    pub(super) kind: ScanKind,
    pub(super) members: Vec<usize>,
    pub(super) dc: Vec<Option<&'t Huffman>>,
    pub(super) ac: Vec<Option<&'t Huffman>>,
    pub(super) ss: usize,
    pub(super) se: usize,
    pub(super) al: u32,
}

pub(super) fn decode_scan(
    frame: &mut Frame,
    scan: &Scan<'_>,
    r: &mut BitReader<'_>,
    restart: usize,
) {
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
