//! The model's own chat template, rendered with minijinja (ChatML when the model has none).

use minijinja::{Environment, Error as JinjaError, ErrorKind};
use serde::{Deserialize, Serialize};

use crate::error::{Result, TrainerError};

/// One chat message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatMessage {
    pub role: String,
    pub content: String,
}

impl ChatMessage {
    pub fn new(role: impl Into<String>, content: impl Into<String>) -> Self {
        Self {
            role: role.into(),
            content: content.into(),
        }
    }
}

/// ChatML, used when a model carries no template.
pub const CHATML_TEMPLATE: &str = "{% for message in messages %}<|im_start|>{{ message.role }}\n{{ message.content }}<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}";

/// A Jinja chat template with the special tokens it may refer to.
#[derive(Debug, Clone)]
pub struct ChatTemplate {
    pub source: String,
    pub bos_token: String,
    pub eos_token: String,
}

impl ChatTemplate {
    pub fn new(source: Option<String>, bos_token: String, eos_token: String) -> Self {
        Self {
            source: source
                .filter(|s| !s.trim().is_empty())
                .unwrap_or_else(|| CHATML_TEMPLATE.to_string()),
            bos_token,
            eos_token,
        }
    }

    pub fn chatml() -> Self {
        Self::new(None, String::new(), "<|im_end|>".into())
    }

    /// Renders `messages`; with `add_generation_prompt` the text ends where the assistant's
    /// reply starts.
    pub fn render(&self, messages: &[ChatMessage], add_generation_prompt: bool) -> Result<String> {
        let mut env = Environment::new();
        env.set_trim_blocks(true);
        env.set_lstrip_blocks(true);
        minijinja_contrib::add_to_environment(&mut env);
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function(
            "raise_exception",
            |msg: String| -> std::result::Result<String, JinjaError> {
                Err(JinjaError::new(ErrorKind::InvalidOperation, msg))
            },
        );
        let ctx = minijinja::context! {
            messages => messages,
            add_generation_prompt => add_generation_prompt,
            bos_token => self.bos_token.clone(),
            eos_token => self.eos_token.clone(),
            enable_thinking => false,
        };
        env.render_str(&self.source, ctx)
            .map_err(|e| TrainerError::Template(format!("{e:#}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chatml_fallback_renders_generation_prompt() {
        let t = ChatTemplate::new(None, String::new(), "<|im_end|>".into());
        let s = t
            .render(&[ChatMessage::new("user", "hi")], true)
            .expect("render");
        assert_eq!(s, "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n");
    }

    #[test]
    fn template_errors_are_reported_not_panicked() {
        let t = ChatTemplate::new(
            Some("{{ raise_exception('no system role') }}".into()),
            String::new(),
            String::new(),
        );
        let e = t.render(&[], false).expect_err("must fail");
        assert!(e.to_string().contains("no system role"), "{e}");
    }
}
