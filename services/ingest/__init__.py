"""The ingest service: authenticates partners, validates events and produces them to Kafka."""
