"""The event index: every accepted event in an embedded SQLite file, kept from Kafka."""
