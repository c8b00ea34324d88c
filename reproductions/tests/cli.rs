//! The reproduction binaries as a user runs them: `pretrain` on a tiny synthetic experiment
//! (virtual shards, then two devices, then a resume of the finished run), and `report`.

mod common;

use std::process::Command;

use common::tmp;

const TINY: &str = r#"
name = "pretrain-tiny"
reproduces = "a CLI test"
tier = "smoke"
preset = "smoke"
image_encoder = "vit_base"

[data.synthetic]
scale = "tiny"
seed = 3

[config.train]
epochs = 2
shard_batch = 4
"#;

#[test]
fn pretrain_and_report_end_to_end() {
    let dir = tmp("cli");
    let config = dir.join("tiny.toml");
    std::fs::write(&config, TINY).unwrap();
    let pretrain = |out: &str, extra: &[&str]| common::pretrain(&config, &dir.join(out), extra);
    let one = pretrain("one", &[]);
    let stderr = String::from_utf8_lossy(&one.stderr);
    assert!(one.status.success(), "{stderr}");
    assert!(stderr.contains("no real data configured") && stderr.contains("epoch 1: val_loss"), "{stderr}");
    let run = dir.join("one/pretrain-tiny");
    for file in ["metrics.csv", "valid.csv", "config.toml", "plot.svg", "summary.json", "checkpoints/last/state.json"] {
        assert!(run.join(file).exists(), "{file}");
    }
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("summary.json")).unwrap()).unwrap();
    assert_eq!(summary["epochs_completed"], 2);
    assert_eq!(summary["finished"], true);
    // Two devices: the same losses as the virtual shards.
    let two = pretrain("two", &["--devices", "0,1"]);
    assert!(two.status.success(), "{}", String::from_utf8_lossy(&two.stderr));
    let losses = |out: &str| {
        let text = std::fs::read_to_string(dir.join(out).join("pretrain-tiny/metrics.csv")).unwrap();
        text.lines().map(|l| l.split(',').take(9).collect::<Vec<_>>().join(",")).collect::<Vec<_>>()
    };
    assert_eq!(losses("two"), losses("one"));
    // Resuming a finished run says so and changes nothing.
    let summary_bytes = std::fs::read(run.join("summary.json")).unwrap();
    let again = pretrain("one", &["--resume"]);
    let stderr = String::from_utf8_lossy(&again.stderr);
    assert!(again.status.success() && stderr.contains("already finished (2 epochs done"), "{stderr}");
    assert_eq!(std::fs::read(run.join("summary.json")).unwrap(), summary_bytes);
    assert_eq!(losses("one").len(), summary["steps"].as_u64().unwrap() as usize + 1);
    // A resume with another configuration is refused (status 2), naming the fields.
    std::fs::write(&config, TINY.replace("epochs = 2", "epochs = 3")).unwrap();
    let changed = pretrain("one", &["--resume"]);
    let stderr = String::from_utf8_lossy(&changed.stderr);
    assert_eq!(changed.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("train.epochs: 2 (saved) vs 3 (now)") && stderr.contains("--force-config-change"),
        "{stderr}"
    );
    assert_eq!(std::fs::read(run.join("summary.json")).unwrap(), summary_bytes);
    std::fs::write(&config, TINY).unwrap();
    // The report.
    let report =
        Command::new(env!("CARGO_BIN_EXE_report")).args(["--out", dir.join("one").to_str().unwrap()]).output().unwrap();
    let text = std::fs::read_to_string(dir.join("one/report.md")).unwrap();
    assert!(text.contains("## pretrain-tiny") && text.contains("training loss falls"), "{text}");
    // Two epochs of a tiny run need not pass the checks; the exit status says whether they did.
    assert_eq!(report.status.success(), !text.contains("**FAIL**"));
    // A bad experiment file names itself and the field.
    std::fs::write(&config, TINY.replace("epochs = 2", "epochz = 2")).unwrap();
    let bad = pretrain("bad", &[]);
    let stderr = String::from_utf8_lossy(&bad.stderr);
    assert!(
        bad.status.code() == Some(2) && stderr.contains("tiny.toml") && stderr.contains("config.train.epochz"),
        "{stderr}"
    );
    std::fs::remove_dir_all(dir).ok();
}
