// TEMPORARY: stands in for probe/ and limits/ until they land.
pub mod probe {
    #[derive(serde::Serialize)]
    pub struct Layer {
        pub ok: bool,
        pub required: bool,
    }
    #[derive(serde::Serialize)]
    pub struct Report {
        pub layers: Vec<Layer>,
    }
    pub fn run_all(_: std::time::Duration) -> Report {
        Report { layers: vec![] }
    }
    pub fn render_text(_: &Report) -> String {
        String::new()
    }
    pub fn diagnose_userns_failure(errno: i32) -> (String, String) {
        (format!("errno {errno}"), "see cordon doctor".into())
    }
}
pub mod limits {
    use cordon_policy::Limits;
    pub enum Mechanism {
        Rlimits,
    }
    impl Mechanism {
        pub fn describe(&self) -> String {
            "rlimits".into()
        }
    }
    pub fn choose(_: &Limits) -> Mechanism {
        Mechanism::Rlimits
    }
    pub struct SandboxCgroup;
    impl SandboxCgroup {
        pub fn create(
            _: &Mechanism,
            _: &Limits,
            _: &str,
        ) -> Result<Option<SandboxCgroup>, std::io::Error> {
            Ok(None)
        }
        pub fn add_pid(&self, _: i32) -> Result<(), std::io::Error> {
            Ok(())
        }
    }
    pub fn apply_rlimits(_: &Limits) -> Result<(), std::io::Error> {
        Ok(())
    }
}
