//! A kernel socket filter (classic BPF) on the SRT ingest port, in front of srt-protocol 0.4.4.
//!
//! srt-tokio serves a whole port from one task, and srt-protocol panics in it on some handshakes
//! (an extension block of type 0, 4, 6, 7 or 8; keying material on a port without passphrase
//! from a caller that announced no key size, which [`crate::ingest::srt`] cannot see to refuse): every
//! broadcast on the port would end. Those packets cannot be screened in Rust, as the library
//! reads the socket itself, so the kernel drops them first. A broadcaster sending one gets no
//! answer and times out; ffmpeg, OBS and other libsrt callers use blocks 1, 3 and 5 only, and
//! announce their key size (so a plain port refuses them with a reason).

use socket2::SockFilter;

/// One classic BPF instruction (`struct sock_filter`), kept readable for the tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Insn {
    code: u16,
    jt: u8,
    jf: u8,
    k: u32,
}

// Opcodes from linux/filter.h.
const LD_W_ABS: u16 = 0x20;
const LD_H_ABS: u16 = 0x28;
const LD_H_IND: u16 = 0x48;
const LD_W_LEN: u16 = 0x80;
const LDX_IMM: u16 = 0x01;
const ADD_K: u16 = 0x04;
const ADD_X: u16 = 0x0c;
const SUB_X: u16 = 0x1c;
const AND_K: u16 = 0x54;
const LSH_K: u16 = 0x64;
const JEQ_K: u16 = 0x15;
const JGT_K: u16 = 0x25;
const RET_K: u16 = 0x06;
const TAX: u16 = 0x07;

/// The filter sees the UDP header (8 bytes) before the SRT packet.
const P: u32 = 8;
/// Extension blocks followed before a handshake is dropped as too long (libsrt sends at most 5).
const MAX_BLOCKS: usize = 7;

/// Where a jump goes: the next instruction, an instruction of the program, or one of its ends.
#[derive(Clone, Copy)]
enum To {
    Next,
    At(usize),
    Accept,
    Drop,
}

struct Asm {
    code: Vec<(u16, To, To, u32)>,
}

impl Asm {
    fn op(&mut self, code: u16, k: u32) {
        self.code.push((code, To::Next, To::Next, k));
    }
    fn jump(&mut self, code: u16, k: u32, jt: To, jf: To) {
        self.code.push((code, jt, jf, k));
    }
    fn here(&self) -> usize {
        self.code.len()
    }
    /// Resolves jumps; the program ends with "accept" then "drop".
    fn finish(self) -> Vec<Insn> {
        let accept = self.code.len();
        let rel = |i: usize, to: To| -> u8 {
            let target = match to {
                To::Next => i + 1,
                To::At(t) => t,
                To::Accept => accept,
                To::Drop => accept + 1,
            };
            // Programs are built forward-only and well under 255 instructions.
            u8::try_from(target - i - 1).unwrap_or(u8::MAX)
        };
        let mut out: Vec<Insn> = self
            .code
            .iter()
            .enumerate()
            .map(|(i, &(code, jt, jf, k))| Insn { code, jt: rel(i, jt), jf: rel(i, jf), k })
            .collect();
        out.push(Insn { code: RET_K, jt: 0, jf: 0, k: u32::MAX });
        out.push(Insn { code: RET_K, jt: 0, jf: 0, k: 0 });
        out
    }
}

/// The program: accept everything but HSv5 handshakes (other than induction) whose extension
/// blocks srt-protocol would panic on. `encrypted`: the port has a passphrase.
fn program(encrypted: bool) -> Vec<Insn> {
    let mut a = Asm { code: Vec::new() };
    a.op(LD_H_ABS, P); // control bit and type
    a.jump(JEQ_K, 0x8000, To::Next, To::Accept); // a handshake
    a.op(LD_W_ABS, P + 16);
    a.jump(JEQ_K, 5, To::Next, To::Accept); // HSv5
    a.op(LD_W_ABS, P + 36);
    a.jump(JEQ_K, 1, To::Accept, To::Next); // induction carries no blocks
    a.op(LDX_IMM, P + 64); // X: the first extension block
    let block_len = if encrypted { 13 } else { 18 };
    for _ in 0..MAX_BLOCKS {
        let start = a.here();
        let size = To::At(start + block_len - 5);
        a.op(LD_W_LEN, 0);
        a.op(SUB_X, 0);
        // srt-protocol reads blocks while more than 4 bytes are left.
        a.jump(JGT_K, 4, To::Next, To::Accept);
        a.op(LD_H_IND, 0); // block type
        a.jump(JEQ_K, 1, size, To::Next); // HSREQ
        a.jump(JEQ_K, 2, size, To::Next); // HSRSP
        a.jump(JEQ_K, 5, size, To::Next); // stream id
        if encrypted {
            a.jump(JEQ_K, 3, size, To::Drop); // KMREQ
        } else {
            // KMREQ on a plain port only with a key size announced: `srt::claim` refuses it.
            a.jump(JEQ_K, 3, To::Next, To::Drop);
            a.op(LD_H_ABS, P + 20);
            a.op(AND_K, 0x1fff); // srt-protocol shifts it left by 3 in 16 bits
            a.jump(JEQ_K, 2, size, To::Next);
            a.jump(JEQ_K, 3, size, To::Next);
            a.jump(JEQ_K, 4, size, To::Drop);
        }
        debug_assert_eq!(a.here(), start + block_len - 5);
        a.op(LD_H_IND, 2); // block size in 32-bit words
        a.op(LSH_K, 2);
        a.op(ADD_K, 4);
        a.op(ADD_X, 0);
        a.op(TAX, 0);
    }
    a.op(LD_W_LEN, 0);
    a.op(SUB_X, 0);
    a.jump(JGT_K, 4, To::Drop, To::Accept);
    a.finish()
}

/// Attaches the filter to the ingest socket (and so to every handle on it).
pub fn attach(socket: &socket2::Socket, encrypted: bool) -> std::io::Result<()> {
    let filters: Vec<SockFilter> =
        program(encrypted).iter().map(|i| SockFilter::new(i.code, i.jt, i.jf, i.k)).collect();
    socket.attach_filter(&filters)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs a program as the kernel does (the subset used here): true if the packet is kept.
    fn run(prog: &[Insn], pkt: &[u8]) -> bool {
        let (mut a, mut x, mut pc) = (0u32, 0u32, 0usize);
        let load = |at: u32, n: usize| -> Option<u32> {
            let at = at as usize;
            let b = pkt.get(at..at.checked_add(n)?)?;
            Some(b.iter().fold(0u32, |v, &byte| (v << 8) | u32::from(byte)))
        };
        loop {
            let i = prog[pc];
            pc += 1;
            let mut cond = None;
            match i.code {
                LD_W_ABS => {
                    a = match load(i.k, 4) {
                        Some(v) => v,
                        None => return false,
                    }
                }
                LD_H_ABS => {
                    a = match load(i.k, 2) {
                        Some(v) => v,
                        None => return false,
                    }
                }
                LD_H_IND => {
                    a = match load(x.wrapping_add(i.k), 2) {
                        Some(v) => v,
                        None => return false,
                    }
                }
                LD_W_LEN => a = pkt.len() as u32,
                LDX_IMM => x = i.k,
                ADD_K => a = a.wrapping_add(i.k),
                ADD_X => a = a.wrapping_add(x),
                SUB_X => a = a.wrapping_sub(x),
                AND_K => a &= i.k,
                LSH_K => a <<= i.k,
                TAX => x = a,
                JEQ_K => cond = Some(a == i.k),
                JGT_K => cond = Some(a > i.k),
                RET_K => return i.k != 0,
                other => panic!("opcode {other:#x} not modelled"),
            }
            if let Some(c) = cond {
                pc += usize::from(if c { i.jt } else { i.jf });
            }
        }
    }

    /// A UDP header, then an HSv5 handshake of `shake` type with the encryption field `enc` and
    /// extension blocks `(type, words)`.
    fn handshake(shake: u32, enc: u16, blocks: &[(u16, u16)]) -> Vec<u8> {
        let mut p = vec![0u8; 8];
        p.extend_from_slice(&0x8000_0000u32.to_be_bytes());
        p.extend_from_slice(&[0; 12]);
        p.extend_from_slice(&5u32.to_be_bytes());
        p.extend_from_slice(&enc.to_be_bytes());
        p.extend_from_slice(&0x0005u16.to_be_bytes());
        p.extend_from_slice(&[0; 12]);
        p.extend_from_slice(&shake.to_be_bytes());
        p.extend_from_slice(&[0; 24]);
        for &(t, words) in blocks {
            p.extend_from_slice(&t.to_be_bytes());
            p.extend_from_slice(&words.to_be_bytes());
            p.extend(std::iter::repeat_n(0x61, usize::from(words) * 4));
        }
        p
    }

    const CONCLUSION: u32 = 0xffff_ffff;

    #[test]
    fn what_broadcasters_send_passes() {
        for encrypted in [false, true] {
            let prog = program(encrypted);
            assert!(run(&prog, &handshake(1, 0, &[])), "induction");
            assert!(run(&prog, &handshake(CONCLUSION, 0, &[(1, 3), (5, 2)])), "HSREQ + stream id");
            assert!(run(&prog, &handshake(CONCLUSION, 0, &[(1, 3)])), "HSREQ only");
            let mut data = vec![0u8; 8];
            data.extend_from_slice(&[0x00, 0, 0, 1, 0xc0, 0, 0, 0]);
            data.extend_from_slice(&[0x47; 1316]);
            assert!(run(&prog, &data), "a data packet");
            let mut ack = vec![0u8; 8];
            ack.extend_from_slice(&0x8002_0000u32.to_be_bytes());
            ack.extend_from_slice(&[0; 28]);
            assert!(run(&prog, &ack), "another control packet");
        }
        for enc in [0, 2, 3, 4] {
            let km = handshake(CONCLUSION, enc, &[(1, 3), (3, 10), (5, 2)]);
            assert!(run(&program(true), &km), "KMREQ with key size {enc} on an encrypted port");
        }
        for enc in [2, 3, 4, 0x2002] {
            let km = handshake(CONCLUSION, enc, &[(1, 3), (3, 10), (5, 2)]);
            assert!(run(&program(false), &km), "KMREQ with key size {enc} on a plain port, to be refused");
        }
    }

    #[test]
    fn handshakes_srt_protocol_panics_on_are_dropped() {
        for encrypted in [false, true] {
            let prog = program(encrypted);
            for bad in [0, 4, 6, 7, 8, 9, 0xffff] {
                assert!(!run(&prog, &handshake(CONCLUSION, 2, &[(1, 3), (bad, 1)])), "block type {bad}");
            }
            assert!(!run(&prog, &handshake(CONCLUSION, 0, &[(1, 3); 9])), "more blocks than followed");
            let mut cut = handshake(CONCLUSION, 0, &[(1, 3), (5, 40)]);
            cut.truncate(cut.len() - 20);
            assert!(!run(&prog, &cut), "a block longer than the packet");
            // Any handshake type but induction is parsed with its blocks.
            assert!(!run(&prog, &handshake(0xffff_fffe, 2, &[(6, 1)])), "agreement with a bad block");
        }
        for enc in [0, 1, 5] {
            let km = handshake(CONCLUSION, enc, &[(1, 3), (3, 10)]);
            assert!(!run(&program(false), &km), "KMREQ without a key size ({enc}) on a plain port");
        }
    }

    #[test]
    fn the_program_fits_the_kernel_limits() {
        for encrypted in [false, true] {
            let prog = program(encrypted);
            assert!(prog.len() < 4096);
            // Every jump lands inside the program.
            for (i, insn) in prog.iter().enumerate() {
                assert!(i + 1 + usize::from(insn.jt.max(insn.jf)) < prog.len() + usize::from(insn.code == RET_K));
            }
        }
    }
}
