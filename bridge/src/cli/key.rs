//! `rlclaw key rotate|show`.

use std::path::Path;

use anyhow::Result;

use super::existing;

#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    action: Action,
}

#[derive(clap::Subcommand)]
enum Action {
    /// Make a new key; the old one stays valid as the previous key until the next rotation.
    Rotate,
    /// Print the key id (and with --secret, the key itself, for the plugin's config).
    Show {
        #[arg(long)]
        secret: bool,
    },
}

pub fn run(dir: &Path, args: Args) -> Result<()> {
    let dir = existing(dir)?;
    match args.action {
        Action::Rotate => {
            let key = dir.rotate_key()?;
            println!("New key id {}.", key.id());
            println!(
                "A running bridge accepts it at once, and the previous key until the next \
                 rotation. Put the new key in the plugin's config (`rlclaw key show --secret`)."
            );
        }
        Action::Show { secret } => {
            let key = dir.load_key()?;
            if secret {
                println!("{}", key.to_hex());
            } else {
                println!("{}", key.id());
            }
        }
    }
    Ok(())
}
