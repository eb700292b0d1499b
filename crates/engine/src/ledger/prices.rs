//! Model prices: a built-in table of list prices (USD per million tokens, as integer
//! micro-dollars), overridable from config. Money is never a float: config values are parsed as
//! exact decimals. A cloud model missing from the table has an unknown cost, recorded as such,
//! never as zero; a local provider's models cost nothing.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::model::Usage;

/// Micro-dollars (1 USD = 1,000,000).
pub use tollgate_protocol::Micros;

/// Prices in micro-dollars per million tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Price {
    pub input: Micros,
    pub output: Micros,
    pub cached_input: Micros,
    /// Input written to the provider's prompt cache (Anthropic: 1.25 times input).
    pub cache_write_input: Micros,
}

impl Price {
    /// The cost of a call: cached input at the cached price, input written to the cache at the
    /// cache-write price, the rest at the input price.
    pub fn cost(&self, usage: &Usage) -> Micros {
        let cached = usage.cached_tokens.min(usage.input_tokens) as i128;
        let written = (usage.cache_write_tokens as i128).min(usage.input_tokens as i128 - cached);
        let fresh = usage.input_tokens as i128 - cached - written;
        let total = fresh * self.input as i128
            + cached * self.cached_input as i128
            + written * self.cache_write_input as i128
            + usage.output_tokens as i128 * self.output as i128;
        ((total + 500_000) / 1_000_000) as Micros
    }
}

const fn usd(input: Micros, output: Micros, cached_input: Micros) -> Price {
    Price { input, output, cached_input, cache_write_input: input }
}

/// Anthropic's prompt cache: reads at a tenth of input, (five-minute) writes at 1.25 times.
const fn anthropic(input: Micros, output: Micros) -> Price {
    Price { input, output, cached_input: input / 10, cache_write_input: input / 4 * 5 }
}

/// List prices, USD per million tokens x 1e6. Keys match a model name exactly or as a prefix
/// followed by `-` (dated snapshots: `claude-sonnet-4-5-20250929`).
const BUILT_IN: &[(&str, Price)] = &[
    // OpenAI
    ("gpt-5", usd(1_250_000, 10_000_000, 125_000)),
    ("gpt-5-mini", usd(250_000, 2_000_000, 25_000)),
    ("gpt-5-nano", usd(50_000, 400_000, 5_000)),
    ("gpt-4.1", usd(2_000_000, 8_000_000, 500_000)),
    ("gpt-4.1-mini", usd(400_000, 1_600_000, 100_000)),
    ("gpt-4.1-nano", usd(100_000, 400_000, 25_000)),
    ("gpt-4o", usd(2_500_000, 10_000_000, 1_250_000)),
    ("gpt-4o-mini", usd(150_000, 600_000, 75_000)),
    ("o3", usd(2_000_000, 8_000_000, 500_000)),
    ("o4-mini", usd(1_100_000, 4_400_000, 275_000)),
    ("text-embedding-3-small", usd(20_000, 0, 20_000)),
    ("text-embedding-3-large", usd(130_000, 0, 130_000)),
    // Anthropic. Opus from 4.5 on is priced below Opus 4 and 4.1; Sonnet 5.5 reads its cache at
    // 0.05 times input. Haiku 5.5 is priced by prompt length, which one price cannot say: it is
    // left unknown (recorded as such) rather than under-priced.
    ("claude-opus-5", anthropic(5_000_000, 25_000_000)),
    ("claude-opus-4-8", anthropic(5_000_000, 25_000_000)),
    ("claude-opus-4-7", anthropic(5_000_000, 25_000_000)),
    ("claude-opus-4-6", anthropic(5_000_000, 25_000_000)),
    ("claude-opus-4-5", anthropic(5_000_000, 25_000_000)),
    ("claude-sonnet-5", anthropic(2_000_000, 10_000_000)),
    (
        "claude-sonnet-5-5",
        Price { input: 2_000_000, output: 10_000_000, cached_input: 100_000, cache_write_input: 2_500_000 },
    ),
    ("claude-opus-4-1", anthropic(15_000_000, 75_000_000)),
    ("claude-opus-4", anthropic(15_000_000, 75_000_000)),
    ("claude-sonnet-4-5", anthropic(3_000_000, 15_000_000)),
    ("claude-sonnet-4", anthropic(3_000_000, 15_000_000)),
    ("claude-3-7-sonnet", anthropic(3_000_000, 15_000_000)),
    ("claude-haiku-4-5", anthropic(1_000_000, 5_000_000)),
    ("claude-3-5-haiku", anthropic(800_000, 4_000_000)),
    // Google
    ("gemini-2.5-pro", usd(1_250_000, 10_000_000, 310_000)),
    ("gemini-2.5-flash", usd(300_000, 2_500_000, 75_000)),
    ("gemini-2.5-flash-lite", usd(100_000, 400_000, 25_000)),
    ("gemini-2.0-flash", usd(100_000, 400_000, 25_000)),
    // Mistral
    ("mistral-large", usd(2_000_000, 6_000_000, 2_000_000)),
    ("mistral-medium", usd(400_000, 2_000_000, 400_000)),
    ("mistral-small", usd(100_000, 300_000, 100_000)),
    ("codestral", usd(300_000, 900_000, 300_000)),
];

/// A price as written in config: USD per million tokens, as a number or a decimal string.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PriceConfig {
    pub input: Decimal,
    pub output: Decimal,
    #[serde(default)]
    pub cached_input: Option<Decimal>,
    /// Input written to the provider's prompt cache; defaults to the input price.
    #[serde(default)]
    pub cache_write_input: Option<Decimal>,
}

/// An exact decimal amount of dollars, held as micro-dollars.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decimal(pub Micros);

impl<'de> Deserialize<'de> for Decimal {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Int(i64),
            Float(f64),
            Text(String),
        }
        let text = match Raw::deserialize(d)? {
            Raw::Int(i) => i.to_string(),
            // The shortest text that reads back as this float is what the user wrote.
            Raw::Float(f) => f.to_string(),
            Raw::Text(s) => s,
        };
        parse_usd(&text)
            .map(Decimal)
            .ok_or_else(|| serde::de::Error::custom(format!("{text:?} is not an amount of dollars (like \"2.50\")")))
    }
}

impl schemars::JsonSchema for Decimal {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "UsdAmount".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "description": "US dollars: a number, or a decimal string such as \"2.50\" (exact; at most six decimals)",
            "anyOf": [
                {"type": "number", "minimum": 0},
                {"type": "string", "pattern": "^\\$?[0-9]+(\\.[0-9]{1,6})?$"}
            ]
        })
    }
}

impl Serialize for Decimal {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format_usd(self.0))
    }
}

/// `"2.5"` -> 2_500_000 micro-dollars; at most six decimals; no negatives.
pub fn parse_usd(s: &str) -> Option<Micros> {
    let s = s.trim().trim_start_matches('$');
    let (whole, frac) = s.split_once('.').unwrap_or((s, ""));
    if whole.is_empty() && frac.is_empty()
        || frac.len() > 6
        || !whole.chars().chain(frac.chars()).all(|c| c.is_ascii_digit())
    {
        return None;
    }
    let whole: i64 = if whole.is_empty() { 0 } else { whole.parse().ok()? };
    let frac: i64 = format!("{frac:0<6}").parse().ok()?;
    whole.checked_mul(1_000_000)?.checked_add(frac)
}

/// 2_500_000 -> `"2.500000"`
pub fn format_usd(m: Micros) -> String {
    let sign = if m < 0 { "-" } else { "" };
    format!("{sign}{}.{:06}", m.abs() / 1_000_000, m.abs() % 1_000_000)
}

pub struct Prices {
    overrides: BTreeMap<String, Price>,
}

impl Prices {
    pub fn new(overrides: &BTreeMap<String, PriceConfig>) -> Self {
        let overrides = overrides
            .iter()
            .map(|(k, p)| {
                (
                    k.clone(),
                    Price {
                        input: p.input.0,
                        output: p.output.0,
                        cached_input: p.cached_input.unwrap_or(p.input).0,
                        cache_write_input: p.cache_write_input.unwrap_or(p.input).0,
                    },
                )
            })
            .collect();
        Self { overrides }
    }

    /// The price of `model` at `provider`: a config override (`provider/model`, then `model`),
    /// then the built-in table. `None` when unknown.
    pub fn lookup(&self, provider: &str, model: &str) -> Option<Price> {
        if let Some(p) = self.overrides.get(&format!("{provider}/{model}")).or_else(|| self.overrides.get(model)) {
            return Some(*p);
        }
        BUILT_IN
            .iter()
            .filter(|(key, _)| model == *key || model.strip_prefix(key).is_some_and(|rest| rest.starts_with('-')))
            .max_by_key(|(key, _)| key.len())
            .map(|(_, p)| *p)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dollars_parse_exactly() {
        assert_eq!(parse_usd("2.50"), Some(2_500_000));
        assert_eq!(parse_usd("0.000001"), Some(1));
        assert_eq!(parse_usd("$15"), Some(15_000_000));
        assert_eq!(parse_usd(".5"), Some(500_000));
        assert_eq!(parse_usd("0.0000001"), None);
        assert_eq!(parse_usd("-1"), None);
        assert_eq!(parse_usd("1e3"), None);
        assert_eq!(format_usd(2_500_000), "2.500000");
    }

    #[test]
    fn snapshots_match_their_family_and_the_longest_key_wins() {
        let p = Prices::new(&BTreeMap::new());
        assert_eq!(p.lookup("anthropic", "claude-sonnet-4-5-20250929").unwrap().input, 3_000_000);
        assert_eq!(p.lookup("openai", "gpt-4.1-mini").unwrap().input, 400_000);
        assert_eq!(p.lookup("openai", "gpt-4.1-2025-04-14").unwrap().input, 2_000_000);
        assert_eq!(p.lookup("openai", "gpt-4.10"), None, "a prefix must end at a '-'");
        assert_eq!(p.lookup("x", "mystery-model"), None);
        // Opus 4.5 and later are not Opus 4's price; Sonnet 5.5 is not Sonnet 5's cache price.
        assert_eq!(p.lookup("anthropic", "claude-opus-4-5-20251101").unwrap().input, 5_000_000);
        assert_eq!(p.lookup("anthropic", "claude-opus-4-1").unwrap().input, 15_000_000);
        assert_eq!(p.lookup("anthropic", "claude-sonnet-5-5").unwrap().cached_input, 100_000);
        assert_eq!(p.lookup("anthropic", "claude-sonnet-5").unwrap().cached_input, 200_000);
        assert_eq!(p.lookup("anthropic", "claude-haiku-5-5"), None, "priced by prompt length: unknown");
        assert_eq!(p.lookup("openai", "gpt-5-codex").unwrap().cached_input, 125_000);
    }

    #[test]
    fn every_cloud_target_of_the_default_routes_has_a_price() {
        // A budget in money counts the default routes' spend only if each is priced.
        let config = crate::config::Loaded::load(None, false, &Default::default()).unwrap().config;
        let p = Prices::new(&BTreeMap::new());
        for (name, route) in &config.routes {
            for target in route.targets() {
                let (provider, model) = target.split_once('/').unwrap();
                if !config.providers[provider].is_local() {
                    assert!(p.lookup(provider, model).is_some(), "route {name}: {target} has no price");
                }
            }
        }
    }

    #[test]
    fn cost_charges_cached_input_at_its_own_price_and_rounds_to_the_micro_dollar() {
        let price = Price { input: 2_000_000, output: 8_000_000, cached_input: 500_000, cache_write_input: 2_000_000 };
        // 1000 fresh + 1000 cached input, 500 output: 0.002 + 0.0005 + 0.004 USD
        assert_eq!(
            price.cost(&Usage { input_tokens: 2000, output_tokens: 500, cached_tokens: 1000, cache_write_tokens: 0 }),
            6_500
        );
        assert_eq!(
            price.cost(&Usage { input_tokens: 0, output_tokens: 0, cached_tokens: 0, cache_write_tokens: 0 }),
            0
        );
        // Anthropic: 1,000 read at $0.30/M, 2,000 written at $3.75/M, 1,000 fresh at $3/M, 100 out at $15/M.
        let sonnet = Prices::new(&BTreeMap::new()).lookup("anthropic", "claude-sonnet-4-5").unwrap();
        let usage = Usage { input_tokens: 4000, output_tokens: 100, cached_tokens: 1000, cache_write_tokens: 2000 };
        assert_eq!(sonnet.cost(&usage), 300 + 7_500 + 3_000 + 1_500);
    }

    #[test]
    fn overrides_win_by_provider_then_model() {
        let mut o = BTreeMap::new();
        o.insert(
            "gpt-4.1".to_string(),
            PriceConfig { input: Decimal(1), output: Decimal(2), cached_input: None, cache_write_input: None },
        );
        o.insert(
            "azure/gpt-4.1".to_string(),
            PriceConfig {
                input: Decimal(5),
                output: Decimal(6),
                cached_input: Some(Decimal(7)),
                cache_write_input: None,
            },
        );
        let p = Prices::new(&o);
        assert_eq!(
            p.lookup("openai", "gpt-4.1").unwrap(),
            Price { input: 1, output: 2, cached_input: 1, cache_write_input: 1 }
        );
        assert_eq!(
            p.lookup("azure", "gpt-4.1").unwrap(),
            Price { input: 5, output: 6, cached_input: 7, cache_write_input: 5 }
        );
    }
}
