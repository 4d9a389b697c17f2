//! Captures span fields as they are set or recorded, for tests of what spans say (their
//! OpenTelemetry names and attributes), without an exporter.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing_subscriber::Layer;
use tracing_subscriber::layer::Context;

/// Every span's fields by span id, as last set.
#[derive(Clone, Default)]
pub struct SpanFields {
    spans: Arc<Mutex<BTreeMap<u64, BTreeMap<String, String>>>>,
}

struct Visitor<'a>(&'a mut BTreeMap<String, String>);

impl Visit for Visitor<'_> {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0.insert(field.name().to_owned(), format!("{value:?}"));
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().to_owned(), value.to_owned());
    }
}

impl SpanFields {
    /// The fields of every span seen, in creation order.
    pub fn all(&self) -> Vec<BTreeMap<String, String>> {
        self.spans
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .values()
            .cloned()
            .collect()
    }
}

impl<S: tracing::Subscriber> Layer<S> for SpanFields {
    fn on_new_span(&self, attributes: &Attributes<'_>, id: &Id, _: Context<'_, S>) {
        let mut fields = BTreeMap::new();
        attributes.record(&mut Visitor(&mut fields));
        self.spans
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .insert(id.into_u64(), fields);
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, _: Context<'_, S>) {
        let mut spans = self
            .spans
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(fields) = spans.get_mut(&id.into_u64()) {
            values.record(&mut Visitor(fields));
        }
    }
}
