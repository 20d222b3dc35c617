//! The form on a key's page: its fields as stored or as entered, and the
//! JSON merge patch for `ops::keys::update_key` that turns the key into
//! what was entered. Only the shape of the form is checked here (numbers,
//! JSON, "both or neither"); every rule on the values is the operation's,
//! so the dashboard and the API refuse the same things with the same words.

use latchkey_core::policy::KeyPolicy;
use serde_json::{Map, Value, json};

use super::csrf::Fields;

/// The key form's fields. Text as typed; `remaining` is empty unless the
/// person wants to set the balance.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct KeyForm {
    pub name: String,
    /// No permission list: everything the key's scope allows.
    pub all_permissions: bool,
    pub permissions: String,
    pub allowed_ips: String,
    pub allowed_origins: String,
    pub limit: String,
    pub window_seconds: String,
    pub credits: bool,
    pub remaining: String,
    pub refill_amount: String,
    /// `day` or `month`.
    pub refill_interval: String,
    pub meta: String,
}

/// The interval a refill gets when the form does not say.
const DEFAULT_INTERVAL: &str = "month";

impl KeyForm {
    /// The form for a key as stored. The balance field starts empty: the
    /// live balance moves with every verification, and writing back the
    /// number shown would undo what was spent since the page was loaded.
    pub fn of(name: &str, policy: &KeyPolicy) -> Self {
        let lines = |l: &Option<Vec<String>>| l.as_deref().unwrap_or_default().join("\n");
        let refill = policy.credits.as_ref().and_then(|c| c.refill);
        KeyForm {
            name: name.to_string(),
            all_permissions: policy.permissions.is_none(),
            permissions: lines(&policy.permissions),
            allowed_ips: lines(&policy.restrictions.allowed_ips),
            allowed_origins: lines(&policy.restrictions.allowed_origins),
            limit: policy
                .ratelimit
                .map(|r| r.limit.to_string())
                .unwrap_or_default(),
            window_seconds: policy
                .ratelimit
                .map(|r| r.window_seconds.to_string())
                .unwrap_or_default(),
            credits: policy.credits.is_some(),
            remaining: String::new(),
            refill_amount: refill.map(|r| r.amount.to_string()).unwrap_or_default(),
            refill_interval: refill
                .and_then(|r| serde_json::to_value(r.interval).ok())
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_else(|| DEFAULT_INTERVAL.to_string()),
            meta: policy
                .meta
                .as_ref()
                .and_then(|m| serde_json::to_string_pretty(m).ok())
                .unwrap_or_default(),
        }
    }

    /// The form as posted. Absent fields read as a browser sends them: an
    /// unchecked box is absent, an empty field is empty.
    pub fn entered(fields: &Fields) -> Self {
        let text = |name: &str| fields.get(name).unwrap_or("").to_string();
        KeyForm {
            name: text("display_name"),
            all_permissions: fields.get("all_permissions").is_some(),
            permissions: text("permissions"),
            allowed_ips: text("allowed_ips"),
            allowed_origins: text("allowed_origins"),
            limit: text("ratelimit_limit"),
            window_seconds: text("ratelimit_window_seconds"),
            credits: fields.get("credits") == Some("on"),
            remaining: text("credits_remaining"),
            refill_amount: text("refill_amount"),
            refill_interval: fields
                .get("refill_interval")
                .unwrap_or(DEFAULT_INTERVAL)
                .to_string(),
            meta: text("meta"),
        }
    }

    /// The merge patch that turns the key (`name`, `current`) into what
    /// was entered: only the members that change. `credits.remaining` is
    /// sent only when a balance was typed in, since setting it is audited
    /// and replaces the balance every node holds.
    pub fn patch(&self, name: &str, current: &KeyPolicy) -> Result<Map<String, Value>, String> {
        let mut patch = Map::new();
        if self.name.trim() != name {
            patch.insert("displayName".into(), Value::String(self.name.clone()));
        }

        let permissions = (!self.all_permissions).then(|| items(&self.permissions));
        if permissions != current.permissions {
            patch.insert("permissions".into(), list_or_null(permissions));
        }

        let mut restrictions = Map::new();
        for (member, text, now) in [
            (
                "allowedIps",
                &self.allowed_ips,
                &current.restrictions.allowed_ips,
            ),
            (
                "allowedOrigins",
                &self.allowed_origins,
                &current.restrictions.allowed_origins,
            ),
        ] {
            let wanted = Some(items(text)).filter(|l| !l.is_empty());
            if &wanted != now {
                restrictions.insert(member.into(), list_or_null(wanted));
            }
        }
        if !restrictions.is_empty() {
            patch.insert("restrictions".into(), Value::Object(restrictions));
        }

        let limit = match (self.limit.trim(), self.window_seconds.trim()) {
            ("", "") => None,
            (limit, window) if !limit.is_empty() && !window.is_empty() => Some((
                whole(limit, "The rate limit")?,
                whole(window, "The rate limit's window")?,
            )),
            _ => {
                return Err(
                    "Give both the rate limit and its window in seconds, or leave both \
                            empty for no limit."
                        .into(),
                );
            }
        };
        let now = current
            .ratelimit
            .map(|r| (i64::from(r.limit), i64::from(r.window_seconds)));
        if limit != now {
            let value = limit.map_or(
                Value::Null,
                |(limit, window)| json!({"limit": limit, "windowSeconds": window}),
            );
            patch.insert("ratelimit".into(), value);
        }

        if let Some(credits) = self.credits_patch(current)? {
            patch.insert("credits".into(), credits);
        }

        let meta = match self.meta.trim() {
            "" => Value::Null,
            text => serde_json::from_str::<Value>(text).map_err(|e| {
                format!(
                    "Meta is not valid JSON ({e}). Write a JSON object such as \
                     {{\"plan\": \"pro\"}}, or leave it empty for none."
                )
            })?,
        };
        let now = current.meta.clone().map_or(Value::Null, Value::Object);
        if meta != now {
            patch.insert("meta".into(), meta);
        }
        Ok(patch)
    }

    /// The `credits` member, if it changes.
    fn credits_patch(&self, current: &KeyPolicy) -> Result<Option<Value>, String> {
        let Some(now) = current.credits.as_ref() else {
            if !self.credits {
                return Ok(None);
            }
            // Sent even when empty: the operation then says what a key
            // needs to be given credits.
            let mut credits = Map::new();
            if let Some(refill) = self.refill()? {
                credits.insert("refill".into(), refill);
            }
            if let Some(remaining) = self.balance()? {
                credits.insert("remaining".into(), remaining);
            }
            return Ok(Some(Value::Object(credits)));
        };
        if !self.credits {
            return Ok(Some(Value::Null));
        }
        let mut credits = Map::new();
        let refill = self.refill()?;
        let before = now.refill.and_then(|r| serde_json::to_value(r).ok());
        if refill != before {
            credits.insert("refill".into(), refill.unwrap_or(Value::Null));
        }
        if let Some(remaining) = self.balance()? {
            credits.insert("remaining".into(), remaining);
        }
        Ok((!credits.is_empty()).then_some(Value::Object(credits)))
    }

    fn refill(&self) -> Result<Option<Value>, String> {
        match self.refill_amount.trim() {
            "" => Ok(None),
            amount => Ok(Some(json!({
                "amount": whole(amount, "The refill amount")?,
                "interval": self.refill_interval.trim(),
            }))),
        }
    }

    fn balance(&self) -> Result<Option<Value>, String> {
        match self.remaining.trim() {
            "" => Ok(None),
            n => Ok(Some(Value::from(whole(n, "The credit balance")?))),
        }
    }
}

/// The entries of a one-per-line field, sorted and without repeats (as
/// the key stores them). Commas and spaces separate entries too: no
/// permission name, address or origin contains one.
fn items(text: &str) -> Vec<String> {
    let mut list: Vec<String> = text
        .split(|c: char| c.is_whitespace() || c == ',')
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect();
    list.sort();
    list.dedup();
    list
}

fn list_or_null(list: Option<Vec<String>>) -> Value {
    list.map_or(Value::Null, |l| {
        Value::Array(l.into_iter().map(Value::String).collect())
    })
}

/// A whole number as typed; its range is the operation's to check.
fn whole(text: &str, what: &str) -> Result<i64, String> {
    text.parse::<i64>()
        .map_err(|_| format!("{what} must be a whole number."))
}

#[cfg(test)]
mod tests {
    use super::*;
    use latchkey_core::policy::{CreditsPolicy, RateLimit, Refill, RefillInterval, Restrictions};

    fn policy() -> KeyPolicy {
        KeyPolicy {
            permissions: Some(vec!["messages:read".into(), "messages:write".into()]),
            restrictions: Restrictions {
                allowed_ips: Some(vec!["203.0.113.0/24".into()]),
                allowed_origins: None,
            },
            ratelimit: Some(RateLimit {
                limit: 600,
                window_seconds: 60,
            }),
            credits: Some(CreditsPolicy {
                refill: Some(Refill {
                    amount: 100,
                    interval: RefillInterval::Month,
                }),
                initial: Some(100),
                balance_of: None,
            }),
            meta: json!({"plan": "pro"}).as_object().cloned(),
        }
    }

    fn fields(pairs: &[(&str, &str)]) -> Fields {
        serde_urlencoded::from_str::<Vec<(String, String)>>(
            &serde_urlencoded::to_string(pairs).expect("encode"),
        )
        .map(Fields::from)
        .expect("decode")
    }

    #[test]
    fn the_stored_key_round_trips_to_an_empty_patch() {
        let form = KeyForm::of("backend", &policy());
        assert_eq!(form.permissions, "messages:read\nmessages:write");
        assert_eq!(form.refill_interval, "month");
        assert_eq!(form.remaining, "", "the balance is never written back");
        assert_eq!(form.patch("backend", &policy()), Ok(Map::new()));
        let plain = KeyPolicy::default();
        let form = KeyForm::of("plain", &plain);
        assert!(form.all_permissions && !form.credits);
        assert_eq!(form.patch("plain", &plain), Ok(Map::new()));
    }

    #[test]
    fn a_posted_form_reads_as_a_browser_sends_it() {
        let form = KeyForm::entered(&fields(&[
            ("display_name", "renamed"),
            ("permissions", "b\r\na"),
            ("credits", "on"),
            ("credits_remaining", "5"),
        ]));
        assert_eq!(form.name, "renamed");
        assert!(!form.all_permissions, "an unchecked box is absent");
        assert!(form.credits);
        assert_eq!(form.refill_interval, "month");
        let patch = form.patch("old", &KeyPolicy::default()).expect("patch");
        assert_eq!(
            Value::Object(patch),
            json!({"displayName": "renamed", "permissions": ["a", "b"],
                   "credits": {"remaining": 5}})
        );
    }

    #[test]
    fn changes_and_removals_become_merge_patch_members() {
        let mut form = KeyForm::of("backend", &policy());
        form.name = " backend ".into();
        form.permissions = "messages:read\n\nmessages:read".into();
        form.allowed_ips = String::new();
        form.allowed_origins = "https://app.example.com, http://localhost:3000".into();
        form.limit = String::new();
        form.window_seconds = " ".into();
        form.refill_amount = "50".into();
        form.refill_interval = "day".into();
        form.meta = "{\"plan\": \"team\", \"seats\": 3}".into();
        let patch = form.patch("backend", &policy()).expect("patch");
        assert_eq!(
            Value::Object(patch),
            json!({
                "permissions": ["messages:read"],
                "restrictions": {
                    "allowedIps": null,
                    "allowedOrigins": ["http://localhost:3000", "https://app.example.com"],
                },
                "ratelimit": null,
                "credits": {"refill": {"amount": 50, "interval": "day"}},
                "meta": {"plan": "team", "seats": 3},
            })
        );

        let mut form = KeyForm::of("backend", &policy());
        form.all_permissions = true;
        form.credits = false;
        form.meta = String::new();
        form.limit = "0".into();
        let patch = form.patch("backend", &policy()).expect("patch");
        assert_eq!(
            Value::Object(patch),
            json!({"permissions": null, "credits": null, "meta": null,
                   "ratelimit": {"limit": 0, "windowSeconds": 60}}),
            "a limit of 0 is the operation's to refuse"
        );

        let mut form = KeyForm::of("backend", &policy());
        form.refill_amount = String::new();
        form.remaining = "7".into();
        let patch = form.patch("backend", &policy()).expect("patch");
        assert_eq!(
            Value::Object(patch),
            json!({"credits": {"refill": null, "remaining": 7}})
        );
    }

    #[test]
    fn credits_for_a_key_without_them_are_sent_for_the_operation_to_judge() {
        let mut form = KeyForm::of("k", &KeyPolicy::default());
        form.credits = true;
        let patch = form.patch("k", &KeyPolicy::default()).expect("patch");
        assert_eq!(Value::Object(patch), json!({"credits": {}}));
    }

    #[test]
    fn malformed_fields_are_explained() {
        let bad = |edit: &dyn Fn(&mut KeyForm)| {
            let mut form = KeyForm::of("backend", &policy());
            edit(&mut form);
            form.patch("backend", &policy()).expect_err("refused")
        };
        assert!(bad(&|f| f.limit = "ten".into()).contains("The rate limit must be a whole"));
        assert!(bad(&|f| f.window_seconds = String::new()).contains("Give both"));
        assert!(bad(&|f| f.meta = "{plan: pro}".into()).starts_with("Meta is not valid JSON"));
        assert!(bad(&|f| f.remaining = "1e3".into()).contains("credit balance"));
        assert!(bad(&|f| f.refill_amount = "-".into()).contains("refill amount"));
    }
}
