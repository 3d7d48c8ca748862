//! Computed values (`values:` of a rule): arithmetic and the few functions real sensors need,
//! evaluated on each matched frame from its captures or fields.
//!
//! Expressions are parsed once, when the config loads, by the `evalexpr` crate (operators,
//! `min`/`max`/`floor`/`ceil`/`if`/`math::*`), and every name in them is resolved then like a
//! template placeholder, so a typo is a `check` error, not a per-frame failure. Per frame, an
//! expression reads only the values it names (a short slice, no map), then walks its tree.
//!
//! Numbers from frames enter as floats, whatever their digits, so `raw / 10` divides as a user
//! expects (evalexpr divides two integers as integers). A result that is a whole number is
//! published as an integer (`bit(status, 3)` is `1`, not `1.0`); other results are rounded to
//! 10 decimals, which removes binary noise (`0.1 + 0.2`) and keeps every digit a sensor has.
//!
//! The functions added here are the ones sensor datasheets call for, checked by the tests
//! against their datasheets' examples:
//! - `nmea_degrees(ddmm.mmmm, hemisphere)`: NMEA 0183 positions to signed decimal degrees;
//! - `word32(hi, lo)` / `sword32(hi, lo)`: two 16-bit registers to one unsigned / signed value;
//! - `bit(x, n)`, `bits(x, from, count)`: flags and bit fields of a status word;
//! - `round(x, decimals)`, `clamp(x, lo, hi)`, `hex("1A")`.

use std::borrow::Cow;

use evalexpr::{
    build_operator_tree, Context, DefaultNumericTypes, EvalexprError, EvalexprResult, Node,
    Value as EValue,
};

use super::template::{Builtins, Lookup, Num, TemplateError, Value, Var};

/// Results are rounded to this many decimals (binary noise off, sensor digits kept).
const DECIMALS: i32 = 10;

/// The functions this module adds, for `check`'s messages.
pub const FUNCTIONS: [&str; 8] = [
    "nmea_degrees",
    "word32",
    "sword32",
    "bit",
    "bits",
    "round",
    "clamp",
    "hex",
];

/// evalexpr's own functions an expression may call.
const BUILTIN_FUNCTIONS: [&str; 16] = [
    "min",
    "max",
    "floor",
    "ceil",
    "round",
    "if",
    "len",
    "math::abs",
    "math::sqrt",
    "math::pow",
    "math::ln",
    "math::log10",
    "math::exp",
    "math::is_nan",
    "str::trim",
    "str::to_lowercase",
];

/// One compiled `values:` entry.
#[derive(Debug)]
pub struct Expr {
    /// The value's name (a placeholder of the rule).
    pub name: String,
    source: String,
    tree: Node<DefaultNumericTypes>,
    /// The names the expression reads, and what each refers to.
    inputs: Vec<(String, Var)>,
}

impl Expr {
    /// Parses `source` and resolves every name it reads with `resolve`.
    pub fn compile(
        name: &str,
        source: &str,
        resolve: &dyn Fn(&str) -> Result<Var, TemplateError>,
    ) -> Result<Self, TemplateError> {
        let tree = build_operator_tree::<DefaultNumericTypes>(&floats(source)).map_err(|e| {
            // `{v: round(x, 1)}` in a YAML flow mapping: the comma ended the value.
            let cut = source.matches('(').count() > source.matches(')').count();
            TemplateError {
                message: format!("`{source}` is not an expression: {e}"),
                help: Some(if cut {
                    format!(
                        "in a `{{...}}` mapping a comma ends the value: quote the whole \
                         expression, e.g. `{name}: \"round(raw * 0.1, 1)\"`"
                    )
                } else {
                    "write arithmetic on the rule's placeholders, without braces, e.g. \
                     `raw * 0.1 + 2`, `nmea_degrees(lat, ns)`, `word32(hi, lo) / 1000`"
                        .into()
                }),
            }
        })?;
        if !complete(&tree) || tree.iter().any(|n| !complete(n)) {
            return Err(TemplateError {
                message: format!("`{source}` is not an expression: an operator lacks an operand"),
                help: Some(
                    "write arithmetic on the rule's placeholders, without braces, e.g. \
                     `raw * 0.1 + 2`, `nmea_degrees(lat, ns)`, `word32(hi, lo) / 1000`"
                        .into(),
                ),
            });
        }
        if tree.iter().any(|n| {
            matches!(
                n.operator(),
                evalexpr::Operator::Assign
                    | evalexpr::Operator::AddAssign
                    | evalexpr::Operator::SubAssign
                    | evalexpr::Operator::MulAssign
                    | evalexpr::Operator::DivAssign
                    | evalexpr::Operator::ModAssign
                    | evalexpr::Operator::ExpAssign
                    | evalexpr::Operator::AndAssign
                    | evalexpr::Operator::OrAssign
            )
        }) {
            return Err(TemplateError {
                message: format!("`{source}` assigns a variable"),
                help: Some(
                    "a value is one expression: write its name as the key and the \
                     expression as the value, e.g. `celsius: (f - 32) / 1.8`; compare with =="
                        .into(),
                ),
            });
        }
        for f in tree.iter_function_identifiers() {
            if !FUNCTIONS.contains(&f) && !BUILTIN_FUNCTIONS.contains(&f) {
                let known: Vec<&str> = FUNCTIONS
                    .iter()
                    .chain(&BUILTIN_FUNCTIONS)
                    .copied()
                    .collect();
                let near = crate::config::diagnostics::suggest(f, known.iter().copied())
                    .map(|s| format!("did you mean `{s}`? "))
                    .unwrap_or_default();
                return Err(TemplateError {
                    message: format!("`{source}` calls `{f}`, which is not a function here"),
                    help: Some(format!("{near}functions: {}", known.join(", "))),
                });
            }
        }
        let mut inputs: Vec<(String, Var)> = Vec::new();
        for id in tree.iter_variable_identifiers() {
            if inputs.iter().any(|(n, _)| n == id) {
                continue;
            }
            if id == name {
                return Err(TemplateError {
                    message: format!("value `{name}` uses itself"),
                    help: Some(
                        "a value can use captures, fields and the values listed before it".into(),
                    ),
                });
            }
            inputs.push((id.to_owned(), resolve(id)?));
        }
        Ok(Self {
            name: name.to_owned(),
            source: source.to_owned(),
            tree,
            inputs,
        })
    }

    /// What the expression reads.
    pub fn vars(&self) -> impl Iterator<Item = &Var> {
        self.inputs.iter().map(|(_, v)| v)
    }

    /// The value for one frame, or why it cannot be computed.
    pub fn eval(
        &self,
        env: &Builtins<'_>,
        lookup: &dyn Lookup,
    ) -> Result<Value<'static>, EvalError> {
        let mut values = Vec::with_capacity(self.inputs.len());
        for (name, var) in &self.inputs {
            let value = match var {
                Var::Builtin(b) => Some(env.value(*b)),
                v => lookup.value(v),
            };
            let Some(value) = value else {
                return Err(EvalError::Missing(name.clone()));
            };
            values.push(input(&value));
        }
        let scope = Scope {
            names: &self.inputs,
            values: &values,
        };
        let result = self
            .tree
            .eval_with_context(&scope)
            .map_err(|e| EvalError::Failed(format!("`{}` = `{}`: {e}", self.name, self.source)))?;
        output(result).ok_or_else(|| {
            EvalError::Failed(format!(
                "`{}` = `{}` is not a number, text or truth value",
                self.name, self.source
            ))
        })
    }
}

/// Why a value was not computed for a frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EvalError {
    /// A JSON frame lacks a field the expression reads: the rule does not match this frame,
    /// as when a template names the field.
    Missing(String),
    /// The inputs are there but the expression fails on them (text where a number is needed,
    /// a division by zero, a hemisphere that is not N/S/E/W).
    Failed(String),
}

impl std::fmt::Display for EvalError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            EvalError::Missing(name) => write!(f, "`{name}` is missing from the frame"),
            EvalError::Failed(why) => f.write_str(why),
        }
    }
}

/// Whether a node has the operands its operator needs (evalexpr parses `a *` and fails only
/// when it is evaluated).
fn complete(node: &Node<DefaultNumericTypes>) -> bool {
    use evalexpr::Operator as O;
    let n = node.children().len();
    match node.operator() {
        O::Add
        | O::Sub
        | O::Mul
        | O::Div
        | O::Mod
        | O::Exp
        | O::Eq
        | O::Neq
        | O::Gt
        | O::Lt
        | O::Geq
        | O::Leq
        | O::And
        | O::Or => n == 2,
        O::Not | O::Neg | O::FunctionIdentifier { .. } | O::RootNode => n == 1,
        _ => true,
    }
}

/// `source` with every integer literal written as a float (`x / 10` → `x / 10.0`), so that
/// every number in an expression is a float: evalexpr divides integers as integers and finds
/// `1.0 == 1` false. Text in quotes is left as it is.
fn floats(source: &str) -> String {
    let mut out = String::with_capacity(source.len() + 8);
    let mut chars = source.chars().peekable();
    let mut prev: Option<char> = None;
    let mut quoted = false;
    while let Some(c) = chars.next() {
        out.push(c);
        if quoted {
            if c == '\\' {
                if let Some(n) = chars.next() {
                    out.push(n);
                }
            } else if c == '"' {
                quoted = false;
            }
            prev = Some(c);
            continue;
        }
        if c == '"' {
            quoted = true;
        } else if c.is_ascii_digit()
            && !prev.is_some_and(|p| p.is_alphanumeric() || matches!(p, '_' | '.' | ':'))
        {
            while let Some(&d) = chars.peek().filter(|d| d.is_ascii_digit()) {
                out.push(d);
                chars.next();
            }
            let next = chars.peek().copied();
            if !next.is_some_and(|n| n == '.' || n.is_alphanumeric() || n == '_') {
                out.push_str(".0");
            }
            prev = out.chars().last();
            continue;
        }
        prev = Some(c);
    }
    out
}

/// A placeholder's value as an expression input: numbers (and text that reads as one) are
/// floats, other text stays text.
fn input(value: &Value<'_>) -> EValue<DefaultNumericTypes> {
    let number = |n: Num| match n {
        Num::I(v) => v as f64,
        Num::U(v) => v as f64,
        Num::F(v) => v,
    };
    match value {
        Value::Num(n) => EValue::Float(number(*n)),
        Value::Str(s) => text(s),
        Value::Json(serde_json::Value::Number(n)) => EValue::Float(n.as_f64().unwrap_or(f64::NAN)),
        Value::Json(serde_json::Value::Bool(b)) => EValue::Boolean(*b),
        Value::Json(serde_json::Value::String(s)) => text(s),
        Value::Json(other) => EValue::String(other.to_string()),
    }
}

/// Text from a frame: a float when it reads as one (`4807.038`, `-12`, `001234.5`).
fn text(s: &str) -> EValue<DefaultNumericTypes> {
    let t = s.trim();
    // f64's parser also reads `inf` and `NaN`: from a frame, only digits make a number.
    let digits = t
        .bytes()
        .all(|b| b.is_ascii_digit() || b"+-.eE".contains(&b));
    match t.parse::<f64>() {
        Ok(v) if digits => EValue::Float(v),
        _ => EValue::String(s.to_owned()),
    }
}

/// An expression's result as a placeholder value.
fn output(result: EValue<DefaultNumericTypes>) -> Option<Value<'static>> {
    Some(match result {
        EValue::Int(i) => Value::Num(Num::I(i)),
        EValue::Float(f) if !f.is_finite() => return None,
        EValue::Float(f) if f.fract() == 0.0 && f.abs() < 9.0e15 => Value::Num(Num::I(f as i64)),
        EValue::Float(f) => Value::Num(Num::F(round_to(f, DECIMALS))),
        EValue::String(s) => Value::Str(Cow::Owned(s)),
        EValue::Boolean(b) => Value::Str(Cow::Borrowed(if b { "true" } else { "false" })),
        EValue::Tuple(_) | EValue::Empty => return None,
    })
}

fn round_to(x: f64, decimals: i32) -> f64 {
    let p = 10f64.powi(decimals);
    let r = (x * p).round() / p + 0.0;
    if r.is_finite() {
        r
    } else {
        x
    }
}

/// The values one evaluation reads, by the names the expression uses.
struct Scope<'a> {
    names: &'a [(String, Var)],
    values: &'a [EValue<DefaultNumericTypes>],
}

impl Context for Scope<'_> {
    type NumericTypes = DefaultNumericTypes;

    fn get_value(&self, identifier: &str) -> Option<&EValue<DefaultNumericTypes>> {
        let i = self.names.iter().position(|(n, _)| n == identifier)?;
        self.values.get(i)
    }

    fn call_function(
        &self,
        identifier: &str,
        argument: &EValue<DefaultNumericTypes>,
    ) -> EvalexprResult<EValue<DefaultNumericTypes>, DefaultNumericTypes> {
        call(identifier, argument)
    }

    fn are_builtin_functions_disabled(&self) -> bool {
        false
    }

    fn set_builtin_functions_disabled(
        &mut self,
        _disabled: bool,
    ) -> EvalexprResult<(), DefaultNumericTypes> {
        Err(EvalexprError::ContextNotMutable)
    }
}

type Res = EvalexprResult<EValue<DefaultNumericTypes>, DefaultNumericTypes>;

fn fail(message: String) -> Res {
    Err(EvalexprError::CustomMessage(message))
}

/// The arguments as numbers (floats or ints), or the error naming the function's form.
fn numbers<const N: usize>(
    argument: &EValue<DefaultNumericTypes>,
    form: &str,
) -> Result<[f64; N], EvalexprError<DefaultNumericTypes>> {
    let one;
    let args: &[EValue<DefaultNumericTypes>] = match argument {
        EValue::Tuple(t) => t,
        other => {
            one = [other.clone()];
            &one
        }
    };
    if args.len() != N {
        return Err(EvalexprError::CustomMessage(format!("write {form}")));
    }
    let mut out = [0.0; N];
    for (o, a) in out.iter_mut().zip(args) {
        *o = match a {
            EValue::Float(f) => *f,
            EValue::Int(i) => *i as f64,
            other => {
                return Err(EvalexprError::CustomMessage(format!(
                    "{form} needs numbers, got {other}"
                )))
            }
        };
    }
    Ok(out)
}

/// A float that must be a whole number in range (a register, a bit index).
fn whole(x: f64, what: &str, max: f64) -> Result<u64, EvalexprError<DefaultNumericTypes>> {
    if x.fract() != 0.0 || x < 0.0 || x > max {
        return Err(EvalexprError::CustomMessage(format!(
            "{what} must be a whole number from 0 to {max}, got {x}"
        )));
    }
    Ok(x as u64)
}

/// This module's functions; anything else falls through to evalexpr's builtins.
fn call(identifier: &str, argument: &EValue<DefaultNumericTypes>) -> Res {
    match identifier {
        "nmea_degrees" => {
            let EValue::Tuple(args) = argument else {
                return fail("write nmea_degrees(ddmm.mmmm, hemisphere)".into());
            };
            let [value, hemisphere] = args.as_slice() else {
                return fail("write nmea_degrees(ddmm.mmmm, hemisphere)".into());
            };
            let v = match value {
                EValue::Float(f) => *f,
                EValue::Int(i) => *i as f64,
                other => return fail(format!("nmea_degrees: `{other}` is not ddmm.mmmm")),
            };
            let sign = match hemisphere {
                EValue::String(h) if matches!(h.as_str(), "N" | "E") => 1.0,
                EValue::String(h) if matches!(h.as_str(), "S" | "W") => -1.0,
                other => {
                    return fail(format!(
                        "nmea_degrees: hemisphere `{other}` is not N, S, E or W"
                    ))
                }
            };
            let degrees = (v / 100.0).trunc();
            let minutes = v - degrees * 100.0;
            if !(0.0..60.0).contains(&minutes) {
                return fail(format!("nmea_degrees: `{v}` has {minutes} minutes"));
            }
            Ok(EValue::Float(sign * round_to(degrees + minutes / 60.0, 7)))
        }
        "word32" | "sword32" => {
            let [hi, lo] = numbers::<2>(argument, &format!("{identifier}(high word, low word)"))?;
            let v =
                (whole(hi, "a 16-bit word", 65535.0)? << 16) | whole(lo, "a 16-bit word", 65535.0)?;
            Ok(EValue::Float(if identifier == "sword32" {
                f64::from(v as u32 as i32)
            } else {
                v as f64
            }))
        }
        "bit" => {
            let [x, n] = numbers::<2>(argument, "bit(value, bit number from 0)")?;
            let x = whole(x, "bit's value", u32::MAX as f64 * 65536.0)?;
            let n = whole(n, "the bit number", 63.0)?;
            Ok(EValue::Float(((x >> n) & 1) as f64))
        }
        "bits" => {
            let [x, from, count] = numbers::<3>(argument, "bits(value, first bit from 0, count)")?;
            let x = whole(x, "bits' value", u32::MAX as f64 * 65536.0)?;
            let from = whole(from, "the first bit", 63.0)?;
            let count = whole(count, "the bit count", 64.0 - from as f64)?;
            let mask = if count >= 64 {
                u64::MAX
            } else {
                (1u64 << count) - 1
            };
            Ok(EValue::Float(((x >> from) & mask) as f64))
        }
        "round" => match argument {
            EValue::Tuple(_) => {
                let [x, d] = numbers::<2>(argument, "round(value, decimals)")?;
                let d = whole(d, "decimals", 12.0)?;
                Ok(EValue::Float(round_to(x, d as i32)))
            }
            // round(x): evalexpr's own.
            _ => Err(EvalexprError::FunctionIdentifierNotFound(identifier.into())),
        },
        "clamp" => {
            let [x, lo, hi] = numbers::<3>(argument, "clamp(value, lowest, highest)")?;
            Ok(EValue::Float(x.max(lo).min(hi)))
        }
        "hex" => match argument {
            EValue::String(s) => match i64::from_str_radix(s.trim().trim_start_matches("0x"), 16) {
                Ok(v) => Ok(EValue::Float(v as f64)),
                Err(_) => fail(format!("hex: `{s}` is not hex digits")),
            },
            other => fail(format!("hex: `{other}` is not text")),
        },
        _ => Err(EvalexprError::FunctionIdentifierNotFound(identifier.into())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env() -> Builtins<'static> {
        Builtins {
            gateway: "gw",
            device: "dev",
            frame: b"",
            now: std::time::SystemTime::UNIX_EPOCH,
            request: "",
        }
    }

    /// Names `a`, `b`, `c`, `h` as slots 0..4 with these texts.
    struct Texts(Vec<&'static str>);
    impl Lookup for Texts {
        fn value(&self, var: &Var) -> Option<Value<'_>> {
            match var {
                Var::Slot(i) => self.0.get(*i).map(|s| Value::Str(Cow::Borrowed(*s))),
                _ => None,
            }
        }
    }

    fn resolve(n: &str) -> Result<Var, TemplateError> {
        match n {
            "a" => Ok(Var::Slot(0)),
            "b" => Ok(Var::Slot(1)),
            "c" => Ok(Var::Slot(2)),
            "h" => Ok(Var::Slot(3)),
            _ => Err(TemplateError {
                message: format!("unknown `{n}`"),
                help: None,
            }),
        }
    }

    fn eval(source: &str, texts: &[&'static str]) -> Result<String, String> {
        let e = Expr::compile("x", source, &resolve).map_err(|e| e.message)?;
        let mut out = String::new();
        e.eval(&env(), &Texts(texts.to_vec()))
            .map_err(|e| e.to_string())?
            .write_text(&mut out);
        Ok(out)
    }

    #[test]
    fn arithmetic_on_captured_text_divides_as_a_user_expects() {
        assert_eq!(eval("a / 10", &["215"]).as_deref(), Ok("21.5"));
        assert_eq!(eval("a * 0.1 + b", &["3", "0.2"]).as_deref(), Ok("0.5"));
        assert_eq!(eval("(a - 32) / 1.8", &["212"]).as_deref(), Ok("100"));
        assert_eq!(
            eval("max(a, b)", &["001234.5", "7"]).as_deref(),
            Ok("1234.5")
        );
        assert_eq!(eval("round(a / 3, 2)", &["10"]).as_deref(), Ok("3.33"));
        assert_eq!(
            eval("if(a > 5, \"high\", \"low\")", &["6"]).as_deref(),
            Ok("high")
        );
        assert_eq!(eval("a == 1", &["1"]).as_deref(), Ok("true"));
        assert_eq!(eval("clamp(a, 0, 100)", &["104"]).as_deref(), Ok("100"));
    }

    /// NMEA 0183: 4807.038,N is 48°07.038' = 48.1173°; 01131.000,E is 11.5166667°; S and W
    /// are negative.
    #[test]
    fn nmea_positions_become_signed_decimal_degrees() {
        assert_eq!(
            eval("nmea_degrees(a, h)", &["4807.038", "", "", "N"]).as_deref(),
            Ok("48.1173")
        );
        assert_eq!(
            eval("nmea_degrees(a, h)", &["01131.000", "", "", "E"]).as_deref(),
            Ok("11.5166667")
        );
        assert_eq!(
            eval("nmea_degrees(a, h)", &["3345.1234", "", "", "S"]).as_deref(),
            Ok("-33.7520567")
        );
        assert_eq!(
            eval("nmea_degrees(a, h)", &["00023.5000", "", "", "W"]).as_deref(),
            Ok("-0.3916667")
        );
        let e = eval("nmea_degrees(a, h)", &["4807.038", "", "", "X"]).unwrap_err();
        assert!(e.contains("hemisphere"), "{e}");
        let e = eval("nmea_degrees(a, h)", &["4875.0", "", "", "N"]).unwrap_err();
        assert!(e.contains("minutes"), "{e}");
    }

    /// 70 A as a meter stores it in milliamps in two registers, high word 0x0001, low 0x1170.
    #[test]
    fn two_registers_make_one_value_in_either_order() {
        assert_eq!(
            eval("word32(a, b) / 1000", &["1", "4464"]).as_deref(),
            Ok("70")
        );
        assert_eq!(
            eval("word32(b, a) / 1000", &["1", "4464"]).as_deref(),
            Ok("292552.705")
        );
        assert_eq!(
            eval("sword32(a, b)", &["65535", "65534"]).as_deref(),
            Ok("-2")
        );
        let e = eval("word32(a, b)", &["70000", "1"]).unwrap_err();
        assert!(e.contains("16-bit word"), "{e}");
    }

    #[test]
    fn bits_of_a_status_word() {
        assert_eq!(eval("bit(a, 3)", &["8"]).as_deref(), Ok("1"));
        assert_eq!(eval("bit(a, 2)", &["8"]).as_deref(), Ok("0"));
        assert_eq!(eval("bits(a, 4, 4)", &["171"]).as_deref(), Ok("10"));
        assert_eq!(eval("hex(h)", &["", "", "", "1A"]).as_deref(), Ok("26"));
    }

    #[test]
    fn integer_literals_become_floats_outside_quotes() {
        assert_eq!(
            floats("a / 10 + b2 - 3.5 * 1e3"),
            "a / 10.0 + b2 - 3.5 * 1e3"
        );
        assert_eq!(
            floats(r#"if(a == 1, "1 of 2", x_1)"#),
            r#"if(a == 1.0, "1 of 2", x_1)"#
        );
        assert_eq!(floats("math::pow(a, 2)"), "math::pow(a, 2.0)");
    }

    #[test]
    fn names_and_functions_are_checked_when_the_config_loads() {
        let e = Expr::compile("x", "a + nope", &resolve).unwrap_err();
        assert!(e.message.contains("unknown `nope`"), "{e:?}");
        let e = Expr::compile("x", "nmea_degree(a, b)", &resolve).unwrap_err();
        assert!(e.help.unwrap().contains("did you mean `nmea_degrees`"));
        let e = Expr::compile("x", "a = 3", &resolve).unwrap_err();
        assert!(e.message.contains("assigns"), "{e:?}");
        let e = Expr::compile("x", "round(a * 0.1", &resolve).unwrap_err();
        assert!(e.help.unwrap().contains("quote the whole expression"));
        for bad in ["(a + 1", "a *", "", "-", "round()"] {
            let e = Expr::compile("x", bad, &resolve).unwrap_err();
            assert!(e.message.contains("is not an expression"), "{bad}: {e:?}");
        }
        let e = Expr::compile("x", "x + 1", &|_| Ok(Var::Slot(0))).unwrap_err();
        assert!(e.message.contains("uses itself"), "{e:?}");
    }

    #[test]
    fn a_value_that_cannot_be_computed_says_why() {
        let e = eval("a * 2", &["abc"]).unwrap_err();
        assert!(e.contains("`x` = `a * 2`"), "{e}");
        assert!(eval("a / 0", &["1"]).is_err(), "infinity is not published");
        let e = eval("a + b", &["1"]).unwrap_err();
        assert!(e.contains("`b` is missing"), "{e}");
    }
}
