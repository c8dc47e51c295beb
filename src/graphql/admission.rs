//! What a document must pass before async-graphql validates it: it parses (else
//! `GRAPHQL_PARSE_FAILED`); it is not nested too deep, defines at most
//! `graphql.max_operations` operations, selects at most `graphql.max_root_fields` fields at
//! the root of the operation that runs and at most `graphql.max_aliases` aliased fields
//! (fragments expanded, as execution would) (else `GRAPHQL_VALIDATION_FAILED`); and, when
//! it came by GET, the operation it runs is not a mutation (else
//! `METHOD_NOT_ALLOWED`, which the HTTP layer answers with 405).
//!
//! Depth is measured as async-graphql does (each field one level, fragments inlined), with
//! one difference: an introspection field (`__schema`, `__type`) and everything below it
//! are measured apart. Tools send graphql-js's `getIntrospectionQuery()`, whose `ofType`
//! chain alone is nine levels deep (fifteen in all), so it cannot fit under
//! `graphql.max_depth` without raising that limit for every query. Introspection gets its
//! own bounds instead, which the standard queries fit and a hostile one does not:
//!
//! - at most [`INTROSPECTION_MAX_DEPTH`] levels from `__schema`/`__type` down;
//! - along any one path, each field that lists schema elements (`types`, `fields`,
//!   `inputFields`, `interfaces`, `possibleTypes`, `enumValues`, `args`, `directives`) at
//!   most once. Those lists are what make introspection cyclic and its answer grow
//!   geometrically with depth (`fields { type { fields { type … } } }`); graphql-java's
//!   "good faith introspection" bounds the same fields.
//!
//! Because the parser's own limits come after this step, the walk bounds itself: it stops
//! at [`MAX_NESTING`] nested selection sets and after [`MAX_VISITS`] selections, so neither
//! deep nesting nor fragments spread many times can make it expensive.

use super::errors::ErrorCode;
use async_graphql::{
    Request, ServerError, ServerResult,
    parser::types::{
        DocumentOperations, ExecutableDocument, OperationDefinition, OperationType, Selection,
        SelectionSet,
    },
};
use std::any::TypeId;

/// Deepest nesting inside an introspection field, the field itself counted: the standard
/// queries need 15 (`__schema types fields args type` and nine `ofType`, then `name`).
pub const INTROSPECTION_MAX_DEPTH: usize = 16;
/// Nested selection sets (fields and fragments) the walk follows; async-graphql's own
/// recursion limit is the same.
pub const MAX_NESTING: usize = 64;
/// Selections the walk visits, fragments expanded, before it refuses the document.
pub const MAX_VISITS: usize = 20_000;

/// Introspection fields that list schema elements; see the module documentation.
const INTROSPECTION_LISTS: [&str; 8] = [
    "types",
    "fields",
    "inputFields",
    "interfaces",
    "possibleTypes",
    "enumValues",
    "args",
    "directives",
];

/// Request data marking a request that came by a safe HTTP method (GET): it may run
/// queries only (GraphQL over HTTP, "GET": mutations MUST be refused with 405).
pub struct SafeMethod;

/// The checks, with the configured limits; run by [`super::gate`].
#[derive(Clone, Copy, Debug)]
pub struct Admission {
    pub max_depth: usize,
    pub max_aliases: usize,
    pub max_root_fields: usize,
    pub max_operations: usize,
    /// Whether `__schema` and `__type` may be asked (`graphql.introspection`); when not,
    /// a document that asks is refused with a clear error (`__typename` stays allowed).
    pub introspection: bool,
}

impl Admission {
    /// The checks, before async-graphql reads the document (in [`super::gate`], after a
    /// persisted query is resolved to its text). Answers the type of the operation the
    /// request runs, when one can be selected (else execution reports why).
    pub(super) fn admit(&self, request: &mut Request) -> ServerResult<Option<OperationType>> {
        let safe_method = request.data.contains_key(&TypeId::of::<SafeMethod>());
        let operation_name = request.operation_name.clone();
        // Parsed once here; async-graphql uses this document and does not parse again.
        let document = request.parsed_query().map_err(|mut error| {
            ErrorCode::GraphqlParseFailed.set_on(&mut error);
            error
        })?;
        if document.operations.iter().count() > self.max_operations {
            return Err(ErrorCode::GraphqlValidationFailed.error(format!(
                "The document defines more than {} operations.",
                self.max_operations
            )));
        }
        let counts = check_depth(document, self.max_depth)?;
        if counts.introspects && !self.introspection {
            return Err(ErrorCode::GraphqlValidationFailed.error(
                "Introspection is disabled on this server; the schema is published as SDL.",
            ));
        }
        if counts.aliases > self.max_aliases {
            return Err(ErrorCode::GraphqlValidationFailed.error(format!(
                "The request has more than {} aliased fields.",
                self.max_aliases
            )));
        }
        let operation = selected(document, operation_name.as_deref());
        if let Some(operation) = operation
            && root_fields(document, &operation.selection_set.node, 0) > self.max_root_fields
        {
            return Err(ErrorCode::GraphqlValidationFailed.error(format!(
                "The operation selects more than {} fields at its root.",
                self.max_root_fields
            )));
        }
        if safe_method && runs_a_mutation(document, operation_name.as_deref()) {
            return Err(ErrorCode::MethodNotAllowed.error("mutations must be sent with POST"));
        }
        Ok(operation.map(|op| op.ty))
    }
}

/// True when the operation the request selects is a mutation. When none can be selected
/// (an unknown name, several operations and no name) this says false and execution reports
/// the error.
fn runs_a_mutation(document: &ExecutableDocument, operation_name: Option<&str>) -> bool {
    selected(document, operation_name).is_some_and(|op| op.ty == OperationType::Mutation)
}

/// The operation the request runs, when one can be selected.
fn selected<'a>(
    document: &'a ExecutableDocument,
    operation_name: Option<&str>,
) -> Option<&'a OperationDefinition> {
    let operation = match (&document.operations, operation_name) {
        (DocumentOperations::Single(op), _) => Some(op),
        (DocumentOperations::Multiple(ops), Some(name)) => ops.get(name),
        (DocumentOperations::Multiple(ops), None) if ops.len() == 1 => ops.values().next(),
        (DocumentOperations::Multiple(_), None) => None,
    };
    operation.map(|op| &op.node)
}

/// The fields at the root of a selection set, through fragments (bounded: a fragment cycle
/// is validation's to report, and the walk has already bounded the document's size).
fn root_fields(document: &ExecutableDocument, set: &SelectionSet, nesting: usize) -> usize {
    if nesting > 8 {
        return 0;
    }
    set.items
        .iter()
        .map(|selection| match &selection.node {
            Selection::Field(_) => 1,
            Selection::InlineFragment(fragment) => {
                root_fields(document, &fragment.node.selection_set.node, nesting + 1)
            }
            Selection::FragmentSpread(spread) => document
                .fragments
                .get(spread.node.fragment_name.node.as_str())
                .map_or(0, |f| {
                    root_fields(document, &f.node.selection_set.node, nesting + 1)
                }),
        })
        .sum()
}

/// Why a document is refused before validation.
#[derive(Debug, PartialEq, Eq)]
enum Refusal {
    TooDeep,
    IntrospectionTooDeep,
    IntrospectionRepeats(String),
    TooLarge,
}

impl Refusal {
    fn into_error(self, max_depth: usize) -> ServerError {
        let message = match self {
            Refusal::TooDeep => format!("Query is nested too deep: at most {max_depth} levels."),
            Refusal::IntrospectionTooDeep => format!(
                "Introspection is nested too deep: at most {INTROSPECTION_MAX_DEPTH} levels from __schema or __type."
            ),
            Refusal::IntrospectionRepeats(field) => {
                format!("Introspection may select `{field}` only once along a path.")
            }
            Refusal::TooLarge => {
                format!(
                    "Query is too large: more than {MAX_VISITS} selections with fragments expanded, or nested more than {MAX_NESTING} times."
                )
            }
        };
        ErrorCode::GraphqlValidationFailed.error(message)
    }
}

/// Where the walk is inside an introspection field.
#[derive(Clone, Default)]
struct IntrospectionPath {
    /// Levels from the introspection field, which is level 1.
    depth: usize,
    /// Which of [`INTROSPECTION_LISTS`] this path has gone through.
    lists: [bool; INTROSPECTION_LISTS.len()],
}

impl IntrospectionPath {
    fn enter(&self, field: &str) -> Result<Self, Refusal> {
        let mut next = self.clone();
        next.depth += 1;
        if next.depth > INTROSPECTION_MAX_DEPTH {
            return Err(Refusal::IntrospectionTooDeep);
        }
        if let Some(i) = INTROSPECTION_LISTS.iter().position(|l| *l == field) {
            if next.lists[i] {
                return Err(Refusal::IntrospectionRepeats(field.to_owned()));
            }
            next.lists[i] = true;
        }
        Ok(next)
    }
}

struct Walk<'a> {
    document: &'a ExecutableDocument,
    max_depth: usize,
    visits: usize,
    /// Aliased fields met, fragments expanded.
    aliases: usize,
    introspects: bool,
    /// Fragments being expanded on the current path; a cycle is left for validation to
    /// report (`NoFragmentCycles`).
    fragments: Vec<&'a str>,
}

/// What the walk counted in a document it admitted.
struct Counts {
    aliases: usize,
    /// Whether the document asks for `__schema` or `__type`.
    introspects: bool,
}

fn check_depth(document: &ExecutableDocument, max_depth: usize) -> Result<Counts, ServerError> {
    let mut walk = Walk {
        document,
        max_depth,
        visits: 0,
        aliases: 0,
        introspects: false,
        fragments: Vec::new(),
    };
    for (_, operation) in document.operations.iter() {
        walk.selection_set(&operation.node.selection_set.node, 0, 0, None)
            .map_err(|refusal| refusal.into_error(max_depth))?;
    }
    Ok(Counts {
        aliases: walk.aliases,
        introspects: walk.introspects,
    })
}

impl<'a> Walk<'a> {
    fn selection_set(
        &mut self,
        set: &'a SelectionSet,
        depth: usize,
        nesting: usize,
        introspection: Option<&IntrospectionPath>,
    ) -> Result<(), Refusal> {
        if nesting > MAX_NESTING {
            return Err(Refusal::TooLarge);
        }
        for selection in &set.items {
            self.visits += 1;
            if self.visits > MAX_VISITS {
                return Err(Refusal::TooLarge);
            }
            match &selection.node {
                Selection::Field(field) => {
                    if field.node.alias.is_some() {
                        self.aliases += 1;
                    }
                    let name = field.node.name.node.as_str();
                    let depth = depth + 1;
                    let inner = match introspection {
                        Some(path) => Some(path.enter(name)?),
                        None if name == "__schema" || name == "__type" => {
                            self.introspects = true;
                            Some(IntrospectionPath::default().enter(name)?)
                        }
                        None if depth > self.max_depth => return Err(Refusal::TooDeep),
                        None => None,
                    };
                    self.selection_set(
                        &field.node.selection_set.node,
                        depth,
                        nesting + 1,
                        inner.as_ref(),
                    )?;
                }
                Selection::FragmentSpread(spread) => {
                    let name = spread.node.fragment_name.node.as_str();
                    let Some(fragment) = self.document.fragments.get(name) else {
                        continue;
                    };
                    if self.fragments.contains(&name) {
                        continue;
                    }
                    self.fragments.push(name);
                    let result = self.selection_set(
                        &fragment.node.selection_set.node,
                        depth,
                        nesting + 1,
                        introspection,
                    );
                    self.fragments.pop();
                    result?;
                }
                Selection::InlineFragment(fragment) => {
                    self.selection_set(
                        &fragment.node.selection_set.node,
                        depth,
                        nesting + 1,
                        introspection,
                    )?;
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use async_graphql::parser::parse_query;

    fn refusal(query: &str, max_depth: usize) -> Option<String> {
        let document = parse_query(query).expect("parses");
        check_depth(&document, max_depth).err().map(|e| e.message)
    }

    #[test]
    fn application_depth_counts_every_field_with_fragments_inlined() {
        assert_eq!(refusal("{ a { b { c } } }", 3), None);
        assert!(refusal("{ a { b { c { d } } } }", 3).is_some());
        let spread = "query { a { ...F } } fragment F on T { b { c { d } } }";
        assert!(refusal(spread, 3).is_some());
        assert_eq!(refusal(spread, 4), None);
    }

    #[test]
    fn introspection_is_measured_apart_and_bounded() {
        let of_types = |n: usize| {
            format!(
                "{{ __type(name: \"Order\") {{ {} name {} }} }}",
                "ofType { ".repeat(n),
                "} ".repeat(n)
            )
        };
        assert_eq!(refusal(&of_types(13), 2), None, "15 levels");
        assert!(refusal(&of_types(50), 12).is_some());
        let cycle = "{ __schema { types { fields { type { fields { name } } } } } }";
        assert!(refusal(cycle, 12).unwrap().contains("`fields` only once"));
    }

    #[test]
    fn fragment_bombs_and_deep_nesting_stop_the_walk() {
        let mut bomb = String::from("query { ...F0 }");
        for i in 0..30 {
            bomb.push_str(&format!(
                " fragment F{i} on Query {{ ...F{n} ...F{n} ...F{n} }}",
                n = i + 1
            ));
        }
        bomb.push_str(" fragment F30 on Query { __typename }");
        assert!(refusal(&bomb, 12).unwrap().contains("too large"));
        // The parser bounds nesting within one selection set; a chain of fragments is
        // nested only once expanded.
        let mut chain = String::from("query { ...C0 }");
        for i in 0..70 {
            chain.push_str(&format!(" fragment C{i} on Query {{ ...C{} }}", i + 1));
        }
        chain.push_str(" fragment C70 on Query { __typename }");
        assert!(refusal(&chain, 12).unwrap().contains("too large"));
    }

    #[test]
    fn the_operation_a_request_selects_decides_whether_it_mutates() {
        let doc = parse_query("query Q { a } mutation M { b }").unwrap();
        assert!(runs_a_mutation(&doc, Some("M")));
        assert!(!runs_a_mutation(&doc, Some("Q")));
        assert!(!runs_a_mutation(&doc, None));
        let doc = parse_query("mutation { b }").unwrap();
        assert!(runs_a_mutation(&doc, None));
    }
}
