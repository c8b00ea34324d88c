//! Helpers shared by the `mgca` binary's integration tests: where the committed golden files
//! are, a scratch folder per test, and the binary itself.
//!
//! Not every test crate that includes this module uses every helper, hence the `dead_code`
//! allowances.

use std::path::{Path, PathBuf};
use std::process::Command;

/// `path` under the repository's `golden/` folder (`golden("pytorch/resnet/x.safetensors")`).
#[allow(dead_code)]
pub fn golden(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("golden").join(path)
}

/// The `.safetensors` files of the golden folder `dir`, sorted.
#[allow(dead_code)]
pub fn golden_cases(dir: &str) -> Vec<PathBuf> {
    let mut cases: Vec<PathBuf> = std::fs::read_dir(golden(dir))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "safetensors"))
        .collect();
    cases.sort();
    cases
}

/// A folder under the system's temporary folder for one test, unique to this test crate
/// (`crate_tag`), the process and `name`.
#[allow(dead_code)]
pub fn scratch(crate_tag: &str, name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("mgca-{crate_tag}-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The `mgca` binary, as a user runs it.
#[allow(dead_code)]
pub fn mgca() -> Command {
    Command::new(env!("CARGO_BIN_EXE_mgca"))
}

/// Run `f` alone among this test crate's run-level tests, on a rayon pool of its own: a run's
/// initialisation and dropout masks draw from the backend's one global generator (burn-flex
/// keeps a single seeded generator per process), so another test drawing random numbers at the
/// same time would change the run; and parallel reductions should split as in the binaries.
/// Each run-level golden test is an integration-test crate of its own for the same reason
/// (cargo runs test crates one after another).
#[allow(dead_code)]
pub fn alone<T: Send>(f: impl FnOnce() -> T + Send) -> T {
    static ONE_RUN_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _guard = ONE_RUN_AT_A_TIME.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    rayon::ThreadPoolBuilder::new().num_threads(threads).build().expect("a thread pool").install(f)
}

/// `path` under the repository's root (`repo("reproductions/configs/detection")`).
#[allow(dead_code)]
pub fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

/// The rows of the smoke tier's golden run file `golden/runs/smoke/<file>`, each a map from
/// column to text.
#[allow(dead_code)]
pub fn golden_rows(file: &str) -> Vec<std::collections::HashMap<String, String>> {
    let path = repo("golden/runs/smoke").join(file);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (run `cargo xtask golden bless`)", path.display()));
    let mut lines = text.lines();
    let header: Vec<String> = lines.next().expect("a header").split(',').map(String::from).collect();
    lines.map(|l| header.iter().cloned().zip(l.split(',').map(String::from)).collect()).collect()
}

/// A golden row's `column` as a number (NaN when it is not one).
#[allow(dead_code)]
pub fn number(row: &std::collections::HashMap<String, String>, column: &str) -> f64 {
    row[column].parse().unwrap_or(f64::NAN)
}

/// A replayed value for a snapshot: the golden value when the two agree within `tolerance`
/// (or are both NaN), else both, so the snapshot changes exactly when a value leaves it.
#[allow(dead_code)]
pub fn shown(replayed: f64, golden: f64, tolerance: f64, decimals: usize) -> String {
    let same = (replayed - golden).abs() <= tolerance || (replayed.is_nan() && golden.is_nan());
    if same { format!("{golden:.decimals$}") } else { format!("{replayed:.decimals$} (golden {golden:.decimals$})") }
}
