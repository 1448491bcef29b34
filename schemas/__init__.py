"""The Handshake contract: event models, Kafka records, topics, country codes.

Everything other services share lives here; generated JSON Schema and AsyncAPI documents
are written next to the models by ``python -m schemas.generate``.
"""
