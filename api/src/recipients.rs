//! Turning a campaign's inline recipients into messages: phone numbers
//! normalised to E.164, duplicates found after normalisation, the template
//! rendered once per recipient in strict mode. Every row that cannot become a
//! message is reported with its position and the reason.

use std::collections::HashMap;

use herald_shared::{
    db::messages::NewMessage,
    domain::{PhoneNumber, new_wa_message_id},
    policy::zones::{ZoneKey, parse_zone},
    template::MessageTemplate,
};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RecipientInput {
    pub phone: String,
    /// Values for the template's variables.
    #[serde(default)]
    pub variables: Map<String, Value>,
    /// IANA zone of the recipient, when known better than from the phone.
    pub time_zone: Option<String>,
}

/// A row that did not become a message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct RejectedRow {
    /// Index in the request's `recipients` array.
    pub row: usize,
    /// JSON Pointer to the offending value.
    pub pointer: String,
    pub phone: String,
    pub reason: String,
}

pub struct Prepared {
    pub messages: Vec<NewMessage>,
    pub rejected: Vec<RejectedRow>,
}

/// Renders one recipient's text; on failure, the field at fault and why.
pub fn render(
    template: &MessageTemplate,
    variables: &Map<String, Value>,
    max_chars: usize,
) -> Result<String, String> {
    let body = template.render(variables).map_err(|err| err.to_string())?;
    let chars = body.chars().count();
    if body.trim().is_empty() {
        return Err("the rendered text is empty".into());
    }
    if chars > max_chars {
        return Err(format!(
            "the rendered text has {chars} characters (at most {max_chars})"
        ));
    }
    Ok(body)
}

/// Turns rows into messages. With several `templates` (variants), accepted
/// rows take them in turn, so each variant goes to an equal share.
pub fn prepare(
    templates: &[MessageTemplate],
    rows: &[RecipientInput],
    default_region: Option<&str>,
    max_chars: usize,
) -> Prepared {
    assert!(!templates.is_empty(), "at least one template");
    let mut messages = Vec::with_capacity(rows.len());
    let mut rejected = Vec::new();
    let mut seen: HashMap<PhoneNumber, usize> = HashMap::with_capacity(rows.len());
    for (row, input) in rows.iter().enumerate() {
        let reject = |field: &str, reason: String| RejectedRow {
            row,
            pointer: format!("/recipients/{row}/{field}"),
            phone: input.phone.clone(),
            reason,
        };
        let phone = match PhoneNumber::parse(&input.phone, default_region) {
            Ok(phone) => phone,
            Err(err) => {
                rejected.push(reject("phone", err.to_string()));
                continue;
            }
        };
        if let Some(first) = seen.get(&phone) {
            rejected.push(reject(
                "phone",
                format!("duplicate of row {first} ({phone} after normalisation)"),
            ));
            continue;
        }
        let zone = match input.time_zone.as_deref().map(parse_zone) {
            None => ZoneKey::for_phone(&phone),
            Some(Ok(zone)) => ZoneKey::explicit(zone),
            Some(Err(err)) => {
                rejected.push(reject("time_zone", err));
                continue;
            }
        };
        let variant = messages.len() % templates.len();
        let body = match render(&templates[variant], &input.variables, max_chars) {
            Ok(body) => body,
            Err(reason) => {
                rejected.push(reject("variables", reason));
                continue;
            }
        };
        seen.insert(phone.clone(), row);
        messages.push(NewMessage {
            recipient: phone,
            body,
            wa_message_id: new_wa_message_id(),
            zone,
            variant: variant as i16,
            media: None,
            suppressed: false,
        });
    }
    Prepared { messages, rejected }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn row(phone: &str, variables: Value) -> RecipientInput {
        RecipientInput {
            phone: phone.into(),
            variables: variables.as_object().cloned().unwrap_or_default(),
            time_zone: None,
        }
    }

    #[test]
    fn reports_each_bad_row_with_position_and_reason() {
        let template = MessageTemplate::compile("Hi {{name}}").unwrap();
        let rows = vec![
            row("+55 11 98765-4321", json!({"name": "Ana"})),
            row("not a phone", json!({"name": "Bo"})),
            row("+5511987654321", json!({"name": "Ana again"})),
            row("+1 202 555 0143", json!({})),
            row("(11) 91234-5678", json!({"name": "Cy"})),
        ];
        let prepared = prepare(std::slice::from_ref(&template), &rows, Some("BR"), 100);
        let accepted: Vec<&str> = prepared
            .messages
            .iter()
            .map(|m| m.recipient.as_str())
            .collect();
        assert_eq!(accepted, ["+5511987654321", "+5511912345678"]);
        assert_eq!(prepared.messages[0].body, "Hi Ana");
        let reasons: Vec<(usize, &str, &str)> = prepared
            .rejected
            .iter()
            .map(|r| (r.row, r.pointer.as_str(), r.reason.as_str()))
            .collect();
        assert_eq!(
            reasons,
            [
                (1, "/recipients/1/phone", "not a phone number"),
                (
                    2,
                    "/recipients/2/phone",
                    "duplicate of row 0 (+5511987654321 after normalisation)"
                ),
                (3, "/recipients/3/variables", "missing variable \"name\""),
            ]
        );
    }

    #[test]
    fn rendered_text_must_fit_and_not_be_empty() {
        let template = MessageTemplate::compile("{{text}}").unwrap();
        let rows = vec![
            row("+5511987654321", json!({"text": "x".repeat(11)})),
            row("+5511912345678", json!({"text": "  "})),
        ];
        let prepared = prepare(std::slice::from_ref(&template), &rows, None, 10);
        assert!(prepared.messages.is_empty());
        assert!(prepared.rejected[0].reason.contains("11 characters"));
        assert_eq!(prepared.rejected[1].reason, "the rendered text is empty");
    }

    #[test]
    fn variants_take_turns_and_zones_come_from_the_phone_or_the_row() {
        let templates = [
            MessageTemplate::compile("A {{name}}").unwrap(),
            MessageTemplate::compile("B {{name}}").unwrap(),
        ];
        let mut rows: Vec<RecipientInput> = (0..5)
            .map(|i| row(&format!("+551198765432{i}"), json!({"name": i})))
            .collect();
        rows[1].phone = "bad".into();
        rows[4].time_zone = Some("Europe/Lisbon".into());
        rows[3].time_zone = Some("Mars/Olympus".into());
        let prepared = prepare(&templates, &rows, None, 100);
        let got: Vec<(&str, i16, &str)> = prepared
            .messages
            .iter()
            .map(|m| (m.body.as_str(), m.variant, m.zone.as_str()))
            .collect();
        assert_eq!(
            got,
            [
                ("A 0", 0, "p:551"),
                ("B 2", 1, "p:551"),
                ("A 4", 0, "z:Europe/Lisbon")
            ]
        );
        assert_eq!(prepared.rejected[1].pointer, "/recipients/3/time_zone");
    }

    #[test]
    fn every_message_gets_its_own_whatsapp_id() {
        let template = MessageTemplate::compile("hello").unwrap();
        let rows = vec![
            row("+5511987654321", json!({})),
            row("+5511912345678", json!({})),
        ];
        let prepared = prepare(std::slice::from_ref(&template), &rows, None, 100);
        assert_ne!(
            prepared.messages[0].wa_message_id,
            prepared.messages[1].wa_message_id
        );
    }
}
