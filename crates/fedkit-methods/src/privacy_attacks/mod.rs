//! Privacy attacks: what a server (or an insider) learns about a client's data from what a real
//! run sent. Each reads a run directory's model store (`[output] keep_models`, `keep_clients`)
//! through `fedkit attack NAME --run DIR`, and writes `report.json`, `report.md` and pictures.

pub mod audit;
pub mod film;
pub mod gan_leakage;
pub mod image_metrics;
pub mod instahide;
pub mod instahide_attack;
pub mod invert_gradients;
pub mod membership;
pub mod text_metrics;

/// Every privacy attack and defence of this family (`fedkit attack` commands and the stages
/// `gan_leakage`, `instahide`): its name and its source file (for `fedkit list` and `explain`).
pub fn privacy_attacks() -> &'static [(&'static str, &'static str)] {
    &[
        ("invert_gradients", include_str!("invert_gradients.rs")),
        ("film", include_str!("film.rs")),
        ("gan_leakage", include_str!("gan_leakage.rs")),
        ("instahide", include_str!("instahide.rs")),
        ("instahide_attack", include_str!("instahide_attack.rs")),
        ("membership", include_str!("membership.rs")),
        ("audit", include_str!("audit.rs")),
    ]
}
