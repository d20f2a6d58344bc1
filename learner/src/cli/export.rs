//! `asrl-learner export`: merges an adapter into its base and writes a model others can serve:
//! an HF dir (transformers, vLLM, our `--model`) and optionally a GGUF file (llama.cpp, Ollama).
//! Everything is written into a temporary directory next to `--out` and renamed at the end, so
//! `--out` never holds a half-written export.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use asrl_common::config::WeightDtype;
use asrl_common::device::DeviceSpec;
use asrl_common::model::export::{export_model, parse_size, BaseMetadata, ExportOptions, ExportReport, GgufType};
use asrl_common::model::{load, LoraAdapter};
use candle_core::DType;

#[derive(clap::Args, Debug)]
pub struct ExportArgs {
    /// Base model: HF model directory or .gguf file.
    #[arg(long)]
    pub model: PathBuf,
    /// PEFT LoRA adapter directory to merge in; without it the base is exported as-is.
    #[arg(long)]
    pub adapter: Option<PathBuf>,
    /// Output directory; must be new or empty unless --force.
    #[arg(long)]
    pub out: PathBuf,
    /// dtype of the safetensors weights: bf16, f16 or f32.
    #[arg(long, value_enum, ignore_case = true, default_value = "bf16")]
    pub dtype: WeightDtype,
    /// Also write OUT/<name>-<type>.gguf for llama.cpp / Ollama: f16 or q8_0 (f32 also works).
    #[arg(long, value_name = "TYPE")]
    pub gguf: Option<String>,
    /// Shard the safetensors above this size: bytes, or a number with KB/MB/GB (or KiB/MiB/GiB).
    #[arg(long, default_value = "5GB", value_name = "SIZE")]
    pub max_shard_size: String,
    /// Replace an existing --out that holds a previous export (a directory with config.json).
    #[arg(long)]
    pub force: bool,
    /// Device for the merge: `cpu` or `cuda:N`.
    #[arg(long, default_value = "cpu")]
    pub device: DeviceSpec,
}

pub fn run(args: ExportArgs) -> anyhow::Result<()> {
    // Cheap checks first: bad flags never cost a model load.
    let dtype = args.dtype.to_candle();
    let gguf = args.gguf.as_deref().map(GgufType::parse).transpose().context("--gguf")?;
    let max_shard_size = parse_size(&args.max_shard_size).context("--max-shard-size")?;
    let device = args.device.open()?;
    let out = absolute(&args.out)?;
    check_out(&out, &absolute(&args.model)?, args.force)?;
    let name = out.file_name().map(|n| n.to_string_lossy().into_owned()).context("--out has no directory name")?;

    // Merged in f32 (W + scale·B·A), then written in --dtype.
    let loaded = load(&args.model, &device, DType::F32)?;
    let model = match &args.adapter {
        Some(dir) => loaded.model.merge(&LoraAdapter::load_peft(dir, loaded.model.config(), &device)?)?,
        None => loaded.model,
    };
    let base = BaseMetadata::read(&args.model, &loaded.tokenizer)?;
    let opts = ExportOptions { dtype, max_shard_size, gguf, name: name.clone() };

    let parent = out.parent().context("--out has no parent directory")?;
    std::fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
    let tmp = parent.join(format!(".{name}.export-tmp-{}", std::process::id()));
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp).with_context(|| format!("removing stale {}", tmp.display()))?;
    }
    std::fs::create_dir(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
    let report = match export_model(&model, &loaded.tokenizer, &base, &tmp, &opts) {
        Ok(r) => r,
        Err(e) => {
            let _ = std::fs::remove_dir_all(&tmp);
            return Err(e.into());
        }
    };
    if let Err(e) = replace_dir(&tmp, &out) {
        let _ = std::fs::remove_dir_all(&tmp);
        return Err(e);
    }
    print_report(&out, &tmp, &report, &args, dtype);
    Ok(())
}

fn absolute(p: &Path) -> anyhow::Result<PathBuf> {
    std::path::absolute(p).with_context(|| format!("resolving {}", p.display()))
}

/// `--out` must be new, an empty directory, or (with --force) a previous export; never the base.
fn check_out(out: &Path, model: &Path, force: bool) -> anyhow::Result<()> {
    let same = |a: &Path, b: &Path| a == b || matches!((a.canonicalize(), b.canonicalize()), (Ok(x), Ok(y)) if x == y);
    if same(out, model) || model.starts_with(out) {
        bail!("--out {} would replace the base model --model {}", out.display(), model.display());
    }
    if !out.exists() {
        return Ok(());
    }
    if !out.is_dir() {
        bail!("--out {} exists and is not a directory", out.display());
    }
    let mut entries = std::fs::read_dir(out).with_context(|| format!("reading {}", out.display()))?;
    if entries.next().is_none() {
        return Ok(());
    }
    if !force {
        bail!("--out {} is not empty (use --force to replace a previous export)", out.display());
    }
    if !out.join("config.json").is_file() {
        bail!("--out {} does not look like a previous export (no config.json); refusing to replace it", out.display());
    }
    Ok(())
}

/// Moves the finished `tmp` to `out`, replacing an existing `out` only once `tmp` is complete.
fn replace_dir(tmp: &Path, out: &Path) -> anyhow::Result<()> {
    if !out.exists() {
        return std::fs::rename(tmp, out).with_context(|| format!("renaming {} to {}", tmp.display(), out.display()));
    }
    let old = tmp.with_file_name(format!(
        ".{}.export-old-{}",
        out.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default(),
        std::process::id()
    ));
    std::fs::rename(out, &old).with_context(|| format!("moving the previous {} aside", out.display()))?;
    if let Err(e) = std::fs::rename(tmp, out) {
        let _ = std::fs::rename(&old, out);
        return Err(e).with_context(|| format!("renaming {} to {}", tmp.display(), out.display()));
    }
    std::fs::remove_dir_all(&old).with_context(|| format!("removing the previous export {}", old.display()))
}

fn print_report(out: &Path, tmp: &Path, report: &ExportReport, args: &ExportArgs, dtype: DType) {
    let what = match &args.adapter {
        Some(a) => format!("{} merged with {}", args.model.display(), a.display()),
        None => format!("{} (no adapter)", args.model.display()),
    };
    println!("exported {what} to {} ({} safetensors)", out.display(), format!("{dtype:?}").to_lowercase());
    let mut total = 0;
    for f in &report.files {
        let shown = f.path.strip_prefix(tmp).map(|p| out.join(p)).unwrap_or_else(|_| f.path.clone());
        println!("  {:>10}  {}", human_bytes(f.bytes), shown.display());
        total += f.bytes;
    }
    println!("  {:>10}  total", human_bytes(total));
    for note in &report.notes {
        let note = note.replace(&tmp.display().to_string(), &out.display().to_string());
        println!("note: {note}");
    }
}

fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KB", "MB", "GB", "TB"];
    let mut x = n as f64;
    let mut unit = 0;
    while x >= 1000.0 && unit < UNITS.len() - 1 {
        x /= 1000.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{x:.1} {}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn human_sizes() {
        assert_eq!(human_bytes(512), "512 B");
        assert_eq!(human_bytes(9_728_208), "9.7 MB");
        assert_eq!(human_bytes(5_000_000_000), "5.0 GB");
    }

    #[test]
    fn out_must_be_new_empty_or_a_previous_export() {
        let dir = tempfile::tempdir().unwrap();
        let model = dir.path().join("base");
        std::fs::create_dir(&model).unwrap();
        let out = dir.path().join("out");
        check_out(&out, &model, false).unwrap();
        std::fs::create_dir(&out).unwrap();
        check_out(&out, &model, false).unwrap();
        std::fs::write(out.join("notes.txt"), "x").unwrap();
        let e = check_out(&out, &model, false).unwrap_err().to_string();
        assert!(e.contains("is not empty") && e.contains("--force"), "{e}");
        let e = check_out(&out, &model, true).unwrap_err().to_string();
        assert!(e.contains("does not look like a previous export"), "{e}");
        std::fs::write(out.join("config.json"), "{}").unwrap();
        check_out(&out, &model, true).unwrap();
        let e = check_out(&model, &model, true).unwrap_err().to_string();
        assert!(e.contains("would replace the base model"), "{e}");
    }

    #[test]
    fn replace_dir_swaps_in_the_new_export() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out");
        let tmp = dir.path().join(".out.export-tmp-1");
        std::fs::create_dir(&out).unwrap();
        std::fs::write(out.join("config.json"), "old").unwrap();
        std::fs::write(out.join("stale.safetensors"), "old").unwrap();
        std::fs::create_dir(&tmp).unwrap();
        std::fs::write(tmp.join("config.json"), "new").unwrap();
        replace_dir(&tmp, &out).unwrap();
        assert_eq!(std::fs::read_to_string(out.join("config.json")).unwrap(), "new");
        assert!(!out.join("stale.safetensors").exists());
        let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(left, vec![std::ffi::OsString::from("out")]);
    }
}
