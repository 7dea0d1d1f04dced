//! The cluster's metadata as the controller decides it: records in the metadata log, and the
//! image every node replays from the committed ones.

pub mod image;
pub mod records;

pub use image::{records_from_cluster_meta, BrokerRegistration, MetadataImage, PartitionImage, TopicImage};
pub use records::{BrokerId, ConfigResource, Endpoint, MetadataRecord, PartitionChange, PartitionRecord, NO_LEADER};
