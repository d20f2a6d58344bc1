//! Command-line pieces every binary shares (`asrl-learner`, `asrl-rollout-worker`, `asrl-tools`):
//! the model flags, the sampling flags, and the convention that a usage error or a failed
//! command prints one `error: ...` line and exits with code 2. Behind the `cli` feature, so the
//! library itself does not need clap.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Parser;

use crate::config::{SamplingParams, WeightDtype};
use crate::device::{DeviceError, DeviceSpec};
use crate::model::{load, LoadedModel, LoraAdapter, ModelError};
use crate::telemetry::one_line_error;

#[derive(Debug, thiserror::Error)]
pub enum ModelArgsError {
    #[error("--model is required")]
    MissingModel,
    #[error("--adapter is not used here: {0}")]
    UnusedAdapter(&'static str),
    #[error(transparent)]
    Device(#[from] DeviceError),
    #[error(transparent)]
    Model(Box<ModelError>),
}

impl From<ModelError> for ModelArgsError {
    fn from(e: ModelError) -> Self {
        Self::Model(Box::new(e))
    }
}

/// The model a command loads. Flattened (`#[command(flatten)]`) into every command that loads
/// one; a command that cannot do without `--model` marks it required with
/// `#[command(mut_arg("model", |a| a.required(true)))]`.
#[derive(clap::Args, Debug, Clone)]
pub struct ModelArgs {
    /// HF model directory (config.json, *.safetensors, tokenizer files) or a .gguf file
    /// (dequantised).
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// PEFT LoRA adapter directory (adapter_config.json + adapter_model.safetensors).
    #[arg(long)]
    pub adapter: Option<PathBuf>,
    /// Device: `cpu`, `cuda` or `cuda:N`.
    #[arg(long, default_value = "cpu")]
    pub device: DeviceSpec,
    /// dtype of the base weights [default: f32, or `model.dtype` of --config where a command
    /// reads one].
    #[arg(long, value_enum, ignore_case = true)]
    pub dtype: Option<WeightDtype>,
}

impl ModelArgs {
    pub fn model_path(&self) -> Result<&Path, ModelArgsError> {
        self.model.as_deref().ok_or(ModelArgsError::MissingModel)
    }

    /// `--dtype`, else f32.
    pub fn dtype(&self) -> WeightDtype {
        self.dtype.unwrap_or(WeightDtype::F32)
    }

    /// Opens `--device` and loads `--model` (with `--dtype`) and, when given, `--adapter`.
    pub fn load(&self) -> Result<(LoadedModel, Option<LoraAdapter>), ModelArgsError> {
        let device = self.device.open()?;
        let loaded = load(self.model_path()?, &device, self.dtype().to_candle())?;
        let adapter = match &self.adapter {
            Some(dir) => Some(LoraAdapter::load_peft(dir, loaded.model.config(), &device)?),
            None => None,
        };
        Ok((loaded, adapter))
    }

    /// [`ModelArgs::load`] with the adapter merged into the weights: a plain model for sampling.
    pub fn load_merged(&self) -> Result<LoadedModel, ModelArgsError> {
        let (loaded, adapter) = self.load()?;
        match adapter {
            Some(adapter) => Ok(LoadedModel { model: loaded.model.merge(&adapter)?, ..loaded }),
            None => Ok(loaded),
        }
    }

    /// Rejects `--adapter` in a command that has no use for one; `why` says so.
    pub fn no_adapter(&self, why: &'static str) -> Result<(), ModelArgsError> {
        match self.adapter {
            Some(_) => Err(ModelArgsError::UnusedAdapter(why)),
            None => Ok(()),
        }
    }
}

/// How a group is sampled, with [`SamplingParams::default`]'s values as the defaults.
#[derive(clap::Args, Debug, Clone)]
pub struct SamplingArgs {
    /// Completions to sample (the group size).
    #[arg(short = 'n', long = "n", default_value_t = SamplingParams::default().n)]
    pub n: usize,
    /// Softmax temperature; 0 is greedy.
    #[arg(long, default_value_t = SamplingParams::default().temperature)]
    pub temperature: f64,
    /// Nucleus sampling mass; 1 disables it.
    #[arg(long, default_value_t = SamplingParams::default().top_p)]
    pub top_p: f64,
    /// New tokens per completion, at most.
    #[arg(long, default_value_t = SamplingParams::default().max_new_tokens)]
    pub max_new_tokens: usize,
    /// Sampler seed (the same seed gives the same completions).
    #[arg(long, default_value_t = SamplingParams::default().seed)]
    pub seed: u64,
}

impl SamplingArgs {
    pub fn params(&self) -> SamplingParams {
        SamplingParams {
            n: self.n,
            temperature: self.temperature,
            top_p: self.top_p,
            max_new_tokens: self.max_new_tokens,
            seed: self.seed,
        }
    }
}

/// The environment variable both binaries read the shared auth token from.
pub const TOKEN_ENV: &str = "ASRL_TOKEN";

#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("--token-file {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("--token-file {0}: empty (the token is its first line)")]
    Empty(PathBuf),
    #[error("${TOKEN_ENV} is set but empty")]
    EmptyEnv,
}

/// Where the shared auth token comes from, besides the config file. Flattened into
/// `asrl-learner train` and `asrl-rollout-worker run`; both keep it off their command line
/// (`ps`) and, with [`crate::config::AsrlConfig::redacted`], off the run directory.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct TokenArgs {
    /// File whose first line is the shared auth token (overrides $ASRL_TOKEN and
    /// `learner.auth_token`). Keep it private (mode 600).
    #[arg(long)]
    pub token_file: Option<PathBuf>,
}

impl TokenArgs {
    /// `--token-file`, else `flag` (a `--token` value where a command has one), else
    /// `$ASRL_TOKEN`, else `config` (the config's `learner.auth_token`).
    pub fn resolve(&self, flag: Option<&str>, config: Option<String>) -> Result<Option<String>, TokenError> {
        if let Some(path) = &self.token_file {
            return read_token_file(path).map(Some);
        }
        if let Some(t) = flag {
            return Ok(Some(t.trim().to_string()).filter(|t| !t.is_empty()).or(config));
        }
        match std::env::var(TOKEN_ENV) {
            Ok(t) if t.trim().is_empty() => Err(TokenError::EmptyEnv),
            Ok(t) => Ok(Some(t.trim().to_string())),
            Err(_) => Ok(config),
        }
    }
}

/// The first line of `path`, trimmed; warns when others may read the file.
pub fn read_token_file(path: &Path) -> Result<String, TokenError> {
    let text = std::fs::read_to_string(path).map_err(|source| TokenError::Read { path: path.to_path_buf(), source })?;
    let token = text.lines().next().unwrap_or("").trim();
    if token.is_empty() {
        return Err(TokenError::Empty(path.to_path_buf()));
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        if let Ok(meta) = std::fs::metadata(path) {
            if meta.permissions().mode() & 0o077 != 0 {
                tracing::warn!(file = %path.display(), "the token file is readable by other users: chmod 600 it");
            }
        }
    }
    Ok(token.to_string())
}

/// Parses the command line. `--help` and `--version` print and exit 0; a usage error prints one
/// `error: ...` line (clap's first paragraph, e.g. with the possible values) and exits 2.
pub fn parse_or_exit<P: Parser>() -> P {
    match P::try_parse() {
        Ok(parsed) => parsed,
        Err(e) if !e.use_stderr() => e.exit(),
        Err(e) => {
            eprintln!("{}", first_paragraph(&e.render().to_string()));
            std::process::exit(2)
        }
    }
}

/// A command's exit code: its own on success, else 2 after its error (with causes) as one
/// `error: ...` line.
pub fn exit_code<E>(result: Result<ExitCode, E>) -> ExitCode
where
    E: AsRef<dyn std::error::Error + Send + Sync + 'static>,
{
    result.unwrap_or_else(|e| {
        eprintln!("error: {}", one_line_error(e.as_ref()));
        ExitCode::from(2)
    })
}

/// The lines before the first blank one, joined with single spaces.
fn first_paragraph(text: &str) -> String {
    let line = text.lines().take_while(|l| !l.trim().is_empty()).map(str::trim).collect::<Vec<_>>().join(" ");
    if line.is_empty() {
        "error: invalid arguments".into()
    } else {
        line
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Parser, Debug)]
    #[command(mut_arg("model", |a| a.required(true)))]
    struct Needs {
        #[command(flatten)]
        model: ModelArgs,
        #[command(flatten)]
        sampling: SamplingArgs,
    }

    #[derive(Parser, Debug)]
    struct Optional {
        #[command(flatten)]
        model: ModelArgs,
    }

    #[test]
    fn model_args_parse_typed_values_and_defaults() {
        let a = Needs::try_parse_from(["x", "--model", "m.gguf", "--device", "cuda:1", "--dtype", "BF16"]).unwrap();
        assert_eq!(a.model.model_path().unwrap(), Path::new("m.gguf"));
        assert_eq!(a.model.device, DeviceSpec::Cuda(1));
        assert_eq!(a.model.dtype(), WeightDtype::Bf16);
        assert_eq!(a.sampling.params(), SamplingParams::default());
        let alias = Needs::try_parse_from(["x", "--model", "m", "--dtype", "float16"]).unwrap();
        assert_eq!(alias.model.dtype(), WeightDtype::F16);

        let o = Optional::try_parse_from(["x"]).unwrap();
        assert_eq!((o.model.device, o.model.dtype()), (DeviceSpec::Cpu, WeightDtype::F32));
        assert!(matches!(o.model.model_path(), Err(ModelArgsError::MissingModel)));
        assert!(o.model.no_adapter("why").is_ok());
        let with = Optional::try_parse_from(["x", "--adapter", "a"]).unwrap();
        assert!(with.model.no_adapter("the learner sends it").unwrap_err().to_string().contains("the learner sends it"));
    }

    #[test]
    fn usage_errors_are_one_line_with_what_is_wrong() {
        let render = |args: &[&str]| first_paragraph(&Needs::try_parse_from(args).unwrap_err().render().to_string());
        let missing = render(&["x"]);
        assert!(missing.starts_with("error: ") && missing.contains("--model"), "{missing}");
        let dtype = render(&["x", "--model", "m", "--dtype", "f8"]);
        assert!(dtype.contains("f8") && dtype.contains("bf16"), "{dtype}");
        let device = render(&["x", "--model", "m", "--device", "gpu"]);
        assert!(device.contains("gpu") && device.contains("cuda:N"), "{device}");
        assert!(!device.contains('\n'));
    }

    #[test]
    fn token_file_wins_and_is_read_from_its_first_line() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("token");
        std::fs::write(&file, "  s3cret \nignored\n").unwrap();
        let args = TokenArgs { token_file: Some(file.clone()) };
        assert_eq!(args.resolve(Some("flag"), Some("cfg".into())).unwrap().as_deref(), Some("s3cret"));
        // Without a file, a --token flag beats the config.
        let none = TokenArgs::default();
        assert_eq!(none.resolve(Some("flag"), Some("cfg".into())).unwrap().as_deref(), Some("flag"));
        std::fs::write(&file, "\n").unwrap();
        assert!(matches!(args.resolve(None, None), Err(TokenError::Empty(_))));
        let missing = TokenArgs { token_file: Some(dir.path().join("nope")) };
        assert!(missing.resolve(None, None).unwrap_err().to_string().contains("nope"));
    }
}
