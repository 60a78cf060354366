//! `rlclaw export --format kto-jsonl`: rated turns as TRL's unpaired preference rows
//! (`prompt` as conversation messages, `completion`, boolean `label`).

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use super::existing;
use crate::store;

#[derive(clap::ValueEnum, Clone, Copy)]
enum Format {
    /// {"prompt": [messages], "completion": [assistant message], "label": true|false}
    KtoJsonl,
}

#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    target: Option<Target>,
    #[arg(long, value_enum, default_value = "kto-jsonl")]
    format: Format,
    /// Write to this file instead of standard output.
    #[arg(long, short)]
    output: Option<PathBuf>,
}

#[derive(clap::Subcommand)]
enum Target {
    /// Write an Ollama Modelfile (the base model with the active adapter) and, when ollama is
    /// installed, create the model `<base>-rlclaw` from it.
    Ollama {
        /// The Ollama model name (default: the base model's name with `-rlclaw`).
        #[arg(long)]
        name: Option<String>,
        /// The base model (default: config.toml's, else the demo model).
        #[arg(long)]
        model: Option<PathBuf>,
    },
}

pub fn run(dir: &Path, args: Args) -> Result<()> {
    let dir = existing(dir)?;
    if let Some(Target::Ollama { name, model }) = args.target {
        return ollama(&dir, name, model);
    }
    let conn = store::open_ro(&dir.db_path())?;
    let mut out: Box<dyn Write> = match &args.output {
        Some(path) => Box::new(std::io::BufWriter::new(
            std::fs::File::create(path)
                .with_context(|| format!("cannot create {}", path.display()))?,
        )),
        None => Box::new(std::io::BufWriter::new(std::io::stdout().lock())),
    };
    let Format::KtoJsonl = args.format;
    let mut stmt = conn.prepare(
        "SELECT t.context, t.prompt, t.response, avg(r.value) FROM turns t
         JOIN ratings r ON r.turn_seq = t.seq AND r.removed_at IS NULL
         GROUP BY t.seq HAVING avg(r.value) != 0 ORDER BY t.seq",
    )?;
    let mut rows = 0usize;
    let mut query = stmt.query([])?;
    while let Some(r) = query.next()? {
        let context: String = r.get(0)?;
        let prompt: String = r.get(1)?;
        let response: String = r.get(2)?;
        let value: f64 = r.get(3)?;
        let mut messages: Vec<serde_json::Value> =
            serde_json::from_str(&context).context("a stored context is malformed")?;
        messages.push(serde_json::json!({"role": "user", "content": prompt}));
        let row = serde_json::json!({
            "prompt": messages,
            "completion": [{"role": "assistant", "content": response}],
            "label": value > 0.0,
        });
        writeln!(out, "{row}")?;
        rows += 1;
    }
    out.flush()?;
    if let Some(path) = &args.output {
        eprintln!("rlclaw: wrote {rows} rows to {}", path.display());
    }
    Ok(())
}

fn ollama(
    dir: &crate::datadir::DataDir,
    name: Option<String>,
    model: Option<PathBuf>,
) -> Result<()> {
    let config = crate::config::Config::load(&dir.path(crate::datadir::CONFIG_FILE))?;
    let model = match model {
        Some(m) => m,
        None => crate::training::run::RunOptions::from_config(&config)?.model,
    };
    if !model.exists() {
        anyhow::bail!("the base model {} is missing", model.display());
    }
    let adapters = crate::training::adapters_dir(dir);
    let active = rlclaw_trainer::AdapterStore::open(&adapters)
        .and_then(|s| s.active())
        .with_context(|| format!("cannot read the adapters in {}", adapters.display()))?;
    let Some(adapter) = active.map(|v| v.path) else {
        anyhow::bail!("no adapter is active yet: train one first (`rlclaw train`)");
    };
    let out_dir = dir.path("ollama");
    std::fs::create_dir_all(&out_dir)
        .with_context(|| format!("cannot create {}", out_dir.display()))?;
    let modelfile = out_dir.join("Modelfile");
    let text = format!("FROM {}\nADAPTER {}\n", model.display(), adapter.display());
    std::fs::write(&modelfile, text)
        .with_context(|| format!("cannot write {}", modelfile.display()))?;
    println!("Wrote {}", modelfile.display());
    let name = name.unwrap_or_else(|| {
        let stem = model
            .file_stem()
            .map(|s| s.to_string_lossy().to_lowercase())
            .unwrap_or_else(|| "model".into());
        let base = stem.split('.').next().unwrap_or(&stem).to_owned();
        format!("{base}-rlclaw")
    });
    match std::process::Command::new("ollama")
        .args(["create", &name, "-f"])
        .arg(&modelfile)
        .status()
    {
        Ok(status) if status.success() => {
            println!("Created the Ollama model {name}: `ollama run {name}`")
        }
        Ok(status) => anyhow::bail!("`ollama create {name}` failed ({status})"),
        Err(_) => println!(
            "ollama is not installed here; with it: ollama create {name} -f {}",
            modelfile.display()
        ),
    }
    Ok(())
}
