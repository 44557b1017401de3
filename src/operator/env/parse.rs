//! Reading the environment file: HCL attributes with the line each one is on.
//!
//! The environment file is a Terraform variables file, so only literal values
//! are allowed (Terraform itself rejects references and function calls in
//! `.tfvars`). We parse with `hcl-edit` to keep byte spans, then evaluate each
//! value with an empty context, which refuses anything that is not a literal.

use std::collections::BTreeMap;
use std::path::Path;

use hcl::edit::structure::Body;
use hcl::edit::Span;
use hcl::eval::Evaluate;

use super::diag::{Diagnostic, Diagnostics};

/// One top-level attribute of the file.
#[derive(Debug, Clone)]
pub struct Attr {
    pub line: usize,
    pub value: hcl::Value,
}

/// All attributes of one environment file, by name.
#[derive(Debug, Clone)]
pub struct RawEnv {
    pub file: String,
    pub attrs: BTreeMap<String, Attr>,
}

/// Parses `text` (read from `file`) into its attributes. Syntax errors
/// (duplicate keys among them), blocks and non-literal values are errors that
/// name the line.
pub fn parse(file: &Path, text: &str) -> Result<RawEnv, Diagnostics> {
    let file = file.display().to_string();
    // The HCL parser backtracks exponentially in deep nesting (1 KB of
    // unclosed brackets took 10 s; found by fuzzing): refuse it first.
    if let Some(line) = too_deep(text, MAX_NESTING) {
        return Err(Diagnostics::one(Diagnostic::error(
            &file,
            Some(line),
            None,
            format!("brackets nested more than {MAX_NESTING} deep; an environment file needs a few at most"),
        )));
    }
    let body: Body = hcl::edit::parser::parse_body(text).map_err(|err| {
        let loc = err.location();
        // Name the field when the offending line is `key = ...`.
        let field = err
            .line()
            .split_once('=')
            .map(|(k, _)| k.trim())
            .filter(|k| is_identifier(k));
        Diagnostics::one(Diagnostic::error(
            &file,
            Some(loc.line()),
            field,
            format!("not valid HCL at column {}: {}", loc.column(), err.message()),
        ))
    })?;

    let lines = LineIndex::new(text);
    let mut attrs = BTreeMap::new();
    let mut diags = Diagnostics::default();
    for structure in body.iter() {
        let line = structure.span().map(|s| lines.line_of(s.start));
        if let Some(block) = structure.as_block() {
            diags.push(Diagnostic::error(
                &file,
                line,
                Some(block.ident.as_str()),
                "blocks are not allowed in an environment file; write `name = value`",
            ));
            continue;
        }
        let Some(attr) = structure.as_attribute() else { continue };
        let key = attr.key.as_str().to_string();
        let line = line.unwrap_or(0);
        let expr: hcl::Expression = attr.value.clone().into();
        // Evaluated only once it is known to be a literal: the evaluator
        // panics on some arithmetic (`10 % 0`, `1 % 0.0`; found by fuzzing).
        if let Err(what) = literal_only(&expr) {
            diags.push(Diagnostic::error(
                &file,
                Some(line),
                Some(&key),
                format!("only literal values are allowed in a .tfvars file, not {what}"),
            ));
            continue;
        }
        let value = match expr.evaluate(&hcl::eval::Context::new()) {
            Ok(v) => v,
            Err(err) => {
                diags.push(Diagnostic::error(
                    &file,
                    Some(line),
                    Some(&key),
                    format!("only literal values are allowed in a .tfvars file ({err})"),
                ));
                continue;
            }
        };
        attrs.insert(key, Attr { line, value });
    }
    diags.into_result(RawEnv { file, attrs })
}

/// How deep `[`, `(` and `{` may nest (outside strings and comments).
pub const MAX_NESTING: usize = 16;

/// The line where brackets first nest deeper than `max`, if they do.
fn too_deep(text: &str, max: usize) -> Option<usize> {
    let (mut depth, mut line) = (0usize, 1usize);
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\n' => line += 1,
            '"' => {
                while let Some(s) = chars.next() {
                    match s {
                        '\\' => {
                            chars.next();
                        }
                        '"' => break,
                        '\n' => {
                            line += 1;
                            break;
                        }
                        _ => {}
                    }
                }
            }
            '#' => {
                for s in chars.by_ref() {
                    if s == '\n' {
                        line += 1;
                        break;
                    }
                }
            }
            '/' if chars.peek() == Some(&'/') => {
                for s in chars.by_ref() {
                    if s == '\n' {
                        line += 1;
                        break;
                    }
                }
            }
            '[' | '(' | '{' => {
                depth += 1;
                if depth > max {
                    return Some(line);
                }
            }
            ']' | ')' | '}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    None
}

/// A literal: null, a bool, a number (negative too), a string or template
/// without interpolation or directive, and arrays and objects of literals.
fn literal_only(expr: &hcl::Expression) -> Result<(), &'static str> {
    use hcl::expr::{Operation, UnaryOperator};
    use hcl::Expression as E;
    match expr {
        E::Null | E::Bool(_) | E::Number(_) | E::String(_) => Ok(()),
        E::TemplateExpr(t) => {
            let raw = match t.as_ref() {
                hcl::TemplateExpr::QuotedString(s) => s.as_str(),
                hcl::TemplateExpr::Heredoc(h) => h.template.as_str(),
            };
            if raw.contains("${") || raw.contains("%{") {
                Err("a template with interpolation")
            } else {
                Ok(())
            }
        }
        E::Array(items) => items.iter().try_for_each(literal_only),
        E::Object(object) => object.iter().try_for_each(|(key, value)| match key {
            hcl::ObjectKey::Identifier(_) => literal_only(value),
            hcl::ObjectKey::Expression(k) => literal_only(k).and_then(|()| literal_only(value)),
            _ => Err("an object key that is no literal"),
        }),
        E::Parenthesis(inner) => literal_only(inner),
        E::Operation(op) => match op.as_ref() {
            Operation::Unary(u) if u.operator == UnaryOperator::Neg && matches!(u.expr, E::Number(_)) => Ok(()),
            _ => Err("an operation"),
        },
        E::Variable(_) | E::Traversal(_) => Err("a reference"),
        E::FuncCall(_) => Err("a function call"),
        E::Conditional(_) => Err("a conditional"),
        E::ForExpr(_) => Err("a for expression"),
        _ => Err("an expression"),
    }
}

fn is_identifier(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// Maps byte offsets to 1-based line numbers.
struct LineIndex {
    starts: Vec<usize>,
}

impl LineIndex {
    fn new(text: &str) -> Self {
        let starts = std::iter::once(0)
            .chain(text.match_indices('\n').map(|(i, _)| i + 1))
            .collect();
        LineIndex { starts }
    }

    fn line_of(&self, offset: usize) -> usize {
        match self.starts.binary_search(&offset) {
            Ok(i) => i + 1,
            Err(i) => i,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_str(text: &str) -> Result<RawEnv, Diagnostics> {
        parse(Path::new("t.tfvars"), text)
    }

    #[test]
    fn attributes_carry_their_line() {
        let raw = parse_str("# c\na = 1\n\nb = [\"x\",\n \"y\"]\n").unwrap();
        assert_eq!(raw.attrs["a"].line, 2);
        assert_eq!(raw.attrs["b"].line, 4);
    }

    #[test]
    fn duplicate_key_names_both_lines() {
        let err = parse_str("a = 1\na = 2\n").unwrap_err().to_string();
        assert!(err.contains("t.tfvars:2: a: not valid HCL"), "{err}");
        assert!(err.contains("redefined"), "{err}");
    }

    /// Found by fuzz/env_file: the evaluator panicked on these; now they are
    /// refused before evaluation, naming the field, and literals still parse.
    #[test]
    fn arithmetic_is_refused_without_evaluating_it() {
        for text in [
            "nmak=10%0.0",
            "a = 10 % 0\n",
            "a = 1 + 2\n",
            "a = [1, 2 * 3]\n",
            "a = { b = 4 / 0 }\n",
            "a = \"${1 % 0}\"\n",
            "a = true ? 1 : 2\n",
        ] {
            let err = parse_str(text).unwrap_err().to_string();
            assert!(err.contains("only literal values"), "{text}: {err}");
        }
        let raw = parse_str("a = -1\nb = [\"x\", -2.5, null, true]\nc = { d = \"e\", \"f\" = 1 }\ng = (3)\n").unwrap();
        assert_eq!(raw.attrs["a"].value, hcl::Value::from(-1));
        assert_eq!(raw.attrs.len(), 4);
    }

    /// Found by fuzz/env_file: 1 KB of unclosed brackets took the HCL
    /// parser 10 s. Refused at once, naming the line; brackets inside
    /// strings and comments do not count.
    #[test]
    fn deep_nesting_is_refused_before_parsing() {
        let deep = format!("a = 1\nb = {}1{}\n", "[".repeat(40), "]".repeat(40));
        // The parser itself has no such message: the check ran before it.
        let err = parse_str(&deep).unwrap_err().to_string();
        assert!(err.contains("t.tfvars:2: brackets nested more than 16 deep"), "{err}");
        let fine = format!("a = \"{}\" # {}\nb = [[{{ c = 1 }}]]\n", "[".repeat(40), "(".repeat(40));
        assert!(parse_str(&fine).is_ok());
    }

    #[test]
    fn references_are_refused() {
        let err = parse_str("a = var.x\n").unwrap_err().to_string();
        assert!(err.contains("t.tfvars:1: a: only literal values"), "{err}");
    }

    #[test]
    fn syntax_error_names_line() {
        let err = parse_str("a = 1\nb = [\n").unwrap_err().to_string();
        assert!(err.contains("t.tfvars:2"), "{err}");
        assert!(err.contains("not valid HCL"), "{err}");
    }
}
