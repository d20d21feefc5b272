//! Code size of a function and everything it calls, read from a Cortex-M ELF.
//!
//! The symbol table gives each function's address and size; the call graph
//! comes from decoding the Thumb branches in their bytes (`BL`, `B.W`, `B<c>.W` and
//! the 16-bit `B`, skipping the literal pools that the `$d` mapping symbols mark), and
//! from the function pointers a function takes: a `MOVW` (with its `MOVT`) or a
//! literal-pool word whose value is a function's address with the Thumb bit set (an
//! indirect call's target, such as the gather a conv chooses at run time).

use anyhow::{bail, ensure, Context, Result};
use std::collections::{BTreeMap, BTreeSet};

/// One function symbol.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Function {
    /// Symbol name (mangled).
    pub name: String,
    /// Start address (Thumb bit cleared).
    pub addr: u32,
    /// Bytes.
    pub size: u32,
}

/// A loaded ELF: its function symbols, mapping symbols and section contents.
pub struct Elf<'a> {
    bytes: &'a [u8],
    /// Functions by start address.
    functions: BTreeMap<u32, Function>,
    /// Addresses where data (`$d`) or code (`$t`) starts: `true` for data.
    mapping: BTreeMap<u32, bool>,
    /// Loaded sections: (address, file offset, size).
    sections: Vec<(u32, u32, u32)>,
}

fn u16_at(b: &[u8], at: usize) -> Result<u16> {
    let s = b.get(at..at + 2).context("ELF truncated")?;
    Ok(u16::from_le_bytes([s[0], s[1]]))
}

fn u32_at(b: &[u8], at: usize) -> Result<u32> {
    let s = b.get(at..at + 4).context("ELF truncated")?;
    Ok(u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
}

impl<'a> Elf<'a> {
    /// Reads the section headers and the symbol table of a 32-bit little-endian ELF.
    ///
    /// # Errors
    /// Not such an ELF, or no symbol table.
    pub fn parse(bytes: &'a [u8]) -> Result<Self> {
        ensure!(
            bytes.get(..6) == Some(&[0x7f, b'E', b'L', b'F', 1, 1][..]),
            "not a 32-bit little-endian ELF"
        );
        let shoff = u32_at(bytes, 0x20)? as usize;
        let shentsize = usize::from(u16_at(bytes, 0x2e)?);
        let shnum = usize::from(u16_at(bytes, 0x30)?);
        let header = |i: usize| -> Result<[u32; 10]> {
            let mut h = [0u32; 10];
            for (k, v) in h.iter_mut().enumerate() {
                *v = u32_at(bytes, shoff + i * shentsize + 4 * k)?;
            }
            Ok(h)
        };
        let mut sections = Vec::new();
        let mut symtab = None;
        for i in 0..shnum {
            let h = header(i)?;
            // sh_type: 1 PROGBITS, 2 SYMTAB; sh_flags 2: ALLOC.
            if h[1] == 1 && h[2] & 2 != 0 {
                sections.push((h[3], h[4], h[5]));
            }
            if h[1] == 2 {
                symtab = Some(h);
            }
        }
        let symtab = symtab.context("the ELF has no symbol table")?;
        let strtab = header(symtab[6] as usize)?;
        let name_at = |off: u32| -> String {
            let start = (strtab[4] + off) as usize;
            let end = bytes[start..]
                .iter()
                .position(|&c| c == 0)
                .map_or(bytes.len(), |n| start + n);
            String::from_utf8_lossy(&bytes[start..end]).into_owned()
        };
        let mut functions = BTreeMap::new();
        let mut mapping = BTreeMap::new();
        for k in 0..(symtab[5] / 16) as usize {
            let at = symtab[4] as usize + 16 * k;
            let (name, value, size) = (
                u32_at(bytes, at)?,
                u32_at(bytes, at + 4)?,
                u32_at(bytes, at + 8)?,
            );
            let info = *bytes.get(at + 12).context("ELF truncated")?;
            let name = name_at(name);
            if info & 0xf == 2 && size > 0 {
                let addr = value & !1;
                functions.insert(addr, Function { name, addr, size });
            } else if name == "$d" || name.starts_with("$d.") {
                mapping.insert(value, true);
            } else if name == "$t" || name.starts_with("$t.") {
                mapping.insert(value, false);
            }
        }
        Ok(Self {
            bytes,
            functions,
            mapping,
            sections,
        })
    }

    /// The first function whose name contains `part`.
    pub fn find(&self, part: &str) -> Option<&Function> {
        self.functions.values().find(|f| f.name.contains(part))
    }

    /// The function containing `addr`.
    fn containing(&self, addr: u32) -> Option<&Function> {
        let (_, f) = self.functions.range(..=addr).next_back()?;
        (addr < f.addr + f.size).then_some(f)
    }

    /// `f`'s bytes.
    fn code(&self, f: &Function) -> Result<&'a [u8]> {
        for &(addr, offset, size) in &self.sections {
            if f.addr >= addr && f.addr + f.size <= addr + size {
                let start = (offset + f.addr - addr) as usize;
                return self
                    .bytes
                    .get(start..start + f.size as usize)
                    .context("ELF truncated");
            }
        }
        bail!("{} is in no loaded section", f.name)
    }

    /// Targets outside `f` of its branches, and the functions whose addresses it takes
    /// (see the module documentation).
    fn callees(&self, f: &Function) -> Result<BTreeSet<u32>> {
        let code = self.code(f)?;
        // Branch targets, and values that may be function pointers.
        let (mut targets, mut pointers) = (BTreeSet::new(), BTreeSet::new());
        // The last `MOVW` value of each register, for a `MOVT` to complete.
        let mut movw = [None::<u32>; 16];
        let mut i = 0usize;
        while i + 2 <= code.len() {
            let addr = f.addr + i as u32;
            let h1 = u16::from_le_bytes([code[i], code[i + 1]]);
            if self.is_data(addr) {
                // A literal-pool word (aligned) may hold a function pointer.
                if addr % 4 == 0 {
                    if let Some(w) = code.get(i..i + 4) {
                        pointers.insert(u32::from_le_bytes([w[0], w[1], w[2], w[3]]));
                    }
                }
                i += 2;
                continue;
            }
            if h1 >> 11 < 0b11101 {
                if let Some(target) = short_branch_target(addr, h1) {
                    targets.insert(target);
                }
                i += 2;
                continue;
            }
            if let (Some(&a), Some(&b)) = (code.get(i + 2), code.get(i + 3)) {
                let h2 = u16::from_le_bytes([a, b]);
                if let Some(target) = branch_target(addr, h1, h2) {
                    targets.insert(target);
                }
                if let Some((rd, value, top)) = move_immediate(h1, h2) {
                    let value = match (top, movw[rd]) {
                        (true, Some(low)) => low | value << 16,
                        (true, None) => value << 16,
                        (false, _) => value,
                    };
                    movw[rd] = (!top).then_some(value);
                    // A `MOVW` alone (an address under 64 KiB) or completed by its `MOVT`.
                    pointers.insert(value);
                }
            }
            i += 4;
        }
        // A function pointer is a function's start with the Thumb bit set.
        let functions = pointers
            .into_iter()
            .filter(|&p| p & 1 == 1 && self.functions.contains_key(&(p & !1)))
            .map(|p| p & !1);
        let outside = |t: &u32| !(f.addr..f.addr + f.size).contains(t);
        Ok(targets
            .into_iter()
            .chain(functions)
            .filter(outside)
            .collect())
    }

    /// True if the last mapping symbol at or before `addr` marks data.
    fn is_data(&self, addr: u32) -> bool {
        self.mapping
            .range(..=addr)
            .next_back()
            .is_some_and(|(_, &data)| data)
    }

    /// `root` and every function it reaches through direct calls and tail calls.
    ///
    /// # Errors
    /// A function outside the loaded sections.
    pub fn closure(&self, root: &Function) -> Result<Vec<Function>> {
        let mut seen = BTreeMap::new();
        let mut todo = vec![root.clone()];
        while let Some(f) = todo.pop() {
            if seen.contains_key(&f.addr) {
                continue;
            }
            for target in self.callees(&f)? {
                if let Some(g) = self.containing(target) {
                    if !seen.contains_key(&g.addr) {
                        todo.push(g.clone());
                    }
                }
            }
            seen.insert(f.addr, f);
        }
        Ok(seen.into_values().collect())
    }
}

/// The target of a 16-bit Thumb `B` (T2, unconditional) at `addr`, else `None`. (A
/// conditional 16-bit `B` reaches 256 bytes: never another function in practice.)
pub fn short_branch_target(addr: u32, h1: u16) -> Option<u32> {
    if h1 >> 11 != 0b11100 {
        return None;
    }
    // Sign-extend the 12-bit byte offset (11 bits, halfwords).
    let offset = ((u32::from(h1 & 0x7ff) << 21) as i32) >> 20;
    Some(addr.wrapping_add(4).wrapping_add(offset as u32))
}

/// The destination register, the 16-bit immediate and whether it is the top half (`MOVT`,
/// else `MOVW`) of a Thumb-2 `MOVW` / `MOVT` (T3 / T1) with halfwords `h1`, `h2`.
pub fn move_immediate(h1: u16, h2: u16) -> Option<(usize, u32, bool)> {
    let top = match h1 & 0xfbf0 {
        0xf240 => false,
        0xf2c0 => true,
        _ => return None,
    };
    if h2 & 0x8000 != 0 {
        return None;
    }
    let (h1, h2) = (u32::from(h1), u32::from(h2));
    let imm = (h1 & 0xf) << 12 | (h1 >> 10 & 1) << 11 | (h2 >> 12 & 7) << 8 | (h2 & 0xff);
    Some((usize::from((h2 >> 8 & 0xf) as u8), imm, top))
}

/// The target of a Thumb-2 `BL` (T1), `B.W` (T4) or `B<c>.W` (T3) at `addr`, else `None`.
pub fn branch_target(addr: u32, h1: u16, h2: u16) -> Option<u32> {
    let is_bl = h1 & 0xf800 == 0xf000 && h2 & 0xd000 == 0xd000;
    let is_b_w = h1 & 0xf800 == 0xf000 && h2 & 0xd000 == 0x9000;
    let is_b_cond = h1 & 0xf800 == 0xf000 && h2 & 0xd000 == 0x8000 && (h1 >> 6) & 0xe != 0xe;
    if is_b_cond {
        // imm32 = S:J2:J1:imm6:imm11:0, 21 bits.
        let (h1, h2) = (u32::from(h1), u32::from(h2));
        let imm = (h1 >> 10 & 1) << 20
            | (h2 >> 11 & 1) << 19
            | (h2 >> 13 & 1) << 18
            | (h1 & 0x3f) << 12
            | (h2 & 0x7ff) << 1;
        let offset = ((imm << 11) as i32) >> 11;
        return Some(addr.wrapping_add(4).wrapping_add(offset as u32));
    }
    if !(is_bl || is_b_w) {
        return None;
    }
    let s = u32::from(h1 >> 10) & 1;
    let imm10 = u32::from(h1) & 0x3ff;
    let (j1, j2) = (u32::from(h2 >> 13) & 1, u32::from(h2 >> 11) & 1);
    let imm11 = u32::from(h2) & 0x7ff;
    let (i1, i2) = (!(j1 ^ s) & 1, !(j2 ^ s) & 1);
    let imm = (s << 24) | (i1 << 23) | (i2 << 22) | (imm10 << 12) | (imm11 << 1);
    // Sign-extend 25 bits.
    let offset = ((imm << 7) as i32) >> 7;
    Some(addr.wrapping_add(4).wrapping_add(offset as u32))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_bl_and_b_w() {
        // Encodings and targets as llvm-objdump prints them (bytes are little-endian
        // halfwords: `03 f0 1b fc` is h1 = 0xf003, h2 = 0xfc1b).
        assert_eq!(branch_target(0x400, 0xf003, 0xfc1b), Some(0x3c3a));
        assert_eq!(branch_target(0xf02, 0xf7ff, 0xfb70), Some(0x5e6));
        assert_eq!(branch_target(0xf16, 0xf7ff, 0xfe32), Some(0xb7e));
        assert_eq!(branch_target(0x29b4, 0xf000, 0xbe2e), Some(0x3614));
        assert_eq!(branch_target(0x2d7c, 0xf7ff, 0xbe20), Some(0x29c0));
        // `beq.w` (T3): 00 f0 7f 80 at 0x4fc branches to 0x5fe, and 00 f0 57 82 at 0x804 to
        // 0xcb6.
        assert_eq!(branch_target(0x4fc, 0xf000, 0x807f), Some(0x5fe));
        assert_eq!(branch_target(0x804, 0xf000, 0x8257), Some(0xcb6));
        // Not a branch: `ldr.w r0, [r1]` is f8d1 0000.
        assert_eq!(branch_target(0x100, 0xf8d1, 0x0000), None);
    }

    #[test]
    fn decodes_the_short_branch_and_moves_of_addresses() {
        // `b` (T2): fb e7 at 0x416 branches to 0x410; fa e7 at 0x426 to 0x41e.
        assert_eq!(short_branch_target(0x416, 0xe7fb), Some(0x410));
        assert_eq!(short_branch_target(0x426, 0xe7fa), Some(0x41e));
        // A conditional 16-bit branch (`beq`, d0 xx) is not one.
        assert_eq!(short_branch_target(0x400, 0xd005), None);
        // `movw r0, #60676` is 4e f6 04 50; `movt r0, #57344` ce f2 00 00; `movw r0,
        // #18037` 44 f2 75 60.
        assert_eq!(move_immediate(0xf64e, 0x5004), Some((0, 60676, false)));
        assert_eq!(move_immediate(0xf2ce, 0x0000), Some((0, 57344, true)));
        assert_eq!(move_immediate(0xf244, 0x6075), Some((0, 18037, false)));
        assert_eq!(move_immediate(0xf8d1, 0x0000), None);
    }
}
