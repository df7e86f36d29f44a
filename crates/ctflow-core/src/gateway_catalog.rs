//! The AI gateway's provider catalog: the providers a model definition may name, and how
//! each authenticates (the fields its secret holds and the settings beside it), as MLflow's
//! UI asks for them (`supported-providers`, `provider-config`). A provider without an
//! entry of its own authenticates with an API key and an optional API base URL.

use serde_json::{Value, json};

use crate::error::MlflowError;

/// Providers ctflow's catalog lists (MLflow lists LiteLLM's; these are the common ones).
pub const PROVIDERS: &[&str] = &[
    "ai21",
    "anthropic",
    "anyscale",
    "azure",
    "bedrock",
    "cerebras",
    "cohere",
    "databricks",
    "deepinfra",
    "deepseek",
    "fireworks_ai",
    "gemini",
    "groq",
    "huggingface",
    "mistral",
    "ollama",
    "openai",
    "openrouter",
    "perplexity",
    "sagemaker",
    "together_ai",
    "vertex_ai",
    "xai",
];

fn field(name: &str, description: &str, required: bool) -> Value {
    json!({"description": description, "name": name, "required": required, "type": "string"})
}

fn display(provider: &str) -> String {
    let mut chars = provider.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}

/// How `provider` authenticates: `{"auth_modes": [...], "default_mode": ...}`.
pub fn provider_config(provider: &str) -> Value {
    let aws_region =
        |required: bool, description: &str| field("aws_region_name", description, required);
    match provider {
        "bedrock" | "sagemaker" => json!({
            "auth_modes": [
                {
                    "mode": "api_key", "display_name": "API Key",
                    "description": "Use an Amazon Bedrock API key (bearer token)",
                    "secret_fields": [field("api_key", "Amazon Bedrock API Key", true)],
                    "config_fields": [aws_region(true, "AWS Region")],
                },
                {
                    "mode": "access_keys", "display_name": "Access Keys",
                    "description": "Use an AWS access key ID and secret access key",
                    "secret_fields": [
                        field("aws_access_key_id", "AWS Access Key ID", true),
                        field("aws_secret_access_key", "AWS Secret Access Key", true),
                    ],
                    "config_fields": [aws_region(false, "AWS Region (e.g., us-east-1)")],
                },
                {
                    "mode": "iam_role", "display_name": "IAM Role Assumption",
                    "description": "Assume an IAM role with the server's own AWS credentials",
                    "secret_fields": [],
                    "config_fields": [
                        field("aws_role_name", "IAM Role ARN to assume", true),
                        aws_region(false, "AWS Region (e.g., us-east-1)"),
                    ],
                },
                {
                    "mode": "default_chain", "display_name": "Default Credential Chain",
                    "description": "Use the server's default AWS credentials",
                    "secret_fields": [],
                    "config_fields": [
                        field("aws_role_name", "IAM Role ARN to assume (optional, for cross-account access)", false),
                        field("aws_session_name", "Session name for assumed role", false),
                        aws_region(false, "AWS Region (e.g., us-east-1)"),
                    ],
                },
            ],
            "default_mode": "api_key",
        }),
        "azure" => json!({
            "auth_modes": [{
                "mode": "api_key", "display_name": "API Key",
                "description": "Use an Azure OpenAI API key",
                "secret_fields": [field("api_key", "Azure OpenAI API Key", true)],
                "config_fields": [
                    field("api_base", "Azure OpenAI endpoint URL", true),
                    field("api_version", "Azure OpenAI API version", false),
                ],
            }],
            "default_mode": "api_key",
        }),
        other => {
            let name = display(other);
            json!({
                "auth_modes": [{
                    "mode": "api_key", "display_name": "API Key",
                    "description": format!("Use {name} API Key"),
                    "secret_fields": [field("api_key", &format!("{name} API Key"), true)],
                    "config_fields": [field("api_base", &format!("{name} API Base URL"), false)],
                }],
                "default_mode": "api_key",
            })
        }
    }
}

/// Where a provider that speaks OpenAI's chat-completions API takes requests by default;
/// none for providers with an API of their own (ctflow's gateway does not call those yet).
pub fn openai_compatible_base(provider: &str) -> Option<&'static str> {
    Some(match provider {
        "openai" => "https://api.openai.com/v1",
        "cerebras" => "https://api.cerebras.ai/v1",
        "deepinfra" => "https://api.deepinfra.com/v1/openai",
        "deepseek" => "https://api.deepseek.com/v1",
        "fireworks_ai" => "https://api.fireworks.ai/inference/v1",
        "groq" => "https://api.groq.com/openai/v1",
        "mistral" => "https://api.mistral.ai/v1",
        "ollama" => "http://localhost:11434/v1",
        "openrouter" => "https://openrouter.ai/api/v1",
        "perplexity" => "https://api.perplexity.ai",
        "together_ai" => "https://api.together.xyz/v1",
        "xai" => "https://api.x.ai/v1",
        _ => return None,
    })
}

/// The chat-completions URL of a model definition's provider: its secret's `api_base`
/// when set (a proxy, a self-hosted server), else the provider's own.
pub fn chat_completions_url(provider: &str, api_base: Option<&str>) -> Result<String, MlflowError> {
    let Some(default_base) = openai_compatible_base(provider) else {
        return Err(MlflowError::invalid(format!(
            "ctflow's gateway calls providers with an OpenAI-compatible chat API ({}); \
             '{provider}' is not one of them",
            PROVIDERS
                .iter()
                .filter(|p| openai_compatible_base(p).is_some())
                .copied()
                .collect::<Vec<_>>()
                .join(", ")
        )));
    };
    let base = api_base
        .map(str::trim)
        .filter(|b| !b.is_empty())
        .unwrap_or(default_base);
    if !(base.starts_with("http://") || base.starts_with("https://")) {
        return Err(MlflowError::invalid(format!(
            "The api_base of a '{provider}' secret must be an http(s) URL, got '{base}'"
        )));
    }
    Ok(format!("{}/chat/completions", base.trim_end_matches('/')))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chat_urls_come_from_the_secret_or_the_provider() {
        assert_eq!(
            chat_completions_url("openai", None).unwrap(),
            "https://api.openai.com/v1/chat/completions"
        );
        assert_eq!(
            chat_completions_url("openai", Some("http://127.0.0.1:9/v1/")).unwrap(),
            "http://127.0.0.1:9/v1/chat/completions"
        );
        assert_eq!(
            chat_completions_url("groq", Some(" ")).unwrap(),
            "https://api.groq.com/openai/v1/chat/completions"
        );
        assert!(chat_completions_url("openai", Some("file:///etc")).is_err());
        let err = chat_completions_url("bedrock", None).unwrap_err();
        assert!(err.message.contains("'bedrock' is not one of them"));
        for provider in PROVIDERS {
            if let Some(base) = openai_compatible_base(provider) {
                assert!(base.starts_with("http"), "{provider}");
            }
        }
    }

    #[test]
    fn providers_name_their_secret_and_config_fields() {
        assert!(PROVIDERS.contains(&"openai"));
        let openai = provider_config("openai");
        assert_eq!(openai["default_mode"], "api_key");
        assert_eq!(
            openai["auth_modes"][0]["secret_fields"][0]["name"],
            "api_key"
        );
        let bedrock = provider_config("bedrock");
        let modes: Vec<&str> = bedrock["auth_modes"]
            .as_array()
            .expect("modes")
            .iter()
            .filter_map(|m| m["mode"].as_str())
            .collect();
        assert_eq!(
            modes,
            ["api_key", "access_keys", "iam_role", "default_chain"]
        );
        let unknown = provider_config("zz");
        assert_eq!(
            unknown["auth_modes"][0]["config_fields"][0]["name"],
            "api_base"
        );
        assert_eq!(unknown["auth_modes"][0]["description"], "Use Zz API Key");
    }
}
