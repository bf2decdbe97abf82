//! Where the retryable entries of the controller-bound admin requests and responses sit.
//!
//! Each walker reads one API's request or response, every version a Kafka 3.x broker accepts
//! (CreateTopics v0–v7, DeleteTopics v0–v6, CreatePartitions v0–v3, ElectLeaders v0–v2,
//! AlterUserScramCredentials v0), and records for each entry its byte range, key and error code.
//! Nothing is decoded into structs, so old versions kafka-protocol no longer knows are handled
//! alike, and every length is bounds-checked by the shared [`Walker`].

use std::ops::Range;

use kafka_protocol::messages::ApiKey;

pub use crate::policy::Granularity;
use crate::policy::policy;

use crate::wire::{DecodeError, Walker, top_level_error_offset};

/// The key of an entry: a topic or user name (a topic id where a name is absent), or for a
/// partition its index.
pub type Key = Vec<u8>;

/// One array element, with offsets into the whole frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub range: Range<usize>,
    pub key: Key,
    /// The entry's error code (responses; 0 in requests).
    pub error_code: i16,
    /// Nested entries (ElectLeaders partitions within a topic).
    pub children: Option<Array>,
}

/// An array of entries and where its element count is encoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Array {
    pub count: Range<usize>,
    pub flexible: bool,
    pub entries: Vec<Entry>,
}

/// The retryable parts of a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestLayout {
    /// Arrays whose entries can be re-sent one by one (empty for whole-request APIs).
    pub arrays: Vec<Array>,
    /// The request's own `timeout_ms`, where it has one.
    pub timeout_ms: Option<i32>,
}

/// The error codes of a response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResponseLayout {
    pub top_level_error: i16,
    /// The per-entry results, for APIs that report errors per entry.
    pub results: Option<Array>,
}

/// The controller-bound APIs whose NOT_CONTROLLER answers the sidecar retries, and at which
/// level: a row of the policy table.
pub fn granularity(api_key: i16) -> Option<Granularity> {
    policy(api_key).retry
}

/// The entry-collecting walks of the layouts, over the shared [`Walker`].
trait Entries {
    /// Reads an array whose elements are walked by `element`, which returns (key, error code,
    /// children) after reading exactly one element.
    fn array(
        &mut self,
        flexible: bool,
        element: impl FnMut(&mut Self) -> Result<(Key, i16, Option<Array>), DecodeError>,
    ) -> Result<Array, DecodeError>;

    /// Reads a string as an entry key.
    fn string(&mut self, flexible: bool) -> Result<Key, DecodeError>;
}

impl Entries for Walker<'_> {
    fn array(
        &mut self,
        flexible: bool,
        mut element: impl FnMut(&mut Self) -> Result<(Key, i16, Option<Array>), DecodeError>,
    ) -> Result<Array, DecodeError> {
        let start = self.at();
        let len = self.reader.nullable_array_len(flexible)?.unwrap_or(0);
        let count = start..self.at();
        let mut entries = Vec::with_capacity(len.min(1024));
        for _ in 0..len {
            let entry_start = self.at();
            let (key, error_code, children) = element(self)?;
            entries.push(Entry { range: entry_start..self.at(), key, error_code, children });
        }
        Ok(Array { count, flexible, entries })
    }

    fn string(&mut self, flexible: bool) -> Result<Key, DecodeError> {
        Ok(self.reader.string(flexible)?.to_vec())
    }
}

const UUID: usize = 16;

/// A `topics` array whose entries are a name, then fields `rest` reads past, then tagged fields;
/// and the request's `timeout_ms` after it (CreateTopics, CreatePartitions).
fn topics_then_timeout(
    w: &mut Walker<'_>,
    flexible: bool,
    mut rest: impl FnMut(&mut Walker<'_>, bool) -> Result<(), DecodeError>,
) -> Result<(Vec<Array>, Option<i32>), DecodeError> {
    let topics = w.array(flexible, |w| {
        let name = w.string(flexible)?;
        rest(w, flexible)?;
        w.tags(flexible)?;
        Ok((name, 0, None))
    })?;
    Ok((vec![topics], Some(w.reader.i32()?)))
}

/// Walks a request to a controller-bound API.
pub fn request(api_key: ApiKey, version: i16, frame: &[u8], body: usize) -> Result<RequestLayout, DecodeError> {
    let mut w = Walker::new(frame, body);
    let (arrays, timeout_ms) = match api_key {
        ApiKey::CreateTopics => topics_then_timeout(&mut w, version >= 5, |w, flexible| {
            w.reader.skip(4 + 2)?; // num_partitions, replication_factor
            w.skip_array(flexible, |w| {
                w.reader.skip(4)?; // partition_index
                w.skip_i32_array(flexible) // broker_ids
            })?;
            w.skip_array(flexible, |w| {
                w.skip_string(flexible)?; // name
                w.skip_string(flexible) // value
            })
        })?,
        ApiKey::DeleteTopics => {
            let flexible = version >= 4;
            let topics = if version >= 6 {
                w.array(flexible, |w| {
                    let name = w.reader.nullable_string(flexible)?.map(<[u8]>::to_vec);
                    let id = w.reader.take(UUID)?.to_vec();
                    w.tags(flexible)?;
                    Ok((name.unwrap_or(id), 0, None))
                })?
            } else {
                w.array(flexible, |w| Ok((w.string(flexible)?, 0, None)))?
            };
            (vec![topics], Some(w.reader.i32()?))
        }
        ApiKey::CreatePartitions => topics_then_timeout(&mut w, version >= 2, |w, flexible| {
            w.reader.skip(4)?; // count
            w.skip_array(flexible, |w| w.skip_i32_array(flexible)) // assignments[broker_ids]
        })?,
        ApiKey::ElectLeaders => {
            let flexible = version >= 2;
            if version >= 1 {
                w.reader.skip(1)?; // election_type
            }
            let topics = w.array(flexible, |w| {
                let topic = w.string(flexible)?;
                let partitions = w.array(flexible, |w| Ok((w.reader.take(4)?.to_vec(), 0, None)))?;
                w.tags(flexible)?;
                Ok((topic, 0, Some(partitions)))
            })?;
            (vec![topics], Some(w.reader.i32()?))
        }
        ApiKey::AlterUserScramCredentials => {
            let deletions = w.array(true, |w| {
                let user = w.string(true)?;
                w.reader.skip(1)?; // mechanism
                w.tags(true)?;
                Ok((user, 0, None))
            })?;
            let upsertions = w.array(true, |w| {
                let user = w.string(true)?;
                w.reader.skip(1 + 4)?; // mechanism, iterations
                w.skip_string(true)?; // salt
                w.skip_string(true)?; // salted_password
                w.tags(true)?;
                Ok((user, 0, None))
            })?;
            (vec![deletions, upsertions], None)
        }
        ApiKey::AlterPartitionReassignments | ApiKey::ListPartitionReassignments => {
            (Vec::new(), Some(w.reader.i32()?)) // timeout_ms comes first
        }
        ApiKey::UpdateFeatures => (Vec::new(), Some(w.reader.i32()?)),
        _ => return Err(DecodeError::Invalid("not a controller-bound api")),
    };
    Ok(RequestLayout { arrays, timeout_ms })
}

/// Walks a response from a controller-bound API.
pub fn response(api_key: ApiKey, version: i16, frame: &[u8], body: usize) -> Result<ResponseLayout, DecodeError> {
    let mut w = Walker::new(frame, body);
    let (top_level_error, results) = match api_key {
        ApiKey::CreateTopics => {
            let flexible = version >= 5;
            if version >= 2 {
                w.reader.skip(4)?; // throttle_time_ms
            }
            let topics = w.array(flexible, |w| {
                let name = w.string(flexible)?;
                if version >= 7 {
                    w.reader.skip(UUID)?; // topic_id
                }
                let error_code = w.reader.i16()?;
                if version >= 1 {
                    w.skip_string(flexible)?; // error_message
                }
                if version >= 5 {
                    w.reader.skip(4 + 2)?; // num_partitions, replication_factor
                    w.skip_array(flexible, |w| {
                        w.skip_string(flexible)?; // name
                        w.skip_string(flexible)?; // value
                        w.reader.skip(1 + 1 + 1)?; // read_only, config_source, is_sensitive
                        Ok(())
                    })?;
                }
                w.tags(flexible)?;
                Ok((name, error_code, None))
            })?;
            (0, Some(topics))
        }
        ApiKey::DeleteTopics => {
            let flexible = version >= 4;
            if version >= 1 {
                w.reader.skip(4)?;
            }
            let topics = w.array(flexible, |w| {
                let name = w.reader.nullable_string(flexible)?.map(<[u8]>::to_vec);
                let id = if version >= 6 { Some(w.reader.take(UUID)?.to_vec()) } else { None };
                let error_code = w.reader.i16()?;
                if version >= 5 {
                    w.skip_string(flexible)?; // error_message
                }
                w.tags(flexible)?;
                Ok((name.or(id).unwrap_or_default(), error_code, None))
            })?;
            (0, Some(topics))
        }
        ApiKey::CreatePartitions | ApiKey::AlterUserScramCredentials => {
            let flexible = api_key == ApiKey::AlterUserScramCredentials || version >= 2;
            w.reader.skip(4)?;
            let results = w.array(flexible, |w| {
                let name = w.string(flexible)?;
                let error_code = w.reader.i16()?;
                w.skip_string(flexible)?; // error_message
                w.tags(flexible)?;
                Ok((name, error_code, None))
            })?;
            (0, Some(results))
        }
        ApiKey::ElectLeaders => {
            let flexible = version >= 2;
            w.reader.skip(4)?;
            let top_level_error = if version >= 1 { w.reader.i16()? } else { 0 };
            let topics = w.array(flexible, |w| {
                let topic = w.string(flexible)?;
                let partitions = w.array(flexible, |w| {
                    let partition = w.reader.take(4)?.to_vec();
                    let error_code = w.reader.i16()?;
                    w.skip_string(flexible)?; // error_message
                    w.tags(flexible)?;
                    Ok((partition, error_code, None))
                })?;
                w.tags(flexible)?;
                Ok((topic, 0, Some(partitions)))
            })?;
            (top_level_error, Some(topics))
        }
        ApiKey::AlterPartitionReassignments | ApiKey::ListPartitionReassignments | ApiKey::UpdateFeatures => {
            let offset = top_level_error_offset(api_key, version).ok_or(DecodeError::Invalid("no top-level error"))?;
            w.reader.skip(offset)?;
            (w.reader.i16()?, None)
        }
        _ => return Err(DecodeError::Invalid("not a controller-bound api")),
    };
    Ok(ResponseLayout { top_level_error, results })
}
