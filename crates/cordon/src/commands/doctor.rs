//! `cordon doctor`: which isolation layers work here, and the fix for each missing
//! one; then what the VM backend would use (optional: it decides no exit status).

pub fn doctor(json: bool) -> Result<u8, String> {
    let report = cordon_sandbox::probe::run_all(std::time::Duration::from_secs(2));
    // The kernel and the share the user's config (or $CORDON_VM_SHARE) names,
    // if it names them (a config that does not resolve is the policy's
    // business, not the VM report's).
    let policy = super::vm::default_policy().ok().map(|(_, policy)| policy);
    let kernel = policy.as_ref().and_then(|p| p.vm_kernel.as_ref());
    let share = policy.as_ref().and_then(|p| p.vm_share.as_ref());
    let vm = cordon_vm::doctor::report(kernel.map(|k| k.value.as_path()), share);
    if json {
        let mut value = serde_json::to_value(&report).map_err(|e| e.to_string())?;
        if let Some(object) = value.as_object_mut() {
            object.insert(
                "vm".into(),
                serde_json::to_value(&vm).map_err(|e| e.to_string())?,
            );
        }
        let text = serde_json::to_string_pretty(&value).map_err(|e| e.to_string())?;
        println!("{text}");
    } else {
        print!("{}", cordon_sandbox::probe::render_text(&report));
        print!("{}", cordon_vm::doctor::render_text(&vm));
    }
    // 1 when a required layer is missing: cordon would refuse to run.
    Ok(if report.ok { 0 } else { 1 })
}
