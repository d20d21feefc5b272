//! Code size of a function and everything it calls, read from a Cortex-M ELF.
//!
//! The symbol table gives each function's address and size; the call graph
//! comes from decoding the Thumb `BL` and `B.W` instructions in their bytes
//! (skipping the literal pools that the `$d` mapping symbols mark). Indirect
//! calls are not followed; the inference code has none.

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

    /// Targets of the `BL` / `B.W` instructions in `f` that lie outside it.
    fn callees(&self, f: &Function) -> Result<BTreeSet<u32>> {
        let code = self.code(f)?;
        let mut out = BTreeSet::new();
        let mut i = 0usize;
        while i + 2 <= code.len() {
            let addr = f.addr + i as u32;
            if self.is_data(addr) {
                i += 2;
                continue;
            }
            let h1 = u16::from_le_bytes([code[i], code[i + 1]]);
            if h1 >> 11 < 0b11101 {
                i += 2;
                continue;
            }
            if let (Some(&a), Some(&b)) = (code.get(i + 2), code.get(i + 3)) {
                if let Some(target) = branch_target(addr, h1, u16::from_le_bytes([a, b])) {
                    if !(f.addr..f.addr + f.size).contains(&target) {
                        out.insert(target);
                    }
                }
            }
            i += 4;
        }
        Ok(out)
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

/// The target of a Thumb-2 `BL` (T1) or `B.W` (T4) at `addr`, else `None`.
pub fn branch_target(addr: u32, h1: u16, h2: u16) -> Option<u32> {
    let is_bl = h1 & 0xf800 == 0xf000 && h2 & 0xd000 == 0xd000;
    let is_b_w = h1 & 0xf800 == 0xf000 && h2 & 0xd000 == 0x9000;
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
        // Not a branch: `ldr.w r0, [r1]` is f8d1 0000.
        assert_eq!(branch_target(0x100, 0xf8d1, 0x0000), None);
    }
}
