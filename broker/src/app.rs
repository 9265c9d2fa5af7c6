//! Wiring: builds the broker's components (`state`) and starts the loops
//! that serve them. Nothing below imports this module; the server and the
//! tests open a broker here.

use std::sync::Arc;

pub use crate::state::{App, Broker};
use crate::{config::BrokerConfig, service, store::Store};

/// A broker ready to serve: its writers running and its calendar read.
pub async fn open(cfg: BrokerConfig, store: Store) -> anyhow::Result<App> {
    let app = Arc::new(Broker::new(cfg, store).await?);
    service::booking_writes::start(&app);
    service::progress_writes::start(&app);
    // Read before serving: a first read under a booking storm keeps
    // racing the storm's own holds, and every booking would repeat it.
    app.reserver.reload_calendar().await?;
    Ok(app)
}
