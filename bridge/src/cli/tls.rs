//! `rlclaw tls init|show`: the self-signed certificate the bridge uses beyond loopback, and the
//! pin clients on other machines check it by.

use std::path::Path;

use anyhow::Result;
use clap::Subcommand;

use crate::datadir::DataDir;
use crate::tls;

#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: TlsCommand,
}

#[derive(Subcommand)]
enum TlsCommand {
    /// Make the certificate (kept if one exists, unless --force) and print its pin.
    Init {
        /// A name or address other machines reach this one by; repeat for several
        /// (localhost, 127.0.0.1 and ::1 are always included).
        #[arg(long = "name", value_name = "NAME")]
        names: Vec<String>,
        /// Replace an existing certificate (clients must then pin the new one).
        #[arg(long)]
        force: bool,
        /// Print {"pin", "cert"} as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Print the pin of the current certificate.
    Show {
        /// Print {"pin", "cert"} as JSON.
        #[arg(long)]
        json: bool,
    },
}

pub fn run(dir: &Path, args: Args) -> Result<()> {
    let dir = DataDir::open(dir)?;
    let (pin, json, made) = match args.command {
        TlsCommand::Init { names, force, json } => (tls::init(&dir, &names, force)?, json, true),
        TlsCommand::Show { json } => (tls::pin(&dir)?, json, false),
    };
    let cert = dir.path(tls::CERT_FILE);
    if json {
        println!("{}", serde_json::json!({"pin": pin, "cert": cert}));
        return Ok(());
    }
    if made {
        println!("Made a self-signed certificate: {}", cert.display());
    }
    println!("pin: {pin}");
    if made {
        println!(
            "Serve beyond loopback with `rlclaw serve --listen 127.0.0.1:8420 --listen 0.0.0.0:8443 \
             --allow-non-loopback`, and give clients the pin (clients/rlclaw_emit.py --bridge \
             https://HOST:8443 --pin {pin})."
        );
    }
    Ok(())
}
