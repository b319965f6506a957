//! `sonm token deposit|withdraw AMOUNT` and `sonm token transfers`: SNM between the main chain
//! and the SONM chain through the Gates (the node's `/v1/token/{deposit,withdraw,transfers}`).

use anyhow::bail;
use clap::Subcommand;
use serde_json::{Value, json};

use crate::{Node, print_fields, print_items, s};

/// SNM has 18 decimals.
const DECIMALS: usize = 18;

/// Prints an answer: the JSON with `--json`, else the given human form.
type Show<'a> = &'a dyn Fn(&Value, &dyn Fn(&Value));

#[derive(Debug, Subcommand)]
pub(crate) enum GateCmd {
    /// Move SNM from the main chain to the same address on the SONM chain (approve and lock in
    /// the main chain's Gate; gate keepers pay it on the SONM chain). Prints the lock.
    Deposit {
        /// SNM, e.g. `5` or `0.25`; or wei with a `wei` suffix, e.g. `5000wei`.
        amount: String,
    },
    /// Move SNM from the SONM chain to the same address on the main chain. Prints the lock.
    Withdraw {
        /// SNM, e.g. `5` or `0.25`; or wei with a `wei` suffix, e.g. `5000wei`.
        amount: String,
    },
    /// The node's locks on both Gates and whether each is paid on the other side.
    Transfers,
}

const LOCK_FIELDS: &[&str] = &[
    "direction",
    "src_chain",
    "dst_chain",
    "nonce",
    "transfer_id",
    "to",
    "amount",
    "tx",
    "paid",
];

/// SNM wei (a decimal string, any size) from `5`, `0.25`, `5snm` (SNM) or `5000wei` (wei).
pub(crate) fn parse_amount(text: &str) -> anyhow::Result<String> {
    let t = text.trim().to_ascii_lowercase();
    let digits_only = |v: &str| !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit());
    let wei = if let Some(w) = t.strip_suffix("wei") {
        let w = w.trim();
        if !digits_only(w) {
            bail!("{text:?}: wei must be a whole number, e.g. 5000wei");
        }
        w.to_owned()
    } else {
        let snm = t.strip_suffix("snm").unwrap_or(&t).trim();
        let (whole, frac) = snm.split_once('.').unwrap_or((snm, ""));
        let whole = if whole.is_empty() && !frac.is_empty() {
            "0"
        } else {
            whole
        };
        if !digits_only(whole) || !(frac.is_empty() || digits_only(frac)) {
            bail!("{text:?} is not an amount: SNM as 5 or 0.25, or wei as 5000wei");
        }
        if frac.len() > DECIMALS {
            bail!("{text:?}: SNM has {DECIMALS} decimals at most");
        }
        format!("{whole}{frac:0<DECIMALS$}")
    };
    let wei = wei.trim_start_matches('0');
    Ok(if wei.is_empty() { "0" } else { wei }.to_owned())
}

/// SNM wei (a decimal string) as SNM, e.g. `5000000000000000000` → `5`.
pub(crate) fn format_snm(wei: &str) -> String {
    if wei.is_empty() || !wei.bytes().all(|b| b.is_ascii_digit()) {
        return wei.to_owned();
    }
    let padded = format!("{wei:0>width$}", width = DECIMALS + 1);
    let (whole, frac) = padded.split_at(padded.len() - DECIMALS);
    let frac = frac.trim_end_matches('0');
    let whole = whole.trim_start_matches('0');
    let whole = if whole.is_empty() { "0" } else { whole };
    if frac.is_empty() {
        whole.to_owned()
    } else {
        format!("{whole}.{frac}")
    }
}

/// Runs a gate command; `show` prints the JSON (`--json`) or the human form.
pub(crate) fn run(node: &Node, cmd: GateCmd, show: Show<'_>) -> anyhow::Result<()> {
    match cmd {
        GateCmd::Deposit { amount } => lock(node, "deposit", &amount, show)?,
        GateCmd::Withdraw { amount } => lock(node, "withdraw", &amount, show)?,
        GateCmd::Transfers => {
            let v = node.get("/v1/token/transfers", &[])?;
            show(&v, &|v| {
                let rows: Vec<Value> = v["transfers"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|t| {
                        let mut t = t.clone();
                        t["amount_snm"] = json!(format_snm(&s(&t["amount"])));
                        t["paid_text"] = json!(if t["paid"] == json!(true) {
                            "paid"
                        } else {
                            "pending"
                        });
                        t
                    })
                    .collect();
                print_items(
                    &Value::Array(rows),
                    &[
                        ("DIRECTION", "direction"),
                        ("FROM", "src_chain"),
                        ("TO", "dst_chain"),
                        ("NONCE", "nonce"),
                        ("AMOUNT (SNM)", "amount_snm"),
                        ("STATUS", "paid_text"),
                        ("TRANSFER ID", "transfer_id"),
                    ],
                    "no gate transfers",
                );
            });
        }
    }
    Ok(())
}

fn lock(node: &Node, op: &str, amount: &str, show: Show<'_>) -> anyhow::Result<()> {
    let wei = parse_amount(amount)?;
    let v = node.post(&format!("/v1/token/{op}"), &[], &json!({ "amount": wei }))?;
    show(&v, &|v| {
        print_fields(v, LOCK_FIELDS);
        println!(
            "locked {} SNM; gate keepers pay it on chain {} (see `sonm token transfers`)",
            format_snm(&s(&v["amount"])),
            s(&v["dst_chain"])
        );
    });
    Ok(())
}

/// The main chain's balances under `sonm balance`, when the node has a main chain.
pub(crate) fn print_main_balance(v: &Value) {
    let main = &v["main_chain"];
    if main.is_object() {
        println!("main chain {}:", s(&main["chain_id"]));
        println!("  snm  {}", s(&main["snm"]));
        println!("  eth  {}", s(&main["eth"]));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn amounts_in_snm_or_wei() {
        assert_eq!(parse_amount("5").unwrap(), "5000000000000000000");
        assert_eq!(parse_amount("0.25").unwrap(), "250000000000000000");
        assert_eq!(parse_amount(".5 SNM").unwrap(), "500000000000000000");
        assert_eq!(parse_amount("5000wei").unwrap(), "5000");
        assert_eq!(parse_amount("0").unwrap(), "0");
        // Far over any cap: still exact, the node refuses it.
        assert_eq!(
            parse_amount("100000000000000000000000").unwrap(),
            format!("1{}", "0".repeat(41))
        );
        for bad in [
            "",
            "-1",
            "1e3",
            "1.2.3",
            "0.0000000000000000001",
            "5.5wei",
            "abc",
        ] {
            assert!(parse_amount(bad).is_err(), "{bad}");
        }
        assert_eq!(format_snm("5000000000000000000"), "5");
        assert_eq!(format_snm("250000000000000000"), "0.25");
        assert_eq!(format_snm("7"), "0.000000000000000007");
        assert_eq!(format_snm("0"), "0");
    }
}
