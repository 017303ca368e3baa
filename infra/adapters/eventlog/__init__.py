"""The event log port and its adapters (Kafka through aiokafka; an in-memory twin for unit tests)."""
from infra.adapters.eventlog.port import (Delivered, EventLog, Fenced, GroupConsumer, LogError, NotAssigned,
                                          PartitionReader, Producer, Record, Tail, TopicPartition, TransactionalWriter)

__all__ = ["Delivered", "EventLog", "Fenced", "GroupConsumer", "LogError", "NotAssigned", "PartitionReader",
           "Producer", "Record", "Tail", "TopicPartition", "TransactionalWriter"]
