"""The event log port and its adapters (Kafka through aiokafka; an in-memory twin for unit tests)."""
from infra.adapters.eventlog.port import (EventLog, Fenced, GroupConsumer, LogError, NotAssigned, PartitionReader, Record,
                                 TopicPartition, TransactionalWriter)

__all__ = ["EventLog", "Fenced", "GroupConsumer", "LogError", "NotAssigned", "PartitionReader", "Record",
           "TopicPartition", "TransactionalWriter"]
