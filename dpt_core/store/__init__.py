"""The default storage plugin: the recording hooks implemented on SQLAlchemy models."""
