//! cloud.cfg YAML, loaded the way cloud-init loads it: PyYAML's
//! `yaml.safe_load` (YAML 1.1 resolution) through `util.load_yaml`, which
//! turns any parse or construction error, and any document that is not a
//! mapping, into "this file sets nothing".
//!
//! Why this shape: the token/event layer comes from `saphyr-parser` (a
//! maintained, YAML 1.2 test-suite-compliant parser with no recursion in its
//! state machine). Its value layer (saphyr, yaml-rust2, serde_yaml_ng) would
//! resolve plain scalars by YAML 1.2 rules and expand aliases eagerly, both
//! wrong for us: PyYAML reads `yes`/`on` as booleans, `0755` as octal and `=`
//! as an unconstructable value, and an alias bomb must cost nothing. So the
//! events are composed here into an arena where an alias is a shared node,
//! and each node is constructed once (as PyYAML's constructor caches by node),
//! with PyYAML's implicit resolvers, safe tags, merge keys (`<<`) and
//! "last key wins". Limits: input size (the caller's cap), [`MAX_NODES`],
//! [`MAX_DEPTH`], and a [`MAX_WORK`] budget on construction and merge
//! flattening.
//!
//! Known differences from PyYAML, all on input cloud-init's own files never
//! use: a redefined anchor is accepted (PyYAML refuses it), a recursive
//! alias is refused (PyYAML builds a cyclic object), and YAML 1.1-only line
//! breaks (U+0085, U+2028, U+2029) are content, not breaks.

use std::collections::HashMap;
use std::rc::Rc;
use std::sync::LazyLock;

use regex::Regex;
use saphyr_parser::{Event, Parser, ScalarStyle};

/// Most nodes composed from one document.
pub const MAX_NODES: usize = 200_000;
/// Deepest nesting composed.
pub const MAX_DEPTH: usize = 200;
/// Most construction steps (node constructions plus merged pairs copied).
pub const MAX_WORK: usize = 2_000_000;

/// Why a YAML text gives no configuration.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum YamlError {
    /// The text does not parse (what PyYAML raises as a YAMLError).
    #[error("YAML syntax error: {0}")]
    Syntax(String),
    /// It parses, but PyYAML's safe constructor refuses it (unknown tag,
    /// unhashable key, bad merge, a value its tag cannot take).
    #[error("YAML construction error: {0}")]
    Construct(String),
    /// More than one document: `safe_load` wants exactly one.
    #[error("more than one YAML document in the stream (safe_load reads exactly one)")]
    MultipleDocuments,
    /// The document is not a mapping (cloud-init's load_yaml allows dict only).
    #[error("the document is a {0}, not a mapping")]
    NotAMapping(&'static str),
    /// Over one of our limits.
    #[error("over imgcheck's limit on {0}")]
    Limit(&'static str),
}

/// A constructed value, as PyYAML's SafeConstructor would build it.
/// Numbers and timestamps keep their source text; only their kind matters
/// here.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// `null`, `~`, empty.
    Null,
    /// `true`, `yes`, `on`, ...
    Bool(bool),
    /// An integer; the text is its decimal value when it fits in i128.
    Int(String),
    /// A float.
    Float(String),
    /// A timestamp (date or date-time).
    Timestamp(String),
    /// `!!binary`.
    Binary,
    /// A string.
    Str(String),
    /// A sequence (also `!!omap` and `!!pairs`).
    Seq(Vec<Rc<Value>>),
    /// A mapping, keys unique (last assignment wins, first position kept),
    /// merge keys already applied. `!!set` is a mapping to nulls.
    Map(Vec<(Rc<Value>, Rc<Value>)>),
}

impl Value {
    /// The value of `key` (a string key) in a mapping.
    pub fn get(&self, key: &str) -> Option<&Rc<Value>> {
        match self {
            Value::Map(pairs) => pairs
                .iter()
                .find(|(k, _)| matches!(&**k, Value::Str(s) if s == key))
                .map(|(_, v)| v),
            _ => None,
        }
    }

    /// How a value is shown in facts: strings as they are, anything else as
    /// its YAML type (`!!null`, `!!bool true`, `!!int 1`, `!!seq`, ...), so a
    /// non-string is never mistaken for a datasource name.
    pub fn render(&self) -> String {
        match self {
            Value::Str(s) => s.clone(),
            Value::Null => "!!null".into(),
            Value::Bool(b) => format!("!!bool {b}"),
            Value::Int(i) => format!("!!int {i}"),
            Value::Float(_) => "!!float".into(),
            Value::Timestamp(_) => "!!timestamp".into(),
            Value::Binary => "!!binary".into(),
            Value::Seq(_) => "!!seq".into(),
            Value::Map(_) => "!!map".into(),
        }
    }

    /// Name of the kind, for messages.
    pub fn kind_name(&self) -> &'static str {
        match self {
            Value::Null => "null",
            Value::Bool(_) => "bool",
            Value::Int(_) => "int",
            Value::Float(_) => "float",
            Value::Timestamp(_) => "timestamp",
            Value::Binary => "binary",
            Value::Str(_) => "string",
            Value::Seq(_) => "sequence",
            Value::Map(_) => "mapping",
        }
    }
}

type NodeId = usize;

/// A composed node (before construction).
#[derive(Debug)]
enum Node {
    Scalar {
        text: String,
        plain: bool,
        tag: Option<String>,
    },
    Seq {
        tag: Option<String>,
        items: Vec<NodeId>,
    },
    Map {
        tag: Option<String>,
        pairs: Vec<(NodeId, NodeId)>,
    },
}

/// An open collection while composing.
struct Frame {
    node: NodeId,
    key: Option<NodeId>,
}

/// PyYAML's Reader refuses these characters (its NON_PRINTABLE class).
fn printable(c: char) -> bool {
    matches!(c, '\t' | '\n' | '\r' | '\u{20}'..='\u{7E}' | '\u{85}' | '\u{A0}'..='\u{D7FF}' | '\u{E000}'..='\u{FFFD}' | '\u{10000}'..='\u{10FFFF}')
}

/// Composes the events of `text` into nodes; returns the arena and the
/// root of the single document (`None` for an empty stream).
fn compose(text: &str) -> Result<(Vec<Node>, Option<NodeId>), YamlError> {
    // Character ranges of quoted and block scalars, where PyYAML allows tabs.
    let mut tab_ok: Vec<(usize, usize)> = Vec::new();
    let mut nodes: Vec<Node> = Vec::new();
    let mut anchors: HashMap<usize, NodeId> = HashMap::new();
    let mut stack: Vec<Frame> = Vec::new();
    let mut docs = 0usize;
    let mut root: Option<NodeId> = None;
    let tag_of = |t: Option<std::borrow::Cow<'_, saphyr_parser::Tag>>| {
        t.map(|t| format!("{}{}", t.handle, t.suffix))
    };
    for ev in Parser::new_from_str(text) {
        let (ev, span) = ev.map_err(|e| YamlError::Syntax(e.to_string()))?;
        if let Event::Scalar(_, style, _, _) = &ev
            && *style != ScalarStyle::Plain
        {
            tab_ok.push((span.start.index(), span.end.index()));
        }
        let seq_start = matches!(ev, Event::SequenceStart(..));
        let new_node = match ev {
            Event::DocumentStart(_) => {
                docs += 1;
                if docs > 1 {
                    return Err(YamlError::MultipleDocuments);
                }
                continue;
            }
            Event::Scalar(v, style, anchor, tag) => {
                let id = nodes.len();
                nodes.push(Node::Scalar {
                    text: v.into_owned(),
                    plain: style == ScalarStyle::Plain,
                    tag: tag_of(tag),
                });
                if anchor > 0 {
                    anchors.insert(anchor, id);
                }
                Some(id)
            }
            Event::Alias(a) => Some(
                *anchors
                    .get(&a)
                    .ok_or_else(|| YamlError::Syntax("found undefined alias".into()))?,
            ),
            Event::SequenceStart(anchor, tag) | Event::MappingStart(anchor, tag) => {
                let id = nodes.len();
                let tag = tag_of(tag);
                nodes.push(if seq_start {
                    Node::Seq {
                        tag,
                        items: Vec::new(),
                    }
                } else {
                    Node::Map {
                        tag,
                        pairs: Vec::new(),
                    }
                });
                if anchor > 0 {
                    anchors.insert(anchor, id);
                }
                attach(&mut nodes, &mut stack, &mut root, id);
                if stack.len() >= MAX_DEPTH {
                    return Err(YamlError::Limit("nesting depth"));
                }
                stack.push(Frame {
                    node: id,
                    key: None,
                });
                None
            }
            Event::SequenceEnd | Event::MappingEnd => {
                stack.pop();
                None
            }
            _ => None,
        };
        if nodes.len() > MAX_NODES {
            return Err(YamlError::Limit("nodes"));
        }
        if let Some(id) = new_node {
            attach(&mut nodes, &mut stack, &mut root, id);
        }
    }
    check_tabs(text, &tab_ok)?;
    Ok((nodes, root))
}

/// PyYAML's scanner skips only spaces between tokens: a tab anywhere but
/// inside a quoted or block scalar or a comment is "found character '\t'
/// that cannot start any token" (YAML 1.2 parsers accept it as separation).
fn check_tabs(text: &str, allowed: &[(usize, usize)]) -> Result<(), YamlError> {
    let mut ranges = allowed.iter().peekable();
    let mut in_comment = false;
    let mut prev = '\n';
    for (i, c) in text.chars().enumerate() {
        while ranges.peek().is_some_and(|r| r.1 <= i) {
            ranges.next();
        }
        let inside = ranges.peek().is_some_and(|r| r.0 <= i && i < r.1);
        if c == '\n' {
            in_comment = false;
        } else if !inside && !in_comment {
            if c == '#' && matches!(prev, ' ' | '\t' | '\n' | '\r') {
                in_comment = true;
            } else if c == '\t' {
                return Err(YamlError::Syntax(
                    "found character '\\t' that cannot start any token".into(),
                ));
            }
        }
        prev = c;
    }
    Ok(())
}

/// Adds node `id` to the open collection (or makes it the root).
fn attach(nodes: &mut [Node], stack: &mut [Frame], root: &mut Option<NodeId>, id: NodeId) {
    let Some(top) = stack.last_mut() else {
        root.get_or_insert(id);
        return;
    };
    match nodes.get_mut(top.node) {
        Some(Node::Seq { items, .. }) => items.push(id),
        Some(Node::Map { pairs, .. }) => match top.key.take() {
            None => top.key = Some(id),
            Some(k) => pairs.push((k, id)),
        },
        _ => {}
    }
}

const YAML_TAG: &str = "tag:yaml.org,2002:";

static RE_BOOL: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"^(?:yes|Yes|YES|no|No|NO|true|True|TRUE|false|False|FALSE|on|On|ON|off|Off|OFF)$")
        .unwrap_or_else(|_| unreachable!())
});
static RE_FLOAT: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(concat!(
        r"^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+][0-9]+)?",
        r"|\.[0-9][0-9_]*(?:[eE][-+][0-9]+)?",
        r"|[-+]?[0-9][0-9_]*(?::[0-5]?[0-9])+\.[0-9_]*",
        r"|[-+]?\.(?:inf|Inf|INF)",
        r"|\.(?:nan|NaN|NAN))$"
    ))
    .unwrap_or_else(|_| unreachable!())
});
static RE_INT: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(concat!(
        r"^(?:[-+]?0b[0-1_]+",
        r"|[-+]?0[0-7_]+",
        r"|[-+]?(?:0|[1-9][0-9_]*)",
        r"|[-+]?0x[0-9a-fA-F_]+",
        r"|[-+]?[1-9][0-9_]*(?::[0-5]?[0-9])+)$"
    ))
    .unwrap_or_else(|_| unreachable!())
});
static RE_NULL: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^(?:~|null|Null|NULL|)$").unwrap_or_else(|_| unreachable!()));
static RE_TIMESTAMP: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(concat!(
        r"^(?:(?P<y1>[0-9]{4})-(?P<m1>[0-9]{2})-(?P<d1>[0-9]{2})",
        r"|(?P<y>[0-9]{4})-(?P<m>[0-9][0-9]?)-(?P<d>[0-9][0-9]?)",
        r"(?:[Tt]|[ \t]+)(?P<H>[0-9][0-9]?):(?P<M>[0-9]{2}):(?P<S>[0-9]{2})(?:\.[0-9]*)?",
        r"(?:[ \t]*(?:Z|[-+][0-9][0-9]?(?::[0-9][0-9])?))?)$"
    ))
    .unwrap_or_else(|_| unreachable!())
});

/// The tag PyYAML's implicit resolvers give a plain scalar, in their order
/// for the scalar's first character (bool, float, int, merge, null,
/// timestamp, value).
fn resolve_plain(s: &str) -> &'static str {
    let first = s.chars().next();
    let check = |set: &str| first.is_some_and(|c| set.contains(c));
    if check("yYnNtTfFoO") && RE_BOOL.is_match(s) {
        return "bool";
    }
    if check("-+0123456789.") && RE_FLOAT.is_match(s) {
        return "float";
    }
    if check("-+0123456789") && RE_INT.is_match(s) {
        return "int";
    }
    if s == "<<" {
        return "merge";
    }
    if (first.is_none() || check("~nN")) && RE_NULL.is_match(s) {
        return "null";
    }
    if check("0123456789") && RE_TIMESTAMP.is_match(s) {
        return "timestamp";
    }
    if s == "=" {
        return "value";
    }
    "str"
}

/// A real calendar date and time, as Python's datetime would accept it.
fn valid_timestamp(s: &str) -> bool {
    let Some(c) = RE_TIMESTAMP.captures(s) else {
        return false;
    };
    let num = |a: &str, b: &str| {
        c.name(a)
            .or_else(|| c.name(b))
            .and_then(|m| m.as_str().parse::<u32>().ok())
    };
    let (Some(y), Some(m), Some(d)) = (num("y1", "y"), num("m1", "m"), num("d1", "d")) else {
        return false;
    };
    let leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    let days = match m {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if leap => 29,
        2 => 28,
        _ => return false,
    };
    if y == 0 || d == 0 || d > days {
        return false;
    }
    let h = num("H", "H").unwrap_or(0);
    let mi = num("M", "M").unwrap_or(0);
    let sec = num("S", "S").unwrap_or(0);
    h < 24 && mi < 60 && sec < 60
}

/// PyYAML's construct_yaml_int, as a decimal string (`None` when Python's
/// int() would raise).
fn int_value(s: &str) -> Option<String> {
    let v: String = s.chars().filter(|&c| c != '_').collect();
    let (neg, v) = match v.strip_prefix('-') {
        Some(r) => (true, r.to_owned()),
        None => (false, v.strip_prefix('+').unwrap_or(&v).to_owned()),
    };
    let n: i128 = if v == "0" {
        0
    } else if let Some(b) = v.strip_prefix("0b") {
        i128::from_str_radix(b, 2).ok()?
    } else if let Some(h) = v.strip_prefix("0x") {
        i128::from_str_radix(h, 16).ok()?
    } else if v.len() > 1 && v.starts_with('0') {
        i128::from_str_radix(&v[1..], 8).ok()?
    } else if v.contains(':') {
        let mut acc: i128 = 0;
        for part in v.split(':') {
            acc = acc
                .checked_mul(60)?
                .checked_add(part.parse::<i128>().ok()?)?;
        }
        acc
    } else {
        // Python's int() takes only digits here; a too-large value is fine
        // for Python, so keep its text.
        if v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        match v.parse::<i128>() {
            Ok(n) => n,
            Err(_) => return Some(format!("{}{v}", if neg { "-" } else { "" })),
        }
    };
    Some(if neg { (-n).to_string() } else { n.to_string() })
}

/// PyYAML's construct_yaml_float accepts what Python's float() does after
/// removing `_` (plus `.inf`, `.nan` and sexagesimal forms).
fn float_ok(s: &str) -> bool {
    let v: String = s
        .chars()
        .filter(|&c| c != '_')
        .collect::<String>()
        .to_lowercase();
    let v = v.trim_start_matches(['-', '+']);
    if v == ".inf" || v == ".nan" {
        return true;
    }
    if v.contains(':') {
        return v.split(':').all(|p| p.parse::<f64>().is_ok());
    }
    v.trim().parse::<f64>().is_ok() || matches!(v.trim(), "inf" | "nan" | "infinity")
}

/// Builds values from the composed nodes, each node once.
struct Constructor<'a> {
    nodes: &'a [Node],
    done: Vec<Option<Rc<Value>>>,
    busy: Vec<bool>,
    work: usize,
}

impl Constructor<'_> {
    fn tick(&mut self, n: usize) -> Result<(), YamlError> {
        self.work = self.work.saturating_add(n);
        if self.work > MAX_WORK {
            Err(YamlError::Limit(
                "construction work (aliases or merge keys)",
            ))
        } else {
            Ok(())
        }
    }

    fn node(&self, id: NodeId) -> Result<&Node, YamlError> {
        self.nodes
            .get(id)
            .ok_or_else(|| YamlError::Construct("dangling node".into()))
    }

    fn construct(&mut self, id: NodeId, depth: usize) -> Result<Rc<Value>, YamlError> {
        if let Some(Some(v)) = self.done.get(id) {
            return Ok(v.clone());
        }
        if depth > MAX_DEPTH {
            return Err(YamlError::Limit("nesting depth"));
        }
        if self.busy.get(id).copied().unwrap_or(false) {
            return Err(YamlError::Construct(
                "recursive alias (a node that contains itself)".into(),
            ));
        }
        self.tick(1)?;
        if let Some(b) = self.busy.get_mut(id) {
            *b = true;
        }
        let v = Rc::new(self.build(id, depth)?);
        if let Some(b) = self.busy.get_mut(id) {
            *b = false;
        }
        if let Some(d) = self.done.get_mut(id) {
            *d = Some(v.clone());
        }
        Ok(v)
    }

    fn build(&mut self, id: NodeId, depth: usize) -> Result<Value, YamlError> {
        match self.node(id)? {
            Node::Scalar { text, plain, tag } => scalar(text, *plain, tag.as_deref()),
            Node::Seq { tag, items } => {
                let items = items.clone();
                match tag
                    .as_deref()
                    .map(|t| t.strip_prefix(YAML_TAG).unwrap_or(t))
                {
                    None | Some("seq" | "omap" | "pairs" | "!") => {}
                    Some(t) => return Err(bad_tag(t, "sequence")),
                }
                let mut out = Vec::with_capacity(items.len());
                for i in items {
                    out.push(self.construct(i, depth + 1)?);
                }
                Ok(Value::Seq(out))
            }
            Node::Map { tag, .. } => {
                match tag
                    .as_deref()
                    .map(|t| t.strip_prefix(YAML_TAG).unwrap_or(t))
                {
                    None | Some("map" | "set" | "!") => {}
                    Some(t) => return Err(bad_tag(t, "mapping")),
                }
                let pairs = self.flatten(id, depth)?;
                let mut out: Vec<(Rc<Value>, Rc<Value>)> = Vec::with_capacity(pairs.len());
                for (k, v) in pairs {
                    let key = self.construct(k, depth + 1)?;
                    if matches!(&*key, Value::Seq(_) | Value::Map(_)) {
                        return Err(YamlError::Construct(format!(
                            "found unhashable key (a {})",
                            key.kind_name()
                        )));
                    }
                    let val = self.construct(v, depth + 1)?;
                    self.tick(1)?;
                    match out.iter_mut().find(|(k2, _)| same_key(k2, &key)) {
                        Some(slot) => slot.1 = val,
                        None => out.push((key, val)),
                    }
                }
                Ok(Value::Map(out))
            }
        }
    }

    /// The key/value node pairs of mapping `id` with merge keys applied
    /// the way PyYAML's flatten_mapping does: merged pairs first (from a
    /// list of mappings, earlier ones win), then the mapping's own.
    fn flatten(&mut self, id: NodeId, depth: usize) -> Result<Vec<(NodeId, NodeId)>, YamlError> {
        if depth > MAX_DEPTH {
            return Err(YamlError::Limit("nesting depth"));
        }
        let Node::Map { pairs, .. } = self.node(id)? else {
            return Err(YamlError::Construct(
                "expected a mapping for merging".into(),
            ));
        };
        let pairs = pairs.clone();
        let mut merged: Vec<(NodeId, NodeId)> = Vec::new();
        let mut own: Vec<(NodeId, NodeId)> = Vec::with_capacity(pairs.len());
        for (k, v) in pairs {
            let is_merge = match self.node(k)? {
                Node::Scalar { text, plain, tag } => match tag.as_deref() {
                    Some(t) => t == "tag:yaml.org,2002:merge",
                    None => *plain && text == "<<",
                },
                _ => false,
            };
            if !is_merge {
                own.push((k, v));
                continue;
            }
            match self.node(v)? {
                Node::Map { .. } => {
                    let sub = self.flatten(v, depth + 1)?;
                    self.tick(sub.len())?;
                    merged.extend(sub);
                }
                Node::Seq { items, .. } => {
                    let items = items.clone();
                    let mut subs = Vec::new();
                    for i in items {
                        if !matches!(self.node(i)?, Node::Map { .. }) {
                            return Err(YamlError::Construct(
                                "expected a mapping for merging, but found another node".into(),
                            ));
                        }
                        subs.push(self.flatten(i, depth + 1)?);
                    }
                    for sub in subs.into_iter().rev() {
                        self.tick(sub.len())?;
                        merged.extend(sub);
                    }
                }
                Node::Scalar { .. } => {
                    return Err(YamlError::Construct(
                        "expected a mapping or list of mappings for merging, but found a scalar"
                            .into(),
                    ));
                }
            }
        }
        merged.extend(own);
        Ok(merged)
    }
}

fn bad_tag(tag: &str, node: &str) -> YamlError {
    YamlError::Construct(format!(
        "could not determine a constructor for the tag {tag:?} on a {node}"
    ))
}

/// Python dict key equality for the hashable values we build (True == 1).
fn same_key(a: &Value, b: &Value) -> bool {
    let norm = |v: &Value| match v {
        Value::Bool(true) => Value::Int("1".into()),
        Value::Bool(false) => Value::Int("0".into()),
        other => other.clone(),
    };
    match (a, b) {
        (Value::Str(x), Value::Str(y)) => x == y,
        _ => norm(a) == norm(b),
    }
}

/// Constructs a scalar node.
fn scalar(text: &str, plain: bool, tag: Option<&str>) -> Result<Value, YamlError> {
    let kind = match tag {
        Some("!") => "str",
        Some(t) => match t.strip_prefix(YAML_TAG) {
            Some(k) => k,
            None => return Err(bad_tag(t, "scalar")),
        },
        None if plain => resolve_plain(text),
        None => "str",
    };
    let bad = |what: &str| YamlError::Construct(format!("{text:?} is not a valid {what}"));
    Ok(match kind {
        "str" => Value::Str(text.to_owned()),
        "null" => Value::Null,
        "bool" => match text.to_ascii_lowercase().as_str() {
            "yes" | "true" | "on" => Value::Bool(true),
            "no" | "false" | "off" => Value::Bool(false),
            _ => return Err(bad("bool")),
        },
        "int" => Value::Int(int_value(text).ok_or_else(|| bad("int"))?),
        "float" if float_ok(text) => Value::Float(text.to_owned()),
        "timestamp" if valid_timestamp(text) => Value::Timestamp(text.to_owned()),
        "binary" => Value::Binary,
        "float" => return Err(bad("float")),
        "timestamp" => return Err(bad("timestamp")),
        other => return Err(bad_tag(other, "scalar")),
    })
}

/// Loads one cloud-init configuration text: `Ok(None)` for an empty
/// document (cloud-init's default `{}`), `Ok(Some(map))` for a mapping, an
/// error for everything cloud-init's load_yaml would ignore.
pub fn load_config(text: &str) -> Result<Option<Value>, YamlError> {
    if let Some(c) = text.chars().find(|&c| !printable(c)) {
        return Err(YamlError::Syntax(format!(
            "special character U+{:04X} is not allowed",
            u32::from(c)
        )));
    }
    // PyYAML skips a byte order mark at the start of the stream.
    let text = text.strip_prefix('\u{FEFF}').unwrap_or(text);
    let (nodes, root) = compose(text)?;
    let Some(root) = root else { return Ok(None) };
    let mut c = Constructor {
        nodes: &nodes,
        done: vec![None; nodes.len()],
        busy: vec![false; nodes.len()],
        work: 0,
    };
    let v = c.construct(root, 0)?;
    match &*v {
        Value::Null => Ok(None),
        Value::Map(_) => Ok(Some((*v).clone())),
        other => Err(YamlError::NotAMapping(other.kind_name())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ds(text: &str) -> Option<Vec<String>> {
        let v = load_config(text).ok()??;
        match &**v.get("datasource_list")? {
            Value::Seq(items) => Some(items.iter().map(|i| i.render()).collect()),
            other => Some(vec![other.render()]),
        }
    }

    fn l(v: &[&str]) -> Option<Vec<String>> {
        Some(v.iter().map(|s| (*s).to_owned()).collect())
    }

    #[test]
    fn probes_from_issue_10() {
        assert_eq!(
            ds("\"datasource_list\": [NoCloud, ConfigDrive]\n"),
            l(&["NoCloud", "ConfigDrive"])
        );
        assert_eq!(
            ds("base: &ds [NoCloud, ConfigDrive]\ndatasource_list: *ds\n"),
            l(&["NoCloud", "ConfigDrive"])
        );
        assert_eq!(
            ds("\u{FEFF}datasource_list: [NoCloud, ConfigDrive]\n"),
            l(&["NoCloud", "ConfigDrive"])
        );
        assert_eq!(
            ds("datasource_list: !!seq [NoCloud, ConfigDrive]\n"),
            l(&["NoCloud", "ConfigDrive"])
        );
        assert_eq!(
            ds("datasource_list: ['No]Cloud', ConfigDrive]\n"),
            l(&["No]Cloud", "ConfigDrive"])
        );
        assert_eq!(
            ds(
                "system_info: {\n  distro: debian,\n  default_user: {name: x}\n}\ndatasource_list: [NoCloud]\n"
            ),
            l(&["NoCloud"])
        );
        // A trailing `---` starts a second document: safe_load refuses the
        // stream, cloud-init ignores the file.
        assert_eq!(
            load_config("datasource_list: [NoCloud]\n---\n"),
            Err(YamlError::MultipleDocuments)
        );
        assert_eq!(ds("datasource_list: >\n  NoCloud\n"), l(&["NoCloud\n"]));
    }

    #[test]
    fn yaml_1_1_resolution() {
        for (s, k) in [
            ("yes", "bool"),
            ("Off", "bool"),
            ("y", "str"),
            ("0755", "int"),
            ("0x1F", "int"),
            ("1_000", "int"),
            ("1:30", "int"),
            ("1.5", "float"),
            (".inf", "float"),
            ("1e5", "str"),
            ("~", "null"),
            ("", "null"),
            ("None", "str"),
            ("2024-01-31", "timestamp"),
            ("<<", "merge"),
            ("=", "value"),
            ("NoCloud", "str"),
        ] {
            assert_eq!(resolve_plain(s), k, "{s:?}");
        }
        assert_eq!(int_value("0755").as_deref(), Some("493"));
        assert_eq!(int_value("1:30").as_deref(), Some("90"));
        assert_eq!(int_value("-0x10").as_deref(), Some("-16"));
        assert!(valid_timestamp("2024-02-29"));
        assert!(!valid_timestamp("2023-02-29"));
        assert!(!valid_timestamp("2023-13-01"));
        // A date that resolves but does not construct: the file is ignored.
        assert!(load_config("a: 2023-02-30\n").is_err());
        assert!(load_config("a: =\n").is_err());
        assert!(load_config("a: !!python/object:os.system x\n").is_err());
        assert!(load_config("a: !custom x\n").is_err());
        assert!(load_config("? [a, b]\n: c\n").is_err());
        assert_eq!(
            load_config("- a\n"),
            Err(YamlError::NotAMapping("sequence"))
        );
        assert_eq!(load_config("# only a comment\n"), Ok(None));
        assert_eq!(load_config(""), Ok(None));
        assert!(load_config("a: \u{1}\n").is_err());
    }

    #[test]
    fn merge_keys_and_last_key_wins() {
        let t = "d: &d {datasource_list: [A], x: 1}\nm:\n  <<: *d\n  x: 2\n";
        let v = load_config(t).unwrap().unwrap();
        let m = v.get("m").unwrap();
        assert_eq!(m.get("x").unwrap().render(), "!!int 2");
        assert!(m.get("datasource_list").is_some());
        assert_eq!(
            ds("datasource_list: [A]\ndatasource_list: [B]\n"),
            l(&["B"])
        );
        let t = "a: &a {k: 1}\nb: &b {k: 2}\nc: {<<: [*a, *b]}\n";
        let v = load_config(t).unwrap().unwrap();
        assert_eq!(v.get("c").unwrap().get("k").unwrap().render(), "!!int 1");
    }

    #[test]
    fn alias_bomb_is_cheap() {
        let mut t = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
        for i in 1..40 {
            let p = i - 1;
            t.push_str(&format!(
                "a{i}: &a{i} [*a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}]\n"
            ));
        }
        t.push_str("datasource_list: [ConfigDrive]\n");
        let start = std::time::Instant::now();
        assert_eq!(ds(&t), l(&["ConfigDrive"]));
        assert!(start.elapsed().as_secs() < 2);
        // Merge keys that multiply work hit the budget instead.
        let mut t = String::from("m0: &m0 {");
        for i in 0..200 {
            t.push_str(&format!("k{i}: {i}, "));
        }
        t.push_str("}\n");
        for i in 1..30 {
            let p = i - 1;
            t.push_str(&format!(
                "m{i}: &m{i} {{<<: [*m{p}, *m{p}, *m{p}, *m{p}]}}\n"
            ));
        }
        assert_eq!(
            load_config(&t),
            Err(YamlError::Limit(
                "construction work (aliases or merge keys)"
            ))
        );
        assert!(load_config("a:\tb\n").is_err());
        assert!(load_config("a: \"x\ty\" # c\td\n").is_ok());
        assert!(load_config("a: |\n  x\ty\n").is_ok());
        let deep = "[".repeat(10_000);
        assert!(load_config(&format!("a: {deep}")).is_err());
    }
}
