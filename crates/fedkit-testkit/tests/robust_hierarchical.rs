//! The conformance suite with non-default parameters of `afl` (every minimax solver), `drfa` and
//! `hsgd` (random grouping, several local steps per round), beyond the defaults that
//! `registry.rs` checks.

use fedkit_core::DynAlgorithm;
use fedkit_methods::algorithms::afl::Afl;
use fedkit_methods::algorithms::drfa::Drfa;
use fedkit_methods::algorithms::hsgd::{Grouping, Hsgd};
use fedkit_methods::minimax::SolverKind;
use fedkit_testkit::algorithms::{check_algorithm, check_state_serde};

#[test]
fn afl_conforms_with_every_solver() {
    for solver in [SolverKind::Gda, SolverKind::AltGda, SolverKind::SmoothedGda, SolverKind::Extragradient] {
        let make = || -> Box<dyn DynAlgorithm> { Box::new(Afl { solver, lambda_lr: 0.2, ..Afl::default() }) };
        check_algorithm(&format!("afl(solver = {solver:?})"), &make, false);
    }
}

#[test]
fn drfa_conforms_with_minibatch_losses() {
    for drfa in [Drfa::default(), Drfa { lambda_lr: 0.1, loss_clients: 1, loss_batch: 3 }] {
        let make = || -> Box<dyn DynAlgorithm> { Box::new(drfa.clone()) };
        check_algorithm(&format!("{drfa:?}"), &make, false);
    }
}

#[test]
fn hsgd_state_survives_serde_with_random_groups_and_several_local_steps() {
    // Several local steps per round: by design not one plain SGD step, so only the serde check.
    let make = || -> Box<dyn DynAlgorithm> {
        Box::new(Hsgd { groups: 2, local_period: 3, global_period: 6, grouping: Grouping::Random })
    };
    check_state_serde("hsgd(I = 3, G = 6, random)", &make);
    let one_step = || -> Box<dyn DynAlgorithm> { Box::new(Hsgd { groups: 3, ..Hsgd::default() }) };
    check_algorithm("hsgd(groups = 3)", &one_step, false);
}
