//! The `mgca` command line: argument parsing, calls into the library, and exit codes. Every
//! computation lives in the library ([`mgca::parity`], [`mgca::model::import`],
//! [`mgca::data`]); this file only maps its results and errors to output and exit status.
//!
//! `mgca parity losses --input IN.safetensors --output OUT.safetensors` runs the MGCA objective
//! (forward and backward, CPU) on a case laid out like the reference fixtures and writes our
//! outputs and gradients in the same layout; if the input carries the reference's outputs, it
//! also prints how closely they agree (book: "Parity with the reference").
//!
//! `mgca parity vit --weights W --heads H --input X --output O` runs a timm/DeiT-named ViT on
//! `X:input` `[N, 3, S, S]` and writes `final_norm_output` and
//! `last_block_attention_cls_mean_heads` (book: "Image encoder: ViT-B/16").
//!
//! `mgca parity resnet --weights W --input X --output O [--mode eval|train] [--no-upsample]` runs
//! a torchvision-named ResNet on `X:input` `[N, 3, 224, 224]` (up-sampled to 299 px as MGCA does,
//! unless `--no-upsample`) and writes `global` `[N, 2048]` and `local` `[N, 361, 1024]`
//! (book: "Image encoder: ResNet-50").
//!
//! `mgca parity bert --model DIR --text-file T --max-length L --positions standard|reference
//! --output O` tokenises each line of `T` and runs the BERT in `DIR` (`config.json`,
//! `model.safetensors`, `tokenizer.json` or `vocab.txt`), writing `input_ids`,
//! `last_hidden_state` and `last_layer_attention_cls_mean_heads` (book: "Text encoder: BERT and
//! the tokenizer").
//!
//! `mgca parity metrics --input X.safetensors --output Y.safetensors` computes AUROC (per class
//! and macro), accuracy and detection mAP from the scores, labels and boxes the input holds; if it also carries
//! scikit-learn's or torchmetrics' outputs, it prints the agreement (book: "Parity with the reference").
//!
//! `mgca weights import CKPT --layout deit|torchvision-resnet|bio-clinicalbert|mgca-lightning|smp-unet
//! [--keymap FILE] [--preset reference|smoke] [--output OUT.safetensors]` reads a published
//! checkpoint (`.pth`, `.bin`, `.ckpt`, `.safetensors`), maps its keys through the layout's
//! table, loads it into the module it initialises, reports what happened to every key, and
//! optionally writes the tensors under mgca-rs names (book: "Checkpoints and weight loading").
//!
//! Reference: the commands check components of `mgca/models/mgca/mgca_module.py`, `MGCA`, and
//! `mgca/models/backbones/encoder.py`, at HKU-MedAI/MGCA `680fe4a6ee0c`.
//!
//! **Deviation:** none. Exit status: 0 agreement (or nothing to compare), 1 disagreement,
//! 2 bad input (the message names the file, tensor or checkpoint key). No input panics the
//! `parity` commands: head counts, ranks, lengths and hyperparameters are checked first, and a
//! loss case whose outputs would not be finite exits 2 naming the cause.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use mgca::backend::{Cpu, cpu_device};
use mgca::config::MgcaConfig;
use mgca::data::prepare;
use mgca::loss::CtaEngine;
use mgca::model::batchnorm::Mode;
use mgca::model::bert::PositionIds;
use mgca::model::import::{Architecture, import};
use mgca::parity::encoders::{self, EncoderRun};
use mgca::parity::metrics::MetricsCase;
use mgca::parity::segmentation::SegLossCase;
use mgca::parity::yolo::YoloCase;
use mgca::parity::{Agreement, LossCase, ParityError, SCALARS};
use mgca::tensor_file::TensorFile;
use mgca::weights::keymap::{KeyMap, Layout};

#[derive(Parser)]
#[command(name = "mgca", version, about = "MGCA reproduced in Rust")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Check a component against tensors produced by the reference implementation.
    #[command(subcommand)]
    Parity(Parity),
    /// Read published checkpoints.
    #[command(subcommand)]
    Weights(Weights),
    /// Prepare and verify the datasets' splits.
    #[command(subcommand)]
    Data(Data),
}

#[derive(Subcommand)]
enum Data {
    /// Build the reference's splits and training subsets from a dataset's published files.
    Prepare {
        /// Which dataset.
        #[arg(value_enum)]
        dataset: prepare::Dataset,
        /// What the splits are for.
        #[arg(long, value_enum)]
        task: prepare::Task,
        /// The dataset's folder, in its published layout.
        #[arg(long)]
        root: PathBuf,
        /// Where to write train/valid/test.csv, train_1pct/10pct.csv and manifest.json.
        #[arg(long)]
        out: PathBuf,
        /// Fix the reference's split leaks instead of reproducing them.
        #[arg(long)]
        fix_leaks: bool,
        /// A row whose image is missing: stop (`fail`) or drop and count it (`skip`).
        #[arg(long, value_enum, default_value_t = prepare::OnBad::Fail)]
        on_bad: prepare::OnBad,
        /// Do not check that the images exist (label files only, e.g. before downloading images).
        #[arg(long)]
        skip_image_check: bool,
        /// Object-CXR: the polygon-box table computed with Shapely (golden/python/objectcxr/polygon_boxes.py).
        #[arg(long)]
        polygon_boxes: Option<PathBuf>,
    },
    /// Decode every image of a split once into a packed 256 × 256 cache the loader reads.
    Cache {
        /// A split CSV with a `path` column (e.g. OUT/train.csv from `prepare`).
        #[arg(long)]
        manifest: PathBuf,
        /// The dataset's folder the paths are relative to.
        #[arg(long)]
        root: PathBuf,
        /// The cache file to write (an index CSV is written beside it).
        #[arg(long)]
        out: PathBuf,
        /// An unreadable image: stop (`fail`) or record it as skipped (`skip`).
        #[arg(long, value_enum, default_value_t = prepare::OnBad::Fail)]
        on_bad: prepare::OnBad,
    },
    /// Write miniature synthetic copies of the datasets in their published layouts.
    Synth {
        /// Where to write (`OUT/mimic`, `OUT/chexpert`, `OUT/rsna`, `OUT/covidx`, `OUT/siim`, `OUT/object-CXR`).
        #[arg(long)]
        out: PathBuf,
        /// `tiny` (seconds) or `small`.
        #[arg(long, value_enum, default_value_t = mgca::data::synth::Scale::Tiny)]
        scale: mgca::data::synth::Scale,
        /// Everything is deterministic in the seed.
        #[arg(long, default_value_t = 0)]
        seed: u32,
    },
    /// Recompute a prepared folder from its manifest and compare.
    Verify {
        /// A folder written by `mgca data prepare`.
        out: PathBuf,
    },
}

#[derive(Subcommand)]
enum Weights {
    /// Import a checkpoint: read, rename through a key table, load, and report every key.
    Import {
        /// The checkpoint: torch.save zip (`.pth`, `.bin`, `.ckpt`), legacy torch.save, or safetensors.
        checkpoint: PathBuf,
        /// Which published layout it has.
        #[arg(long, value_enum)]
        layout: LayoutArg,
        /// A key table to use instead of the layout's built-in one (same syntax).
        #[arg(long)]
        keymap: Option<PathBuf>,
        /// Where attention-head counts and the ResNet up-sampling come from (no tensor records them).
        #[arg(long, value_enum, default_value_t = PresetArg::Reference)]
        preset: PresetArg,
        /// Write the loaded tensors under mgca-rs names (float32 safetensors).
        #[arg(long)]
        output: Option<PathBuf>,
    },
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum LayoutArg {
    Deit,
    TorchvisionResnet,
    BioClinicalbert,
    MgcaLightning,
    SmpUnet,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum PresetArg {
    Reference,
    Smoke,
}

#[derive(Subcommand)]
enum Parity {
    /// The whole objective (ITA, CTA, CPA with Sinkhorn), forward and backward.
    Losses {
        /// A case: `in.*` tensors and the JSON metadata key `fixture` (`encoder`, `hparams`).
        #[arg(long)]
        input: PathBuf,
        /// Where to write `out.*` scalars and `grad.*` gradients (float32 safetensors).
        #[arg(long)]
        output: PathBuf,
        /// How CTA is computed: the fused CPU kernel, or burn's autodiff graph.
        #[arg(long, value_enum, default_value_t = Engine::Fused)]
        engine: Engine,
    },
    /// The ViT image encoder, forward, from timm/DeiT-named weights.
    Vit {
        /// A state dict with timm/DeiT key names (safetensors, or a torch.save file such as DeiT's `.pth`).
        #[arg(long)]
        weights: PathBuf,
        /// Attention heads (the weights do not record them).
        #[arg(long)]
        heads: usize,
        /// A safetensors file holding `input` `[N, 3, S, S]`.
        #[arg(long)]
        input: PathBuf,
        /// Where to write `final_norm_output` and `last_block_attention_cls_mean_heads`.
        #[arg(long)]
        output: PathBuf,
    },
    /// The ResNet image encoder, forward, from torchvision-named weights.
    Resnet {
        /// A state dict with torchvision key names (safetensors or a torch.save file).
        #[arg(long)]
        weights: PathBuf,
        /// A safetensors file holding `input` `[N, 3, S, S]`.
        #[arg(long)]
        input: PathBuf,
        /// Where to write `global` (pooled layer 4) and `local` (layer-3 tokens).
        #[arg(long)]
        output: PathBuf,
        /// BatchNorm with running statistics (`eval`) or batch statistics (`train`).
        #[arg(long, value_enum, default_value_t = BnMode::Eval)]
        mode: BnMode,
        /// Skip MGCA's bilinear up-sampling to 299 px (as detection and segmentation do).
        #[arg(long)]
        no_upsample: bool,
    },
    /// The BERT text encoder and its tokenizer, forward, from a Hugging Face model folder.
    Bert {
        /// A folder with `config.json`, `model.safetensors` and `tokenizer.json` or `vocab.txt`.
        #[arg(long)]
        model: PathBuf,
        /// One sentence per line.
        #[arg(long)]
        text_file: PathBuf,
        /// Truncate and pad every sentence to this many tokens.
        #[arg(long, default_value_t = 112)]
        max_length: usize,
        /// `reference`: every token at position 0 (the reference's bug); `standard`: 0, 1, 2, ….
        #[arg(long, value_enum)]
        positions: Positions,
        /// Where to write `input_ids`, `last_hidden_state`, `last_layer_attention_cls_mean_heads`.
        #[arg(long)]
        output: PathBuf,
    },
    /// The YOLO detection loss, its gradients and the detections after NMS, from head outputs.
    Yolo {
        /// A case: `yolo.out0|1|2` f32 `[B, 18, G, G]` (G = 7, 14, 28) and `yolo.targets` f32
        /// `[B, T, 5]` (class, cx, cy, w, h normalised; all-zero rows are padding).
        #[arg(long)]
        input: PathBuf,
        /// Where to write `yolo.loss`, `yolo.grad.out0|1|2` and `yolo.detections` `[D, 8]`.
        #[arg(long)]
        output: PathBuf,
    },
    /// The segmentation loss (10·focal − ln soft Dice), its terms and its gradient, from logits.
    Segloss {
        /// A case: `seg.logits` and `seg.targets` f32 `[B, H, W]` (targets in [0, 1]).
        #[arg(long)]
        input: PathBuf,
        /// Where to write `seg.loss`, `seg.focal`, `seg.dice_coef` and `seg.grad.logits`.
        #[arg(long)]
        output: PathBuf,
    },
    /// AUROC (per class and macro), top-1 accuracy, detection mAP and segmentation Dice.
    Metrics {
        /// A case: `auroc.scores` and `auroc.labels` f32 `[N, C]`, and/or `accuracy.scores` f32
        /// `[N, C]` and `accuracy.labels` i64 `[N]`, and/or `map.pred_boxes` f32 `[P, 4]`,
        /// `map.pred_scores` f32 `[P]`, `map.pred_image` i64 `[P]`, `map.gt_boxes` f32 `[G, 4]`,
        /// `map.gt_image` i64 `[G]`, `map.num_images` i64 `[]`, and/or `dice.probs` and
        /// `dice.targets` f32 `[N, H, W]` and `dice.batch_size` i64 `[]`.
        #[arg(long)]
        input: PathBuf,
        /// Where to write `auroc.per_class`, `auroc.macro`, `accuracy`, `map.map`,
        /// `map.per_threshold`, `dice.per_image` and `dice.epoch` (float32 safetensors), for the
        /// groups the case holds.
        #[arg(long)]
        output: PathBuf,
    },
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum Positions {
    Standard,
    Reference,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum BnMode {
    Eval,
    Train,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum Engine {
    /// The fused CPU kernel with hand-written gradients (fast).
    Fused,
    /// Tensor operations differentiated by burn's autodiff.
    Graph,
}

fn main() -> ExitCode {
    mgca::backend::tune_allocator();
    match Cli::parse().command {
        Command::Parity(Parity::Losses { input, output, engine }) => {
            let engine = match engine {
                Engine::Fused => CtaEngine::FusedCpu,
                Engine::Graph => CtaEngine::Graph,
            };
            parity_losses(&input, &output, engine)
        }
        Command::Parity(Parity::Vit { weights, heads, input, output }) => {
            bad_input(encoders::vit(&weights, heads, &input, &output).map(print_run))
        }
        Command::Parity(Parity::Metrics { input, output }) => parity_metrics(&input, &output),
        Command::Parity(Parity::Yolo { input, output }) => parity_yolo(&input, &output),
        Command::Parity(Parity::Segloss { input, output }) => parity_segloss(&input, &output),
        Command::Data(Data::Prepare { dataset, task, root, out, fix_leaks, on_bad, skip_image_check, polygon_boxes }) => {
            let options = prepare::PrepareOptions {
                dataset,
                task,
                root,
                fix_leaks,
                on_bad,
                check_images: !skip_image_check,
                polygon_boxes,
            };
            bad_input(data_prepare(&options, &out))
        }
        Command::Data(Data::Cache { manifest, root, out, on_bad }) => bad_input(
            mgca::data::cache::build(&manifest, &root, &out, 256, on_bad)
                .map(|r| {
                    println!(
                        "cached {} image(s) into {} ({} skipped)",
                        r.rows - r.skipped.len(),
                        out.display(),
                        r.skipped.len()
                    );
                    for (row, path, reason) in &r.skipped {
                        println!("  skipped row {row}: {path}: {reason}");
                    }
                })
                .map_err(|e| e.to_string()),
        ),
        Command::Data(Data::Synth { out, scale, seed }) => bad_input(
            mgca::data::synth::write_all(&out, scale, seed)
                .map(|()| {
                    println!(
                        "wrote synthetic MIMIC-CXR, CheXpert, RSNA, COVIDx, SIIM and Object-CXR ({scale:?}, seed {seed}) under {}",
                        out.display()
                    )
                })
                .map_err(|e| e.to_string()),
        ),
        Command::Data(Data::Verify { out }) => match prepare::verify(&out) {
            Ok(v) if v.differences.is_empty() => {
                println!("{}: {v}", out.display());
                ExitCode::SUCCESS
            }
            Ok(v) => {
                print!("{}: differences:\n{v}", out.display());
                ExitCode::from(1)
            }
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::from(2)
            }
        },
        Command::Weights(Weights::Import { checkpoint, layout, keymap, preset, output }) => {
            let layout = match layout {
                LayoutArg::Deit => Layout::Deit,
                LayoutArg::TorchvisionResnet => Layout::TorchvisionResnet,
                LayoutArg::BioClinicalbert => Layout::BioClinicalBert,
                LayoutArg::MgcaLightning => Layout::MgcaLightning,
                LayoutArg::SmpUnet => Layout::SmpUnet,
            };
            let preset = match preset {
                PresetArg::Reference => MgcaConfig::reference(),
                PresetArg::Smoke => MgcaConfig::smoke(),
            };
            bad_input(weights_import(&checkpoint, layout, keymap.as_deref(), &preset, output.as_deref()))
        }
        Command::Parity(Parity::Resnet { weights, input, output, mode, no_upsample }) => {
            let mode = match mode {
                BnMode::Eval => Mode::Eval,
                BnMode::Train => Mode::Train,
            };
            bad_input(encoders::resnet(&weights, &input, &output, mode, !no_upsample).map(print_run))
        }
        Command::Parity(Parity::Bert { model, text_file, max_length, positions, output }) => {
            let positions = match positions {
                Positions::Standard => PositionIds::Standard,
                Positions::Reference => PositionIds::Reference,
            };
            bad_input(encoders::bert(&model, &text_file, max_length, positions, &output).map(print_run))
        }
    }
}

fn parity_losses(input: &Path, output: &Path, engine: CtaEngine) -> ExitCode {
    let case = match LossCase::read(input) {
        Ok(case) => case,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let ours = case.run(engine);
    if let Err(e) = case.check_finite(&ours).and_then(|()| ours.write(output).map_err(Into::into)) {
        eprintln!("error: {e}");
        return ExitCode::from(2);
    }
    println!("case {} ({:?} branch, CTA engine {engine:?})", input.display(), case.encoder);
    for name in SCALARS {
        println!("  {name:<16} {:>12.6}", ours.tensors[name].values[0]);
    }
    println!("wrote {}", output.display());
    verdict(case.compare(&ours), "the reference outputs")
}

/// Print the agreement lines, if any, and `PASS` (exit 0) or `FAIL` (exit 1); nothing to
/// compare exits 0.
fn verdict(lines: Option<Vec<Agreement>>, with: &str) -> ExitCode {
    let Some(lines) = lines else { return ExitCode::SUCCESS };
    println!("agreement with {with} in the input:");
    for line in &lines {
        println!("  {line}");
    }
    if lines.iter().all(|l| l.ok) {
        println!("PASS");
        ExitCode::SUCCESS
    } else {
        println!("FAIL");
        ExitCode::from(1)
    }
}

/// A case command's common course: read (bad input: exit 2), run, write (failure: exit 2),
/// print `summary` of our outputs, then the agreement with the reference outputs the case holds.
fn run_case<C>(
    input: &Path,
    output: &Path,
    case: Result<C, ParityError>,
    run: impl FnOnce(&C) -> TensorFile,
    summary: impl FnOnce(&TensorFile),
    compare: impl FnOnce(&C, &TensorFile) -> Option<Vec<Agreement>>,
    with: &str,
) -> ExitCode {
    let case = match case {
        Ok(case) => case,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let ours = run(&case);
    if let Err(e) = ours.write(output) {
        eprintln!("error: {e}");
        return ExitCode::from(2);
    }
    println!("case {}", input.display());
    summary(&ours);
    println!("wrote {}", output.display());
    verdict(compare(&case, &ours), with)
}

fn parity_metrics(input: &Path, output: &Path) -> ExitCode {
    let summary = |ours: &TensorFile| {
        for (name, t) in &ours.tensors {
            let values: Vec<String> = t.values.iter().map(|v| format!("{v:.6}")).collect();
            println!("  {name:<16} {}", values.join(" "));
        }
    };
    let with = "the reference's outputs (scikit-learn, torchmetrics)";
    run_case(input, output, MetricsCase::read(input), MetricsCase::run, summary, MetricsCase::compare, with)
}

fn parity_yolo(input: &Path, output: &Path) -> ExitCode {
    let summary = |ours: &TensorFile| {
        println!("  yolo.loss        {:.6}", ours.tensors["yolo.loss"].values[0]);
        println!("  yolo.detections  {} rows", ours.tensors["yolo.detections"].shape[0]);
    };
    run_case(input, output, YoloCase::read(input), YoloCase::run, summary, YoloCase::compare, "the reference's outputs")
}

fn parity_segloss(input: &Path, output: &Path) -> ExitCode {
    let summary = |ours: &TensorFile| {
        for name in ["seg.loss", "seg.focal", "seg.dice_coef"] {
            println!("  {name:<14} {:.6}", ours.tensors[name].values[0]);
        }
    };
    let with = "the reference's outputs";
    run_case(input, output, SegLossCase::read(input), SegLossCase::run, summary, SegLossCase::compare, with)
}

/// Print what an encoder run did: the checkpoint keys it left, then its summary.
fn print_run(run: EncoderRun) {
    if !run.unused.is_empty() {
        println!("unused checkpoint keys: {}", run.unused.join(", "));
    }
    println!("{}", run.summary);
}

fn data_prepare(options: &prepare::PrepareOptions, out: &Path) -> Result<(), String> {
    let prepared = prepare::prepare(options).map_err(|e| e.to_string())?;
    prepared.write(out).map_err(|e| e.to_string())?;
    let m = &prepared.manifest;
    println!("{:?} {:?} from {}:", options.dataset, options.task, options.root.display());
    for (name, counts) in &m.counts {
        let classes: Vec<String> =
            counts.iter().filter(|(k, _)| *k != "rows").map(|(k, v)| format!("{k}: {v}")).collect();
        println!("  {name:<16} {:>7} rows  {}", counts["rows"], classes.join(", "));
    }
    if !m.skipped.is_empty() {
        println!("  skipped {} row(s) with missing images (listed in the manifest)", m.skipped.len());
    }
    println!("wrote {} (manifest.json records the hashes; check with `mgca data verify`)", out.display());
    Ok(())
}

fn weights_import(
    checkpoint: &Path,
    layout: Layout,
    keymap: Option<&Path>,
    preset: &MgcaConfig,
    output: Option<&Path>,
) -> Result<(), String> {
    let keymap = keymap.map(KeyMap::read).transpose()?;
    let (_, report) = import::<Cpu>(checkpoint, layout, keymap, Architecture::FromWeights(preset), &cpu_device())?;
    let entry = report.import.entry.as_deref().map_or("the top level".to_string(), |e| format!("entry `{e}`"));
    println!("checkpoint {} ({:?}), tensors from {entry}", checkpoint.display(), report.format);
    println!(
        "key table `{}`: {} tensors kept, {} ignored",
        report.table,
        report.import.sources.len(),
        report.import.ignored.len()
    );
    for (rule, count) in &report.import.ignored_by_rule {
        println!("  ignore {rule}: {count}");
    }
    println!("loaded into {}", report.loaded_into);
    if report.unused.is_empty() {
        println!("missing keys: none; unexpected keys: none");
    } else {
        println!("missing keys: none; unexpected keys (not loaded): {}", report.unused.len());
        for name in &report.unused {
            println!("  {name} (checkpoint key `{}`)", report.import.source_of(name));
        }
    }
    if let Some(out) = output {
        let mut file = report.import.tensors;
        file.metadata.insert("source".into(), checkpoint.display().to_string());
        file.metadata.insert("key_table".into(), report.table);
        if let Some(config) = &report.config {
            file.metadata.insert("config".into(), serde_json::to_string(config).expect("config serialises"));
        }
        file.write(out).map_err(|e| e.to_string())?;
        println!("wrote {} (mgca-rs names)", out.display());
    }
    Ok(())
}

/// Exit 0, or 2 with the message (which names the file, tensor or key).
fn bad_input(result: Result<(), String>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(2)
        }
    }
}
