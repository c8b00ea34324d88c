//! The bad-input corpus runner, shared by `tests/bad_inputs.rs` (the `mgca` binary) and
//! `reproductions/tests/bad_inputs.rs` (the `pretrain` binary): reads `cases.toml`, prepares
//! each case in its own temporary folder, runs the real binary and checks the exit code and the
//! words of its message. Book: the appendix "What happens when things go wrong".
//!
//! A case (`[[case]]` in `cases.toml`):
//! - `name`, `owner` (the part of the code that must make it pass: `cfg`, `readers`, `ckpt`),
//!   `why` (the finding it records);
//! - `before`: steps run in order, each an argv whose first word is a binary (`mgca`,
//!   `pretrain`: must exit 0) or a built-in: `gen NAME` (a generator of the calling test),
//!   `render SRC DST` (copy with placeholders expanded), `rm PATH`, `append PATH TEXT`,
//!   `truncate PATH FRACTION`;
//! - `command`: the argv under test; `exit`: its expected exit code;
//! - `words`: what stdout + stderr must contain (file name, line or field, a key word);
//!   `not_words`: what they must not contain;
//! - `absent` / `present`: paths that must not / must exist afterwards; `unchanged`: files
//!   whose bytes must be the same before and after the command.
//!
//! Placeholders in every string: `{tmp}` (the case's folder), `{corpus}` (`tests/bad_inputs`),
//! `{golden}` (`golden/`), and any the calling test adds.
//!
//! **Deviation:** none.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Owners whose cases are asserted; the others are only checked for being well-formed. The
/// environment variable `MGCA_BAD_INPUTS` (`all`, or a comma-separated list of owners)
/// overrides it.
pub const ENABLED_OWNERS: &[&str] = OWNERS;

/// Every owner a case may name.
pub const OWNERS: &[&str] = &["cfg", "readers", "ckpt"];

/// Exit code of a Rust panic.
const PANIC_EXIT: i32 = 101;

/// One case of the table.
#[derive(Debug, Clone)]
pub struct Case {
    pub name: String,
    pub owner: String,
    pub why: String,
    pub before: Vec<Vec<String>>,
    pub command: Vec<String>,
    pub exit: i32,
    pub words: Vec<String>,
    pub not_words: Vec<String>,
    pub absent: Vec<String>,
    pub present: Vec<String>,
    pub unchanged: Vec<String>,
}

/// `tests/bad_inputs` of the mgca package.
pub fn corpus_dir() -> PathBuf {
    // This file is compiled into tests of the root package and of `reproductions/`.
    let here = Path::new(env!("CARGO_MANIFEST_DIR"));
    let root = if here.join("tests/bad_inputs").is_dir() { here.to_path_buf() } else { here.join("..") };
    root.join("tests/bad_inputs")
}

fn strings(table: &toml::Table, key: &str, case: &str) -> Vec<String> {
    match table.get(key) {
        None => Vec::new(),
        Some(v) => v
            .as_array()
            .unwrap_or_else(|| panic!("case {case}: `{key}` is not an array"))
            .iter()
            .map(|s| s.as_str().unwrap_or_else(|| panic!("case {case}: `{key}` holds a non-string")).to_string())
            .collect(),
    }
}

/// Read `cases.toml`; panics (a test failure) on a malformed table.
pub fn read_cases() -> Vec<Case> {
    let path = corpus_dir().join("cases.toml");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let table: toml::Table = toml::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let known =
        ["name", "owner", "why", "before", "command", "exit", "words", "not_words", "absent", "present", "unchanged"];
    let cases: Vec<Case> = table["case"]
        .as_array()
        .expect("[[case]] entries")
        .iter()
        .map(|v| {
            let t = v.as_table().expect("a case is a table");
            let name = t["name"].as_str().expect("case name").to_string();
            if let Some(k) = t.keys().find(|k| !known.contains(&k.as_str())) {
                panic!("case {name}: unknown key `{k}`");
            }
            let before = t
                .get("before")
                .map(|b| {
                    b.as_array()
                        .expect("`before` is an array of argv arrays")
                        .iter()
                        .map(|step| {
                            step.as_array()
                                .expect("a step is an argv array")
                                .iter()
                                .map(|s| s.as_str().expect("argv strings").to_string())
                                .collect()
                        })
                        .collect()
                })
                .unwrap_or_default();
            let case = Case {
                owner: t["owner"].as_str().expect("owner").to_string(),
                why: t.get("why").and_then(|w| w.as_str()).unwrap_or_default().to_string(),
                before,
                command: strings(t, "command", &name),
                exit: t["exit"].as_integer().expect("exit") as i32,
                words: strings(t, "words", &name),
                not_words: strings(t, "not_words", &name),
                absent: strings(t, "absent", &name),
                present: strings(t, "present", &name),
                unchanged: strings(t, "unchanged", &name),
                name,
            };
            assert!(OWNERS.contains(&case.owner.as_str()), "case {}: unknown owner {}", case.name, case.owner);
            assert!(!case.command.is_empty() && !case.why.is_empty(), "case {}: command and why", case.name);
            assert!(case.exit == 0 || !case.words.is_empty(), "case {}: a failure must name its cause", case.name);
            case
        })
        .collect();
    let mut names: Vec<&str> = cases.iter().map(|c| c.name.as_str()).collect();
    names.sort_unstable();
    let n = names.len();
    names.dedup();
    assert_eq!(names.len(), n, "case names are unique");
    cases
}

/// Whether `owner`'s cases are asserted in this run.
pub fn enabled(owner: &str) -> bool {
    match std::env::var("MGCA_BAD_INPUTS") {
        Ok(v) if v == "all" => true,
        Ok(v) => v.split(',').any(|o| o.trim() == owner),
        Err(_) => ENABLED_OWNERS.contains(&owner),
    }
}

/// What a calling test supplies: its binaries, its generators and extra placeholders.
pub struct Harness<'a> {
    /// Binary name (`mgca`, `pretrain`) to its path.
    pub binaries: BTreeMap<&'static str, PathBuf>,
    /// `gen NAME` steps: `(name, tmp) -> Ok` once the files are written.
    pub generate: &'a dyn Fn(&str, &Path) -> Result<(), String>,
    /// Extra placeholders, e.g. `{minilm}`.
    pub placeholders: Vec<(String, String)>,
    /// An interim exit code accepted in place of 2 (see the caller), or `None`.
    pub interim_bad_input_exit: Option<i32>,
}

impl Harness<'_> {
    fn expand(&self, s: &str, tmp: &Path) -> String {
        let golden = corpus_dir().join("../../golden").canonicalize().expect("golden/");
        let mut out = s
            .replace("{tmp}", &tmp.display().to_string())
            .replace("{corpus}", &corpus_dir().display().to_string())
            .replace("{golden}", &golden.display().to_string());
        for (k, v) in &self.placeholders {
            out = out.replace(&format!("{{{k}}}"), v);
        }
        out
    }

    /// Whether this harness runs `case` (its command's binary is one of ours).
    pub fn runs(&self, case: &Case) -> bool {
        self.binaries.contains_key(case.command[0].as_str())
    }

    fn step(&self, case: &Case, argv: &[String], tmp: &Path) {
        let a: Vec<String> = argv.iter().map(|s| self.expand(s, tmp)).collect();
        macro_rules! ok {
            ($e:expr) => {
                $e.unwrap_or_else(|e| panic!("case {}: step {a:?}: {e}", case.name))
            };
        }
        match a[0].as_str() {
            "gen" => ok!((self.generate)(&a[1], tmp)),
            "render" => {
                let text = ok!(std::fs::read_to_string(&a[1]));
                ok!(std::fs::write(&a[2], self.expand(&text, tmp)));
            }
            "rm" => ok!(std::fs::remove_file(&a[1])),
            "append" => {
                let mut text = ok!(std::fs::read_to_string(&a[1]));
                text.push_str(&a[2]);
                ok!(std::fs::write(&a[1], text));
            }
            "truncate" => {
                let bytes = ok!(std::fs::read(&a[1]));
                let keep = (bytes.len() as f64 * ok!(a[2].parse::<f64>())) as usize;
                ok!(std::fs::write(&a[1], &bytes[..keep]));
            }
            binary => {
                let path = ok!(self.binaries.get(binary).ok_or(format!("no binary `{binary}` here")));
                let out = ok!(Command::new(path).args(&a[1..]).output());
                if !out.status.success() {
                    let text =
                        format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
                    panic!("case {}: step {a:?} failed: {text}", case.name);
                }
            }
        }
    }

    /// Prepare and run one case; returns the failures (empty: it passed).
    pub fn run(&self, case: &Case) -> Vec<String> {
        let tmp = std::env::temp_dir().join(format!("mgca-bad-{}-{}", std::process::id(), case.name));
        std::fs::remove_dir_all(&tmp).ok();
        std::fs::create_dir_all(&tmp).unwrap();
        for step in &case.before {
            self.step(case, step, &tmp);
        }
        let unchanged: Vec<(String, Option<Vec<u8>>)> = case
            .unchanged
            .iter()
            .map(|p| {
                let p = self.expand(p, &tmp);
                let bytes = std::fs::read(&p).ok();
                (p, bytes)
            })
            .collect();
        let argv: Vec<String> = case.command.iter().map(|s| self.expand(s, &tmp)).collect();
        let out = Command::new(&self.binaries[argv[0].as_str()])
            .args(&argv[1..])
            .env("RUST_BACKTRACE", "0")
            .output()
            .unwrap();
        let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        let mut failures = Vec::new();
        let code = out.status.code().unwrap_or(-1);
        let interim = case.exit == 2 && self.interim_bad_input_exit == Some(code);
        if code != case.exit && !interim {
            failures.push(format!("exit {code}, expected {}", case.exit));
        }
        if code == PANIC_EXIT || text.contains("panicked at") {
            failures.push("panicked".into());
        }
        for w in &case.words {
            let w = self.expand(w, &tmp);
            if !text.contains(&w) {
                failures.push(format!("message lacks `{w}`"));
            }
        }
        for w in &case.not_words {
            let w = self.expand(w, &tmp);
            if text.contains(&w) {
                failures.push(format!("message contains `{w}`"));
            }
        }
        for p in &case.absent {
            let p = self.expand(p, &tmp);
            if Path::new(&p).exists() {
                failures.push(format!("{p} exists"));
            }
        }
        for p in &case.present {
            let p = self.expand(p, &tmp);
            if !Path::new(&p).exists() {
                failures.push(format!("{p} is gone"));
            }
        }
        for (p, before) in unchanged {
            if std::fs::read(&p).ok() != before {
                failures.push(format!("{p} changed"));
            }
        }
        if !failures.is_empty() {
            failures.insert(0, format!("command {argv:?}\n--- output ---\n{text}\n---"));
        } else {
            std::fs::remove_dir_all(&tmp).ok();
        }
        failures
    }

    /// Run every enabled case this harness can run; panic with all failures at once. Returns
    /// the names of the cases run.
    pub fn run_all(&self, cases: &[Case]) -> Vec<String> {
        let mut report = Vec::new();
        let mut ran = Vec::new();
        for case in cases.iter().filter(|c| self.runs(c) && enabled(&c.owner)) {
            let failures = self.run(case);
            ran.push(case.name.clone());
            if !failures.is_empty() {
                report.push(format!("case {} (owner {}): {}", case.name, case.owner, failures.join("\n  ")));
            }
        }
        assert!(report.is_empty(), "{} bad-input case(s) failed:\n{}", report.len(), report.join("\n\n"));
        ran
    }
}
