//! XDP fast-path metrics: the totals the `xdp` room reads from the program's per-CPU counters,
//! and whether the program is attached. Encoded at scrape time by [`XdpCollector`].

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, NoLabelSet};
use prometheus_client::metrics::MetricType;

use super::labels::XdpAction;

/// Latest XDP counter totals and the attach state; written by the `xdp` room's reader.
#[derive(Debug, Default)]
pub struct XdpMetrics {
    enabled: AtomicBool,
    packets: [AtomicU64; XdpAction::COUNT],
}

impl XdpMetrics {
    /// Records whether the XDP program filters traffic now (`arc_xdp_enabled`).
    pub fn set_enabled(&self, enabled: bool) {
        self.enabled.store(enabled, Ordering::Relaxed);
    }

    /// Whether the XDP program filters traffic now.
    pub fn enabled(&self) -> bool {
        self.enabled.load(Ordering::Relaxed)
    }

    /// Stores the total of one action summed over every CPU; the export never goes backwards.
    pub fn set_packets(&self, action: XdpAction, total: u64) {
        if let Some(cell) = self.packets.get(action.index()) {
            cell.fetch_max(total, Ordering::Relaxed);
        }
    }

    /// The exported total of one action.
    pub fn packets(&self, action: XdpAction) -> u64 {
        self.packets
            .get(action.index())
            .map_or(0, |c| c.load(Ordering::Relaxed))
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ActionLabels {
    action: XdpAction,
}

/// Encodes `arc_xdp_packets_total{action}` and `arc_xdp_enabled`.
#[derive(Debug)]
pub(crate) struct XdpCollector {
    pub(crate) xdp: Arc<XdpMetrics>,
}

impl Collector for XdpCollector {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> fmt::Result {
        {
            let mut m = encoder.encode_descriptor(
                "arc_xdp_packets",
                "Packets to Arc's listener ports seen by the XDP program, by action.",
                None,
                MetricType::Counter,
            )?;
            for action in XdpAction::ALL {
                let value = self.xdp.packets(*action);
                m.encode_family(&ActionLabels { action: *action })?
                    .encode_counter::<NoLabelSet, u64, u64>(&value, None)?;
            }
        }
        let enabled = i64::from(self.xdp.enabled());
        encoder
            .encode_descriptor(
                "arc_xdp_enabled",
                "1 when the XDP program is attached and filtering, 0 otherwise.",
                None,
                MetricType::Gauge,
            )?
            .encode_gauge(&enabled)
    }
}
