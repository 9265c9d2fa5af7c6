//! A dry run's answer on the wire: `Book` with `dry_run` answers a `Lesson`
//! (its contract is fixed), so the lesson is shown as it would be, with no
//! id, the state `dry_run`, and the voucher cost in its message.

use classgrid_proto::v1 as pb;

use super::convert;
use crate::service::dry_run::{DRY_RUN_MESSAGE, Preview};

pub fn lesson(p: &Preview) -> pb::Lesson {
    let mut l = convert::lesson(&p.view);
    if l.message == DRY_RUN_MESSAGE {
        l.id = String::new();
        l.state = "dry_run".into();
        l.message = format!(
            "{DRY_RUN_MESSAGE}; a booking would hold {}",
            p.held.sentence()
        );
    }
    l
}
