//! `cargo xtask book`: check every `{{#include}}` of the book, then build it with a pinned
//! mdbook (installed into a cache folder if missing).
//!
//! mdbook itself only warns about a missing file or anchor and renders an empty block, so the
//! check is done here: every include must name an existing file and, when it names an anchor,
//! the file must hold `ANCHOR: name` and `ANCHOR_END: name` with code between them.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::Result;

/// The mdbook release the book is built with.
const MDBOOK_VERSION: &str = "0.5.4";

pub fn build(root: &Path, serve: bool) -> Result {
    let book = root.join("book");
    let problems = check_includes(&book.join("src"))?;
    if !problems.is_empty() {
        return Err(format!("the book has broken includes:\n  {}", problems.join("\n  ")));
    }
    let mdbook = mdbook()?;
    let mut cmd = Command::new(&mdbook);
    cmd.arg(if serve { "serve" } else { "build" }).arg(&book);
    eprintln!("xtask: {} {}", mdbook.display(), if serve { "serve" } else { "build" });
    let out = cmd.output().map_err(|e| format!("{}: {e}", mdbook.display()))?;
    let log = String::from_utf8_lossy(&out.stderr);
    eprint!("{log}");
    // mdbook reports unreadable includes as errors but may still exit 0.
    if !out.status.success() || log.lines().any(|l| l.contains("ERROR") || l.contains("WARN")) {
        return Err("mdbook reported errors or warnings (see above)".into());
    }
    eprintln!("xtask: book written to {}", book.join("book/index.html").display());
    Ok(())
}

/// Every problem with the `{{#include …}}` / `{{#rustdoc_include …}}` directives under `src`.
pub fn check_includes(src: &Path) -> Result<Vec<String>> {
    let mut problems = Vec::new();
    let mut stack = vec![src.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let entries = std::fs::read_dir(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        for entry in entries {
            let path = entry.map_err(|e| e.to_string())?.path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "md") {
                let text = std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
                for (line_no, line) in text.lines().enumerate() {
                    for directive in directives(line) {
                        if let Err(p) = check_one(&path, &directive) {
                            problems.push(format!("{}:{}: {p}", path.display(), line_no + 1));
                        }
                    }
                }
            }
        }
    }
    problems.sort();
    Ok(problems)
}

/// The arguments of the include directives on one line (`file:anchor` or `file`).
fn directives(line: &str) -> Vec<String> {
    let mut found = Vec::new();
    let mut rest = line;
    while let Some(start) = rest.find("{{#") {
        let after = &rest[start + 3..];
        let Some(end) = after.find("}}") else { break };
        let body = after[..end].trim();
        for kind in ["include ", "rustdoc_include "] {
            if let Some(arg) = body.strip_prefix(kind) {
                found.push(arg.trim().to_string());
            }
        }
        rest = &after[end + 2..];
    }
    found
}

fn check_one(chapter: &Path, directive: &str) -> std::result::Result<(), String> {
    let (file, anchor) = match directive.split_once(':') {
        Some((f, a)) => (f, Some(a)),
        None => (directive, None),
    };
    let target: PathBuf = chapter.parent().unwrap_or(Path::new(".")).join(file);
    let text = std::fs::read_to_string(&target).map_err(|e| format!("include `{file}`: {e}"))?;
    let Some(anchor) = anchor else { return Ok(()) };
    // Line ranges (`file:10:20`, `file:5`) are allowed but discouraged; names are anchors.
    if anchor.split(':').all(|p| p.is_empty() || p.chars().all(|c| c.is_ascii_digit())) {
        return Ok(());
    }
    let start = format!("ANCHOR: {anchor}");
    let end = format!("ANCHOR_END: {anchor}");
    let lines: Vec<&str> = text.lines().collect();
    let open = lines.iter().position(|l| l.trim_end().ends_with(&start));
    let close = lines.iter().position(|l| l.trim_end().ends_with(&end));
    match (open, close) {
        (Some(a), Some(b)) if b > a + 1 => Ok(()),
        (Some(_), Some(_)) => Err(format!("anchor `{anchor}` in `{file}` is empty")),
        _ => Err(format!("anchor `{anchor}` not found in `{file}`")),
    }
}

/// A pinned mdbook: the one on PATH if it is that version, else one installed into
/// `$HOME/.cache/mgca-tools` with `cargo install --locked`.
fn mdbook() -> Result<PathBuf> {
    let want = format!("mdbook v{MDBOOK_VERSION}");
    let version_of = |bin: &Path| {
        Command::new(bin).arg("--version").output().ok().map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
    };
    if version_of(Path::new("mdbook")).as_deref() == Some(want.as_str()) {
        return Ok(PathBuf::from("mdbook"));
    }
    let home = std::env::var_os("HOME").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("."));
    let tools = home.join(".cache/mgca-tools");
    let bin = tools.join("bin/mdbook");
    if version_of(&bin).as_deref() == Some(want.as_str()) {
        return Ok(bin);
    }
    let mut install = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    install
        .args(["install", "mdbook", "--version", MDBOOK_VERSION, "--locked", "--root"])
        .arg(&tools)
        // Its own target folder: never disturb the workspace's build.
        .env("CARGO_TARGET_DIR", tools.join("target"));
    crate::run(install, &format!("installing mdbook {MDBOOK_VERSION} into {}", tools.display()))?;
    Ok(bin)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_directives() {
        let d = directives("a {{#include ../../src/loss/ita.rs:ita}} b {{#rustdoc_include x.rs}}");
        assert_eq!(d, vec!["../../src/loss/ita.rs:ita".to_string(), "x.rs".to_string()]);
        assert!(directives("{{#title Intro}}").is_empty());
    }

    #[test]
    fn broken_includes_are_reported() {
        let dir = std::env::temp_dir().join(format!("xtask-book-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join("code.rs"),
            "// ANCHOR: good\nfn f() {}\n// ANCHOR_END: good\n// ANCHOR: empty\n// ANCHOR_END: empty\n",
        )
        .unwrap();
        std::fs::write(
            dir.join("ch.md"),
            "{{#include code.rs:good}}\n{{#include code.rs:missing}}\n{{#include code.rs:empty}}\n{{#include nofile.rs:x}}\n",
        )
        .unwrap();
        let problems = check_includes(&dir).unwrap();
        std::fs::remove_dir_all(&dir).ok();
        assert_eq!(problems.len(), 3, "{problems:?}");
        assert!(problems[0].contains(":2: anchor `missing` not found"));
        assert!(problems[1].contains(":3: anchor `empty`"));
        assert!(problems[2].contains(":4: include `nofile.rs`"));
    }

    /// The project's own book has no broken include (the same check `cargo xtask book` runs).
    #[test]
    fn the_book_includes_resolve() {
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("../book/src");
        let problems = check_includes(&src).unwrap_or_else(|e| panic!("reading {}: {e}", src.display()));
        assert_eq!(problems, Vec::<String>::new());
    }
}
