//! The mutator: a seeded random number generator and the byte- and token-level edits that turn
//! a seed-corpus entry into a fuzz input.
//!
//! Every input is a pure function of `(target, seed, iteration)`: the generator is seeded from
//! the three, picks a corpus entry and applies a stack of 1 to [`MAX_STACK`] edits (AFL's
//! "havoc" stage, without coverage feedback). Byte edits: bit flips, random bytes, arithmetic,
//! interesting integers (0, ±1, the signed/unsigned limits of each width, and sizes near the
//! input's own length) written little- or big-endian, chunk insert / delete / duplicate /
//! overwrite, splicing with another corpus entry, truncation. Text edits (for text targets):
//! a number replaced by an interesting one, a field deleted / duplicated / swapped, a
//! delimiter (quote, comma, newline, `;`, `=`, brackets) inserted, a line deleted / duplicated /
//! swapped / taken from another entry, a dictionary token inserted.
//!
//! Book: appendix "What happens when things go wrong" (fuzzing).
//!
//! **Deviation:** none (no reference counterpart).

/// The most edits stacked on one input.
pub const MAX_STACK: u32 = 16;

/// SplitMix64: small, fast, and good enough to drive a mutator.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (`0` when `n == 0`).
    pub fn below(&mut self, n: usize) -> usize {
        if n == 0 { 0 } else { (self.next_u64() % n as u64) as usize }
    }

    pub fn chance(&mut self, one_in: usize) -> bool {
        self.below(one_in) == 0
    }

    /// A length biased towards small values: 1..=max.
    pub fn small_len(&mut self, max: usize) -> usize {
        let max = max.max(1);
        let cap = [4, 16, 64, 512, max][self.below(5)].min(max);
        1 + self.below(cap)
    }
}

/// FNV-1a 64: names crash files by content and seeds the generator from the target's name.
pub fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| (h ^ b as u64).wrapping_mul(0x0100_0000_01b3))
}

/// The generator for one input.
pub fn input_rng(target: &str, seed: u64, iteration: u64) -> Rng {
    let mut r = Rng::new(fnv1a(target.as_bytes()) ^ seed.wrapping_mul(0xa076_1d64_78bd_642f));
    r.0 ^= iteration.wrapping_mul(0xe703_7ed1_a0b4_28db);
    r.next_u64();
    r
}

/// Signed and unsigned limits of the common integer widths, plus small values.
const INTERESTING: [u64; 22] = [
    0,
    1,
    2,
    7,
    8,
    16,
    32,
    64,
    100,
    127,
    128,
    255,
    256,
    1024,
    4096,
    0x7fff,
    0x8000,
    0xffff,
    0x7fff_ffff,
    0x8000_0000,
    0xffff_ffff,
    0x7fff_ffff_ffff_ffff,
];

/// Numbers a text field is replaced with.
const NUMBERS: [&str; 28] = [
    "0",
    "-0",
    "1",
    "-1",
    "2",
    "255",
    "256",
    "65535",
    "65536",
    "2147483647",
    "2147483648",
    "-2147483649",
    "4294967296",
    "9223372036854775807",
    "18446744073709551615",
    "18446744073709551616",
    "99999999999999999999999",
    "1e300",
    "-1e300",
    "1e-320",
    "0.5",
    "1.5",
    "-0.0",
    "NaN",
    "nan",
    "inf",
    "-inf",
    "0x10",
];

/// Characters and short strings that delimit fields in the text formats under test.
const DELIMITERS: [&str; 26] = [
    "\"", ",", "\n", "\r\n", "\r", ";", " ", "\t", "=", "[", "]", "{", "}", "#", "\\", "'", ":", ".", "\0", "\u{fffd}",
    "é", "\u{200b}", "\"\"", ",,", "\n\n", "\n \n",
];

/// How one input is mutated: the target's kind and dictionary, and a size cap.
#[derive(Debug, Clone, Copy)]
pub struct Mutator<'a> {
    /// Apply the text edits too.
    pub text: bool,
    /// Tokens worth inserting (column names, section headers, TOML keys…).
    pub dictionary: &'a [&'a [u8]],
    /// No input grows beyond this many bytes.
    pub max_len: usize,
}

impl Mutator<'_> {
    /// The input of `iteration`: the first `corpus.len()` iterations are the seeds unchanged,
    /// every later one a seed with a stack of edits.
    pub fn input(&self, corpus: &[Vec<u8>], target: &str, seed: u64, iteration: u64) -> Vec<u8> {
        if corpus.is_empty() {
            return Vec::new();
        }
        if (iteration as usize) < corpus.len() {
            return corpus[iteration as usize].clone();
        }
        let mut rng = input_rng(target, seed, iteration);
        let mut data = corpus[rng.below(corpus.len())].clone();
        let stack = 1u32 << rng.below(5).min(MAX_STACK.trailing_zeros() as usize);
        for _ in 0..stack {
            self.edit(&mut rng, &mut data, corpus);
        }
        data.truncate(self.max_len);
        data
    }

    /// Apply one edit.
    pub fn edit(&self, rng: &mut Rng, data: &mut Vec<u8>, corpus: &[Vec<u8>]) {
        if self.text && rng.chance(2) {
            text_edit(rng, data, corpus, self.dictionary);
        } else {
            byte_edit(rng, data, corpus, self.dictionary);
        }
        if data.len() > self.max_len {
            data.truncate(self.max_len);
        }
    }
}

fn pos(rng: &mut Rng, data: &[u8]) -> usize {
    rng.below(data.len() + 1)
}

/// A random chunk `[start, end)` of `data` (empty for empty data).
fn chunk(rng: &mut Rng, data: &[u8]) -> (usize, usize) {
    if data.is_empty() {
        return (0, 0);
    }
    let start = rng.below(data.len());
    let len = rng.small_len(data.len() - start);
    (start, start + len)
}

fn write_int(rng: &mut Rng, data: &mut [u8], value: u64) {
    let width = [1usize, 2, 4, 8][rng.below(4)];
    if data.len() < width {
        return;
    }
    let at = rng.below(data.len() - width + 1);
    if rng.chance(2) {
        data[at..at + width].copy_from_slice(&value.to_le_bytes()[..width]);
    } else {
        data[at..at + width].copy_from_slice(&value.to_be_bytes()[8 - width..]);
    }
}

fn interesting(rng: &mut Rng, len: usize) -> u64 {
    let len = len as u64;
    match rng.below(4) {
        0 => len.wrapping_add(rng.below(9) as u64).wrapping_sub(4),
        1 => (len.wrapping_mul(rng.below(5) as u64 + 1) / 2).wrapping_sub(rng.below(3) as u64),
        _ => {
            let v = INTERESTING[rng.below(INTERESTING.len())];
            match rng.below(4) {
                0 => v.wrapping_neg(),
                1 => !v,
                _ => v,
            }
        }
    }
}

fn byte_edit(rng: &mut Rng, data: &mut Vec<u8>, corpus: &[Vec<u8>], dictionary: &[&[u8]]) {
    match rng.below(14) {
        0 if !data.is_empty() => {
            let i = rng.below(data.len());
            data[i] ^= 1 << rng.below(8);
        }
        1 if !data.is_empty() => {
            let i = rng.below(data.len());
            data[i] = rng.next_u64() as u8;
        }
        2 if !data.is_empty() => {
            let i = rng.below(data.len());
            let delta = 1 + rng.below(35) as u8;
            data[i] = if rng.chance(2) { data[i].wrapping_add(delta) } else { data[i].wrapping_sub(delta) };
        }
        3 | 4 => {
            let v = interesting(rng, data.len());
            write_int(rng, data, v);
        }
        5 if !data.is_empty() => {
            let (a, b) = chunk(rng, data);
            data.drain(a..b);
        }
        6 => {
            let at = pos(rng, data);
            let n = rng.small_len(256);
            let fill: Vec<u8> = if rng.chance(2) {
                vec![rng.next_u64() as u8; n]
            } else {
                (0..n).map(|_| rng.next_u64() as u8).collect()
            };
            data.splice(at..at, fill);
        }
        7 if !data.is_empty() => {
            // Duplicate a chunk (repeat it, or copy it elsewhere).
            let (a, b) = chunk(rng, data);
            let piece = data[a..b].to_vec();
            let at = if rng.chance(2) { b } else { pos(rng, data) };
            let times = if rng.chance(4) { 1 + rng.below(16) } else { 1 };
            for _ in 0..times {
                data.splice(at..at, piece.iter().copied());
            }
        }
        8 if data.len() > 1 => {
            // Overwrite a chunk with another chunk of the same input.
            let (a, b) = chunk(rng, data);
            let piece = data[a..b].to_vec();
            let at = rng.below(data.len());
            let n = piece.len().min(data.len() - at);
            data[at..at + n].copy_from_slice(&piece[..n]);
        }
        9 => {
            // Splice: our prefix with another entry's suffix.
            let other = &corpus[rng.below(corpus.len())];
            let cut = pos(rng, data);
            let from = pos(rng, other);
            data.truncate(cut);
            data.extend_from_slice(&other[from..]);
        }
        10 => {
            // Insert a chunk of another entry.
            let other = &corpus[rng.below(corpus.len())];
            let (a, b) = chunk(rng, other);
            let at = pos(rng, data);
            data.splice(at..at, other[a..b].iter().copied());
        }
        11 if !data.is_empty() => {
            let keep = if rng.chance(2) { rng.below(data.len()) } else { data.len() - rng.small_len(data.len()) };
            data.truncate(keep);
        }
        12 if !dictionary.is_empty() => {
            let token = dictionary[rng.below(dictionary.len())];
            let at = pos(rng, data);
            if rng.chance(2) || at + token.len() > data.len() {
                data.splice(at..at, token.iter().copied());
            } else {
                data[at..at + token.len()].copy_from_slice(token);
            }
        }
        _ => {
            if !data.is_empty() {
                let i = rng.below(data.len());
                data[i] = [0u8, 0xff, 0x7f, 0x80, b'0', b'9', b'-', b'.'][rng.below(8)];
            }
        }
    }
}

/// Byte ranges of the numbers (digit runs with an optional sign, dot and exponent) in `data`.
fn numbers(data: &[u8]) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < data.len() {
        if data[i].is_ascii_digit() {
            let mut a = i;
            if a > 0 && (data[a - 1] == b'-' || data[a - 1] == b'+') {
                a -= 1;
            }
            while i < data.len() && (data[i].is_ascii_digit() || matches!(data[i], b'.' | b'e' | b'E')) {
                i += 1;
            }
            out.push((a, i));
        } else {
            i += 1;
        }
    }
    out
}

fn is_delimiter(b: u8) -> bool {
    matches!(b, b',' | b'\n' | b'\r' | b'"' | b' ' | b'\t' | b';' | b'=' | b'[' | b']' | b'{' | b'}' | b':')
}

/// Byte ranges of the fields (maximal runs between delimiters).
fn fields(data: &[u8]) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let mut start = 0;
    for (i, &b) in data.iter().enumerate() {
        if is_delimiter(b) {
            if i > start {
                out.push((start, i));
            }
            start = i + 1;
        }
    }
    if data.len() > start {
        out.push((start, data.len()));
    }
    out
}

/// Byte ranges of the lines, each with its newline.
fn lines(data: &[u8]) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let mut start = 0;
    for (i, &b) in data.iter().enumerate() {
        if b == b'\n' {
            out.push((start, i + 1));
            start = i + 1;
        }
    }
    if data.len() > start {
        out.push((start, data.len()));
    }
    out
}

fn pick(rng: &mut Rng, ranges: &[(usize, usize)]) -> Option<(usize, usize)> {
    if ranges.is_empty() { None } else { Some(ranges[rng.below(ranges.len())]) }
}

fn text_edit(rng: &mut Rng, data: &mut Vec<u8>, corpus: &[Vec<u8>], dictionary: &[&[u8]]) {
    match rng.below(12) {
        0 | 1 => {
            // A number becomes an interesting one (or a digit changes).
            if let Some((a, b)) = pick(rng, &numbers(data)) {
                if rng.chance(3) {
                    let i = a + rng.below(b - a);
                    data[i] = b"0123456789-."[rng.below(12)];
                } else {
                    data.splice(a..b, NUMBERS[rng.below(NUMBERS.len())].bytes());
                }
            }
        }
        2 => {
            if let Some((a, b)) = pick(rng, &fields(data)) {
                data.drain(a..b);
            }
        }
        3 => {
            // Duplicate a field with its delimiter.
            if let Some((a, b)) = pick(rng, &fields(data)) {
                let end = (b + 1).min(data.len());
                let piece = data[a..end].to_vec();
                data.splice(end..end, piece);
            }
        }
        4 => {
            // Replace a field with another field of this input or of a dictionary token.
            let fs = fields(data);
            if let Some((a, b)) = pick(rng, &fs) {
                let with = if !dictionary.is_empty() && rng.chance(2) {
                    dictionary[rng.below(dictionary.len())].to_vec()
                } else {
                    let (c, d) = pick(rng, &fs).unwrap_or((a, b));
                    data[c..d].to_vec()
                };
                data.splice(a..b, with);
            }
        }
        5 | 6 => {
            let d = DELIMITERS[rng.below(DELIMITERS.len())];
            let at = if rng.chance(2) {
                pos(rng, data)
            } else {
                pick(rng, &fields(data)).map_or(0, |(a, b)| if rng.chance(2) { a } else { b })
            };
            if rng.chance(4) && at < data.len() {
                data.splice(at..at + 1, d.bytes());
            } else {
                data.splice(at..at, d.bytes());
            }
        }
        7 => {
            if let Some((a, b)) = pick(rng, &lines(data)) {
                data.drain(a..b);
            }
        }
        8 => {
            if let Some((a, b)) = pick(rng, &lines(data)) {
                let piece = data[a..b].to_vec();
                let times = if rng.chance(4) { 2 + rng.below(64) } else { 1 };
                for _ in 0..times {
                    data.splice(b..b, piece.iter().copied());
                }
            }
        }
        9 => {
            // Swap two lines.
            let ls = lines(data);
            if ls.len() >= 2 {
                let (mut x, mut y) = (ls[rng.below(ls.len())], ls[rng.below(ls.len())]);
                if x.0 > y.0 {
                    std::mem::swap(&mut x, &mut y);
                }
                if x.1 <= y.0 {
                    let mut out = data[..x.0].to_vec();
                    out.extend_from_slice(&data[y.0..y.1]);
                    out.extend_from_slice(&data[x.1..y.0]);
                    out.extend_from_slice(&data[x.0..x.1]);
                    out.extend_from_slice(&data[y.1..]);
                    *data = out;
                }
            }
        }
        10 => {
            // A line of another entry.
            let other = &corpus[rng.below(corpus.len())];
            if let Some((a, b)) = pick(rng, &lines(other)) {
                let at = pick(rng, &lines(data)).map_or(0, |(s, _)| s);
                data.splice(at..at, other[a..b].iter().copied());
            }
        }
        _ => {
            if !dictionary.is_empty() {
                let token = dictionary[rng.below(dictionary.len())];
                let at = if rng.chance(2) { pick(rng, &lines(data)).map_or(0, |(s, _)| s) } else { pos(rng, data) };
                data.splice(at..at, token.iter().copied());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mutator() -> Mutator<'static> {
        Mutator { text: true, dictionary: &[b"Target", b"IMPRESSION:"], max_len: 1 << 16 }
    }

    /// The same (target, seed, iteration) gives the same input; different iterations differ.
    #[test]
    fn inputs_are_replayable() {
        let corpus = vec![b"patientId,x,y\nabc,1.5,20\n".to_vec(), b"\x00\x01\x02\x03".to_vec()];
        let m = mutator();
        for i in 0..200 {
            assert_eq!(m.input(&corpus, "t", 7, i), m.input(&corpus, "t", 7, i));
        }
        let distinct: std::collections::HashSet<Vec<u8>> = (2..202).map(|i| m.input(&corpus, "t", 7, i)).collect();
        assert!(distinct.len() > 150, "{} distinct inputs of 200", distinct.len());
        assert_ne!(m.input(&corpus, "t", 7, 50), m.input(&corpus, "t", 8, 50));
        assert_ne!(m.input(&corpus, "t", 7, 50), m.input(&corpus, "u", 7, 50));
    }

    /// The first iterations are the seeds themselves.
    #[test]
    fn seeds_come_first_unchanged() {
        let corpus = vec![b"a".to_vec(), b"bb".to_vec()];
        assert_eq!(mutator().input(&corpus, "t", 1, 0), b"a");
        assert_eq!(mutator().input(&corpus, "t", 1, 1), b"bb");
    }

    /// Every edit kind keeps to the size cap, on empty and tiny inputs too.
    #[test]
    fn edits_respect_the_cap_and_empty_inputs() {
        let corpus = vec![Vec::new(), b"1".to_vec(), vec![7u8; 100]];
        let m = Mutator { text: true, dictionary: &[b"x"], max_len: 64 };
        let mut rng = Rng::new(3);
        for _ in 0..20_000 {
            let mut data = corpus[rng.below(3)].clone();
            m.edit(&mut rng, &mut data, &corpus);
            assert!(data.len() <= 64);
        }
    }

    #[test]
    fn token_ranges() {
        assert_eq!(numbers(b"a,-12.5e3,x7"), vec![(2, 9), (11, 12)]);
        assert_eq!(fields(b"ab,c\n\"d\""), vec![(0, 2), (3, 4), (6, 7)]);
        assert_eq!(lines(b"a\nb"), vec![(0, 2), (2, 3)]);
    }
}
