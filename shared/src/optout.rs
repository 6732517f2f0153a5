//! Opt-out keywords: a message that is exactly one of them (ignoring case,
//! accents, surrounding spaces and punctuation) means "stop writing to me".
//! Only the whole message counts: "stop sending me offers" is a conversation
//! for a person, "STOP" or "Parar." is a request Herald acts on by itself.

use unicode_normalization::{UnicodeNormalization, char::is_combining_mark};

/// The comparable form of a text: accents removed, lower case, inner spaces
/// collapsed, and no leading or trailing spaces or punctuation.
pub fn normalize(text: &str) -> String {
    let plain: String = text
        .nfkd()
        .filter(|c| !is_combining_mark(*c))
        .flat_map(char::to_lowercase)
        .collect();
    plain
        .trim_matches(|c: char| !c.is_alphanumeric())
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

/// The keyword `text` is, if it is one of `keywords` (given in any form).
pub fn matching_keyword(text: &str, keywords: &[String]) -> Option<String> {
    let said = normalize(text);
    if said.is_empty() {
        return None;
    }
    keywords
        .iter()
        .any(|keyword| normalize(keyword) == said)
        .then_some(said)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn defaults() -> Vec<String> {
        crate::Config::load_with_env(None, Vec::new())
            .unwrap()
            .inbound
            .opt_out_keywords
    }

    #[test]
    fn whole_message_keywords_match_whatever_the_case_accents_and_punctuation() {
        let keywords = defaults();
        for said in [
            "STOP",
            "stop",
            "  Stop.  ",
            "STOP!!!",
            "Sair",
            "PARAR",
            "ARRÊT",
            "arrêt",
            "Baja",
            "No  más",
            "UNSUBSCRIBE",
            "stopp",
        ] {
            assert!(
                matching_keyword(said, &keywords).is_some(),
                "{said:?} should opt out"
            );
        }
        assert_eq!(
            matching_keyword("ARRÊT !", &keywords).as_deref(),
            Some("arret")
        );
    }

    #[test]
    fn keywords_inside_a_sentence_or_lookalikes_do_not_match() {
        let keywords = defaults();
        for said in [
            "stop sending me this",
            "please stop",
            "stopped",
            "non-stop",
            "",
            "🙂",
            "parar?? quando chega meu pedido",
        ] {
            assert!(
                matching_keyword(said, &keywords).is_none(),
                "{said:?} should not opt out"
            );
        }
    }

    #[test]
    fn a_tenant_list_is_compared_in_the_same_form() {
        let keywords = vec!["Não Quero".to_string()];
        assert_eq!(
            matching_keyword("nao quero", &keywords).as_deref(),
            Some("nao quero")
        );
        assert!(matching_keyword("stop", &keywords).is_none());
    }
}
