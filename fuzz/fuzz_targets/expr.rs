//! Computed values on arbitrary expressions and inputs: compiling any text never panics, and
//! an expression that compiles evaluates on any captured text (numbers, words, huge, empty)
//! to a value or an error, never a panic, an infinity or a NaN.
#![no_main]

use std::borrow::Cow;

use libfuzzer_sys::fuzz_target;
use serial2mqtt::rules::expr::Expr;
use serial2mqtt::rules::template::{Builtins, Lookup, Num, TemplateError, Value, Var};

/// Captures `a`, `b`, `c`, `h` as the four parts of the input after the expression.
struct Texts<'a>(Vec<&'a str>);

impl Lookup for Texts<'_> {
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
        _ => Err(TemplateError { message: format!("unknown {n}"), help: None }),
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let mut parts = text.split('\u{1}');
    let source = parts.next().unwrap_or_default();
    let Ok(expr) = Expr::compile("x", source, &resolve) else {
        return;
    };
    let env = Builtins {
        gateway: "gw",
        device: "dev",
        frame: data,
        now: std::time::SystemTime::UNIX_EPOCH,
        request: "",
    };
    let texts = Texts(parts.collect());
    if let Ok(Value::Num(Num::F(f))) = expr.eval(&env, &texts) {
        assert!(f.is_finite(), "{source}: {f}");
    }
});
