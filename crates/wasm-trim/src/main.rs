//! `authflow-wasm-trim IN OUT`: writes IN without the callbacks the filter
//! leaves unhandled (`authflow::UNHANDLED_CALLBACKS`) and without its name section to OUT.

use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [input, output] = args.as_slice() else {
        eprintln!("usage: authflow-wasm-trim IN.wasm OUT.wasm");
        return ExitCode::from(2);
    };
    let result = std::fs::read(input)
        .map_err(|e| format!("{input}: {e}"))
        .and_then(|bytes| {
            authflow_wasm_trim::trim(&bytes, authflow::UNHANDLED_CALLBACKS)
                .map_err(|e| format!("{input}: {e}"))
        })
        .and_then(|t| {
            // Written beside OUT and renamed: a reader never sees half a module.
            let partial = format!("{output}.partial");
            std::fs::write(&partial, &t.module)
                .and_then(|()| std::fs::rename(&partial, output))
                .map_err(|e| format!("{output}: {e}"))?;
            Ok(t.removed.len())
        });
    match result {
        Ok(n) => {
            println!(
                "{output}: {n} unhandled callbacks removed from the exports, and the name section"
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("authflow-wasm-trim: {e}");
            ExitCode::FAILURE
        }
    }
}
