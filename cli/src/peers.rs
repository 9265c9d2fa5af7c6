//! `classgrid peers`: peering this region with another, set up by both
//! regions' district admins (decision 093), and the settlement ledger.

use clap::{Args, Subcommand};
use classgrid_proto::v1::{self as pb, peering_service_client::PeeringServiceClient};
use serde_json::{Value, json};

use crate::{
    client::{Global, Output, input},
    output::{print_json, rtt_json, rtt_text, table},
    parse::parse_duration,
};

/// What this region offers the peer: its name, address, lending site and
/// lending policy (the same on `offer` and `accept`).
#[derive(Args)]
pub struct Terms {
    /// This region's name, as the peer will know it (lower-case, digits, `-`).
    #[arg(long = "as")]
    local_name: String,
    /// This broker's gRPC address as the peer's broker reaches it.
    #[arg(long)]
    url: String,
    /// This region's site that seats lent to the peer are booked at.
    #[arg(long)]
    site: String,
    /// Inter-region RTT in ms, configured; without it the brokers measure it.
    #[arg(long, default_value_t = 0.0)]
    rtt_ms: f64,
    /// Slices lent to the peer at any one time, at most (0 lends nothing).
    #[arg(long, default_value_t = 0)]
    lend_max_slices: i32,
    /// Node tiers lent (edge, cloud); repeatable; none lends every tier.
    #[arg(long = "lend-tier")]
    lend_tiers: Vec<String>,
    /// Accelerator vendors lent; repeatable; none lends every vendor.
    #[arg(long = "lend-vendor")]
    lend_vendors: Vec<String>,
    /// Lending hours in UTC, HH:MM-HH:MM; none lends all day.
    #[arg(long, default_value = "")]
    lend_hours: String,
    /// Price multiplier on what is lent to the peer: lent seats are priced
    /// by this region's voucher weights times this (decision 108).
    #[arg(long, default_value_t = 1.0)]
    lend_weight: f64,
}

impl Terms {
    fn lending(&self) -> pb::LendingPolicy {
        pb::LendingPolicy {
            max_slices: self.lend_max_slices,
            tiers: self.lend_tiers.clone(),
            vendors: self.lend_vendors.clone(),
            hours: self.lend_hours.clone(),
            weight: self.lend_weight,
        }
    }
}

#[derive(Subcommand)]
pub enum Peers {
    /// Make a one-time offer for the region PEER; it is shown once. Give it
    /// to PEER's admin, who runs `classgrid peers accept`.
    Offer {
        /// The peer region's name; its admin accepts with `--as PEER`.
        peer: String,
        #[command(flatten)]
        terms: Terms,
        /// How long the offer stays valid.
        #[arg(long, default_value = "24h")]
        ttl: String,
    },
    /// Accept another region's offer (the text, or a file holding it).
    Accept {
        offer: String,
        #[command(flatten)]
        terms: Terms,
    },
    /// Peer regions: state, RTT with its source, lending policy.
    List,
    /// One peering by peer region name or id.
    Show { peer: String },
    /// End a peering: the peer's certificate stops working here at once.
    Remove { peer: String },
    /// The inter-region settlement ledger of a month (CSV with --csv).
    Settlement {
        /// YYYY-MM; this month when absent.
        #[arg(long, default_value = "")]
        month: String,
        #[arg(long)]
        csv: bool,
    },
}

fn time(t: Option<&prost_types::Timestamp>) -> String {
    crate::tz::show(t)
}

fn peering_json(p: &pb::Peering) -> Value {
    let l = p.lending.clone().unwrap_or_default();
    json!({
        "id": p.id, "name": p.name, "local_name": p.local_name, "url": p.url, "state": p.state,
        "disconnected_since": p.disconnected_since.as_ref().map(|t| time(Some(t))),
        "rtt": p.rtt.as_ref().map(rtt_json), "site": p.site, "ca_fingerprint": p.ca_fingerprint,
        "lending": {"max_slices": l.max_slices, "tiers": l.tiers, "vendors": l.vendors, "hours": l.hours, "weight": l.weight},
        "lent_lessons": p.lent_lessons, "borrowed_lessons": p.borrowed_lessons, "message": p.message,
        "created": time(p.created.as_ref()),
    })
}

fn state_text(p: &pb::Peering) -> String {
    match &p.disconnected_since {
        Some(t) => format!("disconnected since {}", time(Some(t))),
        None => p.state.clone(),
    }
}

fn lending_text(l: Option<&pb::LendingPolicy>) -> String {
    let l = l.cloned().unwrap_or_default();
    let any = |v: &[String]| {
        if v.is_empty() {
            "any".to_string()
        } else {
            v.join(",")
        }
    };
    format!(
        "{} slices, tiers {}, vendors {}, hours {}, weight {}",
        l.max_slices,
        any(&l.tiers),
        any(&l.vendors),
        if l.hours.is_empty() {
            "all day"
        } else {
            &l.hours
        },
        l.weight
    )
}

fn show(o: Output, p: &pb::Peering) {
    if o == Output::Json {
        return print_json(peering_json(p));
    }
    println!("peering {}  region {}  ({})", p.id, p.name, state_text(p));
    println!("  this region as:  {}", p.local_name);
    println!("  peer broker:     {}", p.url);
    println!("  pinned CA:       sha256 {}", p.ca_fingerprint);
    println!(
        "  inter-region RTT: {}",
        p.rtt
            .as_ref()
            .map(rtt_text)
            .unwrap_or_else(|| "not known yet".into())
    );
    println!("  lends from site: {}", p.site);
    println!("  lending policy:  {}", lending_text(p.lending.as_ref()));
    println!(
        "  lessons:         {} lent, {} borrowed",
        p.lent_lessons, p.borrowed_lessons
    );
    if !p.message.is_empty() {
        println!("  message:         {}", p.message);
    }
}

/// The offer as given: its text, or the file it was saved to.
fn offer_text(arg: &str) -> anyhow::Result<String> {
    if arg.starts_with("cgpeer_") {
        return Ok(arg.to_string());
    }
    std::fs::read_to_string(arg)
        .map(|s| s.trim().to_string())
        .map_err(|e| {
            input(format!(
                "offer: neither an offer (cgpeer_…) nor a readable file: {e}"
            ))
        })
}

pub async fn peers(g: &Global, c: Peers) -> anyhow::Result<()> {
    let mut client = PeeringServiceClient::new(g.channel().await?);
    match c {
        Peers::Offer { peer, terms, ttl } => {
            let r = client
                .create_offer(pb::CreatePeeringOfferRequest {
                    peer: peer.clone(),
                    lending: Some(terms.lending()),
                    local_name: terms.local_name,
                    url: terms.url,
                    site: terms.site,
                    rtt_ms: terms.rtt_ms,
                    ttl_seconds: parse_duration("--ttl", &ttl)?,
                })
                .await?
                .into_inner();
            if g.output == Output::Json {
                print_json(
                    json!({"peering": r.peering.as_ref().map(peering_json), "offer": r.offer, "expires": time(r.expires.as_ref())}),
                );
            } else {
                println!(
                    "peering offer for region {peer} created, valid until {}; it is shown only now:",
                    time(r.expires.as_ref())
                );
                println!("{}", r.offer);
                println!(
                    "Region {peer}'s admin runs: classgrid peers accept <the offer above> --as {peer} --url … --site …"
                );
            }
        }
        Peers::Accept { offer, terms } => {
            let p = client
                .accept_offer(pb::AcceptPeeringOfferRequest {
                    offer: offer_text(&offer)?,
                    lending: Some(terms.lending()),
                    local_name: terms.local_name,
                    url: terms.url,
                    site: terms.site,
                    rtt_ms: terms.rtt_ms,
                })
                .await?
                .into_inner();
            show(g.output, &p);
        }
        Peers::List => {
            let r = client.list(pb::ListPeeringsRequest {}).await?.into_inner();
            if g.output == Output::Json {
                return Ok(print_json(Value::Array(
                    r.peerings.iter().map(peering_json).collect(),
                )));
            }
            table(
                &["REGION", "STATE", "RTT", "URL", "LENDS", "LENT", "BORROWED"],
                r.peerings
                    .iter()
                    .map(|p| {
                        vec![
                            p.name.clone(),
                            state_text(p),
                            p.rtt.as_ref().map(rtt_text).unwrap_or_default(),
                            p.url.clone(),
                            lending_text(p.lending.as_ref()),
                            p.lent_lessons.to_string(),
                            p.borrowed_lessons.to_string(),
                        ]
                    })
                    .collect(),
            );
        }
        Peers::Show { peer } => {
            let p = client
                .get(pb::GetPeeringRequest { id: peer })
                .await?
                .into_inner();
            show(g.output, &p);
        }
        Peers::Remove { peer } => {
            let p = client
                .remove(pb::GetPeeringRequest { id: peer })
                .await?
                .into_inner();
            println!("peering with region {} removed", p.name);
        }
        Peers::Settlement { month, csv } => {
            let r = client
                .settlement(pb::SettlementRequest { month })
                .await?
                .into_inner();
            if csv {
                println!("month,peer,direction,lesson_id,seats,amount_uah,slice_seconds,recorded");
                for l in &r.lines {
                    println!(
                        "{},{},{},{},{},{},{:.3},{}",
                        r.month,
                        l.peer,
                        l.direction,
                        l.lesson_id,
                        l.seats,
                        l.amount_uah,
                        l.slice_seconds,
                        time(l.recorded.as_ref())
                    );
                }
            } else if g.output == Output::Json {
                print_json(
                    json!({"month": r.month, "lent_uah": r.lent_uah, "borrowed_uah": r.borrowed_uah,
                    "lines": r.lines.iter().map(|l| json!({"peer": l.peer, "direction": l.direction, "lesson_id": l.lesson_id, "seats": l.seats, "amount_uah": l.amount_uah, "slice_seconds": l.slice_seconds, "recorded": time(l.recorded.as_ref())})).collect::<Vec<_>>()}),
                );
            } else {
                println!(
                    "settlement {}: lent {} µAh, borrowed {} µAh, {} lines",
                    r.month,
                    r.lent_uah,
                    r.borrowed_uah,
                    r.lines.len()
                );
            }
        }
    }
    Ok(())
}
