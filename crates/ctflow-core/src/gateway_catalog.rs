//! The AI gateway's provider catalog: the providers a model definition may name, and how
//! each authenticates (the fields its secret holds and the settings beside it), as MLflow's
//! UI asks for them (`supported-providers`, `provider-config`). A provider without an
//! entry of its own authenticates with an API key and an optional API base URL.

use serde_json::{Value, json};

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

#[cfg(test)]
mod tests {
    use super::*;

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
