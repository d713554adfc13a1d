//! A format-neutral document tree with source lines.
//!
//! YAML, JSON and TOML are each parsed into the same [`Node`] tree so that one serde schema and
//! one error reporter serve all three, and every error can name the line it comes from.

use std::collections::HashMap;

/// One value of a configuration document and the line (1-based) it starts on, when known.
#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    pub kind: Kind,
    pub line: Option<usize>,
}

/// The shape of a [`Node`].
#[derive(Debug, Clone, PartialEq)]
pub enum Kind {
    Null,
    Bool(bool),
    Int(i128),
    Float(f64),
    /// A string; `plain` is true for an unquoted YAML scalar, which may also be read as a string
    /// when it looks like a number or boolean (`name: 2024`).
    Str {
        value: String,
        plain: bool,
    },
    Seq(Vec<Node>),
    /// Entries keep document order; each key carries its own line.
    Map(Vec<(String, Option<usize>, Node)>),
}

/// A syntax error: the document could not be read as its format at all.
#[derive(Debug, Clone, PartialEq)]
pub struct SyntaxError {
    pub line: Option<usize>,
    pub message: String,
}

impl Node {
    fn new(kind: Kind, line: Option<usize>) -> Self {
        Node { kind, line }
    }

    /// A short name of the node's type for error messages.
    pub fn type_name(&self) -> &'static str {
        match self.kind {
            Kind::Null => "null",
            Kind::Bool(_) => "a boolean",
            Kind::Int(_) => "an integer",
            Kind::Float(_) => "a number",
            Kind::Str { .. } => "a string",
            Kind::Seq(_) => "a list",
            Kind::Map(_) => "a map",
        }
    }

    /// Finds the node at a path of map keys and list indices.
    pub fn at(&self, path: &[Seg]) -> Option<&Node> {
        let mut cur = self;
        for seg in path {
            cur = match (&cur.kind, seg) {
                (Kind::Map(entries), Seg::Key(k)) => {
                    entries.iter().find(|(key, _, _)| key == k).map(|e| &e.2)?
                }
                (Kind::Seq(items), Seg::Index(i)) => items.get(*i)?,
                _ => return None,
            };
        }
        Some(cur)
    }

    /// The best line for a path: the node's own line, or the line of its key, or the nearest
    /// ancestor's line when the path does not exist (a missing key).
    pub fn line_of(&self, path: &[Seg]) -> Option<usize> {
        let mut cur = self;
        let mut best = self.line;
        for seg in path {
            match (&cur.kind, seg) {
                (Kind::Map(entries), Seg::Key(k)) => {
                    match entries.iter().find(|(key, _, _)| key == k) {
                        Some((_, key_line, node)) => {
                            best = key_line.or(node.line).or(best);
                            cur = node;
                        }
                        None => return best,
                    }
                }
                (Kind::Seq(items), Seg::Index(i)) => match items.get(*i) {
                    Some(node) => {
                        best = node.line.or(best);
                        cur = node;
                    }
                    None => return best,
                },
                _ => return best,
            }
        }
        best
    }

    /// Calls `f` with the path of every string in the tree.
    pub fn walk_strings(&self, path: &mut Vec<Seg>, f: &mut dyn FnMut(&[Seg], &str)) {
        match &self.kind {
            Kind::Str { value, .. } => f(path, value),
            Kind::Seq(items) => {
                for (i, item) in items.iter().enumerate() {
                    path.push(Seg::Index(i));
                    item.walk_strings(path, f);
                    path.pop();
                }
            }
            Kind::Map(entries) => {
                for (k, _, v) in entries {
                    path.push(Seg::Key(k.clone()));
                    v.walk_strings(path, f);
                    path.pop();
                }
            }
            _ => {}
        }
    }
}

/// One step of a key path: a map key or a list index.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Seg {
    Key(String),
    Index(usize),
}

/// Renders a path the way users write it: `upstreams[1].pool.idle_timeout`.
pub fn path_string(path: &[Seg]) -> String {
    let mut out = String::new();
    for seg in path {
        match seg {
            Seg::Key(k) => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(k);
            }
            Seg::Index(i) => {
                out.push('[');
                out.push_str(&i.to_string());
                out.push(']');
            }
        }
    }
    if out.is_empty() {
        out.push_str("(document)");
    }
    out
}

fn line_of_offset(text: &str, offset: usize) -> usize {
    let end = offset.min(text.len());
    text.as_bytes()[..end]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

// ---------------------------------------------------------------------------------------------
// YAML

/// Most nodes YAML aliases may add to a document's tree (each alias copies its anchored
/// node). A configuration needs a handful; nested aliases otherwise grow exponentially.
pub const MAX_ALIAS_NODES: usize = 10_000;

/// Parses one YAML document into a [`Node`] tree.
pub fn parse_yaml(text: &str) -> Result<Node, SyntaxError> {
    use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};
    use yaml_rust2::scanner::{Marker, TScalarStyle};

    enum Frame {
        Seq(Vec<Node>, usize, usize),
        Map(
            Vec<(String, Option<usize>, Node)>,
            Option<(String, Option<usize>)>,
            usize,
            usize,
        ),
    }
    #[derive(Default)]
    struct Builder {
        stack: Vec<Frame>,
        docs: Vec<Node>,
        /// Anchored nodes with their size in nodes.
        anchors: HashMap<usize, (Node, usize)>,
        /// Nodes added to the tree by aliases so far (bounded: see [`MAX_ALIAS_NODES`]).
        alias_nodes: usize,
        error: Option<SyntaxError>,
    }
    /// Nodes in a tree.
    fn size(node: &Node) -> usize {
        match &node.kind {
            Kind::Seq(items) => 1 + items.iter().map(size).sum::<usize>(),
            Kind::Map(entries) => 1 + entries.iter().map(|(_, _, v)| size(v)).sum::<usize>(),
            _ => 1,
        }
    }
    impl Builder {
        fn push_value(&mut self, node: Node, anchor: usize) {
            if anchor > 0 {
                let n = size(&node);
                self.anchors.insert(anchor, (node.clone(), n));
            }
            match self.stack.last_mut() {
                None => self.docs.push(node),
                Some(Frame::Seq(items, _, _)) => items.push(node),
                Some(Frame::Map(entries, pending, _, _)) => match pending.take() {
                    None => {
                        let key = match &node.kind {
                            Kind::Str { value, .. } => Some(value.clone()),
                            Kind::Int(i) => Some(i.to_string()),
                            Kind::Bool(b) => Some(b.to_string()),
                            _ => None,
                        };
                        match key {
                            Some(k) => {
                                if entries.iter().any(|(e, _, _)| *e == k) && self.error.is_none() {
                                    self.error = Some(SyntaxError {
                                        line: node.line,
                                        message: format!("duplicate key `{k}`"),
                                    });
                                }
                                *pending = Some((k, node.line));
                            }
                            None => {
                                if self.error.is_none() {
                                    self.error = Some(SyntaxError {
                                        line: node.line,
                                        message: format!(
                                            "map keys must be strings, found {}",
                                            node.type_name()
                                        ),
                                    });
                                }
                                *pending = Some((String::new(), node.line));
                            }
                        }
                    }
                    Some((k, line)) => entries.push((k, line, node)),
                },
            }
        }
    }
    impl MarkedEventReceiver for Builder {
        fn on_event(&mut self, ev: Event, mark: Marker) {
            let line = Some(mark.line());
            match ev {
                Event::Scalar(value, style, anchor, tag) => {
                    let node = scalar(value, style, tag.map(|t| t.suffix), line);
                    self.push_value(node, anchor);
                }
                Event::SequenceStart(anchor, _) => {
                    self.stack.push(Frame::Seq(Vec::new(), anchor, mark.line()))
                }
                Event::MappingStart(anchor, _) => {
                    self.stack
                        .push(Frame::Map(Vec::new(), None, anchor, mark.line()))
                }
                Event::SequenceEnd => {
                    if let Some(Frame::Seq(items, anchor, l)) = self.stack.pop() {
                        self.push_value(Node::new(Kind::Seq(items), Some(l)), anchor);
                    }
                }
                Event::MappingEnd => {
                    if let Some(Frame::Map(entries, _, anchor, l)) = self.stack.pop() {
                        self.push_value(Node::new(Kind::Map(entries), Some(l)), anchor);
                    }
                }
                Event::Alias(id) => {
                    // Aliases are expanded by copying; nested ones multiply ("billion laughs"),
                    // so the copies are bounded and a document over the bound is refused.
                    let node = match self.anchors.get(&id) {
                        Some((node, n)) if self.alias_nodes + n <= MAX_ALIAS_NODES => {
                            self.alias_nodes += n;
                            node.clone()
                        }
                        Some(_) => {
                            if self.error.is_none() {
                                self.error = Some(SyntaxError {
                                    line,
                                    message: format!(
                                        "aliases expand to more than {MAX_ALIAS_NODES} nodes"
                                    ),
                                });
                            }
                            Node::new(Kind::Null, line)
                        }
                        None => Node::new(Kind::Null, line),
                    };
                    self.push_value(node, 0);
                }
                _ => {}
            }
        }
    }
    fn scalar(
        value: String,
        style: TScalarStyle,
        tag: Option<String>,
        line: Option<usize>,
    ) -> Node {
        if style != TScalarStyle::Plain {
            return Node::new(
                Kind::Str {
                    value,
                    plain: false,
                },
                line,
            );
        }
        if tag.as_deref() == Some("str") {
            return Node::new(
                Kind::Str {
                    value,
                    plain: false,
                },
                line,
            );
        }
        let kind = match value.as_str() {
            "" | "~" | "null" | "Null" | "NULL" => Kind::Null,
            "true" | "True" | "TRUE" => Kind::Bool(true),
            "false" | "False" | "FALSE" => Kind::Bool(false),
            v => {
                if let Some(i) = parse_yaml_int(v) {
                    Kind::Int(i)
                } else if let Some(f) = parse_yaml_float(v) {
                    Kind::Float(f)
                } else {
                    Kind::Str { value, plain: true }
                }
            }
        };
        Node::new(kind, line)
    }

    let mut builder = Builder::default();
    let mut parser = Parser::new_from_str(text);
    if let Err(e) = parser.load(&mut builder, true) {
        return Err(SyntaxError {
            line: Some(e.marker().line()),
            message: e.info().to_string(),
        });
    }
    if let Some(err) = builder.error {
        return Err(err);
    }
    match builder.docs.len() {
        0 => Ok(Node::new(Kind::Map(Vec::new()), Some(1))),
        1 => Ok(builder.docs.remove(0)),
        n => Err(SyntaxError {
            line: builder.docs.get(1).and_then(|d| d.line),
            message: format!("expected one YAML document, found {n}"),
        }),
    }
}

fn parse_yaml_int(v: &str) -> Option<i128> {
    let (neg, digits) = match v.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, v.strip_prefix('+').unwrap_or(v)),
    };
    let parsed = if let Some(hex) = digits.strip_prefix("0x") {
        i128::from_str_radix(hex, 16).ok()
    } else if let Some(oct) = digits.strip_prefix("0o") {
        i128::from_str_radix(oct, 8).ok()
    } else if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) {
        digits.parse::<i128>().ok()
    } else {
        None
    }?;
    Some(if neg { -parsed } else { parsed })
}

fn parse_yaml_float(v: &str) -> Option<f64> {
    match v {
        ".inf" | "+.inf" | ".Inf" | "+.Inf" => return Some(f64::INFINITY),
        "-.inf" | "-.Inf" => return Some(f64::NEG_INFINITY),
        ".nan" | ".NaN" => return Some(f64::NAN),
        _ => {}
    }
    let body = v.trim_start_matches(['-', '+']);
    let looks_numeric = body.starts_with(|c: char| c.is_ascii_digit() || c == '.')
        && body
            .bytes()
            .all(|b| b.is_ascii_digit() || matches!(b, b'.' | b'e' | b'E' | b'-' | b'+'))
        && body.bytes().any(|b| b.is_ascii_digit());
    if looks_numeric {
        v.parse::<f64>().ok()
    } else {
        None
    }
}

// ---------------------------------------------------------------------------------------------
// JSON

/// Parses a JSON document into a [`Node`] tree, tracking lines.
pub fn parse_json(text: &str) -> Result<Node, SyntaxError> {
    // serde_json gives the precise syntax error; the small reader below then keeps the lines.
    if let Err(e) = serde_json::from_str::<serde::de::IgnoredAny>(text) {
        return Err(SyntaxError {
            line: Some(e.line()),
            message: strip_position(&e.to_string()),
        });
    }
    let mut r = JsonReader {
        text: text.as_bytes(),
        src: text,
        pos: 0,
        line: 1,
    };
    r.skip_ws();
    let node = r.value(0)?;
    Ok(node)
}

fn strip_position(msg: &str) -> String {
    match msg.find(" at line ") {
        Some(i) => msg[..i].to_string(),
        None => msg.to_string(),
    }
}

struct JsonReader<'a> {
    text: &'a [u8],
    src: &'a str,
    pos: usize,
    line: usize,
}

impl JsonReader<'_> {
    fn err(&self, message: &str) -> SyntaxError {
        SyntaxError {
            line: Some(self.line),
            message: message.to_string(),
        }
    }

    fn skip_ws(&mut self) {
        while let Some(&b) = self.text.get(self.pos) {
            match b {
                b'\n' => {
                    self.line += 1;
                    self.pos += 1;
                }
                b' ' | b'\t' | b'\r' => self.pos += 1,
                _ => break,
            }
        }
    }

    fn value(&mut self, depth: usize) -> Result<Node, SyntaxError> {
        if depth > 128 {
            return Err(self.err("document nested too deeply"));
        }
        let line = Some(self.line);
        match self.text.get(self.pos) {
            Some(b'{') => {
                self.pos += 1;
                let mut entries: Vec<(String, Option<usize>, Node)> = Vec::new();
                self.skip_ws();
                if self.text.get(self.pos) == Some(&b'}') {
                    self.pos += 1;
                    return Ok(Node::new(Kind::Map(entries), line));
                }
                loop {
                    self.skip_ws();
                    let key_line = Some(self.line);
                    let key = self.string()?;
                    if entries.iter().any(|(k, _, _)| *k == key) {
                        return Err(SyntaxError {
                            line: key_line,
                            message: format!("duplicate key `{key}`"),
                        });
                    }
                    self.skip_ws();
                    self.expect(b':')?;
                    self.skip_ws();
                    let v = self.value(depth + 1)?;
                    entries.push((key, key_line, v));
                    self.skip_ws();
                    match self.text.get(self.pos) {
                        Some(b',') => self.pos += 1,
                        Some(b'}') => {
                            self.pos += 1;
                            return Ok(Node::new(Kind::Map(entries), line));
                        }
                        _ => return Err(self.err("expected `,` or `}`")),
                    }
                }
            }
            Some(b'[') => {
                self.pos += 1;
                let mut items = Vec::new();
                self.skip_ws();
                if self.text.get(self.pos) == Some(&b']') {
                    self.pos += 1;
                    return Ok(Node::new(Kind::Seq(items), line));
                }
                loop {
                    self.skip_ws();
                    items.push(self.value(depth + 1)?);
                    self.skip_ws();
                    match self.text.get(self.pos) {
                        Some(b',') => self.pos += 1,
                        Some(b']') => {
                            self.pos += 1;
                            return Ok(Node::new(Kind::Seq(items), line));
                        }
                        _ => return Err(self.err("expected `,` or `]`")),
                    }
                }
            }
            Some(b'"') => {
                let value = self.string()?;
                Ok(Node::new(
                    Kind::Str {
                        value,
                        plain: false,
                    },
                    line,
                ))
            }
            Some(b't') => self.literal("true", Kind::Bool(true), line),
            Some(b'f') => self.literal("false", Kind::Bool(false), line),
            Some(b'n') => self.literal("null", Kind::Null, line),
            Some(_) => {
                let start = self.pos;
                while let Some(&b) = self.text.get(self.pos) {
                    if b.is_ascii_digit() || matches!(b, b'-' | b'+' | b'.' | b'e' | b'E') {
                        self.pos += 1;
                    } else {
                        break;
                    }
                }
                let raw = self.src.get(start..self.pos).unwrap_or_default();
                if let Ok(i) = raw.parse::<i128>() {
                    Ok(Node::new(Kind::Int(i), line))
                } else if let Ok(f) = raw.parse::<f64>() {
                    Ok(Node::new(Kind::Float(f), line))
                } else {
                    Err(self.err("invalid number"))
                }
            }
            None => Err(self.err("unexpected end of document")),
        }
    }

    fn literal(
        &mut self,
        word: &str,
        kind: Kind,
        line: Option<usize>,
    ) -> Result<Node, SyntaxError> {
        if self.text[self.pos..].starts_with(word.as_bytes()) {
            self.pos += word.len();
            Ok(Node::new(kind, line))
        } else {
            Err(self.err("invalid literal"))
        }
    }

    fn expect(&mut self, b: u8) -> Result<(), SyntaxError> {
        if self.text.get(self.pos) == Some(&b) {
            self.pos += 1;
            Ok(())
        } else {
            Err(self.err(&format!("expected `{}`", b as char)))
        }
    }

    fn string(&mut self) -> Result<String, SyntaxError> {
        // Find the closing quote, then let serde_json decode the escapes.
        let start = self.pos;
        self.expect(b'"')?;
        while let Some(&b) = self.text.get(self.pos) {
            match b {
                b'\\' => self.pos += 2,
                b'"' => {
                    self.pos += 1;
                    let raw = self.src.get(start..self.pos).unwrap_or_default();
                    return serde_json::from_str::<String>(raw)
                        .map_err(|e| self.err(&strip_position(&e.to_string())));
                }
                _ => self.pos += 1,
            }
        }
        Err(self.err("unterminated string"))
    }
}

// ---------------------------------------------------------------------------------------------
// TOML

/// Parses a TOML document into a [`Node`] tree, tracking lines.
pub fn parse_toml(text: &str) -> Result<Node, SyntaxError> {
    use toml::Spanned;
    use toml::de::{DeTable, DeValue};

    fn convert(text: &str, v: &Spanned<DeValue<'_>>) -> Node {
        let line = Some(line_of_offset(text, v.span().start));
        let kind = match v.get_ref() {
            DeValue::String(s) => Kind::Str {
                value: s.to_string(),
                plain: false,
            },
            DeValue::Integer(i) => {
                let digits = i.as_str().replace('_', "");
                let (neg, digits) = match digits.strip_prefix('-') {
                    Some(d) => (true, d.to_string()),
                    None => (false, digits.trim_start_matches('+').to_string()),
                };
                match i128::from_str_radix(&digits, i.radix()) {
                    Ok(n) => Kind::Int(if neg { -n } else { n }),
                    Err(_) => Kind::Str {
                        value: i.as_str().to_string(),
                        plain: true,
                    },
                }
            }
            DeValue::Float(f) => {
                let raw = f.as_str().replace('_', "");
                let value = match raw.as_str() {
                    "inf" | "+inf" => f64::INFINITY,
                    "-inf" => f64::NEG_INFINITY,
                    "nan" | "+nan" | "-nan" => f64::NAN,
                    r => r.parse::<f64>().unwrap_or(f64::NAN),
                };
                Kind::Float(value)
            }
            DeValue::Boolean(b) => Kind::Bool(*b),
            DeValue::Datetime(d) => Kind::Str {
                value: d.to_string(),
                plain: false,
            },
            DeValue::Array(items) => Kind::Seq(items.iter().map(|i| convert(text, i)).collect()),
            DeValue::Table(t) => Kind::Map(
                t.iter()
                    .map(|(k, v)| {
                        (
                            k.get_ref().to_string(),
                            Some(line_of_offset(text, k.span().start)),
                            convert(text, v),
                        )
                    })
                    .collect(),
            ),
        };
        Node::new(kind, line)
    }

    match DeTable::parse(text) {
        Ok(table) => {
            let span = table.span();
            let root = Spanned::new(span, DeValue::Table(table.into_inner()));
            let mut node = convert(text, &root);
            node.line = Some(1);
            Ok(node)
        }
        Err(e) => Err(SyntaxError {
            line: e.span().map(|s| line_of_offset(text, s.start)),
            message: e.message().trim().to_string(),
        }),
    }
}
