//! `cordon doctor`: which isolation layers work here, and the fix for each missing one.

pub fn doctor(json: bool) -> Result<u8, String> {
    let report = cordon_sandbox::probe::run_all(std::time::Duration::from_secs(2));
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&report).map_err(|e| e.to_string())?
        );
    } else {
        print!("{}", cordon_sandbox::probe::render_text(&report));
    }
    // 1 when a required layer is missing: cordon would refuse to run.
    Ok(if report.ok { 0 } else { 1 })
}
