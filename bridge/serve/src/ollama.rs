//! Export for Ollama: a Modelfile that layers the adapter over the base model.
//!
//! Plain file writing: nothing here touches mistral.rs.

use std::path::Path;

/// The Ollama Modelfile for `base` (a GGUF file or model folder) with the PEFT adapter folder
/// `adapter`: `FROM <base>` and `ADAPTER <adapter>`, one per line.
pub fn ollama_modelfile(base: &Path, adapter: &Path) -> String {
    format!("FROM {}\nADAPTER {}\n", base.display(), adapter.display())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modelfile_names_base_then_adapter() {
        let m = ollama_modelfile(Path::new("/m/SmolLM2.gguf"), Path::new("/data/adapters/v3"));
        assert_eq!(m, "FROM /m/SmolLM2.gguf\nADAPTER /data/adapters/v3\n");
    }
}
