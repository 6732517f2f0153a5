//! Message templates: handlebars in strict mode producing plain text.
//!
//! Strict mode turns a variable missing from a recipient's data into an error
//! that names it, instead of an empty gap in a marketing text. Output is not
//! HTML-escaped: WhatsApp shows text as written, so `Tom & Jerry` must stay so.

use std::collections::BTreeSet;

use handlebars::{
    Handlebars, Path, RenderErrorReason, Template,
    template::{Parameter, TemplateElement},
};

const NAME: &str = "message";

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    #[error("template syntax: {0}")]
    Syntax(String),
    #[error("missing variable \"{0}\"")]
    MissingVariable(String),
    #[error("template could not be rendered: {0}")]
    Render(String),
}

/// A compiled template, ready to render many times.
pub struct MessageTemplate {
    registry: Handlebars<'static>,
    variables: Vec<String>,
}

impl MessageTemplate {
    pub fn compile(body: &str) -> Result<Self, TemplateError> {
        let mut registry = Handlebars::new();
        registry.set_strict_mode(true);
        registry.register_escape_fn(handlebars::no_escape);
        registry
            .register_template_string(NAME, body)
            .map_err(|err| TemplateError::Syntax(err.to_string()))?;
        let mut variables = BTreeSet::new();
        if let Some(template) = registry.get_template(NAME) {
            collect_variables(template, &mut variables);
        }
        Ok(Self {
            registry,
            variables: variables.into_iter().collect(),
        })
    }

    /// Top-level variable names the template reads (sorted), for documentation
    /// and for checking recipient data up front.
    pub fn variables(&self) -> &[String] {
        &self.variables
    }

    pub fn render(
        &self,
        variables: &serde_json::Map<String, serde_json::Value>,
    ) -> Result<String, TemplateError> {
        self.registry
            .render(NAME, variables)
            .map_err(|err| match err.reason() {
                RenderErrorReason::MissingVariable(path) => TemplateError::MissingVariable(
                    path.clone().unwrap_or_else(|| "(unnamed)".to_string()),
                ),
                other => TemplateError::Render(other.to_string()),
            })
    }
}

fn collect_variables(template: &Template, into: &mut BTreeSet<String>) {
    for element in &template.elements {
        match element {
            TemplateElement::Expression(helper) | TemplateElement::HtmlExpression(helper) => {
                if helper.params.is_empty() && helper.hash.is_empty() {
                    add_parameter(&helper.name, into);
                }
                helper.params.iter().for_each(|p| add_parameter(p, into));
            }
            TemplateElement::HelperBlock(helper) => {
                helper.params.iter().for_each(|p| add_parameter(p, into));
                // Inside `each` / `with` names are relative to the item, not
                // top-level variables.
                let scoped = matches!(helper.name.as_name(), Some("each" | "with"));
                if !scoped {
                    for inner in [&helper.template, &helper.inverse].into_iter().flatten() {
                        collect_variables(inner, into);
                    }
                }
            }
            _ => {}
        }
    }
}

fn add_parameter(parameter: &Parameter, into: &mut BTreeSet<String>) {
    match parameter {
        Parameter::Name(name) => {
            into.insert(name.clone());
        }
        Parameter::Path(Path::Relative((_, raw))) => {
            let top = raw.split(['.', '/']).next().unwrap_or(raw);
            if !top.is_empty() && top != "this" {
                into.insert(top.to_string());
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn vars(value: serde_json::Value) -> serde_json::Map<String, serde_json::Value> {
        value.as_object().unwrap().clone()
    }

    #[test]
    fn renders_plain_text_without_escaping() {
        let t = MessageTemplate::compile("Hi {{name}}, <b>{{offer}}</b> & more").unwrap();
        let out = t
            .render(&vars(
                json!({"name": "Tom & Jerry", "offer": "50% \"off\""}),
            ))
            .unwrap();
        assert_eq!(out, "Hi Tom & Jerry, <b>50% \"off\"</b> & more");
    }

    #[test]
    fn a_missing_variable_is_an_error_naming_it() {
        let t = MessageTemplate::compile("Hi {{name}}, your code is {{code}}").unwrap();
        let err = t.render(&vars(json!({"name": "Ana"}))).unwrap_err();
        assert_eq!(err, TemplateError::MissingVariable("code".into()));
    }

    #[test]
    fn lists_the_variables_it_uses() {
        let t = MessageTemplate::compile(
            "{{greeting}} {{user.first}}{{#if vip}} ⭐ {{tier}}{{/if}}{{#each items}}{{name}}{{/each}}",
        )
        .unwrap();
        assert_eq!(t.variables(), ["greeting", "items", "tier", "user", "vip"]);
    }

    #[test]
    fn syntax_errors_are_reported() {
        let err = MessageTemplate::compile("Hi {{name").err().unwrap();
        assert!(matches!(err, TemplateError::Syntax(_)), "{err:?}");
    }
}
