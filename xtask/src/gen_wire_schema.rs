//! `cargo xtask gen-wire-schema`: writes core/src/wire_guard/schema.rs from kafka-protocol's own
//! request decoders (`impl Decodable for X` in src/messages/*_request.rs), for the APIs in
//! core/src/api_versions.rs. The decoders are machine-generated and regular; anything this does not
//! recognise is an error, never a guess, since a wrong table would refuse or pass the wrong frames.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{anyhow, bail, ensure, Context, Result};
use quote::ToTokens;
use syn::visit::Visit;
use syn::{BinOp, Expr, Item, Lit, Pat, Stmt};

/// Where the table goes, from the workspace root.
pub const SCHEMA_PATH: &str = "core/src/wire_guard/schema.rs";

pub fn run(root: &Path) -> Result<()> {
    let text = generate(root)?;
    let path = root.join(SCHEMA_PATH);
    std::fs::write(&path, text).with_context(|| format!("write {}", path.display()))?;
    eprintln!("xtask: wrote {}", path.display());
    Ok(())
}

/// The formatted text of schema.rs.
pub fn generate(root: &Path) -> Result<String> {
    let (crate_version, crate_dir) = locate_crate(root)?;
    let served = served_api_keys(&root.join("core/src/api_versions.rs"))?;
    let index = CrateIndex::read(&crate_dir.join("src/messages.rs"))?;

    let mut files = Vec::new();
    for key in &served {
        let root_type = index.request_types.get(key).ok_or_else(|| anyhow!("RequestKind has no variant {key}"))?;
        let module =
            index.modules.get(root_type).ok_or_else(|| anyhow!("messages.rs does not `pub use` {root_type}"))?;
        let path = crate_dir.join("src/messages").join(format!("{module}.rs"));
        let file = SourceFile::read(&path, &index.newtypes)?;
        let structs = file.reachable(root_type).with_context(|| format!("in {}", path.display()))?;
        files.push((key.clone(), module.clone(), root_type.clone(), structs));
    }
    format_rust(root, &emit(&crate_version, &files))
}

/// kafka-protocol's version and source directory, as cargo resolved them for this workspace.
fn locate_crate(root: &Path) -> Result<(String, PathBuf)> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let manifest = root.join("Cargo.toml");
    let output = Command::new(cargo)
        .args(["metadata", "--format-version", "1", "--manifest-path"])
        .arg(&manifest)
        .stderr(Stdio::inherit())
        .output()
        .context("run cargo metadata")?;
    ensure!(output.status.success(), "cargo metadata failed with {}", output.status);
    let metadata: serde_json::Value = serde_json::from_slice(&output.stdout).context("parse cargo metadata")?;
    let packages = metadata["packages"].as_array().ok_or_else(|| anyhow!("cargo metadata has no packages"))?;
    let found: Vec<_> = packages.iter().filter(|p| p["name"] == "kafka-protocol").collect();
    ensure!(found.len() == 1, "expected one kafka-protocol package, cargo metadata lists {}", found.len());
    let version = found[0]["version"].as_str().ok_or_else(|| anyhow!("kafka-protocol has no version"))?;
    let manifest_path =
        found[0]["manifest_path"].as_str().ok_or_else(|| anyhow!("kafka-protocol has no manifest_path"))?;
    let dir = Path::new(manifest_path).parent().ok_or_else(|| anyhow!("bad manifest_path {manifest_path}"))?;
    Ok((version.to_string(), dir.to_path_buf()))
}

fn parse_file(path: &Path) -> Result<syn::File> {
    let text = std::fs::read_to_string(path).with_context(|| format!("read {}", path.display()))?;
    syn::parse_file(&text).with_context(|| format!("parse {}", path.display()))
}

fn tokens(node: &impl ToTokens) -> String {
    node.to_token_stream().to_string()
}

/// The tables of APIs in api_versions.rs: the broker's listener and the controller's.
const API_TABLES: &[&str] = &["SERVED_APIS", "CONTROLLER_APIS"];

/// The `ApiKey::X` names in the API tables, in order, each once.
fn served_api_keys(path: &Path) -> Result<Vec<String>> {
    struct Keys(Vec<String>);
    impl Visit<'_> for Keys {
        fn visit_path(&mut self, path: &syn::Path) {
            let segments: Vec<_> = path.segments.iter().map(|s| s.ident.to_string()).collect();
            if let [first, key] = segments.as_slice() {
                if first == "ApiKey" && !self.0.contains(key) {
                    self.0.push(key.clone());
                }
            }
        }
    }
    let file = parse_file(path)?;
    let mut keys = Keys(Vec::new());
    for table in API_TABLES {
        let found = file.items.iter().find_map(|item| match item {
            Item::Const(c) if c.ident == table => Some(c),
            _ => None,
        });
        let found = found.ok_or_else(|| anyhow!("{} has no {table}", path.display()))?;
        keys.visit_expr(&found.expr);
    }
    ensure!(!keys.0.is_empty(), "the API tables name no ApiKey");
    Ok(keys.0)
}

/// What messages.rs says: the request type of each API, each type's module, and the newtypes.
struct CrateIndex {
    request_types: HashMap<String, String>,
    modules: HashMap<String, String>,
    /// `pub struct TopicName(pub StrBytes)` gives TopicName -> StrBytes.
    newtypes: HashMap<String, String>,
}

impl CrateIndex {
    fn read(path: &Path) -> Result<Self> {
        let file = parse_file(path)?;
        let mut index = CrateIndex { request_types: HashMap::new(), modules: HashMap::new(), newtypes: HashMap::new() };
        for item in &file.items {
            match item {
                Item::Enum(e) if e.ident == "RequestKind" => {
                    for variant in &e.variants {
                        let syn::Fields::Unnamed(fields) = &variant.fields else {
                            bail!("RequestKind::{} is not a one-field tuple variant", variant.ident);
                        };
                        ensure!(fields.unnamed.len() == 1, "RequestKind::{} has several fields", variant.ident);
                        index.request_types.insert(variant.ident.to_string(), type_text(&fields.unnamed[0].ty));
                    }
                }
                Item::Use(u) => {
                    if let syn::UseTree::Path(p) = &u.tree {
                        if let syn::UseTree::Name(name) = &*p.tree {
                            index.modules.insert(name.ident.to_string(), p.ident.to_string());
                        }
                    }
                }
                Item::Struct(s) => {
                    if let syn::Fields::Unnamed(fields) = &s.fields {
                        if let [field] = fields.unnamed.iter().collect::<Vec<_>>().as_slice() {
                            index.newtypes.insert(s.ident.to_string(), type_text(&field.ty));
                        }
                    }
                }
                _ => {}
            }
        }
        ensure!(!index.request_types.is_empty(), "{} has no RequestKind enum", path.display());
        Ok(index)
    }
}

/// A type as text without spaces: `Option<Vec<super::TopicName>>`.
fn type_text(ty: &syn::Type) -> String {
    tokens(ty).replace(' ', "")
}

/// A decoder from `types::...`, as the crate applies it in one version.
#[derive(Clone, Debug, PartialEq)]
enum Decoder {
    Fixed(&'static str),
    String { compact: bool },
    Bytes { compact: bool },
    Array { compact: bool, element: Box<Decoder> },
    Struct,
}

impl Decoder {
    fn parse(expr: &Expr) -> Result<Self> {
        match expr {
            Expr::Path(p) => {
                let path = tokens(p).replace(' ', "");
                Ok(match path.as_str() {
                    "types::Int8" => Decoder::Fixed("Int8"),
                    "types::Int16" => Decoder::Fixed("Int16"),
                    "types::UInt16" => Decoder::Fixed("UInt16"),
                    "types::Int32" => Decoder::Fixed("Int32"),
                    "types::Int64" => Decoder::Fixed("Int64"),
                    "types::Float64" => Decoder::Fixed("Float64"),
                    "types::Boolean" => Decoder::Fixed("Bool"),
                    "types::Uuid" => Decoder::Fixed("Uuid"),
                    "types::String" => Decoder::String { compact: false },
                    "types::CompactString" => Decoder::String { compact: true },
                    "types::Bytes" => Decoder::Bytes { compact: false },
                    "types::CompactBytes" => Decoder::Bytes { compact: true },
                    other => bail!("unsupported decoder `{other}`"),
                })
            }
            Expr::Struct(s) if tokens(&s.path).replace(' ', "") == "types::Struct" => {
                ensure!(tokens(s).replace(' ', "") == "types::Struct{version}", "unsupported `{}`", tokens(s));
                Ok(Decoder::Struct)
            }
            Expr::Call(call) if call.args.len() == 1 => {
                let compact = match tokens(&call.func).replace(' ', "").as_str() {
                    "types::Array" => false,
                    "types::CompactArray" => true,
                    other => bail!("unsupported decoder `{other}(..)`"),
                };
                let element = Box::new(Decoder::parse(&call.args[0])?);
                Ok(Decoder::Array { compact, element })
            }
            other => bail!("unsupported decoder `{}`", tokens(other)),
        }
    }

    /// `DECODER.decode(buf)?`, or None if the expression is something else.
    fn parse_call(expr: &Expr) -> Result<Option<Self>> {
        let Expr::Try(t) = expr else { return Ok(None) };
        let Expr::MethodCall(call) = &*t.expr else { return Ok(None) };
        if call.method != "decode" {
            return Ok(None);
        }
        ensure!(tokens(&call.args) == "buf", "decode called with `{}`", tokens(&call.args));
        Decoder::parse(&call.receiver).map(Some)
    }

    fn compact(&self) -> Option<bool> {
        match self {
            Decoder::String { compact } | Decoder::Bytes { compact } | Decoder::Array { compact, .. } => Some(*compact),
            Decoder::Fixed(_) | Decoder::Struct => None,
        }
    }
}

/// A version condition: `version >= 9`, `version <= 10`, joined with `&&`, `||`.
enum Cond {
    Compare(BinOp, i16),
    And(Box<Cond>, Box<Cond>),
    Or(Box<Cond>, Box<Cond>),
}

impl Cond {
    fn parse(expr: &Expr) -> Result<Self> {
        match expr {
            Expr::Paren(p) => Cond::parse(&p.expr),
            Expr::Binary(b) => match b.op {
                BinOp::And(_) => Ok(Cond::And(Box::new(Cond::parse(&b.left)?), Box::new(Cond::parse(&b.right)?))),
                BinOp::Or(_) => Ok(Cond::Or(Box::new(Cond::parse(&b.left)?), Box::new(Cond::parse(&b.right)?))),
                op @ (BinOp::Ge(_) | BinOp::Gt(_) | BinOp::Le(_) | BinOp::Lt(_) | BinOp::Eq(_) | BinOp::Ne(_)) => {
                    ensure!(tokens(&b.left) == "version", "condition on `{}`, not version", tokens(&b.left));
                    let Expr::Lit(syn::ExprLit { lit: Lit::Int(n), .. }) = &*b.right else {
                        bail!("condition against `{}`, not an integer", tokens(&b.right));
                    };
                    Ok(Cond::Compare(op, n.base10_parse()?))
                }
                _ => bail!("unsupported condition `{}`", tokens(expr)),
            },
            _ => bail!("unsupported condition `{}`", tokens(expr)),
        }
    }

    fn holds(&self, version: i16) -> bool {
        match self {
            Cond::Compare(op, n) => match op {
                BinOp::Ge(_) => version >= *n,
                BinOp::Gt(_) => version > *n,
                BinOp::Le(_) => version <= *n,
                BinOp::Lt(_) => version < *n,
                BinOp::Eq(_) => version == *n,
                BinOp::Ne(_) => version != *n,
                _ => unreachable!("parse accepts only comparisons"),
            },
            Cond::And(a, b) => a.holds(version) && b.holds(version),
            Cond::Or(a, b) => a.holds(version) || b.holds(version),
        }
    }
}

/// The value of `let field = ...;`: a decode, a default that reads nothing, or a choice by version.
enum Value {
    Decode(Decoder),
    Default,
    If(Cond, Box<Value>, Box<Value>),
}

impl Value {
    fn parse(expr: &Expr) -> Result<Self> {
        if let Some(decoder) = Decoder::parse_call(expr)? {
            return Ok(Value::Decode(decoder));
        }
        if let Expr::If(i) = expr {
            let Some((_, otherwise)) = &i.else_branch else { bail!("`if` without `else` in a field value") };
            let then = Value::parse(&single_expr(&i.then_branch)?)?;
            let otherwise = match &**otherwise {
                Expr::Block(b) => Value::parse(&single_expr(&b.block)?)?,
                other => Value::parse(other)?,
            };
            return Ok(Value::If(Cond::parse(&i.cond)?, Box::new(then), Box::new(otherwise)));
        }
        ensure!(!reads_buf(expr), "unsupported field value `{}`", tokens(expr));
        Ok(Value::Default)
    }

    fn at(&self, version: i16) -> Option<&Decoder> {
        match self {
            Value::Decode(d) => Some(d),
            Value::Default => None,
            Value::If(cond, then, otherwise) => if cond.holds(version) { then } else { otherwise }.at(version),
        }
    }
}

/// What a known tag's match arm does in one version.
enum Arm {
    Assign(String, Decoder),
    Bail,
    If(Cond, Box<Arm>, Box<Arm>),
}

impl Arm {
    fn parse_block(block: &syn::Block) -> Result<Self> {
        let [stmt] = block.stmts.as_slice() else { bail!("tag arm with {} statements", block.stmts.len()) };
        match stmt {
            Stmt::Macro(m) if m.mac.path.is_ident("bail") => Ok(Arm::Bail),
            Stmt::Expr(Expr::Assign(a), Some(_)) => {
                let Expr::Path(target) = &*a.left else { bail!("tag arm assigns `{}`", tokens(&a.left)) };
                let decoder = Decoder::parse_call(&a.right)?
                    .ok_or_else(|| anyhow!("tag arm assigns `{}`, not a decode", tokens(&a.right)))?;
                Ok(Arm::Assign(tokens(target), decoder))
            }
            Stmt::Expr(Expr::If(i), None) => {
                let Some((_, otherwise)) = &i.else_branch else { bail!("tag arm `if` without `else`") };
                let Expr::Block(otherwise) = &**otherwise else { bail!("tag arm `else if`") };
                Ok(Arm::If(
                    Cond::parse(&i.cond)?,
                    Box::new(Arm::parse_block(&i.then_branch)?),
                    Box::new(Arm::parse_block(&otherwise.block)?),
                ))
            }
            other => bail!("unsupported tag arm `{}`", tokens(other)),
        }
    }

    fn at(&self, version: i16) -> Option<(&str, &Decoder)> {
        match self {
            Arm::Assign(name, decoder) => Some((name, decoder)),
            Arm::Bail => None,
            Arm::If(cond, then, otherwise) => if cond.holds(version) { then } else { otherwise }.at(version),
        }
    }
}

/// The one expression of a block (`{ expr }`).
fn single_expr(block: &syn::Block) -> Result<Expr> {
    match block.stmts.as_slice() {
        [Stmt::Expr(expr, None)] => Ok(expr.clone()),
        _ => bail!("expected a block with one expression, found `{}`", tokens(block)),
    }
}

fn reads_buf(expr: &Expr) -> bool {
    struct Finder(bool);
    impl Visit<'_> for Finder {
        fn visit_ident(&mut self, ident: &proc_macro2::Ident) {
            self.0 |= ident == "buf" || ident == "decode";
        }
    }
    let mut finder = Finder(false);
    finder.visit_expr(expr);
    finder.0
}

/// Whether a node is exactly this code, spacing aside.
fn same_tokens(node: &impl ToTokens, expected: &str) -> bool {
    let bare = |s: &str| s.split_whitespace().collect::<String>();
    bare(&tokens(node)) == bare(expected)
}

/// An inclusive version range; `None` is empty.
type Range = Option<(i16, i16)>;

/// The versions where `pick` holds, which must be one run.
fn range(versions: (i16, i16), what: &str, pick: impl Fn(i16) -> bool) -> Result<Range> {
    let hits: Vec<i16> = (versions.0..=versions.1).filter(|v| pick(*v)).collect();
    let (Some(first), Some(last)) = (hits.first(), hits.last()) else { return Ok(None) };
    ensure!(hits.len() == (last - first + 1) as usize, "{what}: versions {hits:?} are not one range");
    Ok(Some((*first, *last)))
}

/// A field's wire kind as the table writes it.
#[derive(Clone, Debug, PartialEq)]
enum Kind {
    Fixed(&'static str),
    String,
    Bytes,
    Array(Box<Kind>),
    Struct(String),
}

struct Field {
    name: String,
    kind: Kind,
    present: Range,
    compact: Range,
    nullable: bool,
}

struct Message {
    name: String,
    versions: (i16, i16),
    flexible: Range,
    fields: Vec<Field>,
    tagged: Vec<(u32, Field)>,
}

/// One messages/*_request.rs: its structs' declared field types and its decoders.
struct SourceFile<'a> {
    declared: HashMap<String, HashMap<String, String>>,
    decoders: HashMap<String, syn::ImplItemFn>,
    newtypes: &'a HashMap<String, String>,
}

impl<'a> SourceFile<'a> {
    fn read(path: &Path, newtypes: &'a HashMap<String, String>) -> Result<Self> {
        let file = parse_file(path)?;
        let mut source = SourceFile { declared: HashMap::new(), decoders: HashMap::new(), newtypes };
        for item in &file.items {
            match item {
                Item::Struct(s) => {
                    let syn::Fields::Named(fields) = &s.fields else { continue };
                    let fields =
                        fields.named.iter().map(|f| (tokens(f.ident.as_ref().expect("named")), type_text(&f.ty)));
                    source.declared.insert(s.ident.to_string(), fields.collect());
                }
                Item::Impl(i) if i.trait_.as_ref().is_some_and(|(_, path, _)| path.is_ident("Decodable")) => {
                    let decode = i.items.iter().find_map(|item| match item {
                        syn::ImplItem::Fn(f) if f.sig.ident == "decode" => Some(f.clone()),
                        _ => None,
                    });
                    let name = type_text(&i.self_ty);
                    let decode = decode.ok_or_else(|| anyhow!("impl Decodable for {name} has no decode"))?;
                    source.decoders.insert(name, decode);
                }
                _ => {}
            }
        }
        Ok(source)
    }

    /// The root message and every struct it contains, root first, then depth-first.
    fn reachable(&self, root: &str) -> Result<Vec<Message>> {
        let mut out: Vec<Message> = Vec::new();
        let mut stack = vec![root.to_string()];
        while let Some(name) = stack.pop() {
            if out.iter().any(|m| m.name == name) {
                continue;
            }
            let message = self.message(&name).with_context(|| format!("decoding {name}"))?;
            let mut nested = Vec::new();
            for field in message.fields.iter().chain(message.tagged.iter().map(|(_, f)| f)) {
                let mut kind = &field.kind;
                while let Kind::Array(element) = kind {
                    kind = element;
                }
                if let Kind::Struct(s) = kind {
                    nested.push(s.clone());
                }
            }
            stack.extend(nested.into_iter().rev());
            out.push(message);
        }
        Ok(out)
    }

    fn message(&self, name: &str) -> Result<Message> {
        let decode = self.decoders.get(name).ok_or_else(|| anyhow!("no impl Decodable for {name}"))?;
        let declared = self.declared.get(name).ok_or_else(|| anyhow!("no struct {name}"))?;
        ensure!(
            same_tokens(&decode.sig, "fn decode<B: ByteBuf>(buf: &mut B, version: i16) -> Result<Self>"),
            "unexpected signature `{}`",
            tokens(&decode.sig)
        );
        let stmts = &decode.block.stmts;
        let versions = match stmts.first() {
            Some(Stmt::Expr(Expr::If(check), None)) => version_check(check)?,
            _ => bail!("decode does not start with its version check"),
        };
        let mut message =
            Message { name: name.to_string(), versions, flexible: None, fields: Vec::new(), tagged: Vec::new() };
        let mut tag_locals = Vec::new();
        let mut skip_next = false;
        for (i, stmt) in stmts.iter().enumerate().skip(1) {
            if std::mem::take(&mut skip_next) {
                continue;
            }
            match stmt {
                Stmt::Local(local) if !same_tokens(stmt, TAG_COUNT) => {
                    let Pat::Ident(pat) = &local.pat else { bail!("unsupported `{}`", tokens(local)) };
                    let init = local.init.as_ref().ok_or_else(|| anyhow!("`{}` has no value", tokens(local)))?;
                    ensure!(init.diverge.is_none(), "unsupported `{}`", tokens(local));
                    let local_name = pat.ident.to_string();
                    if local_name == "unknown_tagged_fields" {
                        ensure!(same_tokens(&init.expr, "BTreeMap::new()"), "unsupported `{}`", tokens(local));
                    } else if pat.mutability.is_some() {
                        // `let mut cluster_id = None;`: a tagged field's default, set in the tag match.
                        ensure!(!reads_buf(&init.expr), "unsupported `{}`", tokens(local));
                        tag_locals.push(local_name);
                    } else {
                        let value = Value::parse(&init.expr).with_context(|| format!("field {local_name}"))?;
                        let declared =
                            declared.get(&local_name).ok_or_else(|| anyhow!("{name} has no field {local_name}"))?;
                        let field = self.field(&local_name, declared, versions, |v| value.at(v).cloned())?;
                        if field.present.is_some() {
                            message.fields.push(field);
                        }
                    }
                }
                Stmt::Expr(Expr::If(section), None) => {
                    ensure!(section.else_branch.is_none(), "tagged-field section with `else`");
                    let cond = Cond::parse(&section.cond)?;
                    let flexible = range(versions, "tagged-field section", |v| cond.holds(v))?;
                    let flexible = flexible.ok_or_else(|| anyhow!("tagged-field section in no version"))?;
                    self.tagged_fields(&mut message, &tag_locals, flexible, &section.then_branch.stmts)?;
                }
                // Flexible in every version: the section is not inside an `if`.
                Stmt::Local(_) if same_tokens(stmt, TAG_COUNT) => {
                    let section = stmts.get(i..i + 2).ok_or_else(|| anyhow!("tagged-field count without loop"))?;
                    self.tagged_fields(&mut message, &tag_locals, versions, section)?;
                    skip_next = true;
                }
                Stmt::Expr(Expr::Call(ok), None) if same_tokens(&ok.func, "Ok") => {}
                other => bail!("unsupported statement `{}`", tokens(other)),
            }
        }
        let untagged: Vec<_> =
            tag_locals.iter().filter(|l| !message.tagged.iter().any(|(_, f)| &f.name == *l)).collect();
        ensure!(untagged.is_empty(), "`let mut` {untagged:?} set by no tag");
        match stmts.last() {
            Some(Stmt::Expr(Expr::Call(ok), None)) if same_tokens(&ok.func, "Ok") => Ok(message),
            _ => bail!("decode does not end with Ok(Self {{ .. }})"),
        }
    }

    /// Reads a tagged-field section (the count and its loop) present in `flexible` versions.
    fn tagged_fields(
        &self,
        message: &mut Message,
        tag_locals: &[String],
        flexible: (i16, i16),
        section: &[Stmt],
    ) -> Result<()> {
        ensure!(message.flexible.is_none(), "two tagged-field sections");
        message.flexible = Some(flexible);
        let declared = &self.declared[&message.name];
        for (tag, arm) in tagged_section(section)? {
            let in_section = |v: i16| flexible.0 <= v && v <= flexible.1;
            let mut targets: Vec<_> = (flexible.0..=flexible.1).filter_map(|v| arm.at(v).map(|(t, _)| t)).collect();
            targets.dedup();
            let [target] = targets.as_slice() else { bail!("tag {tag} sets {targets:?}, not one field") };
            let target = target.to_string();
            ensure!(tag_locals.contains(&target), "tag {tag} sets `{target}`, which has no `let mut`");
            let ty = declared.get(&target).ok_or_else(|| anyhow!("{} has no field {target}", message.name))?;
            let field = self.field(&target, ty, message.versions, |v| {
                let (_, decoder) = arm.at(v)?;
                in_section(v).then(|| decoder.clone())
            })?;
            let has_form = matches!(field.kind, Kind::String | Kind::Bytes | Kind::Array(_));
            ensure!(!has_form || field.compact == field.present, "tag {tag} is not compact in all its versions");
            message.tagged.push((tag, field));
        }
        Ok(())
    }

    /// A field from its decoder in each version and its declared Rust type.
    fn field(
        &self,
        name: &str,
        declared: &str,
        versions: (i16, i16),
        at: impl Fn(i16) -> Option<Decoder>,
    ) -> Result<Field> {
        let present = range(versions, name, |v| at(v).is_some())?;
        let (nullable, inner) = match declared.strip_prefix("Option<").and_then(|t| t.strip_suffix('>')) {
            Some(inner) => (true, inner),
            None => (false, declared),
        };
        let mut kind: Option<Kind> = None;
        if let Some((first, last)) = present {
            for v in first..=last {
                let decoder = at(v).expect("present");
                let k = self.kind(&decoder, inner).with_context(|| format!("field {name}: {declared}, version {v}"))?;
                ensure!(kind.as_ref().is_none_or(|seen| *seen == k), "field {name} changes kind in version {v}");
                kind = Some(k);
            }
        }
        let Some(kind) = kind else {
            return Ok(Field {
                name: name.to_string(),
                kind: Kind::Fixed("Int8"),
                present: None,
                compact: None,
                nullable,
            });
        };
        ensure!(
            !nullable || matches!(kind, Kind::String | Kind::Bytes | Kind::Array(_)),
            "field {name}: Option of {kind:?}"
        );
        let compact = range(versions, name, |v| at(v).and_then(|d| d.compact()) == Some(true))?;
        Ok(Field { name: name.to_string(), kind, present, compact, nullable })
    }

    /// A decoder's kind, checked against the Rust type it decodes into (`Option` already stripped).
    fn kind(&self, decoder: &Decoder, declared: &str) -> Result<Kind> {
        let resolved = self.resolve(declared);
        let fits = |allowed: &[&str]| -> Result<()> {
            ensure!(allowed.contains(&resolved.as_str()), "{decoder:?} does not decode into {declared}");
            Ok(())
        };
        Ok(match decoder {
            Decoder::Fixed(name) => {
                fits(&[match *name {
                    "Int8" => "i8",
                    "Int16" => "i16",
                    "UInt16" => "u16",
                    "Int32" => "i32",
                    "Int64" => "i64",
                    "Float64" => "f64",
                    "Bool" => "bool",
                    "Uuid" => "Uuid",
                    other => bail!("no Rust type known for {other}"),
                }])?;
                Kind::Fixed(name)
            }
            Decoder::String { .. } => {
                fits(&["StrBytes", "String"])?;
                Kind::String
            }
            Decoder::Bytes { .. } => {
                fits(&["Bytes", "bytes::Bytes", "Vec<u8>"])?;
                Kind::Bytes
            }
            Decoder::Array { compact, element } => {
                let inner = declared.strip_prefix("Vec<").and_then(|t| t.strip_suffix('>'));
                let inner = inner.ok_or_else(|| anyhow!("an array decodes into {declared}"))?;
                ensure!(!inner.starts_with("Option<"), "array of nullable elements {declared}");
                ensure!(!matches!(**element, Decoder::Array { .. }), "array of arrays {declared}");
                ensure!(element.compact().is_none_or(|c| c == *compact), "array and element differ in compactness");
                Kind::Array(Box::new(self.kind(element, inner)?))
            }
            Decoder::Struct => {
                ensure!(self.decoders.contains_key(declared), "struct {declared} has no decoder in this file");
                Kind::Struct(declared.to_string())
            }
        })
    }

    /// `super::TopicName` -> `StrBytes`, through messages.rs's newtypes.
    fn resolve(&self, ty: &str) -> String {
        let bare = ty.strip_prefix("super::").unwrap_or(ty);
        match self.newtypes.get(bare) {
            Some(inner) if ty.starts_with("super::") => inner.clone(),
            _ => ty.to_string(),
        }
    }
}

/// `if version < A || version > B { bail!(..) }` (or `version != A`): the versions decoded.
fn version_check(check: &syn::ExprIf) -> Result<(i16, i16)> {
    ensure!(check.else_branch.is_none(), "version check with `else`");
    let [Stmt::Macro(m)] = check.then_branch.stmts.as_slice() else { bail!("version check does not just bail") };
    ensure!(m.mac.path.is_ident("bail"), "version check does not bail");
    let cond = Cond::parse(&check.cond)?;
    // The check's bounds are among its literals; the versions are those between them that pass.
    let mut bounds = Vec::new();
    collect_bounds(&cond, &mut bounds);
    let (lo, hi) = (bounds.iter().min().copied().unwrap_or(0), bounds.iter().max().copied().unwrap_or(0));
    let outside = cond.holds(lo.saturating_sub(1)) && cond.holds(hi.saturating_add(1));
    ensure!(outside && lo > i16::MIN && hi < i16::MAX, "version check `{}` leaves an end open", tokens(&check.cond));
    range((lo, hi), "version check", |v| !cond.holds(v))?.ok_or_else(|| anyhow!("version check refuses every version"))
}

fn collect_bounds(cond: &Cond, out: &mut Vec<i16>) {
    match cond {
        Cond::Compare(_, n) => out.push(*n),
        Cond::And(a, b) | Cond::Or(a, b) => {
            collect_bounds(a, out);
            collect_bounds(b, out);
        }
    }
}

const TAG_COUNT: &str = "let num_tagged_fields = types::UnsignedVarInt.decode(buf)?;";

/// The statements that read tagged fields: known tags and their arms.
fn tagged_section(section: &[Stmt]) -> Result<Vec<(u32, Arm)>> {
    let [count, Stmt::Expr(Expr::ForLoop(each), None)] = section else {
        bail!("unsupported tagged-field section of {} statements", section.len());
    };
    ensure!(same_tokens(count, TAG_COUNT), "tagged-field count");
    ensure!(same_tokens(&each.pat, "_") && same_tokens(&each.expr, "0..num_tagged_fields"), "tagged-field loop");
    let unknown = [
        "let unknown_value = buf.try_get_bytes(size as usize)?;",
        "unknown_tagged_fields.insert(tag as i32, unknown_value);",
    ];
    let stmts = &each.body.stmts;
    ensure!(stmts.len() >= 3, "tagged-field loop too short");
    ensure!(same_tokens(&stmts[0], "let tag: u32 = types::UnsignedVarInt.decode(buf)?;"), "tag read");
    ensure!(same_tokens(&stmts[1], "let size: u32 = types::UnsignedVarInt.decode(buf)?;"), "size read");
    let rest = &stmts[2..];
    if rest.len() == 2 && same_tokens(&rest[0], unknown[0]) && same_tokens(&rest[1], unknown[1]) {
        return Ok(Vec::new());
    }
    let [Stmt::Expr(Expr::Match(m), None)] = rest else { bail!("unsupported tagged-field loop `{}`", tokens(each)) };
    ensure!(same_tokens(&m.expr, "tag"), "match on `{}`", tokens(&m.expr));
    let mut tags = Vec::new();
    let mut has_unknown_arm = false;
    for arm in &m.arms {
        ensure!(arm.guard.is_none(), "tag arm with a guard");
        let Expr::Block(body) = &*arm.body else { bail!("tag arm `{}` is not a block", tokens(arm)) };
        match &arm.pat {
            Pat::Lit(syn::ExprLit { lit: Lit::Int(n), .. }) => {
                let tag: u32 = n.base10_parse()?;
                ensure!(!tags.iter().any(|(t, _)| *t == tag), "tag {tag} matched twice");
                tags.push((tag, Arm::parse_block(&body.block)?));
            }
            Pat::Wild(_) => {
                let [a, b] = body.block.stmts.as_slice() else { bail!("unsupported unknown-tag arm") };
                ensure!(same_tokens(a, unknown[0]) && same_tokens(b, unknown[1]), "unsupported unknown-tag arm");
                has_unknown_arm = true;
            }
            other => bail!("unsupported tag pattern `{}`", tokens(other)),
        }
    }
    ensure!(has_unknown_arm, "tag match has no `_` arm");
    Ok(tags)
}

/// `MetadataRequestTopic` -> `METADATA_REQUEST_TOPIC`.
fn screaming(name: &str) -> String {
    let mut out = String::new();
    for (i, c) in name.chars().enumerate() {
        if c.is_ascii_uppercase() && i > 0 {
            out.push('_');
        }
        out.push(c.to_ascii_uppercase());
    }
    out
}

fn versions_text(range: Range) -> String {
    match range {
        Some((a, b)) => format!("V({a}, {b})"),
        None => "NEVER".to_string(),
    }
}

type ApiFile = (String, String, String, Vec<Message>);

fn emit(crate_version: &str, files: &[ApiFile]) -> String {
    // A struct name found in several files gets its module as a prefix.
    let mut seen: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for (_, module, _, messages) in files {
        for m in messages {
            seen.entry(&m.name).or_default().push(module);
        }
    }
    let static_name = |module: &str, name: &str| -> String {
        if seen[name].len() > 1 {
            format!("{}_{}", module.to_ascii_uppercase(), screaming(name))
        } else {
            screaming(name)
        }
    };
    let kind_text = |module: &str, kind: &Kind| -> String {
        fn text(kind: &Kind, statik: &dyn Fn(&str) -> String) -> String {
            match kind {
                Kind::Fixed(name) => name.to_string(),
                Kind::String => "String".to_string(),
                Kind::Bytes => "Bytes".to_string(),
                Kind::Array(element) => format!("Array(&{})", text(element, statik)),
                Kind::Struct(name) => format!("Struct(&{})", statik(name)),
            }
        }
        text(kind, &|name| static_name(module, name))
    };
    let field_text = |module: &str, f: &Field| -> String {
        format!(
            "Field {{ name: \"{}\", kind: {}, present: {}, compact: {}, nullable: {} }}",
            f.name,
            kind_text(module, &f.kind),
            versions_text(f.present),
            versions_text(f.compact),
            f.nullable
        )
    };

    let mut out = String::new();
    let _ = writeln!(
        out,
        "//! GENERATED by `cargo xtask gen-wire-schema` from kafka-protocol {crate_version}: do not edit. Regenerate"
    );
    out.push_str(
        "//! after upgrading kafka-protocol or changing api_versions::SERVED_APIS; \
         xtask/tests/wire_schema_is_current.rs\n\
         //! fails until then. Each message lists its fields in decode order, as its `impl Decodable` reads them.\n\n\
         use kafka_protocol::messages::ApiKey;\n\n\
         use super::Kind::*;\n\
         use super::{Field, Message, Tagged, Versions as V, NEVER};\n\n\
         /// The request type of each served API.\n\
         pub static REQUESTS: &[(ApiKey, &Message)] = &[\n",
    );
    for (key, module, root, _) in files {
        let _ = writeln!(out, "(ApiKey::{key}, &{}),", static_name(module, root));
    }
    out.push_str("];\n");
    for (_, module, _, messages) in files {
        for m in messages {
            let (name, statik, flexible) = (&m.name, static_name(module, &m.name), versions_text(m.flexible));
            let (first, last) = m.versions;
            let _ =
                write!(out, "\n/// {name} ({module}.rs)\npub static {statik}: Message = Message {{ name: \"{name}\", ");
            let _ = write!(out, "versions: V({first}, {last}), flexible: {flexible}, fields: &[");
            for f in &m.fields {
                let _ = write!(out, "{},", field_text(module, f));
            }
            out.push_str("], tagged: &[");
            for (tag, f) in &m.tagged {
                let _ = write!(out, "Tagged {{ tag: {tag}, field: {} }},", field_text(module, f));
            }
            out.push_str("] };\n");
        }
    }
    out
}

/// Formats with the workspace's rustfmt settings, so `cargo fmt` leaves the file alone.
fn format_rust(root: &Path, text: &str) -> Result<String> {
    use std::io::Write as _;
    let mut child = Command::new("rustfmt")
        .args(["--edition", "2021", "--config-path"])
        .arg(root.join("rustfmt.toml"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .context("run rustfmt")?;
    child.stdin.take().expect("piped").write_all(text.as_bytes())?;
    let output = child.wait_with_output()?;
    ensure!(output.status.success(), "rustfmt failed with {}", output.status);
    Ok(String::from_utf8(output.stdout)?)
}
