//! `mgca-fuzz` — the fuzzing driver: runs each target's inputs in batches in child processes,
//! so that a panic (caught in the child), an abort (a refused allocation, a stack overflow:
//! the child dies) or a hang (an input running past `--hang-ms`: the child's watchdog exits)
//! is found, isolated to one iteration, written to the crash folder and printed with the
//! command that replays it.
//!
//! ```text
//! mgca-fuzz run [--target NAME|all] [--execs N] [--seconds S] [--seed S] [--jobs J]
//! mgca-fuzz replay --target NAME FILE...        (in-process, panics printed)
//! mgca-fuzz replay --target NAME --seed S --iter I [--write FILE]
//! mgca-fuzz list | seeds OUT
//! ```
//!
//! Book: appendix "What happens when things go wrong" (fuzzing).
//!
//! **Deviation:** none (no reference counterpart).

use std::collections::{BTreeMap, HashSet};
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use mgca_fuzz::targets::{self, Scratch, TARGETS, Target};
use mgca_fuzz::{catch, install_silent_hook, load_corpus, mutate, mutator, one_line};

#[global_allocator]
static ALLOC: mgca_fuzz::alloc::Capped = mgca_fuzz::alloc::Capped;

/// The child's exit status when its watchdog finds a hang.
const HANG_EXIT: i32 = 86;
/// A child reports progress after this many inputs.
const MARK_EVERY: u64 = 256;
/// Default per-input time limit.
const DEFAULT_HANG_MS: u64 = 2_000;

fn usage() -> ExitCode {
    eprintln!(
        "usage:\n  mgca-fuzz run [--target NAME|all] [--execs N] [--seconds S] [--seed S] [--jobs J] [--corpus DIR] [--crashes DIR] [--hang-ms MS]\n  \
         mgca-fuzz replay --target NAME [--corpus DIR] FILE...\n  \
         mgca-fuzz replay --target NAME --seed S --iter I [--corpus DIR] [--write FILE]\n  \
         mgca-fuzz list\n  mgca-fuzz seeds OUT"
    );
    ExitCode::from(2)
}

/// `--name value` options and bare arguments.
struct Args {
    options: BTreeMap<String, String>,
    flags: HashSet<String>,
    free: Vec<String>,
}

impl Args {
    fn parse(raw: &[String]) -> Result<Self, String> {
        let (mut options, mut flags, mut free) = (BTreeMap::new(), HashSet::new(), Vec::new());
        let mut it = raw.iter();
        while let Some(a) = it.next() {
            if let Some(name) = a.strip_prefix("--") {
                if name == "trace" {
                    flags.insert(name.to_string());
                } else {
                    let v = it.next().ok_or_else(|| format!("--{name} needs a value"))?;
                    options.insert(name.to_string(), v.clone());
                }
            } else {
                free.push(a.clone());
            }
        }
        Ok(Self { options, flags, free })
    }

    fn get<T: std::str::FromStr>(&self, name: &str, default: T) -> Result<T, String> {
        match self.options.get(name) {
            None => Ok(default),
            Some(v) => v.replace('_', "").parse().map_err(|_| format!("--{name} {v:?} is not a valid value")),
        }
    }

    fn path(&self, name: &str, default: PathBuf) -> PathBuf {
        self.options.get(name).map(PathBuf::from).unwrap_or(default)
    }

    fn target(&self) -> Result<&'static Target, String> {
        let name = self.options.get("target").ok_or("--target NAME is required")?;
        targets::find(name).ok_or_else(|| format!("no target `{name}`; `mgca-fuzz list` lists them"))
    }
}

fn main() -> ExitCode {
    let raw: Vec<String> = std::env::args().skip(1).collect();
    let Some((command, rest)) = raw.split_first() else { return usage() };
    let args = match Args::parse(rest) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("mgca-fuzz: {e}");
            return usage();
        }
    };
    let result = match command.as_str() {
        "run" => run(&args),
        "child" => child(&args).map(|()| ExitCode::SUCCESS),
        "replay" => replay(&args),
        "list" => {
            for t in TARGETS {
                println!("{:<14} {}", t.name, t.about);
            }
            Ok(ExitCode::SUCCESS)
        }
        "seeds" => seeds(&args).map(|()| ExitCode::SUCCESS),
        _ => return usage(),
    };
    result.unwrap_or_else(|e| {
        eprintln!("mgca-fuzz: {e}");
        ExitCode::from(2)
    })
}

fn corpus_of(args: &Args, target: &Target) -> Result<(PathBuf, Vec<Vec<u8>>), String> {
    let dir = args.path("corpus", mgca_fuzz::corpus_root()).join(target.name);
    let corpus = load_corpus(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    if corpus.is_empty() {
        return Err(format!("{}: no seed files", dir.display()));
    }
    Ok((dir, corpus))
}

// ---------------------------------------------------------------------------------------------
// Child: run iterations start..end, report on stdout.

fn child(args: &Args) -> Result<(), String> {
    let target = args.target()?;
    let (_, corpus) = corpus_of(args, target)?;
    let seed: u64 = args.get("seed", 0)?;
    let (start, end): (u64, u64) = (args.get("start", 0)?, args.get("end", 0)?);
    let hang_ms: u64 = args.get("hang-ms", DEFAULT_HANG_MS)?;
    let stop_ms: u64 = args.get("stop-at-ms", 0)?;
    let trace = args.flags.contains("trace");
    install_silent_hook();
    let scratch = Scratch::new().map_err(|e| format!("scratch folder: {e}"))?;
    let m = mutator(target);

    // Watchdog: the iteration running (u64::MAX: none) and when it started (ms since `t0`).
    let t0 = Instant::now();
    let current = Arc::new(AtomicU64::new(u64::MAX));
    let started = Arc::new(AtomicU64::new(0));
    {
        let (current, started) = (current.clone(), started.clone());
        std::thread::spawn(move || {
            loop {
                std::thread::sleep(Duration::from_millis(50));
                let i = current.load(Ordering::Acquire);
                let since = (t0.elapsed().as_millis() as u64).saturating_sub(started.load(Ordering::Acquire));
                if i != u64::MAX && since > hang_ms && current.load(Ordering::Acquire) == i {
                    let mut out = std::io::stdout().lock();
                    let _ = writeln!(out, "H {i} {since}");
                    let _ = out.flush();
                    std::process::exit(HANG_EXIT);
                }
            }
        });
    }
    let say = |line: String| {
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{line}");
        let _ = out.flush();
    };
    let mut i = start;
    while i < end {
        if stop_ms > 0 && i % 16 == 0 && epoch_ms() > stop_ms {
            break;
        }
        let input = m.input(&corpus, target.name, seed, i);
        if trace {
            say(format!("S {i}"));
        }
        started.store(t0.elapsed().as_millis() as u64, Ordering::Release);
        current.store(i, Ordering::Release);
        let outcome = catch(target, &input, &scratch);
        current.store(u64::MAX, Ordering::Release);
        if let Err(p) = outcome {
            say(format!("P {i} {}\t{}", p.location, p.message));
        }
        i += 1;
        if (i - start).is_multiple_of(MARK_EVERY) {
            say(format!("M {i}"));
        }
    }
    say(format!("D {i}"));
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Parent.

/// What one child run reported.
#[derive(Default)]
struct ChildRun {
    /// Exited 0 (`D` line seen): the next iteration it did not run.
    done: Option<u64>,
    hang: Option<(u64, u64)>,
    /// All iterations below this one finished.
    mark: u64,
    /// Trace mode: the last iteration started.
    last_started: Option<u64>,
    panics: Vec<(u64, String, String)>,
    stderr: String,
    status: String,
}

struct Config {
    exe: PathBuf,
    target: &'static Target,
    corpus_dir: PathBuf,
    seed: u64,
    hang_ms: u64,
}

/// Wall-clock milliseconds since the Unix epoch. Run limits use the wall clock: on shared,
/// paused or throttled machines the monotonic clock was seen to lag far behind it.
fn epoch_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

fn spawn(c: &Config, start: u64, end: u64, trace: bool, stop_ms: u64) -> Result<ChildRun, String> {
    let mut cmd = Command::new(&c.exe);
    cmd.arg("child")
        .args(["--target", c.target.name])
        .arg("--corpus")
        .arg(c.corpus_dir.parent().expect("corpus root"))
        .args(["--seed", &c.seed.to_string(), "--start", &start.to_string(), "--end", &end.to_string()])
        .args(["--hang-ms", &c.hang_ms.to_string(), "--stop-at-ms", &stop_ms.to_string()])
        .env("RUST_BACKTRACE", "0")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if trace {
        cmd.arg("--trace");
    }
    let mut child = cmd.spawn().map_err(|e| format!("{}: {e}", c.exe.display()))?;
    let mut stderr = child.stderr.take().expect("piped");
    let err_reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });
    let mut run = ChildRun { mark: start, ..Default::default() };
    for line in BufReader::new(child.stdout.take().expect("piped")).lines() {
        let Ok(line) = line else { break };
        let mut parts = line.splitn(3, ' ');
        let (kind, n) = (parts.next().unwrap_or(""), parts.next().and_then(|n| n.parse::<u64>().ok()));
        let rest = parts.next().unwrap_or("");
        match (kind, n) {
            ("M", Some(n)) => run.mark = n,
            ("S", Some(n)) => run.last_started = Some(n),
            ("D", Some(n)) => run.done = Some(n),
            ("H", Some(n)) => run.hang = Some((n, rest.parse().unwrap_or(0))),
            ("P", Some(n)) => {
                let (location, message) = rest.split_once('\t').unwrap_or((rest, rest));
                run.panics.push((n, location.to_string(), message.to_string()));
            }
            _ => {}
        }
    }
    let status = child.wait().map_err(|e| e.to_string())?;
    run.stderr = err_reader.join().unwrap_or_default();
    run.status = status.to_string();
    if !status.success() {
        run.done = None;
    }
    Ok(run)
}

/// A crash signature from a dead child's stderr.
fn abort_signature(run: &ChildRun) -> String {
    let lines: Vec<&str> = run.stderr.lines().map(str::trim).filter(|l| !l.is_empty()).collect();
    // The first frame in mgca's code, when the abort printed a backtrace (allocation failures do).
    let frame = lines
        .iter()
        .filter_map(|l| l.split_once(": ").map(|(_, f)| f))
        .find(|f| f.starts_with("mgca::"))
        .map(|f| format!(" in {f}"))
        .unwrap_or_default();
    if let Some(l) = lines.iter().find(|l| l.contains("memory allocation of")) {
        let normalised: String = l
            .split_whitespace()
            .map(|w| if w.bytes().all(|b| b.is_ascii_digit()) { "N" } else { w })
            .collect::<Vec<_>>()
            .join(" ");
        return format!("abort: {normalised}{frame}");
    }
    if let Some(l) = lines.iter().find(|l| l.contains("overflowed its stack")) {
        return format!("abort: {l}{frame}");
    }
    match lines.last() {
        Some(l) => format!("abort ({}): {}", run.status, one_line(l)),
        None => format!("abort ({})", run.status),
    }
}

/// One kind of crash.
struct Crash {
    kind: &'static str,
    example: String,
    iterations: Vec<u64>,
    file: PathBuf,
}

#[derive(Default)]
struct Found {
    executions: u64,
    crashes: BTreeMap<String, Crash>,
    seen: HashSet<u64>,
}

struct Shared {
    config: Config,
    corpus: Vec<Vec<u8>>,
    crash_dir: PathBuf,
    found: Mutex<Found>,
}

impl Shared {
    fn record(&self, kind: &'static str, signature: String, example: String, iteration: u64) {
        let mut found = self.found.lock().expect("no poisoned lock");
        if !found.seen.insert(iteration) {
            return;
        }
        if let Some(c) = found.crashes.get_mut(&signature) {
            c.iterations.push(iteration);
            return;
        }
        let target = self.config.target;
        let input = mutator(target).input(&self.corpus, target.name, self.config.seed, iteration);
        let dir = self.crash_dir.join(target.name);
        let file = dir.join(format!("{kind}-{:016x}", mutate::fnv1a(&input)));
        if let Err(e) = std::fs::create_dir_all(&dir).and_then(|()| std::fs::write(&file, &input)) {
            eprintln!("mgca-fuzz: could not write {}: {e}", file.display());
        }
        eprintln!(
            "mgca-fuzz: {} {kind} at iteration {iteration}: {example}\n  input: {}\n  replay: mgca-fuzz replay --target {} {}   (or --seed {} --iter {iteration})",
            target.name,
            file.display(),
            target.name,
            file.display(),
            self.config.seed
        );
        found.crashes.insert(signature, Crash { kind, example, iterations: vec![iteration], file });
    }

    fn add_executions(&self, n: u64) {
        self.found.lock().expect("no poisoned lock").executions += n;
    }

    /// Run iterations a..b, isolating every abort and hang.
    /// `deadline`: wall-clock epoch milliseconds, 0 for none.
    fn range(&self, a: u64, b: u64, deadline: u64) -> Result<(), String> {
        let c = &self.config;
        let (mut start, mut trace) = (a, false);
        while start < b {
            // Each child gets what is left of the run's time (not a fresh allowance).
            if deadline > 0 && epoch_ms() >= deadline && !trace {
                break;
            }
            let stop_ms = deadline;
            // A traced run covers only the window after the last mark, where the death was.
            let end = if trace { b.min(start + MARK_EVERY) } else { b };
            let run = spawn(c, start, end, trace, if trace { 0 } else { stop_ms })?;
            for (i, location, message) in &run.panics {
                self.record("panic", format!("panic at {location}"), message.clone(), *i);
            }
            if let Some(done) = run.done {
                self.add_executions(done - start);
                if trace && done == end && end < b {
                    // The window ran clean alone (the death needed earlier inputs): go on.
                    (start, trace) = (end, false);
                    continue;
                }
                break;
            }
            if let Some((i, ms)) = run.hang {
                self.record("hang", format!("hang ({} ms limit)", c.hang_ms), format!("ran {ms} ms"), i);
                self.add_executions(i + 1 - start);
                (start, trace) = (i + 1, false);
                continue;
            }
            if !trace {
                // Died somewhere after the last mark: replay from it, input by input.
                self.add_executions(run.mark - start);
                (start, trace) = (run.mark, true);
                continue;
            }
            let culprit = run.last_started.unwrap_or(start);
            let alone = spawn(c, culprit, culprit + 1, true, 0)?;
            let signature = if alone.done.is_some() {
                format!("{} (only after earlier inputs in the same process)", abort_signature(&run))
            } else {
                abort_signature(&alone)
            };
            let example = one_line(
                alone.stderr.lines().find(|l| !l.trim().is_empty() && !l.starts_with("S ")).unwrap_or("(no message)"),
            );
            self.record("abort", signature, example, culprit);
            self.add_executions(culprit + 1 - start);
            (start, trace) = (culprit + 1, false);
        }
        Ok(())
    }
}

/// One target's figures.
struct Figures {
    name: &'static str,
    executions: u64,
    seconds: f64,
    crashes: usize,
    hangs: usize,
}

impl Figures {
    fn execs_per_s(&self) -> f64 {
        self.executions as f64 / self.seconds.max(1e-9)
    }
}

fn fuzz_target(args: &Args, target: &'static Target) -> Result<Figures, String> {
    let (corpus_dir, corpus) = corpus_of(args, target)?;
    let execs: u64 = args.get("execs", 100_000)?;
    let seconds: f64 = args.get("seconds", 0.0)?;
    let jobs: u64 = args.get::<u64>("jobs", 1)?.max(1);
    let batch: u64 = args.get("batch", (execs / (jobs * 20)).clamp(1_000, 200_000))?;
    let config = Config {
        exe: std::env::current_exe().map_err(|e| e.to_string())?,
        target,
        corpus_dir,
        seed: args.get("seed", 0)?,
        hang_ms: args.get("hang-ms", DEFAULT_HANG_MS)?,
    };
    let shared = Arc::new(Shared {
        config,
        corpus,
        crash_dir: args.path("crashes", PathBuf::from("target/fuzz-crashes")),
        found: Mutex::new(Found::default()),
    });
    let wall0 = epoch_ms();
    let deadline = if seconds > 0.0 { wall0 + (seconds * 1e3) as u64 } else { 0 };
    let next = Arc::new(AtomicU64::new(0));
    let workers: Vec<_> = (0..jobs)
        .map(|_| {
            let (shared, next) = (shared.clone(), next.clone());
            std::thread::spawn(move || -> Result<(), String> {
                loop {
                    if deadline > 0 && epoch_ms() >= deadline {
                        return Ok(());
                    }
                    let a = next.fetch_add(batch, Ordering::Relaxed);
                    if a >= execs {
                        return Ok(());
                    }
                    shared.range(a, (a + batch).min(execs), deadline)?;
                }
            })
        })
        .collect();
    for w in workers {
        w.join().map_err(|_| "a worker thread panicked".to_string())??;
    }
    let found = shared.found.lock().expect("no poisoned lock");
    let hangs = found.crashes.values().filter(|c| c.kind == "hang").count();
    for (signature, c) in &found.crashes {
        println!(
            "  {} {}: {signature} ({} input(s), first iteration {}: {})\n    {}\n    replay: mgca-fuzz replay --target {} {}",
            target.name,
            c.kind,
            c.iterations.len(),
            c.iterations.iter().min().unwrap_or(&0),
            c.example,
            c.file.display(),
            target.name,
            c.file.display()
        );
    }
    Ok(Figures {
        name: target.name,
        executions: found.executions,
        seconds: (epoch_ms() - wall0) as f64 / 1e3,
        crashes: found.crashes.len() - hangs,
        hangs,
    })
}

fn run(args: &Args) -> Result<ExitCode, String> {
    let which = args.options.get("target").map(String::as_str).unwrap_or("all");
    let chosen: Vec<&'static Target> = if which == "all" {
        TARGETS.iter().collect()
    } else {
        which
            .split(',')
            .map(|n| targets::find(n).ok_or_else(|| format!("no target `{n}`; `mgca-fuzz list` lists them")))
            .collect::<Result<_, _>>()?
    };
    let mut table = Vec::new();
    for t in chosen {
        eprintln!("mgca-fuzz: {} ({})", t.name, t.about);
        let f = fuzz_target(args, t)?;
        println!(
            "{:<14} {:>12} execs {:>8.1} s {:>10.0} execs/s {:>3} crashes {:>3} hangs",
            f.name,
            f.executions,
            f.seconds,
            f.execs_per_s(),
            f.crashes,
            f.hangs
        );
        table.push(f);
    }
    println!("\n| target | executions | seconds | execs/s | unique crashes | hangs |\n|---|---:|---:|---:|---:|---:|");
    for f in &table {
        println!(
            "| {} | {} | {:.0} | {:.0} | {} | {} |",
            f.name,
            f.executions,
            f.seconds,
            f.execs_per_s(),
            f.crashes,
            f.hangs
        );
    }
    let bad = table.iter().any(|f| f.crashes + f.hangs > 0);
    Ok(if bad { ExitCode::FAILURE } else { ExitCode::SUCCESS })
}

// ---------------------------------------------------------------------------------------------
// Replay and seeds.

fn replay(args: &Args) -> Result<ExitCode, String> {
    let target = args.target()?;
    let scratch = Scratch::new().map_err(|e| format!("scratch folder: {e}"))?;
    let mut inputs: Vec<(String, Vec<u8>)> = Vec::new();
    if let Some(iter) = args.options.get("iter") {
        let iter: u64 = iter.parse().map_err(|_| format!("--iter {iter:?}"))?;
        let (_, corpus) = corpus_of(args, target)?;
        let input = mutator(target).input(&corpus, target.name, args.get("seed", 0)?, iter);
        if let Some(out) = args.options.get("write") {
            std::fs::write(out, &input).map_err(|e| format!("{out}: {e}"))?;
            eprintln!("mgca-fuzz: wrote {out} ({} bytes)", input.len());
        }
        inputs.push((format!("iteration {iter}"), input));
    }
    for f in &args.free {
        inputs.push((f.clone(), std::fs::read(f).map_err(|e| format!("{f}: {e}"))?));
    }
    if inputs.is_empty() {
        return Err("nothing to replay: give FILE... or --iter I".into());
    }
    let mut failed = 0;
    for (name, input) in &inputs {
        // The default hook prints the panic; an abort ends the process with its message.
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| (target.run)(input, &scratch))) {
            Ok(()) => println!("{name}: ok ({} bytes)", input.len()),
            Err(_) => {
                println!("{name}: PANIC");
                failed += 1;
            }
        }
    }
    Ok(if failed > 0 { ExitCode::FAILURE } else { ExitCode::SUCCESS })
}

/// Write small image seeds (DICOM through `write_dicom`, JPEG/PNG through `image`) to `OUT`.
fn seeds(args: &Args) -> Result<(), String> {
    use mgca::data::image::write_dicom;
    use mgca::data::resize::Gray;
    let out = PathBuf::from(args.free.first().ok_or("seeds OUT: where to write")?);
    let (dicom, jpeg) = (out.join("dicom"), out.join("jpeg"));
    for d in [&dicom, &jpeg] {
        std::fs::create_dir_all(d).map_err(|e| format!("{}: {e}", d.display()))?;
    }
    let gradient = |h: usize, w: usize| {
        Gray::new(h, w, (0..h * w).map(|i| ((i / w) * 255 / h.max(1) + (i % w) * 3) as u8).collect())
    };
    let bad = |p: &Path, e: String| format!("{}: {e}", p.display());
    for (name, h, w, sixteen, mono1) in [
        ("u8_16x12.dcm", 16, 12, false, false),
        ("u16_12x16.dcm", 12, 16, true, false),
        ("mono1_8x8.dcm", 8, 8, false, true),
    ] {
        let p = dicom.join(name);
        write_dicom(&p, &gradient(h, w), "1.2.826.0.1.3680043.8.498.99.1", sixteen, mono1)
            .map_err(|e| e.to_string())?;
    }
    let g = gradient(24, 20);
    let luma = image::GrayImage::from_raw(20, 24, g.pixels.clone()).ok_or("gray image")?;
    let rgb = image::RgbImage::from_fn(16, 12, |x, y| image::Rgb([(x * 15) as u8, (y * 20) as u8, 128]));
    let save = |img: image::DynamicImage, name: &str| -> Result<(), String> {
        let p = jpeg.join(name);
        img.save(&p).map_err(|e| bad(&p, e.to_string()))
    };
    save(image::DynamicImage::ImageLuma8(luma.clone()), "gray_24x20.jpg")?;
    save(image::DynamicImage::ImageRgb8(rgb.clone()), "rgb_12x16.jpg")?;
    save(image::DynamicImage::ImageLuma8(luma), "gray_24x20.png")?;
    save(image::DynamicImage::ImageRgb8(rgb), "rgb_12x16.png")?;
    let wide = image::GrayImage::from_fn(64, 3, |x, _| image::Luma([(x * 4) as u8]));
    save(image::DynamicImage::ImageLuma8(wide), "wide_3x64.png")?;
    // The synthetic datasets' label files, reports and images (heads are taken by hand).
    mgca::data::synth::write_all(&out.join("synth"), mgca::data::synth::Scale::Tiny, 0).map_err(|e| e.to_string())?;
    eprintln!("mgca-fuzz: seeds in {}", out.display());
    Ok(())
}
